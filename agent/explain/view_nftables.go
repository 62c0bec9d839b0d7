package explain

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
)

// nftView is the nftables backend's kernel: every table of the family
// (ours walked by the tracer with the others), and what the backend would
// write in ours for a state.
type nftView struct {
	tr   *trace.NFTables
	opts nftables.Options
}

func readNFTables(ctx context.Context, snap *daemon.Snapshot, fam model.Family) (view, error) {
	tr, err := kernel.NFTables(ctx, fam)
	if err != nil {
		return nil, err
	}
	v := &nftView{tr: tr, opts: nftables.Options{Family: fam}}
	if s := snap.Spec; s != nil && s.IPTables != nil && s.IPTables.MasqueradeBit != nil {
		v.opts.MasqueradeBit = int(*s.IPTables.MasqueradeBit)
	}
	return v, nil
}

func (v *nftView) tracer() trace.Tracer { return v.tr }

// ours is our table as read back, nil when the kernel has none.
func (v *nftView) ours() *trace.NFTable {
	fam := "ip"
	if v.opts.Family == model.IPv6 {
		fam = "ip6"
	}
	name := v.opts.Table
	if name == "" {
		name = nftables.DefaultTable
	}
	for _, t := range v.tr.Tables {
		if t.Family == fam && t.Name == name {
			return t
		}
	}
	return nil
}

// port is what our table holds for a service port: its own chains' rules
// and its frontends' elements in the maps.
func (v *nftView) port(s *model.Service) report.Kernel {
	k := report.Kernel{Backend: "nftables", Rules: map[string][]string{}, SetEntries: map[string][]string{}}
	t := v.ours()
	if t == nil {
		k.Error = "the kernel has no table " + nftables.DefaultTable
		return k
	}
	for _, c := range t.Chains {
		if nftables.ServiceChain(c.Name, s) {
			k.Rules[c.Name] = ruleTexts(t, c)
		}
	}
	keys := portKeys(s)
	for _, set := range []string{nftables.MapServices, nftables.MapNoEndpoints, nftables.MapEndpoints} {
		if st := t.Set(set); st != nil {
			for _, e := range st.Elems {
				if ofPort(e.Key, keys) {
					k.SetEntries[set] = append(k.SetEntries[set], nftables.ElemText(set, e))
				}
			}
		}
	}
	return k
}

func ruleTexts(t *trace.NFTable, c *trace.NFChain) []string {
	out := make([]string, 0, len(c.Rules))
	for _, r := range c.Rules {
		out = append(out, trace.NFRuleText(t, r))
	}
	return out
}

// portKeys are the map keys of a service port's frontends.
func portKeys(s *model.Service) [][]byte {
	var keys [][]byte
	for _, fe := range s.Frontends {
		if k, err := nftables.FrontendKey(fe, s.Protocol); err == nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// ofPort reports whether a map key is (or starts with) one of the keys.
func ofPort(key []byte, keys [][]byte) bool {
	for _, k := range keys {
		if bytes.HasPrefix(key, k) {
			return true
		}
	}
	return false
}

// diff compares our table with what the backend writes for st: chain
// names and rules in order, and the elements of the maps it fills (the
// affinity set is traffic's, not compared). With key, only that service
// port's chains and map elements.
func (v *nftView) diff(st *model.State, key string) ([]report.Difference, int) {
	want, err := nftables.DesiredTable(st, v.opts)
	if err != nil {
		return []report.Difference{{Kind: "differs", Object: "table", Detail: err.Error()}}, 0
	}
	have := v.ours()
	obj := "table " + want.Family + " " + want.Name
	if have == nil {
		return []report.Difference{{Kind: "missing", Object: obj, Service: key}}, 1
	}
	var svc *model.Service
	if key != "" {
		if svc = st.Service(key); svc == nil {
			return nil, 0
		}
	}
	out, n := v.chainDiff(want, have, svc)
	dd, m := v.elemDiff(want, have, st, svc)
	out = append(out, dd...)
	sortDiffs(out)
	return out, n + m
}

// chainDiff compares chains: those of svc only when it is set.
func (v *nftView) chainDiff(want, have *trace.NFTable, svc *model.Service) ([]report.Difference, int) {
	var out []report.Difference
	keep := func(name string) bool { return svc == nil || nftables.ServiceChain(name, svc) }
	key := ""
	if svc != nil {
		key = svc.Key
	}
	n := 0
	for _, c := range want.Chains {
		if !keep(c.Name) {
			continue
		}
		n++
		obj := "chain " + c.Name
		got := have.Chain(c.Name)
		if got == nil {
			out = append(out, report.Difference{Kind: "missing", Object: obj, Detail: fmt.Sprintf("%d rules", len(c.Rules)), Service: key})
			continue
		}
		w, g := ruleTexts(want, c), ruleTexts(have, got)
		if !sameOrder(w, g) {
			d := detail(lineDiff(w, g))
			if d == "" {
				d = "the same rules in another order"
			}
			out = append(out, report.Difference{Kind: "differs", Object: obj, Detail: d, Service: key})
		}
	}
	for _, c := range have.Chains {
		if !keep(c.Name) || want.Chain(c.Name) != nil {
			continue
		}
		out = append(out, report.Difference{Kind: "extra", Object: "chain " + c.Name, Detail: fmt.Sprintf("%d rules", len(c.Rules)), Service: key})
	}
	return out, n
}

// elemDiff compares the elements of the maps and sets the backend fills.
// The frontend-keyed maps' differences are told per service port.
func (v *nftView) elemDiff(want, have *trace.NFTable, st *model.State, svc *model.Service) ([]report.Difference, int) {
	var out []report.Difference
	var keys [][]byte
	key := ""
	if svc != nil {
		keys, key = portKeys(svc), svc.Key
	}
	owners := map[string]string{}
	for _, s := range st.Services {
		for _, k := range portKeys(s) {
			owners[string(k)] = s.Key
		}
	}
	n := 0
	for _, ws := range want.Sets {
		byPort := ws.Name == nftables.MapServices || ws.Name == nftables.MapNoEndpoints || ws.Name == nftables.MapEndpoints
		if ws.Name == nftables.SetAffinity || (svc != nil && !byPort) {
			continue
		}
		obj := "set " + ws.Name
		hs := have.Set(ws.Name)
		if hs == nil {
			out = append(out, report.Difference{Kind: "missing", Object: obj, Service: key})
			continue
		}
		w, g := elemTexts(ws, keys, owners, byPort), elemTexts(hs, keys, owners, byPort)
		for _, o := range sortedOwners(w, g) {
			n += len(w[o])
			if missing, extra := lineDiff(w[o], g[o]); len(missing)+len(extra) > 0 {
				out = append(out, report.Difference{Kind: "differs", Object: obj, Detail: detail(missing, extra), Service: o})
			}
		}
	}
	return out, n
}

// sortedOwners lists the service ports (and "" for none) of two groupings.
func sortedOwners(a, b map[string][]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range []map[string][]string{a, b} {
		for o := range m {
			if !seen[o] {
				seen[o] = true
				out = append(out, o)
			}
		}
	}
	sort.Strings(out)
	return out
}

// elemTexts renders a set's elements (with keys, only theirs), sorted
// and grouped by the service port whose frontend keys them (byPort), or
// all under "".
func elemTexts(s *trace.NFSet, keys [][]byte, owners map[string]string, byPort bool) map[string][]string {
	out := map[string][]string{}
	for _, e := range s.Elems {
		if keys != nil && !ofPort(e.Key, keys) {
			continue
		}
		o := ""
		if byPort {
			o = owner(e.Key, owners)
		}
		out[o] = append(out[o], nftables.ElemText(s.Name, e))
	}
	for _, l := range out {
		sort.Strings(l)
	}
	return out
}

// owner is the service port whose frontend starts a map key: an IPv4
// frontend key is 12 bytes, an IPv6 one 24.
func owner(key []byte, owners map[string]string) string {
	for _, l := range []int{12, 24} {
		if len(key) >= l {
			if o, ok := owners[string(key[:l])]; ok {
				return o
			}
		}
	}
	return ""
}
