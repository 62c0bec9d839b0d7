package iptables

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// countingRunner is the real runner of a backend, counting the
// iptables-save runs it makes (not a fake: every call goes to the tools).
type countingRunner struct {
	xtables.Runner
	saves int
}

func (c *countingRunner) Save(ctx context.Context, read func(io.Reader) error, args ...string) error {
	c.saves++
	return c.Runner.Save(ctx, read, args...)
}

// genRig is a real backend of a flavour in a test namespace, with its
// iptables-save runs counted.
type genRig struct {
	t    *testing.T
	node *netns.NS
	be   *Backend
	xt   *countingRunner
	save string // the flavour's iptables-save
}

func newGenRig(t *testing.T, mode xtables.Mode) *genRig {
	bins := xtables.BinariesFor(model.IPv4, mode)
	netns.Require(t, bins.Cmd, bins.Save, bins.Restore, "nft")
	r := &genRig{t: t, node: netns.New(t, "gen"), save: bins.Save}
	if err := r.node.Do(func() (err error) {
		r.be, err = New(context.Background(), Options{Mode: mode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.xt = &countingRunner{Runner: r.be.xt}
	r.be.xt = r.xt
	return r
}

// sync runs one sync in the namespace and returns its result and the
// number of iptables-save runs it made.
func (r *genRig) sync(st *model.State, full bool) (backend.SyncResult, int) {
	r.t.Helper()
	before := r.xt.saves
	var res backend.SyncResult
	if err := r.node.Do(func() (err error) {
		res, err = r.be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return res, r.xt.saves - before
}

// full runs a full sync and checks whether it read the kernel back and
// whether it wrote.
func (r *genRig) full(st *model.State, what string, readBack, writes bool) {
	r.t.Helper()
	res, saves := r.sync(st, true)
	if !res.Full {
		r.t.Errorf("%s: sync not reported as full: %+v", what, res)
	}
	if want := map[bool]int{true: 1, false: 0}[readBack]; saves != want {
		r.t.Errorf("%s: %d iptables-save runs, want %d", what, saves, want)
	}
	if (res.Rules > 0) != writes {
		r.t.Errorf("%s: wrote %d rules, want writes=%v", what, res.Rules, writes)
	}
}

// dump is the flavour's iptables-save output without counters.
func (r *genRig) dump() string { return canonicalSave(r.node.MustExec(r.save)) }

// TestFullSyncVerifiedByGeneration: with the nft flavour, a full sync of an
// unchanged state skips the read-back only while the namespace's nf_tables
// generation stays where a read-back verified the kernel; our rule deleted
// by hand, an unrelated nft table, a partial sync or a changed state all
// send the next full sync back to iptables-save, and it repairs.
func TestFullSyncVerifiedByGeneration(t *testing.T) {
	r := newGenRig(t, xtables.ModeNFT)
	st := backendtest.BenchState(20, 3, 0)
	r.full(st, "first sync", true, true)
	r.full(st, "after our own write", true, false)
	r.full(st, "verified", false, false)
	r.full(backendtest.BenchState(20, 3, 0), "same content, new State", false, false)
	want := r.dump()

	// Drift: one of our rules deleted with iptables.
	chain := ""
	for _, l := range strings.Split(r.node.MustExec("iptables-nft", "-w", "-t", "nat", "-S"), "\n") {
		if strings.HasPrefix(l, "-N SYNX-SVC-") {
			chain = strings.TrimPrefix(l, "-N ")
			break
		}
	}
	if chain == "" {
		t.Fatal("no SYNX-SVC- chain in the nat table")
	}
	r.node.MustExec("iptables-nft", "-w", "-t", "nat", "-D", chain, "1")
	if r.dump() == want {
		t.Fatal("deleting a rule changed nothing")
	}
	r.full(st, "after a rule was deleted", true, true)
	if got := r.dump(); got != want {
		t.Errorf("not repaired:\n%s", backendtest.DiffLines(want, got))
	}
	r.full(st, "after the repair", true, false)
	r.full(st, "verified again", false, false)

	// Someone else's table, in another family: the generation moves.
	r.node.MustExec("nft", "add", "table", "inet", "other")
	r.full(st, "after an unrelated nft table", true, false)
	r.full(st, "verified after the unrelated table", false, false)

	// A partial sync writes: the next full sync reads back.
	if res, saves := r.sync(backendtest.BenchState(20, 3, 1), false); res.Full || saves != 0 || res.Rules == 0 {
		t.Errorf("partial sync: %+v, %d saves", res, saves)
	}
	r.full(backendtest.BenchState(20, 3, 1), "after a partial sync", true, false)
	// A changed state reads back even though the generation held.
	r.full(st, "changed state", true, true)
	if got := r.dump(); got != want {
		t.Errorf("changed state:\n%s", backendtest.DiffLines(want, got))
	}
	r.full(st, "after the changed state", true, false)

	// Without content hashes Diff cannot tell a change: always read back.
	bare := backendtest.BenchState(20, 3, 0)
	for _, s := range bare.Services {
		s.Hash = ""
	}
	r.full(bare, "no hashes", true, false)
	r.full(bare, "no hashes again", true, false)
}

// TestFullSyncGenerationUnreadable: when the generation cannot be read,
// every full sync reads back. The reader is a FAKE that fails (the one
// case the kernel cannot be made to refuse); the tools are real.
func TestFullSyncGenerationUnreadable(t *testing.T) {
	r := newGenRig(t, xtables.ModeNFT)
	r.be.gens.Read = func(context.Context) (uint32, error) { return 0, errors.New("FAKE: GETGEN refused") }
	st := backendtest.BenchState(5, 2, 0)
	r.full(st, "first sync", true, true)
	for i := 0; i < 3; i++ {
		r.full(st, "no generation", true, false)
	}
}

// TestFullSyncLegacyReadsBack: legacy tables are not in nf_tables and have
// no generation: every full sync reads back, even while the nf_tables
// generation holds still.
func TestFullSyncLegacyReadsBack(t *testing.T) {
	r := newGenRig(t, xtables.ModeLegacy)
	if r.be.gens.Read != nil {
		t.Fatal("legacy backend reads an nf_tables generation")
	}
	st := backendtest.BenchState(5, 2, 0)
	r.full(st, "first sync", true, true)
	for i := 0; i < 3; i++ {
		r.full(st, "legacy", true, false)
	}
}
