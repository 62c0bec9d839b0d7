package nftables

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Kernel tests of what is particular to the nftables backend; the shared
// scenarios are in kernel_test.go.

// richServices puts one Service of every shape the backend renders.
func richServices(tp *backendtest.Topo, affinity bool) {
	var aff int32
	if affinity {
		aff = 60
	}
	tp.Cfg.LocalhostNodePorts = true
	tp.Put(backendtest.Svc{Name: "web", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080, LBIP: "203.0.113.10",
		Ranges: []string{"10.210.0.0/24"}, Eps: backendtest.FourEndpoints()})
	tp.Put(backendtest.Svc{Name: "sticky", ClusterIP: "10.96.0.14", Port: 80, NodePort: 30082, Affinity: aff, Eps: backendtest.FourEndpoints()})
	tp.Put(backendtest.Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30081, LBIP: "203.0.113.11", ETPLocal: true,
		Eps: []backendtest.Ep{{IP: "10.211.1.2", Local: true}, {IP: "10.211.2.2"}}})
	tp.Put(backendtest.Svc{Name: "empty", ClusterIP: "10.96.0.12", Port: 80, NodePort: 30083})
	tp.Put(backendtest.Svc{Name: "dns", ClusterIP: "10.96.0.13", Proto: "SCTP", Port: 53, Eps: []backendtest.Ep{{IP: "10.211.2.2"}},
		ExtraPort: &backendtest.Svc{PortName: "udp", Proto: "UDP", Port: 53, Eps: []backendtest.Ep{{IP: "10.211.2.3"}}}})
}

// TestNftPrintsOurTable: `nft list ruleset` prints the whole table,
// affinity bindings included, without an error and with every rule and
// element in nft's own terms, so that an operator can read it. (It is not
// valid nft input again: nft cannot type the numgen field of the
// endpoints map's key without nft's private "typeof" user data, nor the
// constants of an affinity lookup; docs/backends.md says so.)
func TestNftPrintsOurTable(t *testing.T) {
	for _, affinity := range []bool{false, true} {
		t.Run(fmt.Sprintf("affinity=%t", affinity), func(t *testing.T) {
			tp := backendtest.NewTopo(t, harness(Options{}))
			richServices(tp, affinity)
			tp.Sync(false)
			if affinity {
				if _, err := tp.Client.Request("tcp", "10.96.0.14:80", netns.RequestOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			out := tp.Node.MustExec("nft", "list", "ruleset")
			if strings.Contains(out, "rror") || strings.Contains(out, "BUG") || !strings.Contains(out, "table ip synterix") {
				t.Fatalf("nft list ruleset:\n%s", out)
			}
			for _, want := range []string{
				"ip daddr . meta l4proto . th dport vmap @service-ips",
				"10.96.0.10 . tcp . 80 : goto pick-4-offcluster",
				"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 4 map @endpoints",
				"10.96.0.10 . tcp . 80 . 0x00000003 : 10.211.2.3 . 8080",
				"10.96.0.13 . sctp . 53 . 0x00000000 : 10.211.2.2 . 8080",
				"ip saddr 10.210.0.0/24 goto pick-4-masq",
				"10.96.0.12 . tcp . 80 : goto reject-chain",
				"fib saddr type local goto pick-2-offcluster",
				"meta l4proto tcp dnat to 10.211.1.2:8080",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("listing lacks %q", want)
				}
			}
			if affinity && !strings.Contains(out, "update @affinity { ip saddr . 10.96.0.14 . 80 . 10.211.1.2 . 8080 timeout 1m }") {
				t.Errorf("no affinity rule listed")
			}
			if affinity && !strings.Contains(out, "expires") {
				t.Errorf("no affinity binding listed")
			}
			if t.Failed() {
				t.Logf("nft list ruleset:\n%s", out)
			}
		})
	}
}

// TestDeletedTableRecovery: after "nft delete table" the next partial sync
// fails on the canary, turns into a full one and restores the table.
func TestDeletedTableRecovery(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	richServices(tp, true)
	tp.Sync(false)
	want := tp.Dump()
	tp.Node.MustExec("nft", "delete", "table", "ip", DefaultTable)
	if _, err := tp.Client.Request("tcp", backendtest.VIP+":80", netns.RequestOptions{Timeout: time.Second}); netns.Outcome(err) != "timeout" {
		t.Fatalf("service answers without our table: %v", err)
	}
	if res := tp.Sync(false); !res.Full || res.Rules == 0 {
		t.Errorf("sync after the table was deleted: %+v, want a full sync that writes", res)
	}
	if got := tp.Dump(); got != want {
		t.Errorf("restored table differs:\n%s", backendtest.DiffLines(want, got))
	}
	if _, err := tp.Client.Request("tcp", backendtest.VIP+":80", netns.RequestOptions{}); err != nil {
		t.Errorf("service after recovery: %v", err)
	}
}

// TestSourceHashing: with the SourceHashing algorithm every client address
// keeps its endpoint.
func TestSourceHashing(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	tp.Put(backendtest.Svc{Name: "web", ClusterIP: backendtest.VIP, Port: 80, Eps: backendtest.FourEndpoints()})
	st := tp.State()
	st.Services[0].Algorithm = model.AlgorithmSourceHashing
	st.Services[0].Hash += "-sh"
	tp.SyncState(st, false)
	for _, src := range []string{backendtest.ClientIP, backendtest.Client2IP} {
		got := tp.Client.Tally("tcp", backendtest.VIP+":80", 20, netns.RequestOptions{Local: src})
		if len(got) != 1 || got["!timeout"]+got["!refused"] != 0 {
			t.Errorf("source %s spread over %v, want one endpoint", src, got)
		}
	}
}

// TestChunkedColdStart: a cold start split into many small transactions
// leaves exactly what one transaction does, and traffic flows.
func TestChunkedColdStart(t *testing.T) {
	one := backendtest.NewTopo(t, harness(Options{}))
	richServices(one, false)
	one.Sync(false)
	tp := backendtest.NewTopo(t, harness(Options{ChunkBytes: 512}))
	richServices(tp, false)
	if res := tp.Sync(false); res.Rules == 0 {
		t.Fatalf("cold start wrote nothing: %+v", res)
	}
	if got, want := ourTable(t, tp.Node), ourTable(t, one.Node); got != want {
		t.Errorf("chunked cold start differs from one transaction:\n%s", backendtest.DiffLines(want, got))
	}
	if _, err := tp.Client.Request("tcp", backendtest.VIP+":80", netns.RequestOptions{}); err != nil {
		t.Errorf("traffic after a chunked cold start: %v", err)
	}
}

// ourTable lists our table only.
func ourTable(t *testing.T, node *netns.NS) string {
	return canonicalRuleset(node.MustExec("nft", "list", "table", "ip", DefaultTable))
}

// TestRebuildsAForeignLayout: a table of our name whose maps another
// version defined differently, with a chain we do not know, is replaced
// whole in one transaction; the table of kube-proxy beside it is left
// alone.
func TestRebuildsAForeignLayout(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	old := `table ip synterix {
	map service-ips { type ipv4_addr : verdict; }
	chain svc-OLD { meta l4proto tcp dnat to 10.211.1.4:8080; }
	chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; ip daddr vmap @service-ips; }
}`
	tp.Node.MustExec("sh", "-c", "nft -f - <<'EOF'\n"+old+"\nEOF")
	if out, err := tp.Node.ExecInput([]byte(foreignRuleset(model.IPv4)), "nft", "-f", "-"); err != nil {
		t.Fatalf("foreign ruleset: %v: %s", err, out)
	}
	foreign := tp.Node.MustExec("nft", "list", "table", "ip", "kube-proxy")
	richServices(tp, false)
	if res := tp.Sync(false); !res.Full || res.Rules == 0 {
		t.Fatalf("sync over another layout: %+v", res)
	}
	one := backendtest.NewTopo(t, harness(Options{}))
	richServices(one, false)
	one.Sync(false)
	if got, want := ourTable(t, tp.Node), ourTable(t, one.Node); got != want {
		t.Errorf("rebuilt table differs from a fresh one:\n%s", backendtest.DiffLines(want, got))
	}
	if got := tp.Node.MustExec("nft", "list", "table", "ip", "kube-proxy"); got != foreign {
		t.Errorf("kube-proxy's table changed:\n%s", backendtest.DiffLines(foreign, got))
	}
	if r, err := tp.Client.Request("tcp", backendtest.ForeignVIP+":80", netns.RequestOptions{}); err != nil || r.Server != "10.211.1.4" {
		t.Errorf("kube-proxy's service: %+v %v", r, err)
	}
}

// TestPartialSyncsConverge: 40 random changes synced partially leave the
// kernel exactly as a full sync of the last state wants it (the full sync
// writes nothing), and the backend's count is what the kernel holds.
func TestPartialSyncsConverge(t *testing.T) {
	h := harness(Options{})
	tp := backendtest.NewTopo(t, h)
	r := rand.New(rand.NewSource(7))
	for step := 0; step < 40; step++ {
		st := randomState(r)
		if res := tp.SyncState(st, false); step > 0 && res.Full {
			t.Fatalf("step %d: partial sync fell back to a full one", step)
		}
	}
	// The digest covers what partial syncs wrote: the full sync can
	// trust the endpoints map without listing it.
	noDriftFrom(t, tp, tp.Cur, "after 40 partial syncs")
	res := tp.SyncState(tp.Cur, true)
	if res.Rules != 0 {
		t.Errorf("full sync after partial ones wrote %d rules and elements: partial syncs drifted", res.Rules)
	}
	if n := h.Owned(t, tp.Node, model.IPv4); res.Owned != n {
		t.Errorf("owned %d, kernel holds %d", res.Owned, n)
	}
}

// randomState makes up to 30 service ports with random endpoints,
// locality, affinity, algorithms and frontends.
func randomState(r *rand.Rand) *model.State {
	st := &model.State{Family: model.IPv4, Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.211.0.0/16")}}}
	for i := 0; i < 30; i++ {
		if r.Intn(4) == 0 {
			continue
		}
		s := &model.Service{Key: fmt.Sprintf("ns/s%02d:p/TCP", i), Namespace: "ns", Name: fmt.Sprintf("s%02d", i), Protocol: model.TCP}
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindClusterIP, Addr: netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)}),
			Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster})
		if r.Intn(2) == 0 {
			s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr(backendtest.NodeIP),
				Port: int32(30000 + i), Protocol: model.TCP, Masquerade: model.MasqueradeAlways})
		}
		if r.Intn(3) == 0 {
			s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}),
				Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeAlways,
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
		}
		for j := 0; j < r.Intn(5); j++ {
			s.ClusterEndpoints = append(s.ClusterEndpoints, model.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 211, byte(j), byte(r.Intn(5) + 1)}),
				Port: 8080, Ready: true, Local: r.Intn(2) == 0})
		}
		s.InternalEndpoints, s.ExternalEndpoints = s.ClusterEndpoints, s.ClusterEndpoints
		if r.Intn(4) == 0 {
			s.ExternalLocal, s.ExternalEndpoints = true, nil
			for _, e := range s.ClusterEndpoints {
				if e.Local {
					s.ExternalEndpoints = append(s.ExternalEndpoints, e)
				}
			}
		}
		switch r.Intn(6) {
		case 0:
			s.Affinity = model.Affinity{ClientIP: true, Timeout: time.Duration(r.Intn(3)+1) * time.Minute}
		case 1:
			s.Algorithm = model.AlgorithmRoundRobin
		case 2:
			s.Algorithm = model.AlgorithmSourceHashing
		}
		s.Hash = fmt.Sprint(s.Frontends, s.InternalEndpoints, s.ExternalEndpoints, s.ExternalLocal, s.Affinity, s.Algorithm)
		st.Services = append(st.Services, s)
	}
	return st
}

var _ = backend.SyncOptions{}
var _ = context.Background
