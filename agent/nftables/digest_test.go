package nftables

import (
	"context"
	"slices"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// TestFullSyncFindsStaleEndpointElements: the drift the e2e suite found
// under mode NFTables. A Service made after the last full sync (here an
// externalTrafficPolicy Local NodePort Service with localhost NodePorts,
// as the e2e spec's) is written by a partial sync, and deleted; the sync
// that carries the deletion is a full one: the periodic one (syncPeriod),
// a retry, or a new agent's first. A full sync trusts the endpoints map
// without listing it when the endpoints-digest element matches the
// state, so the digest must cover what the map holds after every sync,
// partial ones included. Otherwise the digest of the last full sync,
// from before the Service, matches the state after it, and the Service's
// 9 endpoints elements (3 endpoints × its ClusterIP, its NodePort on the
// node's own address and on 127.0.0.1) stay for ever, while its dispatch
// entries and chains, which a full sync always lists, go.
func TestFullSyncFindsStaleEndpointElements(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "PeriodicFullSync"
		if restart {
			name = "RestartedAgent"
		}
		t.Run(name, func(t *testing.T) {
			tp := backendtest.NewTopo(t, harness(Options{}))
			tp.Cfg.LocalhostNodePorts = true
			// A NodePort Service that stays: 3 elements, one per frontend.
			tp.Put(backendtest.Svc{Name: "keep", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080,
				Eps: []backendtest.Ep{{IP: "10.211.2.2"}}})
			tp.Sync(true)
			tp.Put(backendtest.Svc{Name: "etp", ClusterIP: "10.96.0.11", Port: 80, NodePort: 31003, ETPLocal: true,
				Eps: []backendtest.Ep{{IP: "10.211.1.2", Local: true}, {IP: "10.211.2.2"}, {IP: "10.211.2.3"}}})
			if res := tp.Sync(false); res.Full {
				t.Fatalf("adding a Service took a full sync: %+v", res)
			}
			if n := len(endpointElems(t, tp)); n != 3+9 {
				t.Fatalf("endpoints map holds %d elements after the Service was added, want 12", n)
			}
			noDrift(t, tp, "after the partial sync that added the Service")

			if restart {
				tp.Restart()
			}
			tp.Del("etp")
			if res := tp.Sync(true); !res.Full {
				t.Fatalf("sync asked to be full was not: %+v", res)
			}
			noDrift(t, tp, "after the full sync that carried the deletion")
			if kernel := endpointElems(t, tp); len(kernel) != 3 {
				t.Errorf("endpoints map holds %d elements, want keep's 3: %q", len(kernel), kernel)
			}
		})
	}
}

// noDrift compares every set and map of our table but the affinity set,
// element by element, with what a full sync of the current state writes
// (nftables.DesiredTable), as the plugin's drift check does.
func noDrift(t *testing.T, tp *backendtest.Topo, when string) {
	t.Helper()
	want, err := DesiredTable(tp.State(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	have := readOurTable(t, tp)
	for _, ws := range want.Sets {
		if ws.Name == setAffinity {
			continue
		}
		hs := have.Set(ws.Name)
		if hs == nil {
			t.Errorf("%s: set %s missing", when, ws.Name)
			continue
		}
		w, h := elemStrings(ws), elemStrings(hs)
		for _, e := range h {
			if !slices.Contains(w, e) {
				t.Errorf("%s: extra element of %s in the kernel: %s", when, ws.Name, e)
			}
		}
		for _, e := range w {
			if !slices.Contains(h, e) {
				t.Errorf("%s: element of %s missing in the kernel: %s", when, ws.Name, e)
			}
		}
	}
}

// readOurTable reads our table back from the node namespace.
func readOurTable(t *testing.T, tp *backendtest.Topo) *trace.NFTable {
	t.Helper()
	var tables []*trace.NFTable
	if err := tp.Node.Do(func() (err error) {
		tables, err = ReadBack(context.Background(), model.IPv4)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Family == "ip" && tb.Name == DefaultTable {
			return tb
		}
	}
	t.Fatalf("no table ip %s", DefaultTable)
	return nil
}

// endpointElems lists the endpoints map in the kernel, as text.
func endpointElems(t *testing.T, tp *backendtest.Topo) []string {
	t.Helper()
	return elemStrings(readOurTable(t, tp).Set(setEndpoints))
}

func elemStrings(s *trace.NFSet) []string {
	var out []string
	for _, e := range s.Elems {
		out = append(out, ElemText(s.Name, e))
	}
	return out
}
