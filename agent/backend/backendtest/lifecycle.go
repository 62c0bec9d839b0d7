package backendtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Scenarios lists every scenario in the order Run runs them.
var Scenarios = []Scenario{
	{Name: "Distribution", Run: Distribution},
	{Name: "RoundRobin", Run: RoundRobin},
	{Name: "Affinity", Run: Affinity},
	{Name: "RejectVersusDrop", Run: RejectVersusDrop},
	{Name: "SourceRanges", Run: SourceRanges},
	{Name: "ExternalFrontends", Run: ExternalFrontends},
	{Name: "Hairpin", Run: Hairpin},
	{Name: "SamePortDifferentProtocols", Run: SamePortDifferentProtocols},
	{Name: "LocalhostNodePort", Run: LocalhostNodePort},
	{Name: "ExternalIPs", Run: ExternalIPs},
	{Name: "InternalTrafficPolicyLocal", Run: InternalTrafficPolicyLocal},
	{Name: "NodePortAddresses", Run: NodePortAddresses},
	{Name: "LocalTrafficDetection", Run: LocalTrafficDetection},
	{Name: "UDPEndpointReplaced", Run: UDPEndpointReplaced},
	{Name: "UDPFirstEndpoint", Run: UDPFirstEndpoint},
	{Name: "TCPFirstEndpoint", Run: TCPFirstEndpoint},
	{Name: "FlushRecovery", Run: FlushRecovery},
	{Name: "AdoptAndIdempotence", Run: AdoptAndIdempotence},
	{Name: "PartialSync", Run: PartialSync},
	{Name: "CleanupRestoresTables", Run: CleanupRestoresTables},
	{Name: "OwnedMatchesTheKernel", Run: OwnedMatchesTheKernel},
	{Name: "DualStack", Run: DualStack, DualStack: true},
}

// UDPEndpointReplaced: a UDP flow (fixed client port, so one conntrack
// entry) follows its Service when the endpoint is replaced, once the stale
// conntrack entry is deleted after the sync, as the agent's sync core does
// after every backend's sync. The old server keeps running, so a stale
// entry would visibly keep answering from it; the control run without
// conntrack cleanup shows exactly that: the rules alone do not move the
// flow.
func UDPEndpointReplaced(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name  string
		clean bool
		want  string
	}{
		{"with cleanup", true, "10.211.1.3"},
		{"control without cleanup", false, "10.211.1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := NewTopo(t, h)
			sync := func() backend.SyncResult {
				res := tp.Sync(false)
				if tc.clean {
					tp.CleanConntrack()
				}
				return res
			}
			tp.Put(Svc{Name: "dns", ClusterIP: VIP, Proto: corev1.ProtocolUDP, Port: 53, Eps: []Ep{{IP: "10.211.1.2"}}})
			sync()
			opts := netns.RequestOptions{Local: tp.At(ClientIP, 40001)}
			for i := 0; i < 3; i++ {
				if r, err := tp.Client.Request("udp", tp.At(VIP, 53), opts); err != nil || r.Server != tp.IP("10.211.1.2") {
					t.Fatalf("before: %+v %v", r, err)
				}
			}
			tp.Put(Svc{Name: "dns", ClusterIP: VIP, Proto: corev1.ProtocolUDP, Port: 53, Eps: []Ep{{IP: "10.211.1.3"}}})
			if res := sync(); res.Full && !h.EverySyncFull {
				t.Errorf("endpoint change caused a full sync")
			}
			r, err := tp.Client.Request("udp", tp.At(VIP, 53), opts)
			if !tc.clean && h.Limited(t, "UDPEndpointReplaced/control without cleanup") {
				t.Logf("without cleanup the flow got %+v %v", r, err)
				return
			}
			if err != nil || r.Server != tp.IP(tc.want) {
				t.Errorf("after replacing the endpoint: got %+v %v, want answer from %s", r, err, tc.want)
			}
		})
	}
}

// UDPFirstEndpoint: datagrams sent to a VIP before it had rules are routed
// out of the uplink and recorded un-NATed. Once the Service gets its first
// endpoint, that entry must be deleted after the sync (the sync core's
// conntrack step) or the flow stays black-holed.
func UDPFirstEndpoint(t *testing.T, h Harness) {
	firstEndpoint(t, h, "UDPFirstEndpoint", corev1.ProtocolUDP, 53, 40002)
}

// TCPFirstEndpoint: a SYN sent to a VIP before it had rules leaves an
// un-NATed, unanswered conntrack entry (SYN_SENT, 120 s). A new connection
// that the kernel gives the same source port later matches that entry,
// skips the nat table and leaves untranslated: the client gets "network
// unreachable" or a timeout although the Service is programmed. The
// conntrack step must delete such entries once the frontend is served.
func TCPFirstEndpoint(t *testing.T, h Harness) {
	firstEndpoint(t, h, "TCPFirstEndpoint", corev1.ProtocolTCP, 80, 40003)
}

// firstEndpoint sends to a VIP from a fixed client port before its Service
// exists, then adds the Service with one endpoint and sends again from the
// same port: with the conntrack step the endpoint answers; without it (the
// control) the stale entry still sends the packet out untranslated.
func firstEndpoint(t *testing.T, h Harness, name string, proto corev1.Protocol, port int32, localPort int) {
	nw := strings.ToLower(string(proto))
	for _, tc := range []struct {
		name  string
		clean bool
		want  string
	}{
		{"with cleanup", true, "ok"},
		{"control without cleanup", false, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := NewTopo(t, h)
			sync := func() {
				tp.Sync(false)
				if tc.clean {
					tp.CleanConntrack()
				}
			}
			sync() // no services yet
			opts := netns.RequestOptions{Local: tp.At(ClientIP, localPort), Timeout: time.Second}
			if _, err := tp.Client.Request(nw, tp.At(VIP, int(port)), opts); netns.Outcome(err) != "timeout" {
				t.Fatalf("before the service exists: outcome %s (%v), want timeout", netns.Outcome(err), err)
			}
			tp.Put(Svc{Name: "first", ClusterIP: VIP, Proto: proto, Port: port, Eps: []Ep{{IP: "10.211.2.2"}}})
			sync()
			_, err := tp.Client.Request(nw, tp.At(VIP, int(port)), opts)
			if !tc.clean && h.Limited(t, name+"/control without cleanup") {
				t.Logf("without cleanup the flow's outcome: %s (%v)", netns.Outcome(err), err)
				return
			}
			if got := netns.Outcome(err); got != tc.want {
				t.Errorf("after the first endpoint appeared: outcome %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

// FlushRecovery: after another program wipes our rules, the next sync
// notices (canary) and restores everything; emptying only the dispatch is
// repaired by a full sync.
func FlushRecovery(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, Eps: FourEndpoints()})
	tp.Sync(false)
	// check wants the outcome want of a request to the Service; "!ok" is
	// any failure.
	check := func(stage, want string) {
		t.Helper()
		_, err := tp.Client.Request("tcp", tp.At(VIP, 80), netns.RequestOptions{Timeout: time.Second})
		got := netns.Outcome(err)
		if got != want && (want != "!ok" || got == "ok") {
			t.Fatalf("%s: outcome %s (%v), want %s", stage, got, err, want)
		}
	}
	check("initial", "ok")
	want := tp.Dump()

	tp.Wipe()
	check("after wiping our rules", "timeout")
	res := tp.Sync(false) // asked for a partial sync
	if !res.Full {
		t.Errorf("canary did not turn the sync into a full one")
	}
	check("after resync", "ok")
	if got := tp.Dump(); got != want {
		t.Errorf("rules after recovery differ from the original:\n%s", DiffLines(want, got))
	}

	tp.WipeDispatch()
	// Refused where the frontend's address stays local (IPVS's VIPs on
	// its dummy interface), dropped where it is routed on.
	check("after emptying the dispatch", "!ok")
	tp.Sync(true)
	check("after full sync", "ok")
	if got := tp.Dump(); got != want {
		t.Errorf("rules after full sync differ from the original:\n%s", DiffLines(want, got))
	}
}

// AdoptAndIdempotence: a second sync of the same state writes nothing; a
// new backend instance (agent restart) adopts the rules without writing
// either, and traffic never stops.
func AdoptAndIdempotence(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Cfg.LocalhostNodePorts = true
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, NodePort: 30080, LBIP: "203.0.113.10", Ranges: []string{"10.210.0.0/24"},
		Affinity: 60, Eps: FourEndpoints()})
	tp.Put(Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30081, ETPLocal: true, Eps: []Ep{{IP: "10.211.2.2"}}})
	tp.Put(Svc{Name: "empty", ClusterIP: "10.96.0.12", Port: 80})
	tp.Put(Svc{Name: "dns", ClusterIP: "10.96.0.13", Proto: corev1.ProtocolSCTP, Port: 53, Eps: []Ep{{IP: "10.211.2.2"}}})
	if res := tp.Sync(false); res.Rules == 0 || !res.Full {
		t.Fatalf("first sync: %+v", res)
	}
	if res := tp.Sync(false); res.Rules != 0 || (res.Full && !h.EverySyncFull) {
		t.Errorf("second partial sync of the same state wrote %d rules (full=%v)", res.Rules, res.Full)
	}
	if res := tp.Sync(true); res.Rules != 0 {
		t.Errorf("full sync of the same state rewrote %d rules: what the kernel shows differs from what we render", res.Rules)
	}
	before := tp.Dump()
	tp.Restart()
	if res := tp.Sync(false); !res.Full || res.Rules != 0 {
		t.Errorf("restarted backend: %+v, want a full sync that writes nothing", res)
	}
	if got := tp.Dump(); got != before {
		t.Errorf("adoption changed rules:\n%s", DiffLines(before, got))
	}
	if _, err := tp.Client.Request("tcp", tp.At(VIP, 80), netns.RequestOptions{}); err != nil {
		t.Errorf("traffic after restart: %v", err)
	}
}

// PartialSync: changing one endpoint rewrites only that Service; adding and
// removing Services edits the dispatch entry by entry; traffic follows, and
// a full sync afterwards finds nothing to change.
func PartialSync(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	for i := 0; i < 20; i++ {
		tp.Put(Svc{Name: fmt.Sprintf("s%02d", i), ClusterIP: fmt.Sprintf("10.96.1.%d", i+1), Port: 80, Eps: FourEndpoints()})
	}
	tp.Sync(false)
	tp.Put(Svc{Name: "s07", ClusterIP: "10.96.1.8", Port: 80, Eps: []Ep{{IP: "10.211.2.4"}}})
	res := tp.Sync(false)
	if (res.Full && !h.EverySyncFull) || res.Changed != 1 {
		t.Errorf("one endpoint change: %+v, want a partial sync of one service", res)
	}
	if res.Rules != h.OneEndpointWrites {
		t.Errorf("one endpoint change wrote %d rules, want %d", res.Rules, h.OneEndpointWrites)
	}
	got := tp.Client.Tally("tcp", tp.At("10.96.1.8", 80), 10, netns.RequestOptions{})
	if got[tp.IP("10.211.2.4")] != 10 {
		t.Errorf("after partial sync: %v, want all from 10.211.2.4", got)
	}
	// Remove a Service, add another: dispatch edited, not rewritten.
	tp.Del("s03")
	tp.Put(Svc{Name: "new", ClusterIP: "10.96.2.1", Port: 80, Eps: []Ep{{IP: "10.211.1.4"}}})
	before := tp.Dispatch()
	res = tp.Sync(false)
	if (res.Full && !h.EverySyncFull) || res.Changed != 2 {
		t.Errorf("add+remove: %+v", res)
	}
	after := tp.Dispatch()
	joined := strings.Join(after, "\n") + "\n"
	gone := tp.IP("10.96.1.4")
	if strings.Contains(joined, gone+" ") || strings.Contains(joined, gone+"/") || !strings.Contains(joined, tp.IP("10.96.2.1")) {
		t.Errorf("dispatch not updated:\n%s", joined)
	}
	if len(after) != len(before) {
		t.Errorf("dispatch had %d entries, now %d", len(before), len(after))
	}
	if _, err := tp.Client.Request("tcp", tp.At("10.96.1.4", 80), netns.RequestOptions{Timeout: time.Second}); netns.Outcome(err) != "timeout" {
		t.Errorf("removed service still answers: %v", err)
	}
	if r, err := tp.Client.Request("tcp", tp.At("10.96.2.1", 80), netns.RequestOptions{}); err != nil || r.Server != tp.IP("10.211.1.4") {
		t.Errorf("added service: %+v %v", r, err)
	}
	// Everything the kernel has matches a from-scratch full sync.
	if res := tp.Sync(true); res.Rules != 0 {
		t.Errorf("full sync after partial ones rewrote %d rules: partial syncs drifted", res.Rules)
	}
}

// CleanupRestoresTables: with another program's rules present (a
// kube-proxy-like one among them), sync then Cleanup leaves the ruleset
// exactly as before, and the other program's DNAT works throughout.
func CleanupRestoresTables(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	h.Foreign(t, tp.Node, tp.Fam)
	before := tp.Dump()
	foreign := func(stage string) {
		t.Helper()
		if r, err := tp.Client.Request("tcp", tp.At(ForeignVIP, 80), netns.RequestOptions{}); err != nil || r.Server != tp.IP("10.211.1.4") {
			t.Errorf("foreign DNAT rule broken %s: %+v %v", stage, r, err)
		}
	}
	foreign("before we are installed")

	tp.Cfg.LocalhostNodePorts = true
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, NodePort: 30080, LBIP: "203.0.113.10", Ranges: []string{"10.210.0.0/24"},
		Affinity: 60, Eps: FourEndpoints()})
	tp.Put(Svc{Name: "empty", ClusterIP: "10.96.0.12", Port: 80, NodePort: 30081, ETPLocal: true})
	tp.Sync(false)
	if tp.Dump() == before {
		t.Fatal("sync did not change anything")
	}
	if _, err := tp.Client.Request("tcp", tp.At(VIP, 80), netns.RequestOptions{}); err != nil {
		t.Errorf("our service beside the foreign rules: %v", err)
	}
	foreign("while we are installed")
	tp.Cleanup()
	if got := tp.Dump(); got != before {
		t.Errorf("cleanup did not restore the ruleset:\n%s", DiffLines(before, got))
	}
	foreign("after cleanup")
	// Cleanup of a clean node is a no-op.
	tp.Cleanup()
	if got := tp.Dump(); got != before {
		t.Errorf("second cleanup changed the ruleset:\n%s", DiffLines(before, got))
	}
}

// OwnedMatchesTheKernel: the count the backend reports (ProxyNode
// status.counts.rules) is what the kernel holds of ours, after full and
// partial syncs alike.
func OwnedMatchesTheKernel(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "a", ClusterIP: VIP, Port: 80, Eps: []Ep{{IP: "10.211.1.2"}, {IP: "10.211.1.3"}}})
	if res, n := tp.Sync(true), tp.Owned(); res.Owned != n || n == 0 {
		t.Fatalf("full sync: owned %d, kernel holds %d", res.Owned, n)
	}
	tp.Put(Svc{Name: "b", ClusterIP: "10.96.0.11", Port: 80, Eps: []Ep{{IP: "10.211.1.2"}}})
	if res, n := tp.Sync(false), tp.Owned(); (res.Full && !h.EverySyncFull) || res.Owned != n {
		t.Fatalf("partial sync (full=%t): owned %d, kernel holds %d", res.Full, res.Owned, n)
	}
}
