package tracetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Reader reads the Tracer of a backend for the family of the packet to
// trace (a node holds one rule set per family); it runs on a thread inside
// the node namespace.
type Reader func(ctx context.Context, fam model.Family) (trace.Tracer, error)

// NodeLabel is the label (netns.New) of the namespace whose rules are
// traced.
const NodeLabel = "node"

// Stats count what Watch checked.
type Stats struct {
	mu sync.Mutex
	// Checked requests agreed or disagreed with their trace; Disagreed
	// failed their test; Established rode on an existing conntrack entry
	// (a fixed source port used before), which the rules no longer decide.
	Checked, Disagreed, Established int
	tests                           map[string]bool
}

// Summary is one line for the test log.
func (s *Stats) Summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("packet tracer vs real packets: %d requests in %d tests checked, %d disagreed; %d skipped (established flows)",
		s.Checked, len(s.tests), s.Disagreed, s.Established)
}

// Watch makes every request of a topology with a "node" namespace be
// traced over that namespace's rules before it is sent, and compared with
// its outcome; call stop at the end of TestMain. A request whose trace
// disagrees with the packet fails the test that sent it.
func Watch(read Reader) (stats *Stats, stop func()) {
	stats = &Stats{tests: map[string]bool{}}
	return stats, netns.Observe(func(p netns.Probe) func(netns.Reply, error) {
		return observe(read, stats, p)
	})
}

// Main runs a test binary's tests with Watch installed, prints the
// summary, and exits: a TestMain is "func TestMain(m *testing.M) {
// tracetest.Main(m, reader) }".
func Main(m *testing.M, read Reader) {
	stats, stop := Watch(read)
	code := m.Run()
	stop()
	fmt.Println(stats.Summary())
	os.Exit(code)
}

// observe traces one request before it is sent, and returns the check of
// its outcome.
func observe(read Reader, stats *Stats, p netns.Probe) func(netns.Reply, error) {
	t := p.From.Test()
	node := sibling(p.From, NodeLabel)
	if t == nil || node == nil {
		return nil
	}
	pkt, err := packetOf(p, node)
	if err != nil {
		t.Errorf("trace check: %v", err)
		return nil
	}
	if pkt.SrcPort != 0 && (pkt.Proto == "udp" || pkt.Proto == "tcp") {
		if est, err := established(node, pkt); err != nil {
			t.Errorf("trace check: %v", err)
			return nil
		} else if est {
			stats.count(t, func(s *Stats) { s.Established++ })
			return nil
		}
	}
	var tr trace.Tracer
	fam := model.IPv4
	if pkt.Dst.Is6() && !pkt.Dst.Is4In6() {
		fam = model.IPv6
	}
	if err := node.Do(func() (err error) { tr, err = read(context.Background(), fam); return err }); err != nil {
		t.Errorf("trace check: read the rules of %s: %v", node.Name, err)
		return nil
	}
	res, err := tr.Trace(pkt)
	if err != nil {
		t.Errorf("trace check: trace %s: %v", pkt, err)
		return nil
	}
	return func(r netns.Reply, rerr error) {
		o := outcomeOf(p, r, rerr)
		ok, why := Agrees(res, o)
		stats.count(t, func(s *Stats) {
			s.Checked++
			if !ok {
				s.Disagreed++
			}
		})
		if !ok {
			t.Errorf("trace check (%s backend): %s", tr.Backend(), why)
		}
	}
}

func (s *Stats) count(t testing.TB, f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
	s.tests[t.Name()] = true
}

func sibling(n *netns.NS, label string) *netns.NS {
	for _, s := range n.Siblings() {
		if s.Label() == label {
			return s
		}
	}
	return nil
}

// packetOf is the first packet of a request: its source is the bound
// address, or the one the sending namespace's routing picks.
func packetOf(p netns.Probe, node *netns.NS) (trace.Packet, error) {
	dst, err := netip.ParseAddrPort(p.Target)
	if err != nil {
		return trace.Packet{}, fmt.Errorf("target %q: %w", p.Target, err)
	}
	pkt := trace.Packet{Proto: p.Proto, Dst: dst.Addr().Unmap(), DstPort: dst.Port(), FromNode: p.From == node}
	host, port := p.Local, ""
	if h, pt, err := net.SplitHostPort(p.Local); err == nil {
		host, port = h, pt
	}
	if port != "" && port != "0" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return pkt, fmt.Errorf("local %q: %w", p.Local, err)
		}
		pkt.SrcPort = uint16(n)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return pkt, fmt.Errorf("local %q: %w", p.Local, err)
		}
		pkt.Src = a.Unmap()
		return pkt, nil
	}
	err = p.From.Do(func() error {
		rs, err := netlink.RouteGet(net.IP(pkt.Dst.AsSlice()))
		if err != nil || len(rs) == 0 {
			return fmt.Errorf("no route to %s in %s: %v", pkt.Dst, p.From.Name, err)
		}
		a, ok := netip.AddrFromSlice(rs[0].Src)
		if !ok {
			return fmt.Errorf("no source address towards %s in %s", pkt.Dst, p.From.Name)
		}
		pkt.Src = a.Unmap()
		return nil
	})
	return pkt, err
}

// established reports whether the node's conntrack table has an entry of
// the request's flow (a fixed source port used before): its packets then
// follow that entry, not the rules. For TCP only an unanswered entry
// counts: a SYN on a closed or timed-wait tuple starts a new entry, but a
// SYN on a SYN_SENT one joins it.
func established(node *netns.NS, pkt trace.Packet) (bool, error) {
	fam := netlink.InetFamily(netlink.FAMILY_V4)
	if pkt.Src.Is6() {
		fam = netlink.FAMILY_V6
	}
	found := false
	err := node.Do(func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return fmt.Errorf("list conntrack entries in %s: %w", node.Name, err)
		}
		for _, f := range flows {
			src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
			dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
			if src.Unmap() == pkt.Src && f.Forward.SrcPort == pkt.SrcPort && protoName(f.Forward.Protocol) == pkt.Proto &&
				dst.Unmap() == pkt.Dst && f.Forward.DstPort == pkt.DstPort && (pkt.Proto != "tcp" || conntrack.Unanswered(f)) {
				found = true
			}
		}
		return nil
	})
	return found, err
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// outcomeOf turns a request's reply or error into an Outcome, finding the
// answering server's address among the topology's echo servers.
func outcomeOf(p netns.Probe, r netns.Reply, err error) Outcome {
	o := Outcome{Kind: netns.Outcome(err), ClientIP: r.ClientIP()}
	sibs := p.From.Siblings()
	if err == nil {
		for _, s := range sibs {
			for _, a := range s.ServerAddrs(r.Server) {
				if proto, addr, _ := strings.Cut(a, "/"); proto == p.Proto {
					o.Server = addr
				}
			}
		}
	}
	o.Listening = func(addr string) bool {
		for _, s := range sibs {
			if s.Listening(p.Proto, addr) {
				return true
			}
		}
		return false
	}
	return o
}
