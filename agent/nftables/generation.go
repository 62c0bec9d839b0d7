package nftables

import (
	"context"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// The periodic full sync of an idle node: when a full sync read our table
// back and found nothing to write, with the namespace's nf_tables
// generation the same before and after, the next full sync of the same
// state skips the read while the generation stays there. Every change to
// any nf_tables table of the namespace moves the generation, so our table
// cannot have drifted without the next full sync reading it for real.

// unchangedSinceVerified reports whether a full sync of st may skip the
// read-back: the last sync was a full one that verified b.last; st renders
// the same table (same render key, no service port changed by content
// hash); and the generation has not moved since.
func (b *Backend) unchangedSinceVerified(ctx context.Context, st *model.State) (uint32, bool) {
	if !b.gens.Marked() || !model.Diff(b.last, st).Empty() {
		return 0, false
	}
	if _, key := b.renderer(st); key != b.key {
		return 0, false
	}
	for _, s := range st.Services {
		if s.Hash == "" { // no hash: Diff cannot tell a change
			return 0, false
		}
	}
	return b.gens.Holds(ctx)
}

// verifyingFullSync is fullSync, which also records whether it verified
// the kernel: nothing committed, and the generation the same before the
// read and after the sync.
func (b *Backend) verifyingFullSync(ctx context.Context, c *conn, st *model.State) (backend.SyncResult, error) {
	b.readBacks++
	before, ok := b.gens.Current(ctx)
	wrote := false
	res, err := b.fullSyncWith(c, st, func(t *txn) error {
		wrote = wrote || len(t.what) > 0
		return c.commit(t)
	})
	if err != nil || !ok || wrote {
		return res, err
	}
	if after, ok := b.gens.Current(ctx); ok && after == before {
		b.gens.Mark(before)
	}
	return res, nil
}
