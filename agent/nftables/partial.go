package nftables

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// partialSync writes only the service ports that changed since the last
// sync, in one transaction, trusting that the kernel holds what the last
// sync wrote: it lists nothing but the canary chain's one rule. A missing
// canary (someone flushed our rules) or a failed transaction (someone
// deleted our table or chains) returns an error, and Sync falls back to a
// full sync.
func (b *Backend) partialSync(c *conn, st *model.State) (backend.SyncResult, error) {
	res := backend.SyncResult{}
	r, key := b.renderer(st)
	if key != b.key {
		return res, errRenderKey
	}
	if err := b.checkCanary(c, r); err != nil {
		return res, err
	}
	ch := model.Diff(b.last, st)
	t := newTxn(b.f, b.table)
	old := map[string]map[string]elem{setServices: {}, setNoEndpoint: {}}
	cur := map[string]map[string]elem{setServices: {}, setNoEndpoint: {}}
	frags := map[string]*fragment{}
	var stale []string
	for _, k := range ch.Removed {
		if f := b.frags[k]; f != nil {
			stale = append(stale, f.chains...)
			f.addElems(old)
		}
	}
	for _, k := range append(append([]string(nil), ch.Added...), ch.Changed...) {
		s := st.Service(k)
		nf, chains := r.service(s)
		of := b.frags[k]
		if of == nil {
			of = &fragment{}
		}
		for _, c := range chains {
			if !slices.Contains(of.chains, c.name) {
				t.addChain(c)
				t.addRules(c)
			}
		}
		for _, n := range of.chains {
			if !slices.Contains(nf.chains, n) {
				stale = append(stale, n)
			}
		}
		of.addElems(old)
		nf.addElems(cur)
		frags[k] = nf
	}
	hairpin := b.hairpinElems(st)
	old[setHairpin], cur[setHairpin] = b.hairpin, hairpin
	sets := []string{setServices, setNoEndpoint, setHairpin}
	for _, set := range sets {
		t.setElems(set, true, changed(old[set], cur[set]))
	}
	for _, set := range sets {
		t.setElems(set, false, changed(cur[set], old[set]))
	}
	for _, n := range deletionOrder(stale) {
		t.delChain(n)
	}
	if err := c.commit(t); err != nil {
		return res, fmt.Errorf("partial nftables sync of %d service ports: %w", len(ch.Added)+len(ch.Changed)+len(ch.Removed), err)
	}
	for _, k := range ch.Removed {
		delete(b.frags, k)
	}
	for k, f := range frags {
		b.frags[k] = f
	}
	b.hairpin = hairpin
	res.Rules = t.rules + t.elems
	return res, nil
}

// changed lists the elements of a that b lacks or maps elsewhere.
func changed(a, b map[string]elem) []elem {
	var out []elem
	for k, e := range a {
		if o, ok := b[k]; !ok || !o.sameValue(e) {
			out = append(out, e)
		}
	}
	return out
}

// addElems adds the fragment's dispatch elements to per-set maps.
func (f *fragment) addElems(m map[string]map[string]elem) {
	for _, e := range f.dispatch {
		m[setServices][e.key] = e
	}
	for _, e := range f.noEps {
		m[setNoEndpoint][e.key] = e
	}
}

// checkCanary lists the canary chain: its one rule is gone after "nft
// flush table", and the chain after "nft delete table" or "nft flush
// ruleset".
func (b *Backend) checkCanary(c *conn, r *renderer) error {
	have, err := readUdata(c, b.f, b.table, chainCanary)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: %v", errCanary, err)
		}
		return err
	}
	want := canaryRule(r)
	if len(have) != 1 || !bytes.Equal(have[0], want.udata) {
		return fmt.Errorf("%w: chain %s holds %d rules", errCanary, chainCanary, len(have))
	}
	return nil
}

// canaryRule is the canary chain's one rule.
func canaryRule(r *renderer) rule {
	for _, c := range r.shared(false) {
		if c.name == chainCanary {
			return c.rules[0]
		}
	}
	panic("nftables: no canary chain")
}
