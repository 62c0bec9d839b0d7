// Package trace walks a packet through the rules a node's kernel holds and
// says what happens to it: each rule it meets, the endpoints it may reach
// with their probabilities, whether it is masqueraded, and the verdict
// (DNAT, DROP, REJECT, or no rule).
//
// It is kube-proxy's packet tracer of its unit tests, turned towards the
// kernel: its input is what a node holds (iptables-save text, IPVS virtual
// servers, ipset members, nftables tables), read back by package
// trace/kernel, never what the agent meant to write. The package is pure:
// it reads no kernel and can be tested on text. One Tracer per backend
// (IPTables, IPVS, NFTables).
package trace

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Tracer walks packets through one node's rules.
type Tracer interface {
	// Backend names what is traced, e.g. "iptables".
	Backend() string
	// Trace follows the first packet of a new connection.
	Trace(p Packet) (*Result, error)
}

// Packet is the first packet of a new connection.
type Packet struct {
	// Proto is tcp, udp or sctp.
	Proto string     `json:"proto"`
	Src   netip.Addr `json:"src"`
	// SrcPort is 0 when any source port will do.
	SrcPort uint16     `json:"srcPort,omitempty"`
	Dst     netip.Addr `json:"dst"`
	DstPort uint16     `json:"dstPort"`
	// FromNode is true for a packet the node itself sends (its OUTPUT
	// path); otherwise it arrives on one of the node's interfaces.
	FromNode bool `json:"fromNode,omitempty"`
}

func (p Packet) String() string {
	from := p.Src.String()
	if p.SrcPort != 0 {
		from = netip.AddrPortFrom(p.Src, p.SrcPort).String()
	}
	return fmt.Sprintf("%s %s -> %s", p.Proto, from, netip.AddrPortFrom(p.Dst, p.DstPort))
}

// Validate checks that a packet can be traced.
func (p Packet) Validate() error {
	switch p.Proto {
	case "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("protocol %q: want tcp, udp or sctp", p.Proto)
	}
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return fmt.Errorf("source and destination addresses are required")
	}
	if p.Src.Unmap().Is4() != p.Dst.Unmap().Is4() {
		return fmt.Errorf("source %s and destination %s are not of the same IP family", p.Src, p.Dst)
	}
	if p.DstPort == 0 {
		return fmt.Errorf("a destination port is required")
	}
	return nil
}

// Verdict is what finally happens to a packet.
type Verdict string

// Verdicts.
const (
	// VerdictDNAT: the destination was rewritten to an endpoint.
	VerdictDNAT Verdict = "DNAT"
	// VerdictDrop: dropped; the client times out.
	VerdictDrop Verdict = "DROP"
	// VerdictReject: rejected; the client is refused at once.
	VerdictReject Verdict = "REJECT"
	// VerdictNoRule: no rule rewrote or stopped the packet; it goes where
	// routing sends it, unchanged.
	VerdictNoRule Verdict = "NoRule"
)

// Step is one rule (or chain policy, or kernel table lookup) a packet met.
type Step struct {
	// Hook is the netfilter hook: PREROUTING, INPUT, FORWARD, OUTPUT,
	// POSTROUTING.
	Hook  string `json:"hook"`
	Table string `json:"table,omitempty"`
	Chain string `json:"chain,omitempty"`
	// Rule is the rule's position in its chain, from 1; 0 for a chain's
	// policy or a kernel lookup.
	Rule int `json:"rule,omitempty"`
	// Text is the rule as iptables-save prints it (after "-A CHAIN").
	Text string `json:"text,omitempty"`
	// Effect says what the rule did to this packet.
	Effect string `json:"effect"`
}

func (s Step) String() string {
	where := s.Hook
	if s.Table != "" {
		where += " " + s.Table
	}
	if s.Chain != "" {
		where += " " + s.Chain
	}
	if s.Rule > 0 {
		where += fmt.Sprintf(" #%d", s.Rule)
	}
	if s.Text != "" {
		return fmt.Sprintf("%s: %s => %s", where, s.Text, s.Effect)
	}
	return where + ": " + s.Effect
}

// Path is one way a packet can go: the rules it met and where it ends.
type Path struct {
	// Probability is the share of new connections that take this path,
	// given its Conditions.
	Probability float64 `json:"probability"`
	// Conditions are facts about kernel state the tracer cannot see (an
	// affinity entry's age, a round-robin counter), under which the path
	// is taken.
	Conditions []string `json:"conditions,omitempty"`
	Verdict    Verdict  `json:"verdict"`
	// Endpoint is the address:port the packet is sent to after DNAT.
	Endpoint string `json:"endpoint,omitempty"`
	// Masquerade is true when the packet leaves with the node's address as
	// its source (MASQUERADE or SNAT).
	Masquerade bool `json:"masquerade"`
	// Delivery is "local" when the packet is delivered to the node itself,
	// "forward" when it is routed out, "unroutable" when no route leads to
	// its destination.
	Delivery string `json:"delivery,omitempty"`
	// Reject is the REJECT target's option (e.g. icmp-port-unreachable).
	Reject string `json:"reject,omitempty"`
	Steps  []Step `json:"steps"`
}

// Result is the trace of one packet.
type Result struct {
	Backend string  `json:"backend"`
	Packet  Packet  `json:"packet"`
	Paths   []*Path `json:"paths"`
	// Notes say what the tracer could not follow exactly (unsupported
	// matches, tables it does not read).
	Notes []string `json:"notes,omitempty"`
}

// Verdicts returns the distinct verdicts of the paths, sorted.
func (r *Result) Verdicts() []Verdict {
	seen := map[Verdict]bool{}
	var out []Verdict
	for _, p := range r.Paths {
		if !seen[p.Verdict] {
			seen[p.Verdict] = true
			out = append(out, p.Verdict)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Endpoints returns each endpoint a DNAT path reaches with its summed
// probability among the unconditional paths (conditional paths count
// their probability only when no unconditional path exists).
func (r *Result) Endpoints() map[string]float64 {
	out := map[string]float64{}
	for _, p := range r.Paths {
		if p.Verdict == VerdictDNAT && len(p.Conditions) == 0 {
			out[p.Endpoint] += p.Probability
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, p := range r.Paths {
		if p.Verdict == VerdictDNAT {
			out[p.Endpoint] = max(out[p.Endpoint], p.Probability)
		}
	}
	return out
}

// Summary is the verdict in one line, e.g. "DNAT to 10.0.1.5:8080 (50%),
// 10.0.2.7:8080 (50%); not masqueraded".
func (r *Result) Summary() string {
	vs := r.Verdicts()
	if len(vs) == 0 {
		return "no path"
	}
	var parts []string
	for _, v := range vs {
		parts = append(parts, r.summaryOf(v))
	}
	return strings.Join(parts, "; or ")
}

func (r *Result) summaryOf(v Verdict) string {
	switch v {
	case VerdictDNAT:
		eps := r.Endpoints()
		keys := make([]string, 0, len(eps))
		for k := range eps {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("DNAT to ")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", k, Percent(eps[k]))
		}
		b.WriteString("; " + r.masqueradeSummary())
		return b.String()
	case VerdictNoRule:
		for _, p := range r.Paths {
			if p.Verdict == v && p.Delivery == "local" {
				return "no rule: delivered to the node itself unchanged"
			}
		}
		for _, p := range r.Paths {
			if p.Verdict == v && p.Delivery == "unroutable" {
				return "no rule, and no route to the destination"
			}
		}
		return "no rule: routed unchanged"
	case VerdictReject:
		return "REJECT (the client is refused)"
	}
	return string(v) + " (the client times out)"
}

func (r *Result) masqueradeSummary() string {
	yes, no := 0, 0
	for _, p := range r.Paths {
		if p.Verdict != VerdictDNAT {
			continue
		}
		if p.Masquerade {
			yes++
		} else {
			no++
		}
	}
	switch {
	case no == 0:
		return "masqueraded (the endpoint sees the node's address)"
	case yes == 0:
		return "not masqueraded (the endpoint sees the client's address)"
	}
	return "masqueraded on some paths"
}

// Percent renders a probability as a short percentage.
func Percent(p float64) string {
	s := fmt.Sprintf("%.1f", p*100)
	s = strings.TrimSuffix(s, ".0")
	return s + "%"
}
