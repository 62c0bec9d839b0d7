package nftables

import (
	"context"
	"errors"
	"fmt"
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

// TestTwoAgentsOnOneNode: while the operator replaces an agent pod, the
// old agent may still sync beside the new one. A partial sync built on a
// memory the other agent has made stale must not commit: it replaces the
// digest it believes in, that delete fails, and the full sync it falls
// back to lists the map and removes what the other agent added.
func TestTwoAgentsOnOneNode(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	keep := backendtest.Svc{Name: "keep", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080, Eps: []backendtest.Ep{{IP: "10.211.2.2"}}}
	tp.Put(keep)
	s0 := tp.State()
	tp.SyncState(s0, true)
	old := tp.Backend // the agent being replaced
	tp.Restart()
	tp.SyncState(s0, false) // the new agent adopts the table
	newer := tp.Backend

	tp.Put(backendtest.Svc{Name: "etp", ClusterIP: "10.96.0.11", Port: 80, NodePort: 31003, ETPLocal: true,
		Eps: []backendtest.Ep{{IP: "10.211.1.2", Local: true}, {IP: "10.211.2.2"}}})
	tp.Backend = old
	if res := tp.Sync(false); res.Full {
		t.Fatalf("the old agent's partial sync fell back to a full one: %+v", res)
	}
	// The new agent never saw that Service; it sees keep change.
	tp.Del("etp")
	keep.Eps = append(keep.Eps, backendtest.Ep{IP: "10.211.2.3"})
	tp.Put(keep)
	tp.Backend = newer
	if res := tp.Sync(false); !res.Full {
		t.Errorf("a partial sync over a map the other agent changed committed: %+v", res)
	}
	noDrift(t, tp, "after the new agent's sync")
}

// TestUpgradeDoesNotTrustAnOldDigest: agents before the digest version
// left the digest of their last full sync in place over partial syncs.
// Such a digest can match a later state while the map holds more; the
// first full sync of this version must list the map.
func TestUpgradeDoesNotTrustAnOldDigest(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	tp.Put(backendtest.Svc{Name: "keep", ClusterIP: backendtest.VIP, Port: 80, Eps: []backendtest.Ep{{IP: "10.211.2.2"}}})
	s0 := tp.State()
	tp.Put(backendtest.Svc{Name: "gone", ClusterIP: "10.96.0.11", Port: 80, Eps: []backendtest.Ep{{IP: "10.211.2.3"}}})
	tp.Sync(true)
	// What an older agent left: the map with "gone", and the digest, in
	// the old form (no version), of its last full sync, before "gone".
	be := tp.Backend.(*Backend)
	oldForm := be.desired(s0).sum
	oldForm.minus(digestVersion)
	if err := tp.Node.Do(func() error {
		c, err := dial(context.Background())
		if err != nil {
			return err
		}
		defer c.close()
		tx := newTxn(be.f, be.table)
		tx.setElems(setDigest, true, []elem{be.sum.elem()})
		tx.setElems(setDigest, false, []elem{oldForm.elem()})
		return c.commit(tx)
	}); err != nil {
		t.Fatal(err)
	}
	tp.Restart()
	tp.Del("gone")
	tp.Sync(false)
	noDrift(t, tp, "after the upgraded agent's first sync")
}

// TestCutShortFullSyncLeavesNoStaleDigest: a full sync larger than a
// transaction (Options.ChunkBytes) commits in several; cut short after
// the first, it has changed part of the endpoints map. The digest the
// table held before must be gone by then, or a later full sync of the
// state that digest described trusts the half-changed map.
func TestCutShortFullSyncLeavesNoStaleDigest(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{ChunkBytes: 512}))
	put := func(ips ...string) *model.State {
		for i := range 6 {
			var eps []backendtest.Ep
			for _, ip := range ips {
				eps = append(eps, backendtest.Ep{IP: ip})
			}
			tp.Put(backendtest.Svc{Name: fmt.Sprintf("s%d", i), ClusterIP: fmt.Sprintf("10.96.0.%d", 20+i), Port: 80, Eps: eps})
		}
		return tp.State()
	}
	s0 := put("10.211.1.2", "10.211.1.3", "10.211.1.4")
	tp.SyncState(s0, true)
	s1 := put("10.211.2.2", "10.211.2.3", "10.211.2.4")

	// FAKE failure: the first transaction is committed to the kernel,
	// the second fails as a kernel error would.
	errCut := errors.New("FAKE: transaction refused")
	be := tp.Backend.(*Backend)
	commits := 0
	err := tp.Node.Do(func() error {
		c, err := dial(context.Background())
		if err != nil {
			return err
		}
		defer c.close()
		_, err = be.fullSyncWith(c, s1, func(tx *txn) error {
			if commits++; commits > 1 {
				return errCut
			}
			return c.commit(tx)
		})
		return err
	})
	if !errors.Is(err, errCut) {
		t.Fatalf("full sync with its second transaction refused: %v", err)
	}
	if len(drift(t, tp, s0)) == 0 {
		t.Fatalf("the first transaction changed nothing: the test needs a smaller ChunkBytes")
	}
	res := tp.SyncState(s0, true)
	noDriftFrom(t, tp, s0, fmt.Sprintf("after a full sync of the state before (%+v)", res))
}

// noDrift compares every set and map of our table but the affinity set,
// element by element, with what a full sync of the current state writes
// (nftables.DesiredTable), as the plugin's drift check does.
func noDrift(t *testing.T, tp *backendtest.Topo, when string) {
	t.Helper()
	noDriftFrom(t, tp, tp.State(), when)
}

// noDriftFrom is noDrift against a given state.
func noDriftFrom(t *testing.T, tp *backendtest.Topo, st *model.State, when string) {
	t.Helper()
	for _, d := range drift(t, tp, st) {
		t.Errorf("%s: %s", when, d)
	}
}

// drift lists the elements by which our table's sets differ from what a
// full sync of st writes.
func drift(t *testing.T, tp *backendtest.Topo, st *model.State) []string {
	t.Helper()
	want, err := DesiredTable(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	have := readOurTable(t, tp)
	var out []string
	for _, ws := range want.Sets {
		if ws.Name == setAffinity {
			continue
		}
		hs := have.Set(ws.Name)
		if hs == nil {
			out = append(out, "set "+ws.Name+" missing")
			continue
		}
		w, h := elemStrings(ws), elemStrings(hs)
		for _, e := range h {
			if !slices.Contains(w, e) {
				out = append(out, "extra element of "+ws.Name+" in the kernel: "+e)
			}
		}
		for _, e := range w {
			if !slices.Contains(h, e) {
				out = append(out, "element of "+ws.Name+" missing in the kernel: "+e)
			}
		}
	}
	return out
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
