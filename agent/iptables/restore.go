package iptables

import (
	"bufio"
	"bytes"
	"hash/maphash"
	"io"
	"sort"
)

// tableState is what iptables-save shows of one table, reduced to what this
// backend cares about.
type tableState struct {
	// chains holds a digest of every chain named SYNX-* (its rules, the
	// text after "-A NAME "): the kernel's copy of 120k rules is only ever
	// compared with the desired one, so it is not kept as text.
	chains map[string]*chainSum
	// hooks holds, per built-in or foreign chain, the rules jumping to one
	// of our chains.
	hooks map[string][]string
}

// chainSum digests the rules of a chain: their number, an order-sensitive
// hash (equal chains) and an order-insensitive one (equal list chains).
// The zero value is the empty chain.
type chainSum struct {
	n        int
	seq, set uint64
}

// sumSeed seeds the rule hashes; digests are compared only within a process.
var sumSeed = maphash.MakeSeed()

// sumPrime folds rule hashes in order into seq.
const sumPrime = 1099511628211

func (c *chainSum) addHash(h uint64) {
	c.n++
	c.seq = c.seq*sumPrime + h
	c.set += h
}

func (c *chainSum) add(rule []byte) { c.addHash(maphash.Bytes(sumSeed, rule)) }

// sumOf digests rules the way parseSaveAll digests what it reads.
func sumOf(rules []string) chainSum {
	var c chainSum
	for _, r := range rules {
		c.addHash(maphash.String(sumSeed, r))
	}
	return c
}

// sumChains digests every chain of a table.
func sumChains(chains map[string][]string) map[string]*chainSum {
	out := make(map[string]*chainSum, len(chains))
	for c, rules := range chains {
		s := sumOf(rules)
		out[c] = &s
	}
	return out
}

// parseSaveAll reads the output of a plain "iptables-save" by table. It
// streams: neither the output nor the rules are held in memory.
func parseSaveAll(r io.Reader) (map[string]tableState, error) {
	out := map[string]tableState{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ts tableState
	var lastName []byte
	var last *chainSum
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		switch line[0] {
		case '*':
			ts = tableState{chains: map[string]*chainSum{}, hooks: map[string][]string{}}
			out[string(line[1:])] = ts
			last = nil
			continue
		case '#':
			continue
		}
		if ts.chains == nil {
			continue // outside a table
		}
		// Counters, if present, precede the rule: "[pkts:bytes] -A ...".
		if line[0] == '[' {
			if i := bytes.IndexByte(line, ']'); i > 0 && i+2 <= len(line) {
				line = bytes.TrimLeft(line[i+1:], " ")
			}
			if len(line) == 0 {
				continue // a counter column and nothing after it
			}
		}
		switch {
		case line[0] == ':':
			name, _, _ := bytes.Cut(line[1:], []byte(" "))
			if bytes.HasPrefix(name, []byte(ChainPrefix)) {
				if _, ok := ts.chains[string(name)]; !ok {
					ts.chains[string(name)] = &chainSum{}
				}
			}
		case bytes.HasPrefix(line, []byte("-A ")):
			rest := line[3:]
			sp := bytes.IndexByte(rest, ' ')
			if sp < 0 {
				continue
			}
			chain, rule := rest[:sp], rest[sp+1:]
			if bytes.HasPrefix(chain, []byte(ChainPrefix)) {
				// iptables-save prints a chain's rules together.
				if last == nil || !bytes.Equal(chain, lastName) {
					last = ts.chains[string(chain)]
					if last == nil {
						last = &chainSum{}
						ts.chains[string(chain)] = last
					}
					lastName = append(lastName[:0], chain...)
				}
				last.add(rule)
			} else if bytes.Contains(rule, []byte("-j "+ChainPrefix)) || bytes.Contains(rule, []byte("-g "+ChainPrefix)) {
				ts.hooks[string(chain)] = append(ts.hooks[string(chain)], string(rule))
			}
		}
	}
	return out, sc.Err()
}

// tablePlan is what one restore transaction changes in a table.
type tablePlan struct {
	rewrite map[string][]string // chains declared (flushed) and refilled
	del     map[string][]string // list chain -> rules to delete
	add     map[string][]string // list chain -> rules to append
	stale   map[string]bool     // chains to flush and delete
}

func newPlan() *tablePlan {
	return &tablePlan{rewrite: map[string][]string{}, del: map[string][]string{}, add: map[string][]string{}, stale: map[string]bool{}}
}

func (p *tablePlan) edit(chain string, del, add []string) {
	if len(del) > 0 {
		p.del[chain] = append(p.del[chain], del...)
	}
	if len(add) > 0 {
		p.add[chain] = append(p.add[chain], add...)
	}
}

func (p *tablePlan) empty() bool {
	return len(p.rewrite)+len(p.del)+len(p.add)+len(p.stale) == 0
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// payload renders the plan as iptables-restore --noflush input, with guard
// lines right after the table line. It returns nil for an empty plan, and
// the number of rule lines (guard excluded).
func (p *tablePlan) payload(table, guard string) ([]byte, int) {
	if p.empty() {
		return nil, 0
	}
	rewrite, stale := sortedKeys(p.rewrite), sortedKeys(p.stale)
	dels, adds := sortedKeys(p.del), sortedKeys(p.add)
	// Size the buffer once: full payloads reach tens of megabytes.
	size, n := len(table)+len(guard)+16, 0
	for _, c := range rewrite {
		size += len(c) + 10
		for _, r := range p.rewrite[c] {
			size += len(c) + len(r) + 5
		}
		n += len(p.rewrite[c])
	}
	for _, m := range []map[string][]string{p.del, p.add} {
		for c, rules := range m {
			for _, r := range rules {
				size += len(c) + len(r) + 5
			}
			n += len(rules)
		}
	}
	for _, c := range stale {
		size += 2*len(c) + 14
	}
	n += len(stale)

	out := bytes.NewBuffer(make([]byte, 0, size))
	line := func(parts ...string) {
		for _, s := range parts {
			out.WriteString(s)
		}
		out.WriteByte('\n')
	}
	line("*", table)
	out.WriteString(guard)
	for _, c := range rewrite {
		line(":", c, " - [0:0]")
	}
	for _, c := range stale {
		line(":", c, " - [0:0]")
	}
	for _, c := range dels {
		for _, r := range p.del[c] {
			line("-D ", c, " ", r)
		}
	}
	for _, c := range rewrite {
		for _, r := range p.rewrite[c] {
			line("-A ", c, " ", r)
		}
	}
	for _, c := range adds {
		for _, r := range p.add[c] {
			line("-A ", c, " ", r)
		}
	}
	for _, c := range stale {
		line("-X ", c)
	}
	line("COMMIT")
	return out.Bytes(), n
}

// diffPlan plans turning the current chains (digests of the kernel's) into
// the desired ones, rewriting only chains that differ. List chains (dispatch
// and filter) that hold the same rules in another order are equal: partial
// syncs append to them.
func diffPlan(desired map[string][]string, current map[string]*chainSum) *tablePlan {
	p := newPlan()
	for c, want := range desired {
		cur, exists := current[c]
		if exists && cur.n == len(want) {
			s := sumOf(want)
			if s.seq == cur.seq || listChains[c] && s.set == cur.set {
				continue
			}
		}
		p.rewrite[c] = want
	}
	for c := range current {
		if _, ok := desired[c]; !ok {
			p.stale[c] = true
		}
	}
	return p
}

// restorePayload is diffPlan against chains given as text, rendered
// without guard. With editLists, the list chains are edited with -D/-A
// lines instead of being rewritten, as partial syncs do.
func restorePayload(table string, desired, current map[string][]string, editLists bool) ([]byte, int) {
	p := diffPlan(desired, sumChains(current))
	if editLists {
		for c, want := range p.rewrite {
			if cur, ok := current[c]; ok && listChains[c] {
				delete(p.rewrite, c)
				del, add := listEdits(cur, want)
				p.edit(c, del, add)
			}
		}
	}
	return p.payload(table, "")
}

func equalRules(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true // the same cached slice
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// listEdits returns the rules to delete from and append to cur so that it
// holds the same multiset of rules as want. Order inside list chains does
// not matter: every rule matches a distinct destination.
func listEdits(cur, want []string) (del, add []string) {
	count := make(map[string]int, len(want))
	for _, r := range want {
		count[r]++
	}
	for _, r := range cur {
		if count[r] > 0 {
			count[r]--
			continue
		}
		del = append(del, r)
	}
	for _, r := range want {
		if count[r] > 0 {
			count[r]--
			add = append(add, r)
		}
	}
	return del, add
}
