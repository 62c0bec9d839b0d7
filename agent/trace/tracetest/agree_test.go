package tracetest

import (
	"net/netip"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// TestAgreesOnTheSeenClient: a masqueraded path must change the address the
// endpoint sees, except for the node's own packet, whose masquerade address
// (its outgoing interface's) may be the one it had.
func TestAgreesOnTheSeenClient(t *testing.T) {
	node, pod := netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.244.1.5")
	cases := []struct {
		name       string
		src        netip.Addr
		fromNode   bool
		masquerade bool
		seen       string
		want       bool
	}{
		{"node's packet masqueraded to its own address", node, true, true, "10.77.0.11", true},
		{"node's packet masqueraded to another address", node, true, true, "10.244.1.1", true},
		{"node's packet not masqueraded", node, true, false, "10.77.0.11", true},
		{"node's packet not masqueraded yet seen otherwise", node, true, false, "10.244.1.1", false},
		{"pod's packet masqueraded", pod, false, true, "10.77.0.11", true},
		{"pod's packet masqueraded yet seen unchanged", pod, false, true, "10.244.1.5", false},
		{"pod's packet not masqueraded", pod, false, false, "10.244.1.5", true},
	}
	for _, c := range cases {
		res := &trace.Result{
			Packet: trace.Packet{Proto: "tcp", Src: c.src, Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 80, FromNode: c.fromNode},
			Paths:  []*trace.Path{{Probability: 1, Verdict: trace.VerdictDNAT, Endpoint: "10.244.2.9:8080", Masquerade: c.masquerade}},
		}
		got, why := Agrees(res, Outcome{Kind: "ok", Server: "10.244.2.9:8080", ClientIP: c.seen})
		if got != c.want {
			t.Errorf("%s: Agrees = %t, want %t (%s)", c.name, got, c.want, why)
		}
	}
}
