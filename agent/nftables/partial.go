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
	d := &delta{old: newElemSets(), cur: newElemSets(), frags: map[string]*fragment{}, picks: map[pickSpec]int{}, sum: b.sum}
	for _, k := range ch.Removed {
		if f := b.frags[k]; f != nil {
			d.stale = append(d.stale, f.chains...)
			d.drop(f)
		}
	}
	t := newTxn(b.f, b.table)
	var chains []*chain
	for _, k := range append(append([]string(nil), ch.Added...), ch.Changed...) {
		nf, cs := r.service(st.Service(k))
		of := b.frags[k]
		if of == nil {
			of = &fragment{}
		}
		for _, c := range cs {
			if !slices.Contains(of.chains, c.name) {
				chains = append(chains, c)
			}
		}
		for _, n := range of.chains {
			if !slices.Contains(nf.chains, n) {
				d.stale = append(d.stale, n)
			}
		}
		d.drop(of)
		d.take(nf)
		d.frags[k] = nf
	}
	born, dead := b.pickChanges(d.picks)
	for _, p := range born {
		pc := r.pickChain(p)
		t.addChain(pc)
		t.addRules(pc)
	}
	for _, c := range chains {
		t.addChain(c)
		t.addRules(c)
	}
	hairpin := b.hairpinElems(st)
	d.old[setHairpin], d.cur[setHairpin] = b.hairpin, hairpin
	if d.sum != b.sum {
		// Replace the digest in the same transaction, keyed by the
		// element itself (a set element has no value, so two digests
		// under one key would compare equal and neither be written).
		// Deleting the old one also checks that the kernel holds what
		// b.sum says: if not, the commit fails and a full sync lists
		// the map.
		o, n := b.sum.elem(), d.sum.elem()
		d.old[setDigest] = map[string]elem{o.key: o}
		d.cur[setDigest] = map[string]elem{n.key: n}
	}
	for _, set := range elemSets {
		t.setElems(set, true, changed(d.old[set], d.cur[set]))
	}
	for _, set := range elemSets {
		t.setElems(set, false, changed(d.cur[set], d.old[set]))
	}
	for _, n := range deletionOrder(append(d.stale, pickNames(dead)...)) {
		t.delChain(n)
	}
	if err := c.commit(t); err != nil {
		return res, fmt.Errorf("partial nftables sync of %d service ports: %w", len(ch.Added)+len(ch.Changed)+len(ch.Removed), err)
	}
	b.record(ch, d, hairpin, r, born, dead)
	res.Rules = t.rules + t.elems
	return res, nil
}

// delta collects what a partial sync changes: the elements of the service
// ports before and after, the chains to delete, the pick chains' use
// counts and the endpoints digest.
type delta struct {
	old, cur map[string]map[string]elem
	frags    map[string]*fragment
	stale    []string
	picks    map[pickSpec]int // change of each pick chain's use count
	sum      epsSum
}

func newElemSets() map[string]map[string]elem {
	m := map[string]map[string]elem{}
	for _, s := range elemSets {
		m[s] = map[string]elem{}
	}
	return m
}

// drop removes a fragment that was written; take adds one to write.
func (d *delta) drop(f *fragment) { d.apply(f, d.old, -1) }
func (d *delta) take(f *fragment) { d.apply(f, d.cur, +1) }

func (d *delta) apply(f *fragment, m map[string]map[string]elem, sign int) {
	for set, els := range map[string][]elem{setServices: f.dispatch, setNoEndpoint: f.noEps, setEndpoints: f.eps} {
		for _, e := range els {
			m[set][e.key] = e
		}
	}
	for _, p := range f.picks {
		d.picks[p] += sign
	}
	if sign < 0 {
		d.sum.minus(f.sum)
	} else {
		d.sum.plus(f.sum)
	}
}

// pickChanges applies use count changes and returns the pick chains that
// come into use (to create) and out of it (to delete).
func (b *Backend) pickChanges(changes map[pickSpec]int) (born, dead []pickSpec) {
	for p, dn := range changes {
		before := b.picks[p]
		switch after := before + dn; {
		case before == 0 && after > 0:
			born = append(born, p)
		case before > 0 && after == 0:
			dead = append(dead, p)
		}
	}
	return sortedSpecs(born), sortedSpecs(dead)
}

func sortedSpecs(ps []pickSpec) []pickSpec {
	m := map[pickSpec]int{}
	for _, p := range ps {
		m[p] = 1
	}
	return sortedPicks(m)
}

func pickNames(ps []pickSpec) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.name()
	}
	return out
}

// record makes the backend's memory of the kernel match what a partial
// sync committed.
func (b *Backend) record(ch model.Changes, d *delta, hairpin map[string]elem, r *renderer, born, dead []pickSpec) {
	for _, k := range ch.Removed {
		delete(b.frags, k)
	}
	for k, f := range d.frags {
		b.frags[k] = f
	}
	if b.picks == nil {
		b.picks = map[pickSpec]int{}
	}
	for p, dn := range d.picks {
		if b.picks[p] += dn; b.picks[p] <= 0 {
			delete(b.picks, p)
		}
	}
	for _, p := range born {
		b.shared += len(r.pickChain(p).rules)
	}
	for _, p := range dead {
		b.shared -= len(r.pickChain(p).rules)
	}
	b.hairpin, b.sum = hairpin, d.sum
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
