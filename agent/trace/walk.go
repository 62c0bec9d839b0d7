package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// flow is one way a packet goes, as the walk follows it: the packet as
// rewritten so far, what happened to it, and how likely it is.
type flow struct {
	prob  float64
	conds []string
	proto string
	src   netip.Addr
	dst   netip.Addr
	sport uint16
	dport uint16
	// in and out are the interfaces the packet arrives on and leaves
	// through, "" when unknown or none.
	in, out string
	mark    uint32
	// dnat: the destination was rewritten (by a rule or IPVS); ctdnat:
	// by conntrack NAT, which --ctstate DNAT matches.
	dnat, ctdnat bool
	masq         bool
	reject       string
	hook         string
	steps        []Step
}

// fork copies a flow for one branch of a decision.
func (f *flow) fork() *flow {
	c := *f
	c.conds = append([]string(nil), f.conds...)
	c.steps = append([]Step(nil), f.steps...)
	return &c
}

// exitKind is how a walk of a chain ends for a flow.
type exitKind int

const (
	exitReturn exitKind = iota // fell off the end, or RETURN
	exitAccept
	exitDrop
	exitReject
	// exitNAT ends a nat chain: DNAT, SNAT or MASQUERADE was applied.
	exitNAT
)

type exit struct {
	f    *flow
	kind exitKind
}

// cond is one match of a rule; eval says whether a flow matches, as one
// or more alternatives when the walk cannot know (statistic, unknown
// kernel state).
type cond struct {
	text string
	eval func(w *walker, f *flow) []alt
}

// alt is one alternative outcome of a match: prob multiplies the flow's
// probability; cond, when set, is the condition the outcome needs.
type alt struct {
	matched bool
	prob    float64
	cond    string
}

func yes(b bool) []alt { return []alt{{matched: b, prob: 1}} }

// Limits of one walk, so that a pathological ruleset cannot hang the
// agent: jumps nested deeper than maxDepth, more than maxPaths ways, or
// more than maxRules rule evaluations stop the trace with an error.
const (
	maxDepth = 64
	maxPaths = 4096
	maxRules = 5_000_000
)

var errTooBig = errors.New("the rules branch too much to trace")

// walker walks flows through one ruleset.
type walker struct {
	rs    *Ruleset
	env   *Env
	notes map[string]bool
	evals int
	paths int
	err   error
	// hooks, when set, runs the chains of a hook in place of rs (the
	// nftables tracer); table is "nat" or "filter".
	hooks func(w *walker, hook, table string, f *flow) []exit
}

// hookChains runs what a hook holds of a kind of table for a flow.
func (w *walker) hookChains(hook, table string, f *flow) []exit {
	if w.hooks != nil {
		return w.hooks(w, hook, table, f)
	}
	return w.chain(hook, table, hook, f)
}

func newWalker(rs *Ruleset, env *Env) *walker {
	if env == nil {
		env = &Env{}
	}
	if rs == nil {
		rs = &Ruleset{Tables: map[string]*Table{}}
	}
	return &walker{rs: rs, env: env, notes: map[string]bool{}}
}

func (w *walker) note(format string, args ...any) { w.notes[fmt.Sprintf(format, args...)] = true }

func (w *walker) sortedNotes() []string {
	out := make([]string, 0, len(w.notes))
	for n := range w.notes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// chain runs a built-in chain of a table for a hook: a flow that falls off
// its end gets the chain's policy. A table or chain that is absent lets
// everything through.
func (w *walker) chain(hook, table, chain string, f *flow) []exit {
	t := w.rs.Tables[table]
	if t == nil || t.Chains[chain] == nil {
		return []exit{{f: f, kind: exitAccept}}
	}
	f.hook = hook
	var out []exit
	for _, e := range w.run(t, chain, 0, f, 0) {
		if e.kind == exitReturn {
			pol := t.Chains[chain].Policy
			e.kind = exitAccept
			if pol == "DROP" {
				e.kind = exitDrop
				e.f.steps = append(e.f.steps, Step{Hook: hook, Table: table, Chain: chain, Effect: "policy DROP"})
			}
		}
		out = append(out, e)
	}
	return out
}

// run evaluates the rules of a chain from rule idx for a flow. A flow that
// forks is followed on each branch.
func (w *walker) run(t *Table, chain string, idx int, f *flow, depth int) []exit {
	c := t.Chains[chain]
	if c == nil {
		w.note("chain %s of table %s does not exist; treated as empty", chain, t.Name)
		return []exit{{f: f, kind: exitReturn}}
	}
	if depth > maxDepth {
		w.fail(fmt.Errorf("jumps nested deeper than %d at chain %s", maxDepth, chain))
		return nil
	}
	var out []exit
	for i := idx; i < len(c.Rules); i++ {
		if w.err != nil {
			return nil
		}
		r := c.Rules[i]
		matched, missed := w.match(t, chain, i, r, f)
		if len(matched) == 0 && len(missed) == 1 && missed[0] == f {
			continue // a plain miss: on to the next rule
		}
		for _, m := range missed {
			out = append(out, w.run(t, chain, i+1, m, depth)...)
		}
		if len(matched) == 0 {
			return out
		}
		for _, m := range matched[1:] {
			out = append(out, w.target(t, chain, i, r, m, depth)...)
		}
		// The first matching flow goes on in this loop when the target
		// lets it continue in this chain; target handles that by
		// recursion, so stop here.
		return append(out, w.target(t, chain, i, r, matched[0], depth)...)
	}
	if c.Policy == "" && depth > 0 {
		f.steps = append(f.steps, Step{Hook: f.hook, Table: t.Name, Chain: chain, Effect: "end of chain: back to the calling chain"})
	}
	return append(out, exit{f: f, kind: exitReturn})
}

func (w *walker) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// match evaluates a rule's conditions in order: it returns the flows that
// match and, when a condition forked, the flows that do not (a flow that
// simply does not match is returned in missed too, unchanged).
func (w *walker) match(t *Table, chain string, i int, r *Rule, f *flow) (matched, missed []*flow) {
	w.evals++
	if w.evals > maxRules {
		w.fail(errTooBig)
		return nil, nil
	}
	if r.bad != "" {
		w.note("rule %d of %s/%s is not understood (%s) and is treated as not matching: %s", i+1, t.Name, chain, r.bad, r.Text)
		return nil, []*flow{f}
	}
	cur := []*flow{f}
	for _, c := range r.conds {
		var next []*flow
		for _, fl := range cur {
			alts := c.eval(w, fl)
			for _, a := range alts {
				g := fl
				if len(alts) > 1 {
					if w.paths++; w.paths > maxPaths {
						w.fail(errTooBig)
						return nil, nil
					}
					g = fl.fork()
				}
				g.prob *= a.prob
				if a.cond != "" {
					g.conds = append(g.conds, a.cond)
				}
				if len(alts) > 1 && !a.matched {
					g.steps = append(g.steps, Step{Hook: g.hook, Table: t.Name, Chain: chain, Rule: i + 1, Text: r.Text,
						Effect: "not taken: " + describeAlt(c, a)})
				}
				if a.matched {
					next = append(next, g)
				} else {
					missed = append(missed, g)
				}
			}
		}
		if cur = next; len(cur) == 0 {
			break
		}
	}
	return cur, missed
}

func describeAlt(c cond, a alt) string {
	if a.cond != "" {
		return a.cond
	}
	return fmt.Sprintf("%s did not pick it (%s of what reaches the rule goes on)", c.text, Percent(a.prob))
}

// target applies a matching rule's target to a flow, and continues the
// walk where the target says.
func (w *walker) target(t *Table, chain string, i int, r *Rule, f *flow, depth int) []exit {
	step := Step{Hook: f.hook, Table: t.Name, Chain: chain, Rule: i + 1, Text: r.Text}
	record := func(effect string) { step.Effect = effect; f.steps = append(f.steps, step) }
	cont := func() []exit { return w.run(t, chain, i+1, f, depth) }
	switch r.Target {
	case "":
		record("matched (no target)")
		return cont()
	case "ACCEPT":
		record("ACCEPT")
		return []exit{{f: f, kind: exitAccept}}
	case "DROP":
		record("DROP")
		return []exit{{f: f, kind: exitDrop}}
	case "REJECT":
		f.reject = r.Args["reject-with"]
		record("REJECT")
		return []exit{{f: f, kind: exitReject}}
	case "RETURN":
		record("RETURN")
		return []exit{{f: f, kind: exitReturn}}
	case "DNAT":
		return w.dnat(r, f, record)
	case "MASQUERADE", "SNAT":
		f.masq = true
		record(r.Target + ": the source becomes the node's address")
		return []exit{{f: f, kind: exitNAT}}
	case "MARK":
		if err := applyMark(f, r.Args); err != nil {
			w.note("rule %d of %s/%s: %v", i+1, t.Name, chain, err)
		}
		record(fmt.Sprintf("mark is now %#x", f.mark))
		return cont()
	}
	if t.Chains[r.Target] != nil {
		return w.jump(t, chain, i, r, f, depth, record)
	}
	w.note("target %s is not followed; the walk assumes it does not stop the packet", r.Target)
	record(r.Target + " (not followed)")
	return cont()
}

// jump enters a user chain (-j) or goes to it (-g); a flow that returns
// from a jump continues after the jumping rule, one that returns from a
// goto returns from the current chain.
func (w *walker) jump(t *Table, chain string, i int, r *Rule, f *flow, depth int, record func(string)) []exit {
	verb := "jump to "
	if r.Goto {
		verb = "go to "
	}
	record(verb + r.Target)
	var out []exit
	for _, e := range w.run(t, r.Target, 0, f, depth+1) {
		if e.kind != exitReturn || r.Goto {
			out = append(out, e)
			continue
		}
		out = append(out, w.run(t, chain, i+1, e.f, depth)...)
	}
	return out
}

// dnat rewrites the destination to --to-destination.
func (w *walker) dnat(r *Rule, f *flow, record func(string)) []exit {
	to := r.Args["to-destination"]
	a, port, err := parseNATAddr(to, f.dport)
	if err != nil {
		w.note("DNAT %q not understood: %v", to, err)
		record("DNAT (destination not understood)")
		return []exit{{f: f, kind: exitNAT}}
	}
	f.dst, f.dport, f.dnat, f.ctdnat = a, port, true, true
	record("DNAT to " + netip.AddrPortFrom(a, port).String())
	return []exit{{f: f, kind: exitNAT}}
}

// parseNATAddr reads "ip", "ip:port", "[ip6]:port" or ranges (their first
// address and port).
func parseNATAddr(s string, defPort uint16) (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), ap.Port(), nil
	}
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["): // [ip6]:port
		if j := strings.IndexByte(s, ']'); j > 0 {
			host, port = s[1:j], strings.TrimPrefix(s[j+1:], ":")
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
	}
	host, _, _ = strings.Cut(host, "-")
	port, _, _ = strings.Cut(port, "-")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if port == "" {
		return a, defPort, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return a, uint16(n), nil
}

// applyMark applies the MARK target's options.
func applyMark(f *flow, args map[string]string) error {
	for _, k := range []string{"set-xmark", "set-mark", "or-mark", "and-mark", "xor-mark"} {
		v, ok := args[k]
		if !ok {
			continue
		}
		val, mask, err := parseMark(v)
		if err != nil {
			return err
		}
		switch k {
		case "set-xmark":
			f.mark = (f.mark &^ mask) ^ val
		case "set-mark":
			f.mark = (f.mark &^ mask) | val
		case "or-mark":
			f.mark |= val
		case "and-mark":
			f.mark &= val
		case "xor-mark":
			f.mark ^= val
		}
		return nil
	}
	return fmt.Errorf("MARK without a known option")
}

// parseMark reads "value[/mask]"; the mask defaults to every bit.
func parseMark(s string) (val, mask uint32, err error) {
	v, m, hasMask := strings.Cut(s, "/")
	x, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("mark %q: %w", s, err)
	}
	mask = 0xffffffff
	if hasMask {
		y, err := strconv.ParseUint(m, 0, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("mark %q: %w", s, err)
		}
		mask = uint32(y)
	}
	return uint32(x), mask, nil
}

func addrPort(f *flow) string { return netip.AddrPortFrom(f.dst, f.dport).String() }
