package nftables

import (
	"context"
	"errors"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// genRig is a real backend in a test namespace.
type genRig struct {
	t    *testing.T
	node *netns.NS
	be   *Backend
}

func newGenRig(t *testing.T) *genRig {
	netns.Require(t, "nft")
	be, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &genRig{t: t, node: netns.New(t, "gen"), be: be}
}

// full runs a full sync and checks whether it read the table back and
// whether it wrote.
func (r *genRig) full(st *model.State, what string, readBack, writes bool) {
	r.t.Helper()
	before := r.be.readBacks
	var res backend.SyncResult
	if err := r.node.Do(func() (err error) {
		res, err = r.be.Sync(context.Background(), st, backend.SyncOptions{Full: true})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	if !res.Full {
		r.t.Errorf("%s: sync not reported as full: %+v", what, res)
	}
	if got := r.be.readBacks - before; (got == 1) != readBack || got > 1 {
		r.t.Errorf("%s: %d read-backs, want read-back %v", what, got, readBack)
	}
	if (res.Rules > 0) != writes {
		r.t.Errorf("%s: wrote %d, want writes=%v", what, res.Rules, writes)
	}
}

func (r *genRig) dump() string {
	return canonicalRuleset(r.node.MustExec("nft", "list", "table", "ip", DefaultTable))
}

// TestFullSyncVerifiedByGeneration: a full sync of an unchanged state
// skips reading the table only while the namespace's nf_tables generation
// stays where a read-back verified it; a dispatch element deleted by hand
// or someone else's table send the next full sync back to the kernel, and
// it repairs.
func TestFullSyncVerifiedByGeneration(t *testing.T) {
	r := newGenRig(t)
	st := backendtest.BenchState(20, 3, 0)
	r.full(st, "first sync", true, true)
	r.full(st, "after our own write", true, false)
	r.full(st, "verified", false, false)
	r.full(backendtest.BenchState(20, 3, 0), "same content, new State", false, false)
	want := r.dump()

	r.node.MustExec("nft", "delete", "element", "ip", DefaultTable, setServices, "{ 10.96.0.1 . tcp . 80 }")
	if r.dump() == want {
		t.Fatal("deleting an element changed nothing")
	}
	r.full(st, "after an element was deleted", true, true)
	if got := r.dump(); got != want {
		t.Errorf("not repaired:\n%s", backendtest.DiffLines(want, got))
	}
	r.full(st, "after the repair", true, false)
	r.full(st, "verified again", false, false)

	r.node.MustExec("nft", "add", "table", "inet", "other")
	r.full(st, "after an unrelated nft table", true, false)
	r.full(st, "verified after the unrelated table", false, false)

	r.full(backendtest.BenchState(20, 3, 1), "changed state", true, true)
	r.full(backendtest.BenchState(20, 3, 1), "after the changed state", true, false)
}

// TestFullSyncGenerationUnreadable: when the generation cannot be read,
// every full sync reads back. The reader is a FAKE that fails (the kernel
// cannot be made to refuse); the table is real.
func TestFullSyncGenerationUnreadable(t *testing.T) {
	r := newGenRig(t)
	r.be.gens.Read = func(context.Context) (uint32, error) { return 0, errors.New("FAKE: GETGEN refused") }
	st := backendtest.BenchState(5, 2, 0)
	r.full(st, "first sync", true, true)
	for i := 0; i < 3; i++ {
		r.full(st, "no generation", true, false)
	}
}
