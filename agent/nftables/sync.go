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

// desired is a full sync's target: the shared chains (pick chains
// included) and sets, and per service port (in state order) its fragment.
type desired struct {
	r      *renderer
	key    renderKey
	shared []*chain
	sets   []*setDef
	svcs   []*model.Service
	frags  []*fragment
	// elems are the elements of the small maps, by set and key; the
	// endpoints map's are in the fragments, summed up in sum.
	elems map[string]map[string]elem
	sum   epsSum
	picks map[pickSpec]int
}

// filledSets are the sets a full sync lists; the endpoints map is listed
// only when its digest does not match.
var filledSets = []string{setServices, setNoEndpoint, setHairpin, setDigest}

// desired renders the target of a full sync. Fragments of service ports
// whose content hash did not change are reused: only names and elements
// are kept between syncs, never rule bytes.
func (b *Backend) desired(st *model.State) *desired {
	r, key := b.renderer(st)
	d := &desired{r: r, key: key, shared: r.shared(key.localhost), sets: r.sets(), svcs: st.Services,
		frags: make([]*fragment, len(st.Services)), picks: map[pickSpec]int{},
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
		for _, p := range f.picks {
			d.picks[p]++
		}
		d.sum.plus(f.sum)
	}
	for _, p := range sortedPicks(d.picks) {
		d.shared = append(d.shared, r.pickChain(p))
	}
	return d
}

// fullSync reads our table and turns it into the desired one, writing
// only the differences: a restarted agent adopts the table without a
// write and without a gap.
func (b *Backend) fullSync(c *conn, st *model.State) (backend.SyncResult, error) {
	return b.fullSyncWith(c, st, c.commit)
}

// fullSyncWith is fullSync committing its transactions with commit.
func (b *Backend) fullSyncWith(c *conn, st *model.State, commit func(*txn) error) (backend.SyncResult, error) {
	res := backend.SyncResult{Full: true}
	d := b.desired(st)
	names := make([]string, len(d.shared))
	for i, ch := range d.shared {
		names[i] = ch.name
	}
	ks, err := readKernel(c, b.f, b.table, names, filledSets)
	if err != nil {
		return res, err
	}
	digest := ks.elems[setDigest]
	ks.trusted = len(digest) == 1 && digest[d.sum.elem().key].key != ""
	if _, ok := ks.sets[setEndpoints]; ok && !ks.trusted {
		// The map changed behind our back, or a sync did not finish:
		// list it (slow at 100k elements, but rare).
		if ks.elems[setEndpoints], err = readElems(c, b.f, b.table, setEndpoints); err != nil {
			return res, err
		}
	}
	res.Rules, err = b.planFull(d, ks, commit)
	if err != nil {
		return res, err
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
	b.key, b.hairpin, b.sum, b.picks, b.shared = d.key, d.elems[setHairpin], d.sum, d.picks, 0
	for _, c := range d.shared {
		b.shared += len(c.rules)
	}
}

// planner builds a full sync's transactions and commits each as soon as
// it is complete: at most chunk bytes each, unless the plan must be
// atomic, so that a cold start holds one chunk's messages at a time.
type planner struct {
	b        *Backend
	cur      *txn
	del, add map[string][]elem // pending element changes of cur, by set
	// scratch slices of elems, reused
	scratchDel, scratchAdd []elem
	atomic                 bool
	commit                 func(*txn) error
	err                    error
	written                int // rules and elements committed
}

func newPlanner(b *Backend, atomic bool, commit func(*txn) error) *planner {
	return &planner{b: b, cur: newTxn(b.f, b.table), del: map[string][]elem{}, add: map[string][]elem{},
		atomic: atomic, commit: commit}
}

// next commits the current transaction and starts the next one in the
// same buffer.
func (p *planner) next() {
	p.flushElems()
	if len(p.cur.what) == 0 || p.err != nil {
		return
	}
	if p.err = p.commit(p.cur); p.err == nil {
		p.written += p.cur.rules + p.cur.elems
	}
	p.cur.buf, p.cur.what, p.cur.last, p.cur.rules, p.cur.elems = p.cur.buf[:0], p.cur.what[:0], 0, 0, 0
}

// elemSets orders element changes: endpoints before the dispatch entries
// that lead to them.
var elemSets = []string{setEndpoints, setServices, setNoEndpoint, setHairpin, setDigest}

// flushElems writes cur's pending element changes: deletions first, so
// that a key moving to another value is deleted and added again.
func (p *planner) flushElems() {
	for _, set := range elemSets {
		p.cur.setElems(set, true, p.del[set])
	}
	for _, set := range elemSets {
		p.cur.setElems(set, false, p.add[set])
	}
	for _, set := range elemSets {
		p.del[set], p.add[set] = p.del[set][:0], p.add[set][:0]
	}
}

// elems writes the changes that turn a set's elements in the kernel into
// the wanted ones, deletions first (a key moving to another value is
// deleted and added again); it does not delete unwanted keys.
func (p *planner) elems(set string, want []elem, have map[string]elem) {
	dels, adds := p.scratchDel[:0], p.scratchAdd[:0]
	for _, e := range want {
		h, ok := have[e.key]
		if ok && h.sameValue(e) {
			continue
		}
		if ok {
			dels = append(dels, h)
		}
		adds = append(adds, e)
	}
	p.cur.setElems(set, true, dels)
	p.cur.setElems(set, false, adds)
	p.scratchDel, p.scratchAdd = dels, adds
}

// planFull plans a full sync: table, sets and shared chains first, then
// the service ports' chains and elements in chunks, then the deletion of
// whatever is ours and not wanted. A table whose sets or base chains do
// not match this version's is rebuilt in one atomic transaction.
func (b *Backend) planFull(d *desired, ks *kstate, commit func(*txn) error) (int, error) {
	p := newPlanner(b, false, commit)
	if !ks.table {
		// A cold start fills chunks: one buffer for all of them.
		p.cur.buf = make([]byte, 0, b.chunk+b.chunk/4)
		p.cur.addTable()
	}
	distrust := ks.table
	for _, s := range d.sets {
		if k, ok := ks.sets[s.name]; !ok {
			p.cur.addSet(s)
		} else if !sameSet(k, s) {
			return b.rebuild(d, commit)
		}
	}
	for _, c := range d.shared {
		k, ok := ks.chains[c.name]
		switch {
		case !ok:
			p.cur.addChain(c)
			p.cur.addRules(c)
		case !sameBase(k.base, c.base):
			return b.rebuild(d, commit)
		case !sameUdata(ks.udata[c.name], c.rules):
			p.cur.flushChain(c.name)
			p.cur.addRules(c)
		case c.name == chainCanary:
			// The canary rule is where it belongs: nobody flushed our
			// chains, their names vouch for their rules.
			distrust = false
		}
	}
	return p.services(d, ks, distrust)
}

// services plans the service ports' chains and elements and the deletion
// of what is not wanted, and commits it; it returns what was written.
func (p *planner) services(d *desired, ks *kstate, distrust bool) (int, error) {
	wanted := map[string]bool{}
	for _, c := range d.shared {
		wanted[c.name] = true
	}
	if !ks.trusted {
		// The old digest goes in the first transaction: a full sync cut
		// short after some of its transactions leaves no digest, never
		// one that no longer covers the endpoints map.
		for _, e := range ks.elems[setDigest] {
			p.del[setDigest] = append(p.del[setDigest], e)
		}
	}
	for i, s := range d.svcs {
		f := d.frags[i]
		for _, n := range f.chains {
			wanted[n] = true
		}
		p.serviceChains(d, ks, s, f, distrust)
		p.elems(setServices, f.dispatch, ks.elems[setServices])
		p.elems(setNoEndpoint, f.noEps, ks.elems[setNoEndpoint])
		if !ks.trusted {
			p.elems(setEndpoints, f.eps, ks.elems[setEndpoints])
		}
		if !p.atomic && p.cur.bytes() > p.b.chunk {
			if p.next(); p.err != nil {
				return p.written, p.err
			}
		}
	}
	p.stale(d, ks, wanted)
	p.next()
	return p.written, p.err
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

// stale queues the hairpin set's and the digest's changes and deletes the
// elements and chains of ours that are not wanted.
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
	if !ks.trusted && len(ks.elems[setEndpoints]) > 0 {
		want := make(map[string]bool, len(ks.elems[setEndpoints]))
		for _, f := range d.frags {
			for _, e := range f.eps {
				want[e.key] = true
			}
		}
		for k, e := range ks.elems[setEndpoints] {
			if !want[k] {
				p.del[setEndpoints] = append(p.del[setEndpoints], e)
			}
		}
	}
	if !ks.trusted {
		p.add[setDigest] = append(p.add[setDigest], d.sum.elem())
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
// refers to it: unknown ones (older layouts) first, then fw-, ext-, svc-
// and the pick chains they go to.
func deletionOrder(names []string) []string {
	rank := func(n string) int {
		switch {
		case strings.HasPrefix(n, prefixFw):
			return 1
		case strings.HasPrefix(n, prefixExt):
			return 2
		case strings.HasPrefix(n, prefixSvc):
			return 3
		case strings.HasPrefix(n, prefixPick):
			return 4
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
func (b *Backend) rebuild(d *desired, commit func(*txn) error) (int, error) {
	p := newPlanner(b, true, commit)
	p.cur.delTable()
	p.cur.addTable()
	for _, s := range d.sets {
		p.cur.addSet(s)
	}
	for _, c := range d.shared {
		p.cur.addChain(c)
		p.cur.addRules(c)
	}
	return p.services(d, &kstate{chains: map[string]kchain{}}, false)
}

// sortedPicks lists pick chains in a stable order.
func sortedPicks(m map[pickSpec]int) []pickSpec {
	out := make([]pickSpec, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n < out[j].n
		}
		return out[i].mode < out[j].mode
	})
	return out
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
