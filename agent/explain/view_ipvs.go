package explain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/ipvs"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
)

// ipvsView is the IPVS backend's kernel: virtual servers, ipsets, glue
// rules and the addresses of the dummy interface.
type ipvsView struct {
	tr    *trace.IPVS
	cfg   ipvs.Config
	fam   model.Family
	dummy []netip.Addr
}

func readIPVS(ctx context.Context, snap *daemon.Snapshot, fam model.Family) (view, error) {
	tr, err := kernel.IPVS(ctx, fam, snap.IPTablesMode)
	if err != nil {
		return nil, err
	}
	v := &ipvsView{tr: tr, fam: fam, cfg: ipvs.Config{Family: fam}}
	if s := snap.Spec; s != nil && s.IPVS != nil {
		v.cfg.Scheduler = string(s.IPVS.Scheduler)
	}
	link, err := netlink.LinkByName(ipvs.DefaultDummyInterface)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
	case err != nil:
		return nil, fmt.Errorf("read interface %s: %w", ipvs.DefaultDummyInterface, err)
	default:
		nlFam := netlink.FAMILY_V4
		if fam == model.IPv6 {
			nlFam = netlink.FAMILY_V6
		}
		addrs, err := netlink.AddrList(link, nlFam)
		if err != nil {
			return nil, fmt.Errorf("read the addresses of %s: %w", ipvs.DefaultDummyInterface, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				v.dummy = append(v.dummy, ip.Unmap())
			}
		}
	}
	return v, nil
}

func (v *ipvsView) tracer() trace.Tracer { return v.tr }

func (v *ipvsView) port(s *model.Service) report.Kernel {
	k := report.Kernel{Backend: "ipvs", SetEntries: map[string][]string{}}
	want := map[string]bool{}
	var prefixes []string
	for _, f := range s.Frontends {
		want[frontendKey(string(f.Protocol), f.Addr, uint16(f.Port))] = true
		prefixes = append(prefixes, fmt.Sprintf("%s,%s:%d", f.Addr.Unmap(), strings.ToLower(string(f.Protocol)), f.Port))
	}
	for _, vs := range v.tr.Services {
		if want[frontendKey(vs.Proto, vs.Addr, vs.Port)] {
			k.VirtualServers = append(k.VirtualServers, vs)
		}
	}
	for name, set := range v.tr.Env.Sets {
		if !strings.HasPrefix(name, "SYNXIPVS") {
			continue
		}
		for _, m := range set.Members {
			for _, p := range prefixes {
				if m == p || strings.HasPrefix(m, p+",") {
					k.SetEntries[name] = append(k.SetEntries[name], m)
				}
			}
		}
	}
	return k
}

// diff compares virtual servers (those the backend owns), and, for the
// whole node, the ipsets, the glue chains and the VIPs. Destinations at
// weight 0 are draining connections, not drift.
func (v *ipvsView) diff(st *model.State, key string) ([]report.Difference, int) {
	d, err := ipvs.DesiredFor(st, v.cfg)
	if err != nil {
		return []report.Difference{{Kind: "differs", Object: "ipvs", Detail: err.Error()}}, 0
	}
	out, compared := v.serverDiff(d, key)
	if key == "" {
		dd, n := v.setDiff(d)
		out, compared = append(out, dd...), compared+n
		dd, n = v.glueDiff(d)
		out, compared = append(out, dd...), compared+n
		dd, n = v.vipDiff(d)
		out, compared = append(out, dd...), compared+n
	}
	sortDiffs(out)
	return out, compared
}

func (v *ipvsView) serverDiff(d ipvs.Desired, key string) ([]report.Difference, int) {
	have := map[string]trace.VirtualServer{}
	for _, vs := range v.tr.Services {
		have[frontendKey(vs.Proto, vs.Addr, vs.Port)] = vs
	}
	owned := v.tr.Env.Sets[ipvs.OwnedSet(v.fam)]
	var out []report.Difference
	wanted := map[string]bool{}
	for _, ds := range d.Servers {
		if key != "" && ds.Source != key {
			continue
		}
		k := frontendKey(ds.Proto, ds.Addr, ds.Port)
		wanted[k] = true
		obj := "virtual server " + netip.AddrPortFrom(ds.Addr, ds.Port).String() + "/" + ds.Proto
		vs, ok := have[k]
		if !ok {
			out = append(out, report.Difference{Kind: "missing", Object: obj, Service: ds.Source})
			continue
		}
		if det := serverDetail(ds, vs); det != "" {
			out = append(out, report.Difference{Kind: "differs", Object: obj, Detail: det, Service: ds.Source})
		}
	}
	if key == "" && owned != nil {
		for _, m := range owned.Members {
			if !wanted[ownedKey(m)] && have[ownedKey(m)].Proto != "" {
				out = append(out, report.Difference{Kind: "extra", Object: "virtual server " + m, Detail: "owned by the agent and no longer wanted"})
			}
		}
	}
	return out, len(wanted)
}

// ownedKey turns an owned-set member "10.96.0.10,tcp:80" into a frontend key.
func ownedKey(m string) string {
	a, pp, _ := strings.Cut(m, ",")
	proto, port, _ := strings.Cut(pp, ":")
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return m
	}
	return proto + "/" + netip.AddrPortFrom(ip, parsePort(port)).String()
}

func parsePort(s string) uint16 {
	var n uint16
	_, _ = fmt.Sscanf(s, "%d", &n)
	return n
}

// serverDetail says how a kernel virtual server differs from the desired
// one: scheduler, persistence, destinations with a weight.
func serverDetail(ds ipvs.DesiredServer, vs trace.VirtualServer) string {
	var parts []string
	if ds.Scheduler != vs.Scheduler {
		parts = append(parts, fmt.Sprintf("scheduler %s, want %s", vs.Scheduler, ds.Scheduler))
	}
	if ds.Persistent != vs.Persistent || ds.Persistent && ds.Timeout != vs.Timeout {
		parts = append(parts, fmt.Sprintf("persistence %t/%ds, want %t/%ds", vs.Persistent, vs.Timeout, ds.Persistent, ds.Timeout))
	}
	var want, got []string
	for _, d := range ds.Dests {
		want = append(want, d.String())
	}
	for _, d := range vs.Dests {
		if d.Weight > 0 {
			got = append(got, netip.AddrPortFrom(d.Addr, d.Port).String())
		}
	}
	if missing, extra := lineDiff(want, got); len(missing)+len(extra) > 0 {
		parts = append(parts, "destinations "+detail(missing, extra))
	}
	return strings.Join(parts, "; ")
}

func (v *ipvsView) setDiff(d ipvs.Desired) ([]report.Difference, int) {
	var out []report.Difference
	for name, want := range d.Sets {
		have := v.tr.Env.Sets[name]
		if have == nil {
			out = append(out, report.Difference{Kind: "missing", Object: "ipset " + name, Detail: want.Type})
			continue
		}
		if missing, extra := lineDiff(want.Members, have.Members); len(missing)+len(extra) > 0 {
			out = append(out, report.Difference{Kind: "differs", Object: "ipset " + name, Detail: detail(missing, extra)})
		}
	}
	return out, len(d.Sets)
}

func (v *ipvsView) glueDiff(d ipvs.Desired) ([]report.Difference, int) {
	want, err := trace.ParseSave(strings.NewReader(d.SaveText()))
	if err != nil {
		return []report.Difference{{Kind: "differs", Object: "glue", Detail: err.Error()}}, 0
	}
	var out []report.Difference
	n := 0
	for table, chains := range d.Chains {
		for _, c := range chains {
			n++
			obj := "chain " + table + " " + c
			got := v.tr.Rules.Chain(table, c)
			if got == nil {
				out = append(out, report.Difference{Kind: "missing", Object: obj})
				continue
			}
			w, g := texts(want.Chain(table, c).Rules, nil), texts(got.Rules, nil)
			if !sameOrder(w, g) {
				out = append(out, report.Difference{Kind: "differs", Object: obj, Detail: detail(lineDiff(w, g))})
			}
		}
	}
	for _, j := range d.Jumps {
		n++
		if !(&iptablesView{tr: &trace.IPTables{Rules: v.tr.Rules}}).hasJump(j) {
			out = append(out, report.Difference{Kind: "missing", Object: "jump " + j.Table + " " + j.Chain, Detail: j.Saved()})
		}
	}
	return out, n
}

func (v *ipvsView) vipDiff(d ipvs.Desired) ([]report.Difference, int) {
	var out []report.Difference
	for _, a := range d.VIPs {
		if !slices.Contains(v.dummy, a) {
			out = append(out, report.Difference{Kind: "missing", Object: "address " + a.String() + " on " + d.Dummy})
		}
	}
	for _, a := range v.dummy {
		if !slices.Contains(d.VIPs, a) {
			out = append(out, report.Difference{Kind: "extra", Object: "address " + a.String() + " on " + d.Dummy})
		}
	}
	return out, len(d.VIPs)
}
