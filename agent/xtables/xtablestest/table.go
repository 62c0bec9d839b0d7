package xtablestest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// table is one FAKE table: chains and their rules as iptables-save text.
type table struct {
	name   string
	chains map[string]*chain
}

type chain struct {
	builtin bool
	rules   []string
}

// Messages of the real tools, for callers that look at them.
const (
	errNoChain = "No chain/target/match by that name."
	errNoRule  = "Bad rule (does a matching rule exist in that chain?)."
)

// knownTargets are the extension targets the FAKE accepts besides chains.
var knownTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true, "DNAT": true, "SNAT": true,
	"MASQUERADE": true, "MARK": true, "CONNMARK": true, "LOG": true, "REDIRECT": true, "CT": true,
	"NOTRACK": true, "QUEUE": true, "NFQUEUE": true, "TPROXY": true, "TCPMSS": true,
}

// names lists the chains, built-in ones first in the kernel's order, then
// the others by name.
func (t *table) names() []string {
	out := append([]string(nil), builtins[t.name]...)
	var user []string
	for c, ch := range t.chains {
		if !ch.builtin {
			user = append(user, c)
		}
	}
	sort.Strings(user)
	return append(out, user...)
}

// clone copies the table; with empty, only its empty built-in chains.
func (t *table) clone(empty bool) *table {
	c := &table{name: t.name, chains: make(map[string]*chain, len(t.chains))}
	for n, ch := range t.chains {
		if empty && !ch.builtin {
			continue
		}
		cc := &chain{builtin: ch.builtin}
		if !empty {
			cc.rules = append([]string(nil), ch.rules...)
		}
		c.chains[n] = cc
	}
	return c
}

func (t *table) get(name string) (*chain, error) {
	if ch := t.chains[name]; ch != nil {
		return ch, nil
	}
	return nil, fmt.Errorf("%s", errNoChain)
}

// checkTarget refuses a jump to a chain that does not exist.
func (t *table) checkTarget(tokens []string) error {
	for i := 0; i+1 < len(tokens); i++ {
		if tokens[i] != "-j" && tokens[i] != "-g" {
			continue
		}
		target := tokens[i+1]
		if t.chains[target] == nil && !knownTargets[target] {
			return fmt.Errorf("Couldn't load target `%s':No such file or directory", target)
		}
	}
	return nil
}

func (t *table) insert(chainName string, pos int, rule string, tokens []string) error {
	ch, err := t.get(chainName)
	if err != nil {
		return err
	}
	if err := t.checkTarget(tokens); err != nil {
		return err
	}
	if pos < 1 || pos > len(ch.rules)+1 {
		return fmt.Errorf("Index of insertion too big.")
	}
	ch.rules = append(ch.rules[:pos-1], append([]string{rule}, ch.rules[pos-1:]...)...)
	return nil
}

func (t *table) find(chainName, rule string) (*chain, int, error) {
	ch, err := t.get(chainName)
	if err != nil {
		return nil, 0, err
	}
	for i, r := range ch.rules {
		if r == rule {
			return ch, i, nil
		}
	}
	return nil, 0, fmt.Errorf("%s", errNoRule)
}

func (t *table) deleteRule(chainName, rule string) error {
	ch, i, err := t.find(chainName, rule)
	if err != nil {
		return err
	}
	ch.rules = append(ch.rules[:i:i], ch.rules[i+1:]...)
	return nil
}

func (t *table) newChain(name string) error {
	if t.chains[name] != nil {
		return fmt.Errorf("Chain already exists.")
	}
	t.chains[name] = &chain{}
	return nil
}

// declare is a restore ":NAME POLICY [counters]" line: a chain that exists
// is flushed (built-in ones keep their rules), one that does not is made.
func (t *table) declare(name string) {
	if ch := t.chains[name]; ch != nil {
		if !ch.builtin {
			ch.rules = nil
		}
		return
	}
	t.chains[name] = &chain{}
}

func (t *table) flush(name string) error {
	if name == "" {
		for _, ch := range t.chains {
			ch.rules = nil
		}
		return nil
	}
	ch, err := t.get(name)
	if err != nil {
		return err
	}
	ch.rules = nil
	return nil
}

// deleteChain deletes an empty user chain no rule jumps to; without a
// name, every user chain.
func (t *table) deleteChain(name string) error {
	if name == "" {
		for _, c := range t.names() {
			if !t.chains[c].builtin {
				if err := t.deleteChain(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	ch, err := t.get(name)
	if err != nil {
		return err
	}
	if ch.builtin {
		return fmt.Errorf("Cannot delete built-in chain %s", name)
	}
	if len(ch.rules) > 0 {
		return fmt.Errorf("Directory not empty: chain %s has rules", name)
	}
	for other, och := range t.chains {
		for _, r := range och.rules {
			if target(tokenize(r)) == name {
				return fmt.Errorf("Too many links: %s jumps to %s", other, name)
			}
		}
	}
	delete(t.chains, name)
	return nil
}

// list renders -S output: the chains' definitions, then their rules.
func (t *table) list(name string) (string, error) {
	names := t.names()
	if name != "" {
		if _, err := t.get(name); err != nil {
			return "", err
		}
		names = []string{name}
	}
	var b strings.Builder
	for _, c := range names {
		if t.chains[c].builtin {
			b.WriteString("-P " + c + " ACCEPT\n")
		} else {
			b.WriteString("-N " + c + "\n")
		}
	}
	for _, c := range names {
		for _, r := range t.chains[c].rules {
			b.WriteString("-A " + c + " " + r + "\n")
		}
	}
	return b.String(), nil
}

// exec applies one iptables command.
func (t *table) exec(c command) (string, error) {
	rule := xtables.SavedArgs(c.rule)
	switch c.op {
	case "-S", "-L":
		return t.list(c.chain)
	case "-C":
		_, _, err := t.find(c.chain, rule)
		return "", err
	case "-A":
		ch, err := t.get(c.chain)
		if err != nil {
			return "", err
		}
		return "", t.insert(c.chain, len(ch.rules)+1, rule, c.rule)
	case "-I":
		return "", t.insert(c.chain, c.pos, rule, c.rule)
	case "-D":
		return "", t.deleteRule(c.chain, rule)
	case "-N":
		return "", t.newChain(c.chain)
	case "-F":
		return "", t.flush(c.chain)
	case "-X":
		return "", t.deleteChain(c.chain)
	}
	return "", fmt.Errorf("FAKE does not understand %s", c.op)
}

// restoreLine applies one line of iptables-restore input inside a table
// block.
func (t *table) restoreLine(line string) error {
	if line[0] == ':' {
		name, _, _ := strings.Cut(line[1:], " ")
		t.declare(name)
		return nil
	}
	op, rest, _ := strings.Cut(line, " ")
	chainName, rule, _ := strings.Cut(rest, " ")
	switch op {
	case "-A":
		ch, err := t.get(chainName)
		if err != nil {
			return err
		}
		return t.insert(chainName, len(ch.rules)+1, rule, tokenize(rule))
	case "-I":
		pos := 1
		if n, r, ok := strings.Cut(rule, " "); ok {
			if p, err := strconv.Atoi(n); err == nil {
				pos, rule = p, r
			}
		}
		return t.insert(chainName, pos, rule, tokenize(rule))
	case "-D":
		return t.deleteRule(chainName, rule)
	case "-N":
		return t.newChain(chainName)
	case "-F":
		return t.flush(chainName)
	case "-X":
		return t.deleteChain(chainName)
	}
	return fmt.Errorf("FAKE does not understand restore line %q", line)
}

// tokenize splits rule text into arguments, honouring double quotes.
func tokenize(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// target returns the -j or -g target of a rule, or "".
func target(tokens []string) string {
	for i := 0; i+1 < len(tokens); i++ {
		if tokens[i] == "-j" || tokens[i] == "-g" {
			return tokens[i+1]
		}
	}
	return ""
}
