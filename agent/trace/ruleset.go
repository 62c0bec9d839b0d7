package trace

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Ruleset is an iptables-save dump, parsed: every table with its chains,
// their policies and rules.
type Ruleset struct {
	Tables map[string]*Table
}

// Table is one table of a Ruleset.
type Table struct {
	Name   string
	Chains map[string]*Chain
}

// Chain is one chain: Policy is empty for user-defined chains.
type Chain struct {
	Name   string
	Policy string
	Rules  []*Rule
}

// Rule is one rule, parsed for the walk.
type Rule struct {
	// Text is the rule after "-A CHAIN ".
	Text    string
	Comment string
	conds   []cond
	// Target is what -j or -g names; Goto is true for -g.
	Target string
	Goto   bool
	// Args are the target's options, by name without dashes.
	Args map[string]string
	// bad says why the rule could not be parsed; such a rule never
	// matches, and the walk says so.
	bad string
}

// maxLine bounds one line of iptables-save output.
const maxLine = 1 << 20

// ParseSave parses iptables-save (or ip6tables-save) output, with or
// without counters. Lines it cannot read make an error naming them;
// rules with matches it does not know are kept, and the walk treats those
// matches as conditions it cannot decide.
func ParseSave(r io.Reader) (*Ruleset, error) {
	rs := &Ruleset{Tables: map[string]*Table{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var cur *Table
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' { // counters of the next rule
			if i := strings.IndexByte(line, ']'); i > 0 {
				line = strings.TrimSpace(line[i+1:])
			}
			if line == "" {
				continue
			}
		}
		switch {
		case line == "COMMIT":
			cur = nil
		case line[0] == '*':
			cur = &Table{Name: line[1:], Chains: map[string]*Chain{}}
			rs.Tables[cur.Name] = cur
		case cur == nil:
			return nil, fmt.Errorf("line %d: %q outside a table", n, truncate(line))
		case line[0] == ':':
			f := strings.Fields(line[1:])
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: chain without a name", n)
			}
			c := cur.chain(f[0])
			if len(f) > 1 && f[1] != "-" {
				c.Policy = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			chain, rest, ok := strings.Cut(line[3:], " ")
			if !ok {
				return nil, fmt.Errorf("line %d: rule without body: %q", n, truncate(line))
			}
			c := cur.chain(chain)
			c.Rules = append(c.Rules, parseRule(rest))
		default:
			return nil, fmt.Errorf("line %d: not iptables-save output: %q", n, truncate(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read iptables-save output: %w", err)
	}
	return rs, nil
}

func (t *Table) chain(name string) *Chain {
	c := t.Chains[name]
	if c == nil {
		c = &Chain{Name: name}
		t.Chains[name] = c
	}
	return c
}

// Chain returns a chain of a table, or nil.
func (rs *Ruleset) Chain(table, chain string) *Chain {
	if rs == nil || rs.Tables[table] == nil {
		return nil
	}
	return rs.Tables[table].Chains[chain]
}

func truncate(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// tokenize splits a rule the way iptables-save quotes it: double quotes
// group words, a backslash escapes the next character inside them.
func tokenize(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	inTok, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			inQuote, inTok = !inQuote, true
		case !inQuote && (c == ' ' || c == '\t'):
			if inTok {
				out = append(out, b.String())
				b.Reset()
				inTok = false
			}
		default:
			b.WriteByte(c)
			inTok = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inTok {
		out = append(out, b.String())
	}
	return out, nil
}

// parseRule reads one rule's matches and target.
func parseRule(text string) *Rule {
	r := &Rule{Text: text, Args: map[string]string{}}
	toks, err := tokenize(text)
	if err != nil {
		r.bad = err.Error()
		return r
	}
	p := ruleParser{r: r, toks: toks}
	if err := p.parse(); err != nil {
		r.bad = err.Error()
	}
	return r
}

// ruleParser walks a rule's tokens: generic options, "-m module" and its
// options, then "-j/-g target" and the target's options.
type ruleParser struct {
	r      *Rule
	toks   []string
	i      int
	module string
	// opts collects a module's options until the next -m, -j or generic
	// option ends it.
	opts []opt
}

// opt is one option of a module, with its values and negation.
type opt struct {
	name string
	vals []string
	neg  bool
}

func (p *ruleParser) parse() error {
	neg := false
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		p.i++
		switch {
		case t == "!":
			neg = true
			continue
		case t == "-m":
			if err := p.endModule(); err != nil {
				return err
			}
			p.module = p.next()
		case t == "-j" || t == "-g":
			if err := p.endModule(); err != nil {
				return err
			}
			p.r.Target, p.r.Goto = p.next(), t == "-g"
			p.targetArgs()
			return nil
		case t == "--comment":
			// One value, whatever it starts with.
			p.r.Comment = p.next()
		case strings.HasPrefix(t, "--"):
			p.opts = append(p.opts, opt{name: t[2:], vals: p.values(), neg: neg})
		case strings.HasPrefix(t, "-"):
			if err := p.generic(t, p.next(), neg); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected %q", t)
		}
		neg = false
	}
	return p.endModule()
}

// next returns the next token, or "" at the end.
func (p *ruleParser) next() string {
	if p.i >= len(p.toks) {
		return ""
	}
	p.i++
	return p.toks[p.i-1]
}

// values takes the tokens up to the next option or negation.
func (p *ruleParser) values() []string {
	var vs []string
	for p.i < len(p.toks) && p.toks[p.i] != "!" && !strings.HasPrefix(p.toks[p.i], "-") {
		vs = append(vs, p.toks[p.i])
		p.i++
	}
	return vs
}

// targetArgs reads the target's options ("--to-destination 1.2.3.4:80").
func (p *ruleParser) targetArgs() {
	for p.i < len(p.toks) {
		t := p.next()
		if !strings.HasPrefix(t, "--") {
			continue
		}
		p.r.Args[t[2:]] = strings.Join(p.values(), " ")
	}
}

// generic parses -s, -d, -p, -i, -o (and ignores -f and counters).
func (p *ruleParser) generic(flag, val string, neg bool) error {
	if err := p.endModule(); err != nil {
		return err
	}
	switch flag {
	case "-s", "--source":
		return p.addrCond("-s", val, neg, func(f *flow) netip.Addr { return f.src })
	case "-d", "--destination":
		return p.addrCond("-d", val, neg, func(f *flow) netip.Addr { return f.dst })
	case "-p", "--protocol":
		p.r.conds = append(p.r.conds, protoCond(val, neg))
	case "-i", "--in-interface":
		p.r.conds = append(p.r.conds, ifaceCond("-i", val, neg, func(f *flow) string { return f.in }))
	case "-o", "--out-interface":
		p.r.conds = append(p.r.conds, ifaceCond("-o", val, neg, func(f *flow) string { return f.out }))
	default:
		p.r.conds = append(p.r.conds, unknownCond(flag+" "+val))
	}
	return nil
}

// endModule turns the options collected for the current module into
// conditions.
func (p *ruleParser) endModule() error {
	if p.module == "" {
		return nil
	}
	m, opts := p.module, p.opts
	p.module, p.opts = "", nil
	cs, err := moduleConds(m, opts, p.r)
	if err != nil {
		return fmt.Errorf("-m %s: %w", m, err)
	}
	p.r.conds = append(p.r.conds, cs...)
	return nil
}
