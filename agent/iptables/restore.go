package iptables

import (
	"bufio"
	"bytes"
	"sort"
	"strings"
)

// tableState is what iptables-save shows of one table, reduced to what this
// backend cares about.
type tableState struct {
	// chains holds every chain named SYNX-* with its rules (text after
	// "-A NAME ").
	chains map[string][]string
	// hooks holds, per built-in or foreign chain, the rules jumping to one
	// of our chains.
	hooks map[string][]string
}

// parseSaveAll splits the output of a plain "iptables-save" by table.
func parseSaveAll(data []byte) map[string]tableState {
	out := map[string]tableState{}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '*')
		if i < 0 {
			break
		}
		if i > 0 && data[i-1] != '\n' {
			data = data[i+1:]
			continue
		}
		data = data[i+1:]
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		table := string(data[:nl])
		end := bytes.Index(data, []byte("\nCOMMIT\n"))
		if end < 0 {
			end = len(data)
		}
		out[table] = parseSave(data[nl+1 : end])
		data = data[end:]
		if len(data) > 0 {
			data = data[1:]
		}
	}
	return out
}

// parseSave parses the output of "iptables-save -t TABLE".
func parseSave(data []byte) tableState {
	ts := tableState{chains: map[string][]string{}, hooks: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		// Counters, if present, precede the rule: "[pkts:bytes] -A ...".
		if line[0] == '[' {
			if i := bytes.IndexByte(line, ']'); i > 0 && i+2 <= len(line) {
				line = bytes.TrimLeft(line[i+1:], " ")
			}
		}
		switch {
		case line[0] == ':':
			name, _, _ := strings.Cut(string(line[1:]), " ")
			if strings.HasPrefix(name, ChainPrefix) {
				if _, ok := ts.chains[name]; !ok {
					ts.chains[name] = nil
				}
			}
		case bytes.HasPrefix(line, []byte("-A ")):
			rest := line[3:]
			sp := bytes.IndexByte(rest, ' ')
			if sp < 0 {
				continue
			}
			chain := string(rest[:sp])
			rule := string(rest[sp+1:])
			if strings.HasPrefix(chain, ChainPrefix) {
				ts.chains[chain] = append(ts.chains[chain], rule)
			} else if strings.Contains(rule, "-j "+ChainPrefix) || strings.Contains(rule, "-g "+ChainPrefix) {
				ts.hooks[chain] = append(ts.hooks[chain], rule)
			}
		}
	}
	return ts
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

// diffPlan plans turning the current chains into the desired ones, touching
// only chains that differ. With editLists, the list chains (dispatch and
// filter) are edited with -D/-A lines instead of being rewritten.
func diffPlan(desired, current map[string][]string, editLists bool) *tablePlan {
	p := newPlan()
	for c, want := range desired {
		cur, exists := current[c]
		switch {
		case exists && equalRules(cur, want):
		case exists && listChains[c] && sameMultiset(cur, want):
			// partial syncs append; order inside list chains is irrelevant
		case exists && editLists && listChains[c]:
			del, add := listEdits(cur, want)
			p.edit(c, del, add)
		default:
			p.rewrite[c] = want
		}
	}
	for c := range current {
		if _, ok := desired[c]; !ok {
			p.stale[c] = true
		}
	}
	return p
}

// restorePayload is diffPlan rendered without guard.
func restorePayload(table string, desired, current map[string][]string, editLists bool) ([]byte, int) {
	return diffPlan(desired, current, editLists).payload(table, "")
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

func sameMultiset(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	del, add := listEdits(a, b)
	return len(del) == 0 && len(add) == 0
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
