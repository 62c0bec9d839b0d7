package iptables

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// benchState builds a state of n ClusterIP Services with eps endpoints each.
// With variant != 0 the first endpoint of Service n/2 moves.
func benchState(n, eps, variant int) *model.State {
	st := &model.State{Family: model.IPv4, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/9")}}
	for i := 0; i < n; i++ {
		s := &model.Service{
			Key: fmt.Sprintf("bench/svc-%05d:http/TCP", i), Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i),
			PortName: "http", Protocol: model.TCP,
			Frontends: []model.Frontend{{Kind: model.KindClusterIP, Protocol: model.TCP, Port: 80,
				Addr: netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)}), Masquerade: model.MasqueradeOffCluster}},
		}
		for j := 0; j < eps; j++ {
			a := netip.AddrFrom4([4]byte{10, byte(128 + j), byte(i / 250), byte(i%250 + 1)})
			if variant != 0 && i == n/2 && j == 0 {
				a = netip.AddrFrom4([4]byte{10, 250, byte(variant), 1})
			}
			s.InternalEndpoints = append(s.InternalEndpoints, model.Endpoint{Addr: a, Port: 8080, Ready: true})
		}
		s.ExternalEndpoints, s.ClusterEndpoints = s.InternalEndpoints, s.InternalEndpoints
		s.Hash = fmt.Sprintf("%d-%d", i, variant)
		if variant != 0 && i != n/2 {
			s.Hash = fmt.Sprintf("%d-0", i)
		}
		st.Services = append(st.Services, s)
	}
	return st
}

// BenchmarkRender measures rendering a state into restore input from
// scratch (no cached fragments, empty kernel).
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n, 10, 0)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var lines int
			for i := 0; i < b.N; i++ {
				be := &Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}
				rs := be.desired(st)
				lines = 0
				for _, t := range []string{tableNAT, tableFilter} {
					_, n := restorePayload(t, rs[t], nil, false)
					lines += n
				}
			}
			b.ReportMetric(float64(lines), "rules")
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkApply measures, inside a throw-away namespace, a full sync of N
// Services x 10 endpoints onto empty tables, a partial sync that moves one
// endpoint, and a bare iptables-restore --noflush of exactly the payloads
// the backend wrote, so the overhead of the backend shows as a ratio; and a
// restarted backend's first full sync, which reads the kernel and adopts
// the rules without writing.
// Reported metrics are medians over the iterations.
//
//	go test ./agent/iptables -run XXX -bench Apply -benchtime 5x
func BenchmarkApply(b *testing.B) {
	netns.Require(b, "iptables", "iptables-save", "iptables-restore")
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchApply(b, n) })
	}
}

func benchApply(b *testing.B, n int) {
	node := netns.New(b, "bench")
	ctx := context.Background()
	states := []*model.State{benchState(n, 10, 0), benchState(n, 10, 1), benchState(n, 10, 2)}
	var be *Backend
	in := func(fn func() error) {
		b.Helper()
		if err := node.Do(fn); err != nil {
			b.Fatal(err)
		}
	}
	// The backend keeps its payloads for the bare references.
	newBackend := func() (err error) {
		if be, err = New(ctx, Options{DisableConntrack: true}); err == nil {
			be.keepPayload = true
		}
		return err
	}
	in(newBackend)
	bare := func(payload []byte) time.Duration {
		start := time.Now()
		in(func() error {
			cmd := exec.Command(be.bins.restore, "-w", "--noflush")
			cmd.Stdin = bytes.NewReader(payload)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("bare restore: %v: %s", err, out)
			}
			return nil
		})
		return time.Since(start)
	}
	var full, fullBare, part, partBare, adopt []time.Duration
	var rules int
	for i := 0; i < b.N; i++ {
		// Full sync onto empty tables.
		in(func() error { return be.Cleanup(ctx) })
		var res backend.SyncResult
		start := time.Now()
		in(func() (err error) { res, err = be.Sync(ctx, states[0], backend.SyncOptions{Full: true}); return })
		full = append(full, time.Since(start))
		rules = res.Rules
		payload := append(append([]byte(nil), be.lastPayload[tableNAT]...), be.lastPayload[tableFilter]...)

		// Partial syncs: move one endpoint there and back.
		var partPayloads [][]byte
		for _, st := range []*model.State{states[1], states[2], states[0]} {
			start := time.Now()
			in(func() (err error) { res, err = be.Sync(ctx, st, backend.SyncOptions{}); return })
			part = append(part, time.Since(start))
			if res.Full || res.Changed != 1 {
				b.Fatalf("partial sync: %+v", res)
			}
			partPayloads = append(partPayloads, be.lastPayload[tableNAT])
		}
		// A restarted agent: full sync that reads the kernel and adopts
		// (writes nothing).
		start = time.Now()
		in(func() (err error) {
			fresh, err := New(ctx, Options{DisableConntrack: true})
			if err != nil {
				return err
			}
			res, err = fresh.Sync(ctx, states[0], backend.SyncOptions{Full: true})
			if err == nil && res.Rules != 0 {
				err = fmt.Errorf("adoption wrote %d rules", res.Rules)
			}
			return err
		})
		adopt = append(adopt, time.Since(start))
		// The same partial payloads, applied bare (they chain: 0->1->2->0).
		for _, p := range partPayloads {
			partBare = append(partBare, bare(p))
		}
		// The same full payload, applied bare onto empty tables.
		in(func() error { return be.Cleanup(ctx) })
		fullBare = append(fullBare, bare(payload))
		// Re-adopt for the next round.
		in(newBackend)
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration) {
		b.ReportMetric(float64(median(ds).Microseconds())/1000, name+"-ms")
	}
	report("full", full)
	report("full-bare", fullBare)
	report("partial", part)
	report("partial-bare", partBare)
	report("adopt", adopt)
	b.ReportMetric(float64(median(full))/float64(median(fullBare)), "full-ratio")
	b.ReportMetric(float64(median(part))/float64(median(partBare)), "partial-ratio")
	b.ReportMetric(float64(rules), "rules")
	in(func() error { return be.Cleanup(ctx) })
}

// BenchmarkPartialRender measures the Go side of a partial sync at 10k
// Services: diffing the states and planning the restore input after one
// endpoint moved.
func BenchmarkPartialRender(b *testing.B) {
	states := []*model.State{benchState(10000, 10, 0), benchState(10000, 10, 1)}
	be := &Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}
	be.desired(states[0])
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		old, cur := states[i%2], states[(i+1)%2]
		plans, ok := be.partialPlans(cur, model.Diff(old, cur))
		if !ok {
			b.Fatal("no partial plan")
		}
		if p, _ := plans[tableNAT].payload(tableNAT, canaryGuard); p == nil {
			b.Fatal("no payload")
		}
	}
}
