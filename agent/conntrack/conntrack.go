// Package conntrack deletes conntrack entries that a service change has
// made wrong, through netlink: one table dump and one delete message per
// entry, no process per entry.
//
// The nat table sees only a flow's first packet; later packets follow the
// conntrack entry it made. Two cases need an explicit delete:
//   - a UDP endpoint went away: UDP has no teardown, so flows DNATed to it
//     would keep going nowhere until they expire;
//   - a frontend became served (it is new, or it had no endpoints): flows
//     that reached it before were recorded un-NATed. A UDP flow would stay
//     black-holed. A TCP connection that was never answered leaves a
//     SYN_SENT entry for 120 s, and a new connection that the kernel gives
//     the same source port joins it, skips the nat table and leaves
//     untranslated ("network unreachable"). SCTP likewise. For TCP and
//     SCTP only untranslated entries go, and for TCP only unanswered ones:
//     a connection that a host process on the frontend's address answered
//     is left alone.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// flowKey identifies a NATed flow: the frontend the client addressed and the
// endpoint that answers.
type flowKey struct {
	Frontend netip.AddrPort
	Endpoint netip.AddrPort
}

// Frontend is a protocol and an address and port a client sends to.
type Frontend struct {
	Protocol model.Protocol
	netip.AddrPort
}

// Plan lists the flows to delete.
type Plan struct {
	// Stale are UDP flows from a frontend to an endpoint that no longer
	// serves it.
	Stale []flowKey
	// NewlyServed are frontends of any protocol that had no endpoints (or
	// did not exist) and now have some: their un-NATed flows go (every UDP
	// flow, and the unanswered TCP and the SCTP ones, see the package
	// comment).
	NewlyServed []Frontend
}

// Empty reports whether there is nothing to delete.
func (p Plan) Empty() bool { return len(p.Stale) == 0 && len(p.NewlyServed) == 0 }

func (p Plan) String() string {
	return fmt.Sprintf("%d stale endpoint flow(s), %d newly served frontend(s)", len(p.Stale), len(p.NewlyServed))
}

// Compute compares two states and returns the flows to delete. A nil old
// state means nothing was programmed before: every frontend with endpoints
// counts as newly served.
func Compute(old, cur *model.State) Plan {
	oldBy, curBy := byKey(old), byKey(cur)
	p := Plan{Stale: staleUDP(oldBy, curBy), NewlyServed: newlyServed(oldBy, curBy)}
	sort.Slice(p.Stale, func(i, j int) bool {
		if p.Stale[i].Frontend != p.Stale[j].Frontend {
			return p.Stale[i].Frontend.Compare(p.Stale[j].Frontend) < 0
		}
		return p.Stale[i].Endpoint.Compare(p.Stale[j].Endpoint) < 0
	})
	sort.Slice(p.NewlyServed, func(i, j int) bool {
		a, b := p.NewlyServed[i], p.NewlyServed[j]
		if a.AddrPort != b.AddrPort {
			return a.AddrPort.Compare(b.AddrPort) < 0
		}
		return a.Protocol < b.Protocol
	})
	return p
}

func byKey(st *model.State) map[string]*model.Service {
	m := map[string]*model.Service{}
	if st != nil {
		for _, s := range st.Services {
			m[s.Key] = s
		}
	}
	return m
}

// staleUDP lists the UDP flows whose endpoint no longer serves their
// frontend.
func staleUDP(oldBy, curBy map[string]*model.Service) []flowKey {
	stale := map[flowKey]bool{}
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
	out := make([]flowKey, 0, len(stale))
	for k := range stale {
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// newlyServed lists the frontends that have endpoints now and had none (or
// did not exist) before.
func newlyServed(oldBy, curBy map[string]*model.Service) []Frontend {
	served := map[Frontend]bool{}
	for key, ns := range curBy {
		os := oldBy[key]
		for _, f := range ns.Frontends {
			if len(ns.Endpoints(f.Kind)) == 0 {
				continue
			}
			if os == nil || !hasFrontend(os, f) || len(os.Endpoints(f.Kind)) == 0 {
				served[Frontend{ns.Protocol, f.AddrPort()}] = true
			}
		}
	}
	var out []Frontend
	for f := range served {
		out = append(out, f)
	}
	return out
}

func hasFrontend(s *model.Service, f model.Frontend) bool {
	for _, g := range s.Frontends {
		if g.Kind == f.Kind && g.AddrPort() == f.AddrPort() {
			return true
		}
	}
	return false
}

// filter matches conntrack flows against a plan in O(1) per flow.
type filter struct {
	stale  map[flowKey]bool
	served map[Frontend]bool
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// protocolOf maps a conntrack protocol number to the model's protocol.
func protocolOf(p uint8) model.Protocol {
	switch p {
	case unix.IPPROTO_TCP:
		return model.TCP
	case unix.IPPROTO_UDP:
		return model.UDP
	case unix.IPPROTO_SCTP:
		return model.SCTP
	}
	return ""
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f *filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	proto := protocolOf(flow.Forward.Protocol)
	dst := addrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	// The reply comes from the endpoint the flow was DNATed to, or from
	// the frontend itself when it was not translated.
	from := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	switch proto {
	case model.UDP:
		return f.served[Frontend{proto, dst}] || f.stale[flowKey{dst, from}]
	case model.TCP:
		return f.served[Frontend{proto, dst}] && from == dst && Unanswered(flow)
	case model.SCTP:
		return f.served[Frontend{proto, dst}] && from == dst
	}
	return false
}

// Unanswered reports whether a TCP flow never got past its SYN: a new SYN
// on its tuple joins it rather than starting a new entry.
func Unanswered(flow *netlink.ConntrackFlow) bool {
	info, ok := flow.ProtoInfo.(*netlink.ProtoInfoTCP)
	return ok && (info.State == nl.TCP_CONNTRACK_SYN_SENT || info.State == nl.TCP_CONNTRACK_SYN_SENT2)
}

// Apply deletes the planned flows from the conntrack table of the calling
// thread's network namespace and returns how many it deleted.
func Apply(p Plan, family model.Family) (uint, error) {
	if p.Empty() {
		return 0, nil
	}
	f := &filter{stale: map[flowKey]bool{}, served: map[Frontend]bool{}}
	for _, k := range p.Stale {
		f.stale[k] = true
	}
	for _, fe := range p.NewlyServed {
		f.served[fe] = true
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
		return n, fmt.Errorf("delete stale conntrack entries: %w", err)
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
