package explain

import (
	"context"
	"fmt"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// iptablesView is the iptables backend's kernel: the rules iptables-save
// prints, and what the backend would write for a state.
type iptablesView struct {
	tr          *trace.IPTables
	opts        iptables.Options
	randomFully bool
}

func readIPTables(ctx context.Context, snap *daemon.Snapshot, fam model.Family) (view, error) {
	mode := snap.IPTablesMode
	if mode == xtables.ModeAuto {
		var err error
		if mode, err = xtables.DetectMode(ctx); err != nil {
			return nil, err
		}
	}
	tr, err := kernel.IPTables(ctx, fam, mode)
	if err != nil {
		return nil, err
	}
	r, err := xtables.NewRunner(fam, mode)
	if err != nil {
		return nil, err
	}
	rf, err := xtables.HasRandomFully(ctx, r)
	if err != nil {
		return nil, err
	}
	v := &iptablesView{tr: tr, randomFully: rf, opts: iptables.Options{Mode: mode, Family: fam}}
	if s := snap.Spec; s != nil && s.IPTables != nil && s.IPTables.MasqueradeBit != nil {
		v.opts.MasqueradeBit = int(*s.IPTables.MasqueradeBit)
	}
	return v, nil
}

func (v *iptablesView) tracer() trace.Tracer { return v.tr }

// owns reports whether a shared chain's rule belongs to a service port:
// its comment starts with the port's key.
func owns(r *trace.Rule, key string) bool { return strings.HasPrefix(r.Comment, key+" ") }

func (v *iptablesView) port(s *model.Service) report.Kernel {
	k := report.Kernel{Backend: "iptables", Rules: map[string][]string{}}
	for _, c := range iptables.ServiceChains(s.Key) {
		if ch := v.tr.Rules.Chain("nat", c); ch != nil {
			k.Rules["nat "+c] = texts(ch.Rules, nil)
		}
	}
	for c, table := range iptables.SharedChains() {
		if ch := v.tr.Rules.Chain(table, c); ch != nil {
			if rules := texts(ch.Rules, func(r *trace.Rule) bool { return owns(r, s.Key) }); len(rules) > 0 {
				k.Rules[table+" "+c] = rules
			}
		}
	}
	return k
}

func texts(rules []*trace.Rule, keep func(*trace.Rule) bool) []string {
	var out []string
	for _, r := range rules {
		if keep == nil || keep(r) {
			out = append(out, r.Text)
		}
	}
	return out
}

// diff compares our chains and jumps with what the backend would write
// for st. Shared chains compare as multisets (partial syncs append to
// them); the others in order.
func (v *iptablesView) diff(st *model.State, key string) ([]report.Difference, int) {
	d, err := iptables.DesiredFor(st, v.opts, v.randomFully)
	if err != nil {
		return []report.Difference{{Kind: "differs", Object: "rules", Detail: err.Error()}}, 0
	}
	shared := iptables.SharedChains()
	mine := map[string]bool{}
	for _, c := range iptables.ServiceChains(key) {
		mine[c] = true
	}
	var out []report.Difference
	compared := 0
	for table, chains := range d.Chains {
		for c, want := range chains {
			if key != "" && !mine[c] && shared[c] == "" {
				continue
			}
			compared++
			if dd, ok := v.chainDiff(table, c, want, key, shared[c] != ""); !ok {
				out = append(out, dd)
			}
		}
		out = append(out, v.extraChains(table, chains, key, mine)...)
	}
	if key == "" {
		for _, j := range d.Jumps {
			compared++
			if !v.hasJump(j) {
				out = append(out, report.Difference{Kind: "missing", Object: "jump " + j.Table + " " + j.Chain, Detail: j.Saved()})
			}
		}
	}
	sortDiffs(out)
	return out, compared
}

// chainDiff compares one chain; with key, a shared chain only on the
// port's entries.
func (v *iptablesView) chainDiff(table, c string, want []string, key string, shared bool) (report.Difference, bool) {
	obj := "chain " + table + " " + c
	ch := v.tr.Rules.Chain(table, c)
	if ch == nil {
		return report.Difference{Kind: "missing", Object: obj, Detail: fmt.Sprintf("%d rules", len(want)), Service: key}, false
	}
	var keep func(*trace.Rule) bool
	if shared && key != "" {
		keep = func(r *trace.Rule) bool { return owns(r, key) }
		var w []string
		for _, r := range want {
			if strings.Contains(r, `"`+key+" ") {
				w = append(w, r)
			}
		}
		want = w
	}
	got := texts(ch.Rules, keep)
	if shared {
		if missing, extra := lineDiff(want, got); len(missing)+len(extra) > 0 {
			return report.Difference{Kind: "differs", Object: obj, Detail: detail(missing, extra), Service: key}, false
		}
		return report.Difference{}, true
	}
	if !sameOrder(want, got) {
		missing, extra := lineDiff(want, got)
		d := detail(missing, extra)
		if d == "" {
			d = "the same rules in another order"
		}
		return report.Difference{Kind: "differs", Object: obj, Detail: d, Service: key}, false
	}
	return report.Difference{}, true
}

// extraChains lists our chains the kernel holds and st does not want (all
// of them, or with key the port's own).
func (v *iptablesView) extraChains(table string, want map[string][]string, key string, mine map[string]bool) []report.Difference {
	t := v.tr.Rules.Tables[table]
	if t == nil {
		return nil
	}
	var out []report.Difference
	for c, ch := range t.Chains {
		if !strings.HasPrefix(c, iptables.ChainPrefix) || want[c] != nil {
			continue
		}
		if _, declared := want[c]; declared || (key != "" && !mine[c]) {
			continue
		}
		out = append(out, report.Difference{Kind: "extra", Object: "chain " + table + " " + c, Detail: fmt.Sprintf("%d rules", len(ch.Rules)), Service: key})
	}
	return out
}

func (v *iptablesView) hasJump(j xtables.Jump) bool {
	ch := v.tr.Rules.Chain(j.Table, j.Chain)
	if ch == nil {
		return false
	}
	want := j.Saved()
	for _, r := range ch.Rules {
		if r.Text == want {
			return true
		}
	}
	return false
}
