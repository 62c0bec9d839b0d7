package nftables

import (
	"bytes"
	"errors"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// errCanary reports a missing canary rule: someone flushed our rules.
var errCanary = errors.New("canary rule missing")

// errRenderKey asks for a full sync: the shared chains change.
var errRenderKey = errors.New("masquerade mark, cluster CIDRs or localhost NodePorts changed")

// desired is a full sync's target: the shared chains and sets, and per
// service port (in state order) its fragment.
type desired struct {
	r      *renderer
	key    renderKey
	shared []*chain
	sets   []*setDef
	svcs   []*model.Service
	frags  []*fragment
	// elems are the elements of the maps we fill, by set and key.
	elems map[string]map[string]elem
}

// desired renders the target of a full sync. Fragments of service ports
// whose content hash did not change are reused: only names and elements
// are kept between syncs, never rule bytes.
func (b *Backend) desired(st *model.State) *desired {
	r, key := b.renderer(st)
	d := &desired{r: r, key: key, shared: r.shared(key.localhost), sets: r.sets(), svcs: st.Services,
		frags: make([]*fragment, len(st.Services)),
		elems: map[string]map[string]elem{setServices: {}, setNoEndpoint: {}, setHairpin: b.hairpinElems(st)}}
	for i, s := range st.Services {
		f := b.frags[s.Key]
		if f == nil || key != b.key || s.Hash == "" || f.hash != s.Hash {
			f, _ = r.service(s)
		}
		d.frags[i] = f
		for _, e := range f.dispatch {
			d.elems[setServices][e.key] = e
		}
		for _, e := range f.noEps {
			d.elems[setNoEndpoint][e.key] = e
		}
	}
	return d
}

// fullSync reads our table and turns it into the desired one, writing
// only the differences: a restarted agent adopts the table without a
// write and without a gap.
func (b *Backend) fullSync(c *conn, st *model.State) (backend.SyncResult, error) {
	res := backend.SyncResult{Full: true}
	d := b.desired(st)
	names := make([]string, len(d.shared))
	for i, ch := range d.shared {
		names[i] = ch.name
	}
	ks, err := readKernel(c, b.f, b.table, names, []string{setServices, setNoEndpoint, setHairpin})
	if err != nil {
		return res, err
	}
	for _, t := range b.planFull(d, ks) {
		if err := c.commit(t); err != nil {
			return res, err
		}
		res.Rules += t.rules + t.elems
	}
	b.adopt(d)
	return res, nil
}

// adopt records the desired state as what the kernel holds.
func (b *Backend) adopt(d *desired) {
	b.frags = make(map[string]*fragment, len(d.frags))
	for i, f := range d.frags {
		b.frags[d.svcs[i].Key] = f
	}
	b.key, b.hairpin, b.shared = d.key, d.elems[setHairpin], 0
	for _, c := range d.shared {
		b.shared += len(c.rules)
	}
}

// planner builds a full sync's transactions: at most chunk bytes each,
// unless the plan must be atomic.
type planner struct {
	b        *Backend
	txns     []*txn
	cur      *txn
	del, add map[string][]elem // pending element changes of cur, by set
	atomic   bool
}

func (p *planner) next() {
	p.flushElems()
	p.txns = append(p.txns, p.cur)
	p.cur = newTxn(p.b.f, p.b.table)
}

// flushElems writes cur's pending element changes: deletions first, so
// that a key moving to another value is deleted and added again.
func (p *planner) flushElems() {
	for _, set := range []string{setServices, setNoEndpoint, setHairpin} {
		p.cur.setElems(set, true, p.del[set])
	}
	for _, set := range []string{setServices, setNoEndpoint, setHairpin} {
		p.cur.setElems(set, false, p.add[set])
	}
	p.del, p.add = map[string][]elem{}, map[string][]elem{}
}

// elems queues the changes that turn a set's elements in the kernel into
// the wanted ones; it does not delete unwanted keys.
func (p *planner) elems(set string, want []elem, have map[string]elem) {
	for _, e := range want {
		h, ok := have[e.key]
		if ok && h.sameValue(e) {
			continue
		}
		if ok {
			p.del[set] = append(p.del[set], h)
		}
		p.add[set] = append(p.add[set], e)
	}
}

// planFull plans a full sync: table, sets and shared chains first, then
// the service ports' chains and elements in chunks, then the deletion of
// whatever is ours and not wanted. A table whose sets or base chains do
// not match this version's is rebuilt in one atomic transaction.
func (b *Backend) planFull(d *desired, ks *kstate) []*txn {
	p := &planner{b: b, cur: newTxn(b.f, b.table), del: map[string][]elem{}, add: map[string][]elem{}}
	if !ks.table {
		p.cur.addTable()
	}
	distrust := ks.table
	for _, s := range d.sets {
		if k, ok := ks.sets[s.name]; !ok {
			p.cur.addSet(s)
		} else if !sameSet(k, s) {
			return b.rebuild(d)
		}
	}
	for _, c := range d.shared {
		k, ok := ks.chains[c.name]
		switch {
		case !ok:
			p.cur.addChain(c)
			p.cur.addRules(c)
		case !sameBase(k.base, c.base):
			return b.rebuild(d)
		case !sameUdata(ks.udata[c.name], c.rules):
			p.cur.flushChain(c.name)
			p.cur.addRules(c)
		case c.name == chainCanary:
			// The canary rule is where it belongs: nobody flushed our
			// chains, their names vouch for their rules.
			distrust = false
		}
	}
	wanted := map[string]bool{}
	for _, c := range d.shared {
		wanted[c.name] = true
	}
	for i, s := range d.svcs {
		f := d.frags[i]
		for _, n := range f.chains {
			wanted[n] = true
		}
		p.serviceChains(d, ks, s, f, distrust)
		p.elems(setServices, f.dispatch, ks.elems[setServices])
		p.elems(setNoEndpoint, f.noEps, ks.elems[setNoEndpoint])
		if !p.atomic && p.cur.bytes > b.chunk {
			p.next()
		}
	}
	p.stale(d, ks, wanted)
	p.next()
	return p.txns
}

// serviceChains writes a service port's chains that the kernel lacks (or,
// after a flush, holds empty).
func (p *planner) serviceChains(d *desired, ks *kstate, s *model.Service, f *fragment, distrust bool) {
	need := distrust
	for _, n := range f.chains {
		if _, ok := ks.chains[n]; !ok {
			need = true
		}
	}
	if !need {
		return
	}
	_, chains := d.r.service(s)
	for _, c := range chains {
		if _, ok := ks.chains[c.name]; ok {
			p.cur.flushChain(c.name)
		} else {
			p.cur.addChain(c)
		}
		p.cur.addRules(c)
	}
}

// stale queues the hairpin set's changes and deletes the elements and
// chains of ours that are not wanted.
func (p *planner) stale(d *desired, ks *kstate, wanted map[string]bool) {
	hp := make([]elem, 0, len(d.elems[setHairpin]))
	for _, e := range d.elems[setHairpin] {
		hp = append(hp, e)
	}
	p.elems(setHairpin, hp, ks.elems[setHairpin])
	for _, set := range []string{setServices, setNoEndpoint, setHairpin} {
		for k, e := range ks.elems[set] {
			if _, ok := d.elems[set][k]; !ok {
				p.del[set] = append(p.del[set], e)
			}
		}
	}
	p.flushElems()
	var gone []string
	for n := range ks.chains {
		if !wanted[n] {
			gone = append(gone, n)
		}
	}
	for _, n := range deletionOrder(gone) {
		p.cur.delChain(n)
	}
}

// deletionOrder sorts chains so that none is deleted before a chain that
// refers to it: unknown ones (older layouts) first, then fw-, ext-, svc-.
func deletionOrder(names []string) []string {
	rank := func(n string) int {
		switch {
		case strings.HasPrefix(n, prefixFw):
			return 1
		case strings.HasPrefix(n, prefixExt):
			return 2
		case strings.HasPrefix(n, prefixSvc):
			return 3
		}
		return 0
	}
	sort.Slice(names, func(i, j int) bool {
		if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	return names
}

// rebuild replaces the table whole in one transaction: the kernel swaps
// the old table for the new one atomically, so traffic sees no gap.
func (b *Backend) rebuild(d *desired) []*txn {
	p := &planner{b: b, cur: newTxn(b.f, b.table), del: map[string][]elem{}, add: map[string][]elem{}, atomic: true}
	p.cur.delTable()
	p.cur.addTable()
	ks := &kstate{chains: map[string]kchain{}}
	for _, s := range d.sets {
		p.cur.addSet(s)
	}
	for _, c := range d.shared {
		p.cur.addChain(c)
		p.cur.addRules(c)
	}
	for i, s := range d.svcs {
		p.serviceChains(d, ks, s, d.frags[i], false)
		p.elems(setServices, d.frags[i].dispatch, nil)
		p.elems(setNoEndpoint, d.frags[i].noEps, nil)
	}
	p.stale(d, ks, nil)
	p.next()
	return p.txns
}

// sameSet compares what we define of a set with what the kernel lists.
func sameSet(k setDef, s *setDef) bool {
	const mask = unix.NFT_SET_ANONYMOUS | unix.NFT_SET_CONSTANT | unix.NFT_SET_INTERVAL | unix.NFT_SET_MAP |
		unix.NFT_SET_TIMEOUT | unix.NFT_SET_EVAL
	if k.flags&mask != s.flags&mask || k.keyType != s.keyType {
		return false
	}
	if s.flags&unix.NFT_SET_MAP != 0 && k.dataType != s.dataType {
		return false
	}
	return len(k.fields) == 0 || equalU32(k.fields, s.fields)
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameBase(k, want *baseChain) bool {
	if k == nil || want == nil {
		return k == want
	}
	return *k == *want
}

// sameUdata compares the user data of a shared chain's rules in the kernel
// with the digests of the wanted rules.
func sameUdata(have [][]byte, want []rule) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range want {
		if !bytes.Equal(have[i], want[i].udata) {
			return false
		}
	}
	return true
}
