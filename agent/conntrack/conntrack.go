// Package conntrack removes stale UDP conntrack entries after a service
// change, through netlink: one table dump and one delete message per stale
// entry, no process per entry.
//
// UDP has no connection teardown, so a conntrack entry keeps steering a
// client's flow to the endpoint (or the black hole) chosen for its first
// packet until it expires. Two cases need an explicit delete:
//   - an endpoint went away: flows DNATed to it would go nowhere;
//   - a frontend gained its first endpoint: flows that hit the frontend
//     while it had none were recorded un-NATed and would stay black-holed.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// flowKey identifies a NATed flow: the frontend the client addressed and the
// endpoint that answers.
type flowKey struct {
	Frontend netip.AddrPort
	Endpoint netip.AddrPort
}

// Plan lists the UDP flows to delete.
type Plan struct {
	// Stale are flows from a frontend to an endpoint that no longer serves
	// it.
	Stale []flowKey
	// NewlyServed are frontends that had no endpoints and now have some:
	// every flow addressed to them goes.
	NewlyServed []netip.AddrPort
}

// Empty reports whether there is nothing to delete.
func (p Plan) Empty() bool { return len(p.Stale) == 0 && len(p.NewlyServed) == 0 }

func (p Plan) String() string {
	return fmt.Sprintf("%d stale endpoint flow(s), %d newly served frontend(s)", len(p.Stale), len(p.NewlyServed))
}

// Compute compares two states and returns the UDP flows to delete. A nil
// old state means nothing was programmed before: every UDP frontend with
// endpoints counts as newly served.
func Compute(old, cur *model.State) Plan {
	var p Plan
	curBy := map[string]*model.Service{}
	if cur != nil {
		for _, s := range cur.Services {
			curBy[s.Key] = s
		}
	}
	oldBy := map[string]*model.Service{}
	if old != nil {
		for _, s := range old.Services {
			oldBy[s.Key] = s
		}
	}
	stale := map[flowKey]bool{}
	served := map[netip.AddrPort]bool{}
	for key, os := range oldBy {
		if os.Protocol != model.UDP {
			continue
		}
		ns := curBy[key]
		for _, f := range os.Frontends {
			now := map[netip.AddrPort]bool{}
			if ns != nil && hasFrontend(ns, f) {
				for _, e := range ns.Endpoints(f.Kind) {
					now[e.AddrPort()] = true
				}
			}
			for _, e := range os.Endpoints(f.Kind) {
				if !now[e.AddrPort()] {
					stale[flowKey{f.AddrPort(), e.AddrPort()}] = true
				}
			}
		}
	}
	for key, ns := range curBy {
		if ns.Protocol != model.UDP {
			continue
		}
		os := oldBy[key]
		for _, f := range ns.Frontends {
			if len(ns.Endpoints(f.Kind)) == 0 {
				continue
			}
			if os == nil || !hasFrontend(os, f) || len(os.Endpoints(f.Kind)) == 0 {
				served[f.AddrPort()] = true
			}
		}
	}
	for k := range stale {
		p.Stale = append(p.Stale, k)
	}
	for a := range served {
		p.NewlyServed = append(p.NewlyServed, a)
	}
	sort.Slice(p.Stale, func(i, j int) bool {
		if p.Stale[i].Frontend != p.Stale[j].Frontend {
			return p.Stale[i].Frontend.Compare(p.Stale[j].Frontend) < 0
		}
		return p.Stale[i].Endpoint.Compare(p.Stale[j].Endpoint) < 0
	})
	sort.Slice(p.NewlyServed, func(i, j int) bool { return p.NewlyServed[i].Compare(p.NewlyServed[j]) < 0 })
	return p
}

func hasFrontend(s *model.Service, f model.Frontend) bool {
	for _, g := range s.Frontends {
		if g.Kind == f.Kind && g.AddrPort() == f.AddrPort() {
			return true
		}
	}
	return false
}

// filter matches UDP conntrack flows against a plan in O(1) per flow.
type filter struct {
	stale  map[flowKey]bool
	served map[netip.AddrPort]bool
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f *filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst := addrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	if f.served[dst] {
		return true
	}
	// The reply comes from the endpoint the flow was DNATed to.
	ep := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	return f.stale[flowKey{dst, ep}]
}

// Apply deletes the planned flows from the conntrack table of the calling
// thread's network namespace and returns how many it deleted.
func Apply(p Plan, family model.Family) (uint, error) {
	if p.Empty() {
		return 0, nil
	}
	f := &filter{stale: map[flowKey]bool{}, served: map[netip.AddrPort]bool{}}
	for _, k := range p.Stale {
		f.stale[k] = true
	}
	for _, a := range p.NewlyServed {
		f.served[a] = true
	}
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("open netfilter netlink socket: %w", err)
	}
	defer h.Close()
	fam := netlink.InetFamily(unix.AF_INET)
	if family == model.IPv6 {
		fam = netlink.InetFamily(unix.AF_INET6)
	}
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
	if err != nil {
		return n, fmt.Errorf("delete stale UDP conntrack entries: %w", err)
	}
	return n, nil
}

// Clean computes and applies the plan for a state change.
func Clean(old, cur *model.State) (uint, error) {
	fam := model.IPv4
	if cur != nil && cur.Family != "" {
		fam = cur.Family
	}
	return Apply(Compute(old, cur), fam)
}
