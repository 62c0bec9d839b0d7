// Package tracetest checks packet traces against real packets: a
// backend's kernel tests install Watch in their TestMain, and every request
// any test sends through a topology with a "node" namespace is traced over
// the rules that namespace holds at that moment, then compared with what
// the packet really did (who answered, which client address the server
// saw, or how it failed). A disagreement fails the test that sent it.
package tracetest

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// Outcome is what a real request did.
type Outcome struct {
	// Kind is netns.Outcome of the request's error: ok, refused, timeout,
	// unreachable or error.
	Kind string
	// Server is the address ("ip:port") of the server that answered.
	Server string
	// ClientIP is the client address that server saw.
	ClientIP string
	// Listening reports whether something listens on an address
	// ("ip:port") for the request's protocol, so that a DNAT to a silent
	// address can explain a refusal or a timeout.
	Listening func(addr string) bool
}

// Agrees reports whether a real request's outcome is one the trace allows,
// and when it is not, says why. Every path counts, conditional ones too:
// the tracer cannot see an affinity entry's age or a round-robin counter.
func Agrees(res *trace.Result, o Outcome) (bool, string) {
	for _, p := range res.Paths {
		if pathAllows(res.Packet, p, o) {
			return true, ""
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the packet %s ended %s", res.Packet, o.Kind)
	if o.Kind == "ok" {
		fmt.Fprintf(&b, " (answered by %s, which saw client %s)", o.Server, o.ClientIP)
	}
	fmt.Fprintf(&b, ", but the trace allows only: %s", res.Summary())
	for i, p := range res.Paths {
		fmt.Fprintf(&b, "\n  path %d: %s %s masquerade=%t %s", i+1, p.Verdict, p.Endpoint, p.Masquerade, strings.Join(p.Conditions, "; "))
	}
	return false, b.String()
}

// pathAllows reports whether one path explains the outcome.
func pathAllows(pkt trace.Packet, p *trace.Path, o Outcome) bool {
	silent := p.Verdict == trace.VerdictDNAT && o.Listening != nil && !o.Listening(p.Endpoint)
	switch o.Kind {
	case "ok":
		return answered(pkt, p, o)
	case "refused":
		return p.Verdict == trace.VerdictReject || silent ||
			(p.Verdict == trace.VerdictNoRule && p.Delivery == "local")
	case "timeout":
		return p.Verdict == trace.VerdictDrop || silent ||
			(p.Verdict == trace.VerdictNoRule && p.Delivery == "forward")
	case "unreachable":
		return p.Verdict == trace.VerdictReject || silent || p.Delivery == "unroutable"
	}
	return false
}

// answered: the server that answered is where the path sends the packet,
// and it saw the client address the path says.
func answered(pkt trace.Packet, p *trace.Path, o Outcome) bool {
	var dst string
	switch p.Verdict {
	case trace.VerdictDNAT:
		dst = p.Endpoint
	case trace.VerdictNoRule:
		dst = netip.AddrPortFrom(pkt.Dst, pkt.DstPort).String()
	default:
		return false
	}
	if dst != o.Server {
		return false
	}
	seen, err := netip.ParseAddr(o.ClientIP)
	if err != nil {
		return false
	}
	if p.Masquerade && pkt.FromNode {
		// The node's own packet, masqueraded, leaves with the address of
		// its outgoing interface, which may be the address it had.
		return true
	}
	return p.Masquerade == (seen.Unmap() != pkt.Src)
}
