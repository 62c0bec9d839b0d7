package trace

import (
	"fmt"
	"sort"

	"github.com/google/nftables/expr"
)

// NFTable is one nftables table as the kernel holds it: its chains with
// their rules' expressions, and its sets and maps with their elements.
type NFTable struct {
	// Family is ip, ip6 or inet.
	Family string     `json:"family"`
	Name   string     `json:"name"`
	Chains []*NFChain `json:"chains"`
	Sets   []*NFSet   `json:"sets,omitempty"`
}

// NFChain is a chain; a base chain has a hook.
type NFChain struct {
	Name string `json:"name"`
	// Hook is PREROUTING, INPUT, FORWARD, OUTPUT or POSTROUTING for a base
	// chain, "" for a regular one (or a hook the tracer does not walk).
	Hook string `json:"hook,omitempty"`
	// Type is filter, nat or route.
	Type     string `json:"type,omitempty"`
	Priority int32  `json:"priority,omitempty"`
	// Policy is a base chain's policy: accept or drop.
	Policy string   `json:"policy,omitempty"`
	Rules  []NFRule `json:"rules,omitempty"`
}

// NFRule is one rule: its expressions as the kernel returned them.
type NFRule struct {
	Handle uint64     `json:"handle,omitempty"`
	Exprs  []expr.Any `json:"-"`
	// Bad says why (some of) the rule's expressions could not be read;
	// the tracer then reports it as an unknown rule.
	Bad string `json:"bad,omitempty"`
}

// NFSet is a set or map with its elements.
type NFSet struct {
	Name string `json:"name"`
	// Map: elements map keys to data or verdicts.
	Map bool `json:"map,omitempty"`
	// Timeout: elements expire (a dynamic set such as the affinity set).
	Timeout bool     `json:"timeout,omitempty"`
	Elems   []NFElem `json:"elems,omitempty"`
}

// NFElem is an element: its key and, in a map, its data or verdict.
type NFElem struct {
	Key     []byte        `json:"key"`
	Data    []byte        `json:"data,omitempty"`
	Verdict *expr.Verdict `json:"verdict,omitempty"`
}

// Set returns the set or map of that name, or nil.
func (t *NFTable) Set(name string) *NFSet {
	for _, s := range t.Sets {
		if s != nil && s.Name == name {
			return s
		}
	}
	return nil
}

// Chain returns the chain of that name, or nil.
func (t *NFTable) Chain(name string) *NFChain {
	for _, c := range t.Chains {
		if c != nil && c.Name == name {
			return c
		}
	}
	return nil
}

// NFTables traces packets through the nftables tables of a node's family
// (ip or ip6, and inet): the nat and filter base chains at the hooks a
// packet meets, in priority order, as the kernel runs them.
//
// It interprets the expressions the synterix nftables backend writes
// (payload, meta, cmp, bitwise, lookups in sets and verdict maps, numgen,
// jhash, ct state and status, fib address type, dynset, dnat, masquerade,
// reject, verdicts), which also covers kube-proxy-like tables beside ours.
// It is built for our table's layout, not as a general nftables emulator:
// an expression it does not know makes its rule an "unknown rule" step,
// followed both as matching and as not matching, never a crash. Other
// base chain types (route), and filter chains at prerouting and
// postrouting, are not walked (a note says so).
type NFTables struct {
	Tables []*NFTable `json:"tables"`
	Env    Env        `json:"env"`
}

// Backend implements Tracer.
func (t *NFTables) Backend() string { return "nftables" }

// Trace implements Tracer.
func (t *NFTables) Trace(p Packet) (*Result, error) {
	fam := "ip6"
	if p.Src.Unmap().Is4() {
		fam = "ip"
	}
	n := &nftWalk{byHook: map[string][]nftBase{}, index: map[*NFSet]*nftIndex{}, texts: map[*NFChain][]string{}}
	for _, tb := range t.Tables {
		if tb == nil || (tb.Family != fam && tb.Family != "inet") {
			continue
		}
		for _, c := range tb.Chains {
			if c == nil || c.Hook == "" {
				continue
			}
			if (c.Type == "nat" || c.Type == "filter") && !(c.Type == "filter" && (c.Hook == "PREROUTING" || c.Hook == "POSTROUTING")) {
				n.byHook[c.Hook+" "+c.Type] = append(n.byHook[c.Hook+" "+c.Type], nftBase{tb, c})
			} else if len(c.Rules) > 0 {
				n.skipped = append(n.skipped, fmt.Sprintf("%s %s %s/%s", tb.Family, tb.Name, c.Hook, c.Name))
			}
		}
	}
	for _, cs := range n.byHook {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].c.Priority < cs[j].c.Priority })
	}
	w := newWalker(nil, &t.Env)
	w.hooks = n.hook
	for _, s := range n.skipped {
		w.note("base chain %s is not walked (only nat and filter chains at the hooks of the iptables tables are)", s)
	}
	return walkPacket(t.Backend(), w, p, nil)
}

// nftBase is a base chain with its table.
type nftBase struct {
	t *NFTable
	c *NFChain
}

// nftWalk holds the base chains of one trace by hook and type, and the
// sets' elements indexed by key as lookups need them.
type nftWalk struct {
	byHook  map[string][]nftBase
	skipped []string
	index   map[*NFSet]*nftIndex
	// texts caches the rendering of each rule met, by chain and position.
	texts map[*NFChain][]string
}

// ruleText renders rule i of a chain once per trace.
func (n *nftWalk) ruleText(t *NFTable, c *NFChain, i int) string {
	ts := n.texts[c]
	if ts == nil {
		ts = make([]string, len(c.Rules))
		n.texts[c] = ts
	}
	if ts[i] == "" {
		ts[i] = nftRuleText(t, c.Rules[i])
	}
	return ts[i]
}

// hook runs the base chains of a hook and type in priority order. An
// accept ends one base chain, not the hook: the next chain still sees the
// packet. A drop or reject ends the packet; a NAT ends the nat chains of
// the hook (the kernel consults nat chains until one sets up a mapping).
func (n *nftWalk) hook(w *walker, hook, typ string, f *flow) []exit {
	flows := []*flow{f}
	var out []exit
	for _, b := range n.byHook[hook+" "+typ] {
		var next []*flow
		for _, fl := range flows {
			fl.hook = hook
			for _, e := range n.run(w, b.t, b.c, 0, fl, 0) {
				switch {
				case e.kind == exitReturn && b.c.Policy == "drop":
					e.f.steps = append(e.f.steps, Step{Hook: hook, Table: tableName(b.t), Chain: b.c.Name, Effect: "policy drop"})
					out = append(out, exit{f: e.f, kind: exitDrop})
				case e.kind == exitReturn || e.kind == exitAccept:
					next = append(next, e.f)
				default:
					out = append(out, e)
				}
			}
		}
		flows = next
	}
	for _, fl := range flows {
		out = append(out, exit{f: fl, kind: exitAccept})
	}
	return out
}

func tableName(t *NFTable) string { return t.Family + " " + t.Name }

// run evaluates a chain's rules from rule idx for a flow; a flow that
// forks is followed on each branch.
func (n *nftWalk) run(w *walker, t *NFTable, c *NFChain, idx int, f *flow, depth int) []exit {
	if depth > maxDepth {
		w.fail(fmt.Errorf("jumps nested deeper than %d at chain %s", maxDepth, c.Name))
		return nil
	}
	var out []exit
	for i := idx; i < len(c.Rules); i++ {
		if w.err != nil {
			return nil
		}
		if w.evals++; w.evals > maxRules {
			w.fail(errTooBig)
			return nil
		}
		res := n.evalRule(w, t, c, i, f)
		if len(res) == 1 && !res[0].matched && res[0].f == f && res[0].why == "" {
			continue // a plain miss
		}
		for _, r := range res {
			out = append(out, n.outcome(w, t, c, i, r, depth)...)
		}
		return out
	}
	if depth > 0 {
		f.steps = append(f.steps, Step{Hook: f.hook, Table: tableName(t), Chain: c.Name, Effect: "end of chain: back to the calling chain"})
	}
	return append(out, exit{f: f, kind: exitReturn})
}

// outcome continues the walk after one outcome of rule i: the next rule,
// a jump or goto, or the end of the chain with a verdict.
func (n *nftWalk) outcome(w *walker, t *NFTable, c *NFChain, i int, r ruleResult, depth int) []exit {
	f := r.f
	next := func() []exit { return n.run(w, t, c, i+1, f, depth) }
	step := Step{Hook: f.hook, Table: tableName(t), Chain: c.Name, Rule: i + 1, Text: r.text}
	record := func(effect string) { step.Effect = effect; f.steps = append(f.steps, step) }
	if !r.matched {
		if r.why != "" {
			record("not taken: " + r.why)
		}
		return next()
	}
	if r.end != exitReturn {
		record(r.effect)
		return []exit{{f: f, kind: r.end}}
	}
	v := r.verdict
	if v == nil {
		record(orText(r.effect, "matched (no verdict)"))
		return next()
	}
	switch v.Kind {
	case expr.VerdictAccept:
		record(withEffect(r.effect, "accept"))
		return []exit{{f: f, kind: exitAccept}}
	case expr.VerdictDrop:
		record(withEffect(r.effect, "drop"))
		return []exit{{f: f, kind: exitDrop}}
	case expr.VerdictReturn:
		record(withEffect(r.effect, "return"))
		return []exit{{f: f, kind: exitReturn}}
	case expr.VerdictContinue:
		record(withEffect(r.effect, "continue"))
		return next()
	case expr.VerdictJump, expr.VerdictGoto:
		return n.jump(w, t, c, i, r, v, depth, record)
	}
	w.note("verdict %d in %s/%s is not followed; the walk goes on", v.Kind, tableName(t), c.Name)
	record(withEffect(r.effect, fmt.Sprintf("verdict %d (not followed)", v.Kind)))
	return next()
}

// jump enters a chain; a flow that returns from a jump continues after
// the rule, one that returns from a goto returns from this chain.
func (n *nftWalk) jump(w *walker, t *NFTable, c *NFChain, i int, r ruleResult, v *expr.Verdict, depth int, record func(string)) []exit {
	verb := "jump to "
	if v.Kind == expr.VerdictGoto {
		verb = "go to "
	}
	record(withEffect(r.effect, verb+v.Chain))
	to := t.Chain(v.Chain)
	if to == nil {
		w.note("chain %s of table %s does not exist; treated as empty", v.Chain, tableName(t))
		to = &NFChain{Name: v.Chain}
	}
	var out []exit
	for _, e := range n.run(w, t, to, 0, r.f, depth+1) {
		if e.kind != exitReturn || v.Kind == expr.VerdictGoto {
			out = append(out, e)
			continue
		}
		out = append(out, n.run(w, t, c, i+1, e.f, depth)...)
	}
	return out
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func withEffect(effect, verdict string) string {
	if effect == "" {
		return verdict
	}
	return effect + "; " + verdict
}
