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

// restorePayload computes the iptables-restore --noflush input that turns
// the current chains into the desired ones, touching only chains that
// differ. With editLists, the list chains (dispatch and filter) are edited
// with -D/-A lines instead of being rewritten. It returns nil when nothing
// differs, and the number of rule lines written.
func restorePayload(table string, desired, current map[string][]string, editLists bool) ([]byte, int) {
	names := make([]string, 0, len(desired))
	for c := range desired {
		names = append(names, c)
	}
	sort.Strings(names)
	type edit struct {
		chain    string
		del, add []string
	}
	var rewrite []string // chains declared and rewritten in full
	var edits []edit
	for _, c := range names {
		want := desired[c]
		cur, exists := current[c]
		if exists && equalRules(cur, want) {
			continue
		}
		if exists && listChains[c] && sameMultiset(cur, want) {
			continue // partial syncs append; order inside list chains is irrelevant
		}
		if exists && editLists && listChains[c] {
			del, add := listEdits(cur, want)
			edits = append(edits, edit{c, del, add})
			continue
		}
		rewrite = append(rewrite, c)
	}
	var stale []string
	for c := range current {
		if _, ok := desired[c]; !ok {
			stale = append(stale, c)
		}
	}
	sort.Strings(stale)
	if len(rewrite)+len(edits)+len(stale) == 0 {
		return nil, 0
	}

	// Size the buffer once: payloads reach tens of megabytes.
	size, n := len(table)+16, 0
	for _, c := range rewrite {
		size += len(c) + 10
		for _, r := range desired[c] {
			size += len(c) + len(r) + 5
		}
		n += len(desired[c])
	}
	for _, e := range edits {
		for _, r := range e.del {
			size += len(e.chain) + len(r) + 5
		}
		for _, r := range e.add {
			size += len(e.chain) + len(r) + 5
		}
		n += len(e.del) + len(e.add)
	}
	for _, c := range stale {
		size += 2*len(c) + 14
	}
	n += len(stale)

	out := bytes.NewBuffer(make([]byte, 0, size))
	line := func(parts ...string) {
		for _, p := range parts {
			out.WriteString(p)
		}
		out.WriteByte('\n')
	}
	line("*", table)
	for _, c := range rewrite {
		line(":", c, " - [0:0]")
	}
	for _, c := range stale {
		line(":", c, " - [0:0]")
	}
	for _, e := range edits {
		for _, r := range e.del {
			line("-D ", e.chain, " ", r)
		}
	}
	for _, c := range rewrite {
		for _, r := range desired[c] {
			line("-A ", c, " ", r)
		}
	}
	for _, e := range edits {
		for _, r := range e.add {
			line("-A ", e.chain, " ", r)
		}
	}
	for _, c := range stale {
		line("-X ", c)
	}
	line("COMMIT")
	return out.Bytes(), n
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
