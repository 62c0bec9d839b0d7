package nftables

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	gnft "github.com/google/nftables"
	gexpr "github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// BenchmarkLibraries loads the same content — the maps of N Services x 10
// endpoints as this backend lays them out (N dispatch entries, 10N
// endpoints map entries, one pick chain) — into an empty table three
// ways, lists the endpoints map back, and changes one endpoint:
//
//   - ours: this package's transport, netlink messages encoded in one
//     buffer, one acknowledgement per transaction (expressions encoded by
//     github.com/google/nftables/expr);
//
//   - gnft: github.com/google/nftables' Conn (AddSet, SetAddElements,
//     GetSetElements, Flush), 1,000 elements per message, one Flush per
//     10 messages;
//
//   - knft: sigs.k8s.io/knftables, which writes nft syntax to `nft -f`
//     and lists with `nft --json list` (as kube-proxy does).
//
//     go test ./agent/nftables -run XXX -bench Libraries -benchtime 3x
func BenchmarkLibraries(b *testing.B) {
	netns.Require(b, "nft")
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchLibraries(b, n) })
	}
}

// libContent is the content every library loads.
type libContent struct {
	dispatch, eps []elem
	moved         [2]elem // an endpoints entry before and after a change
}

func newLibContent(n int) *libContent {
	be, _ := New(Options{})
	d := be.desired(backendtest.BenchState(n, 10, 0))
	lc := &libContent{}
	for _, f := range d.frags {
		lc.dispatch = append(lc.dispatch, f.dispatch...)
		lc.eps = append(lc.eps, f.eps...)
	}
	lc.moved[0] = lc.eps[len(lc.eps)/2]
	lc.moved[1] = lc.moved[0]
	lc.moved[1].data = "\x0a\xfa\x01\x01\x1f\x90\x00\x00"
	return lc
}

const (
	libTable = "libbench"
	libPick  = "pick-10-offcluster"
)

type libTimes struct {
	load, list, change []time.Duration
	alloc              uint64
	listed             int // entries the listing returned
}

func benchLibraries(b *testing.B, n int) {
	node := netns.New(b, "libs")
	lc := newLibContent(n)
	libs := []struct {
		name string
		run  func(ctx context.Context, lc *libContent, t *libTimes) error
	}{{"ours", oursLoad}, {"gnft", gnftLoad}, {"knft", knftLoad}}
	times := map[string]*libTimes{}
	for i := 0; i < b.N; i++ {
		for _, lib := range libs {
			t := times[lib.name]
			if t == nil {
				t = &libTimes{}
				times[lib.name] = t
			}
			err := node.Do(func() error {
				ctx := context.Background()
				if err := dropLibTable(ctx); err != nil {
					return err
				}
				var err error
				h := backendtest.MeasureHeap(func() { err = lib.run(ctx, lc, t) })
				t.alloc = max(t.alloc, h.Alloc)
				if err != nil {
					return fmt.Errorf("%s: %w", lib.name, err)
				}
				return dropLibTable(ctx)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	for _, lib := range libs {
		t := times[lib.name]
		for metric, ds := range map[string][]time.Duration{"load": t.load, "list": t.list, "change": t.change} {
			b.ReportMetric(float64(median(ds).Microseconds())/1000, lib.name+"-"+metric+"-ms")
		}
		b.ReportMetric(float64(t.alloc)/(1<<20), lib.name+"-alloc-MiB")
		b.ReportMetric(float64(t.listed), lib.name+"-listed-distinct")
	}
}

func dropLibTable(ctx context.Context) error {
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	ks, err := readKernel(c, ipv4, libTable, nil, nil)
	if err != nil || !ks.table {
		return err
	}
	t := newTxn(ipv4, libTable)
	t.delTable()
	return c.commit(t)
}

// settle gives the kernel time to finish resizing the hash sets after a
// load: a listing that races with it repeats and misses entries (see
// readElems).
func settle() { time.Sleep(500 * time.Millisecond) }

func timed(ds *[]time.Duration, fn func() error) error {
	start := time.Now()
	err := fn()
	*ds = append(*ds, time.Since(start))
	return err
}

// oursLoad uses this package's transport.
func oursLoad(ctx context.Context, lc *libContent, t *libTimes) error {
	r := &renderer{f: ipv4}
	sets := r.sets()
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	err = timed(&t.load, func() error {
		tx := newTxn(ipv4, libTable)
		tx.addTable()
		for _, s := range sets[:3] { // service-ips, no-endpoint-services, endpoints
			tx.addSet(s)
		}
		tx.addChain(&chain{name: libPick})
		if err := c.commit(tx); err != nil {
			return err
		}
		for _, part := range [][]elem{lc.eps, lc.dispatch} {
			set := setEndpoints
			if part[0].isVerdict {
				set = setServices
			}
			for len(part) > 0 {
				k := min(len(part), 30000)
				tx := newTxn(ipv4, libTable)
				tx.setElems(set, false, part[:k])
				if err := c.commit(tx); err != nil {
					return err
				}
				part = part[k:]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	settle()
	err = timed(&t.list, func() error {
		m, err := readElems(c, ipv4, libTable, setEndpoints)
		t.listed = len(m)
		return err
	})
	if err != nil {
		return err
	}
	return timed(&t.change, func() error {
		tx := newTxn(ipv4, libTable)
		tx.setElems(setEndpoints, true, lc.moved[:1])
		tx.setElems(setEndpoints, false, lc.moved[1:])
		return c.commit(tx)
	})
}

// gnftLoad uses github.com/google/nftables' Conn.
func gnftLoad(ctx context.Context, lc *libContent, t *libTimes) error {
	c, err := gnft.New(gnft.AsLasting(), gnft.WithSockOptions(func(nc *netlink.Conn) error {
		_ = nc.SetReadBuffer(8 << 20)
		return nc.SetWriteBuffer(8 << 20)
	}))
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	tbl := &gnft.Table{Family: gnft.TableFamilyIPv4, Name: libTable}
	eps := &gnft.Set{Table: tbl, Name: setEndpoints, IsMap: true, Concatenation: true,
		KeyType:  gnft.MustConcatSetType(gnft.TypeIPAddr, gnft.TypeInetProto, gnft.TypeInetService, gnft.TypeMark),
		DataType: gnft.MustConcatSetType(gnft.TypeIPAddr, gnft.TypeInetService)}
	svcs := &gnft.Set{Table: tbl, Name: setServices, IsMap: true, Concatenation: true,
		KeyType:  gnft.MustConcatSetType(gnft.TypeIPAddr, gnft.TypeInetProto, gnft.TypeInetService),
		DataType: gnft.TypeVerdict}
	err = timed(&t.load, func() error {
		c.AddTable(tbl)
		for _, s := range []*gnft.Set{eps, svcs} {
			if err := c.AddSet(s, nil); err != nil {
				return err
			}
		}
		c.AddChain(&gnft.Chain{Table: tbl, Name: libPick})
		if err := c.Flush(); err != nil {
			return err
		}
		for _, part := range [][]elem{lc.eps, lc.dispatch} {
			set := eps
			if part[0].isVerdict {
				set = svcs
			}
			// 1,000 elements per message: SetAddElements does not split
			// its list, and a list over 64 KiB overflows the attribute's
			// 16-bit length, which the kernel reads as a shorter list (at
			// 2,000 per message only 2,550 of 10,000 entries arrived,
			// and Flush reported no error).
			for i := 0; len(part) > 0; i++ {
				k := min(len(part), 1000)
				if err := c.SetAddElements(set, gnftElems(part[:k])); err != nil {
					return err
				}
				if i%10 == 9 || k == len(part) {
					if err := c.Flush(); err != nil {
						return err
					}
				}
				part = part[k:]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	settle()
	err = timed(&t.list, func() error {
		// GetSetElements reads one netlink datagram of a multi-part
		// dump and stops: it returns a fraction of a large set, which
		// listed reports.
		els, err := c.GetSetElements(eps)
		keys := map[string]bool{}
		for _, e := range els {
			keys[string(e.Key)] = true
		}
		t.listed = len(keys)
		return err
	})
	if err != nil {
		return err
	}
	return timed(&t.change, func() error {
		if err := c.SetDeleteElements(eps, gnftElems(lc.moved[:1])); err != nil {
			return err
		}
		if err := c.SetAddElements(eps, gnftElems(lc.moved[1:])); err != nil {
			return err
		}
		return c.Flush()
	})
}

func gnftElems(els []elem) []gnft.SetElement {
	out := make([]gnft.SetElement, len(els))
	for i, e := range els {
		out[i] = gnft.SetElement{Key: []byte(e.key)}
		if e.isVerdict {
			out[i].VerdictData = &gexpr.Verdict{Kind: gexpr.VerdictKind(e.verdict), Chain: e.chain}
		} else {
			out[i].Val = []byte(e.data)
		}
	}
	return out
}

// knftLoad uses sigs.k8s.io/knftables: nft syntax through `nft -f`, and
// `nft --json list`.
func knftLoad(ctx context.Context, lc *libContent, t *libTimes) error {
	nft, err := knftables.New(knftables.IPv4Family, libTable)
	if err != nil {
		return err
	}
	err = timed(&t.load, func() error {
		tx := nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Add(&knftables.Map{Name: setEndpoints, Type: "ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service"})
		tx.Add(&knftables.Map{Name: setServices, Type: "ipv4_addr . inet_proto . inet_service : verdict"})
		tx.Add(&knftables.Chain{Name: libPick})
		for _, e := range lc.eps {
			tx.Add(&knftables.Element{Map: setEndpoints, Key: knftKey(e.key), Value: knftData(e.data)})
		}
		for _, e := range lc.dispatch {
			tx.Add(&knftables.Element{Map: setServices, Key: knftKey(e.key), Value: []string{"goto " + e.chain}})
		}
		return nft.Run(ctx, tx)
	})
	if err != nil {
		return err
	}
	settle()
	err = timed(&t.list, func() error {
		els, err := nft.ListElements(ctx, "map", setEndpoints)
		keys := map[string]bool{}
		for _, e := range els {
			keys[fmt.Sprint(e.Key)] = true
		}
		t.listed = len(keys)
		return err
	})
	if err != nil {
		return err
	}
	return timed(&t.change, func() error {
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Element{Map: setEndpoints, Key: knftKey(lc.moved[0].key)})
		tx.Add(&knftables.Element{Map: setEndpoints, Key: knftKey(lc.moved[1].key), Value: knftData(lc.moved[1].data)})
		return nft.Run(ctx, tx)
	})
}

// knftKey spells an IPv4 frontend key (and index) in nft syntax.
func knftKey(k string) []string {
	a := netip.AddrFrom4([4]byte([]byte(k[:4])))
	proto := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}[k[4]]
	out := []string{a.String(), proto, strconv.Itoa(int(binary.BigEndian.Uint16([]byte(k[8:10]))))}
	if len(k) > 12 {
		out = append(out, fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32([]byte(k[12:16]))))
	}
	return out
}

func knftData(d string) []string {
	a := netip.AddrFrom4([4]byte([]byte(d[:4])))
	return []string{a.String(), strconv.Itoa(int(binary.BigEndian.Uint16([]byte(d[4:6]))))}
}
