package backendtest

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// FourEndpoints are four remote endpoints on both backend namespaces.
func FourEndpoints() []Ep {
	return []Ep{{IP: "10.211.1.2"}, {IP: "10.211.1.3"}, {IP: "10.211.2.2"}, {IP: "10.211.2.3"}}
}

// Distribution: random balancing reaches every endpoint over TCP and UDP.
// With 200 requests over 4 endpoints each expects 50; fewer than 15 has a
// probability below 1e-10, so the bound only fails when balancing is
// broken.
func Distribution(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, Eps: FourEndpoints()})
	tp.Put(Svc{Name: "dns", ClusterIP: "10.96.0.11", Proto: corev1.ProtocolUDP, Port: 53, Eps: FourEndpoints()})
	tp.Sync(false)
	for _, tc := range []struct{ proto, target string }{{"tcp", tp.At(VIP, 80)}, {"udp", tp.At("10.96.0.11", 53)}} {
		got := tp.Client.Tally(tc.proto, tc.target, 200, netns.RequestOptions{})
		t.Logf("%s distribution: %v", tc.proto, got)
		for _, e := range FourEndpoints() {
			if got[tp.IP(e.IP)] < 15 {
				t.Errorf("%s: endpoint %s got %d of 200 requests: %v", tc.proto, e.IP, got[tp.IP(e.IP)], got)
			}
		}
		if got[""] != 0 || len(got) != 4 {
			t.Errorf("%s: unexpected answers: %v", tc.proto, got)
		}
	}
}

// RoundRobin: the RoundRobin algorithm rotates strictly over new
// connections.
func RoundRobin(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, Eps: FourEndpoints()})
	st := tp.State()
	st.Services[0].Algorithm = model.AlgorithmRoundRobin
	st.Services[0].Hash += "-rr"
	tp.SyncState(st, false)
	got := tp.Client.Tally("tcp", tp.At(VIP, 80), 40, netns.RequestOptions{})
	for _, e := range FourEndpoints() {
		if got[tp.IP(e.IP)] != 10 {
			t.Errorf("round robin: %s got %d of 40, want exactly 10: %v", e.IP, got[tp.IP(e.IP)], got)
		}
	}
}

// Affinity: ClientIP affinity pins a client to one endpoint, and the
// binding is forgotten once the timeout passed without traffic.
func Affinity(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, Affinity: 2, Eps: FourEndpoints()})
	tp.Sync(false)
	got := tp.Client.Tally("tcp", tp.At(VIP, 80), 30, netns.RequestOptions{})
	if len(got) != 1 {
		t.Fatalf("affinity: 30 requests from one client spread over %v", got)
	}
	var first string
	for k := range got {
		first = k
	}
	// After the timeout a fresh choice is made; with 4 endpoints the chance
	// of drawing the same one 10 times in a row is 1e-6.
	moved := false
	for i := 0; i < 10 && !moved; i++ {
		time.Sleep(3 * time.Second)
		r, err := tp.Client.Request("tcp", tp.At(VIP, 80), netns.RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		moved = r.Server != first
	}
	if !moved && !h.Limited(t, "Affinity/expiry") {
		t.Errorf("affinity never expired: every request after the 2s timeout still went to %s", first)
	}
	// A second client IP gets its own binding and stays on it.
	got2 := tp.Client.Tally("tcp", tp.At(VIP, 80), 10, netns.RequestOptions{Local: tp.IP(Client2IP)})
	if len(got2) != 1 {
		t.Errorf("second client not sticky: %v", got2)
	}
}

// RejectVersusDrop: no endpoints rejects (fast failure); Local traffic
// without a local endpoint is dropped (timeout) while the ClusterIP of the
// same Service still works.
func RejectVersusDrop(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "empty", ClusterIP: VIP, Port: 80})
	tp.Put(Svc{Name: "empty-udp", ClusterIP: "10.96.0.12", Proto: corev1.ProtocolUDP, Port: 53})
	tp.Put(Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30080, ETPLocal: true,
		Eps: []Ep{{IP: "10.211.2.2"}}})
	tp.Sync(false)
	opts := netns.RequestOptions{Timeout: time.Second}
	for _, tc := range []struct{ proto, target, want string }{
		{"tcp", tp.At(VIP, 80), "refused"},
		{"udp", tp.At("10.96.0.12", 53), "refused"},
		{"tcp", tp.At(NodeIP, 30080), "timeout"},
		{"tcp", tp.At("10.96.0.11", 80), "ok"},
	} {
		_, err := tp.Client.Request(tc.proto, tc.target, opts)
		if got := netns.Outcome(err); got != tc.want {
			t.Errorf("%s %s: outcome %s (%v), want %s", tc.proto, tc.target, got, err, tc.want)
		}
	}
}

// SourceRanges: a LoadBalancer IP with loadBalancerSourceRanges serves
// clients inside the ranges and drops the others.
func SourceRanges(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "lb", ClusterIP: VIP, Port: 80, NodePort: 30080, LBIP: "203.0.113.10",
		Ranges: []string{ClientIP + "/32"}, Eps: FourEndpoints()})
	tp.Sync(false)
	if _, err := tp.Client.Request("tcp", tp.At("203.0.113.10", 80), netns.RequestOptions{Local: tp.IP(ClientIP)}); err != nil {
		t.Errorf("allowed source %s: %v", ClientIP, err)
	}
	_, err := tp.Client.Request("tcp", tp.At("203.0.113.10", 80), netns.RequestOptions{Local: tp.IP(Client2IP), Timeout: time.Second})
	if netns.Outcome(err) != "timeout" {
		t.Errorf("denied source %s: outcome %s (%v), want timeout (dropped)", Client2IP, netns.Outcome(err), err)
	}
}

// ExternalFrontends: NodePort and LoadBalancer IPs work; with
// externalTrafficPolicy Cluster the server sees the node (masquerade), with
// Local it sees the real client and only local endpoints answer.
func ExternalFrontends(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "cluster", ClusterIP: VIP, Port: 80, NodePort: 30080, LBIP: "203.0.113.10", Eps: FourEndpoints()})
	tp.Put(Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30081, LBIP: "203.0.113.11", ETPLocal: true,
		Eps: []Ep{{IP: "10.211.1.2", Local: true}, {IP: "10.211.1.3", Local: true}, {IP: "10.211.2.2"}}})
	tp.Sync(false)
	for _, target := range []string{tp.At(NodeIP, 30080), tp.At("203.0.113.10", 80)} {
		for i := 0; i < 10; i++ {
			r, err := tp.Client.Request("tcp", target, netns.RequestOptions{})
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			if ip := r.ClientIP(); ip != tp.IP("10.211.1.1") && ip != tp.IP("10.211.2.1") {
				t.Errorf("%s (Cluster policy): server %s saw client %s, want the node's address", target, r.Server, ip)
			}
		}
	}
	for _, target := range []string{tp.At(NodeIP, 30081), tp.At("203.0.113.11", 80)} {
		got := map[string]int{}
		for i := 0; i < 40; i++ {
			r, err := tp.Client.Request("tcp", target, netns.RequestOptions{})
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			if r.ClientIP() != tp.IP(ClientIP) {
				t.Errorf("%s (Local policy): server saw %s, want the real client %s", target, r.ClientIP(), ClientIP)
			}
			got[r.Server]++
		}
		if got[tp.IP("10.211.2.2")] != 0 || got[tp.IP("10.211.1.2")] == 0 || got[tp.IP("10.211.1.3")] == 0 {
			t.Errorf("%s (Local policy): want only the two local endpoints, got %v", target, got)
		}
	}
}

// Hairpin: a local endpoint reaching its own Service through the ClusterIP
// is answered by itself, which only works when the connection is
// masqueraded.
func Hairpin(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "self", ClusterIP: VIP, Port: 80, Eps: []Ep{{IP: "10.211.1.2", Local: true}}})
	tp.Sync(false)
	r, err := tp.B1.Request("tcp", tp.At(VIP, 80), netns.RequestOptions{Local: tp.IP("10.211.1.2")})
	if err != nil {
		t.Fatalf("hairpin request: %v", err)
	}
	if r.Server != tp.IP("10.211.1.2") || r.ClientIP() != tp.IP("10.211.1.1") {
		t.Errorf("hairpin: got %+v, want server 10.211.1.2 seeing the node 10.211.1.1", r)
	}
}

// SamePortDifferentProtocols: port 53 over TCP and over UDP of one Service
// go to different endpoints.
func SamePortDifferentProtocols(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "dns", ClusterIP: VIP, Port: 53, PortName: "tcp", Eps: []Ep{{IP: "10.211.1.2"}},
		ExtraPort: &Svc{PortName: "udp", Proto: corev1.ProtocolUDP, Port: 53, Eps: []Ep{{IP: "10.211.2.3"}}}})
	tp.Sync(false)
	for _, tc := range []struct{ proto, want string }{{"tcp", "10.211.1.2"}, {"udp", "10.211.2.3"}} {
		got := tp.Client.Tally(tc.proto, tp.At(VIP, 53), 10, netns.RequestOptions{})
		if got[tp.IP(tc.want)] != 10 {
			t.Errorf("%s %s:53: got %v, want all 10 from %s", tc.proto, VIP, got, tc.want)
		}
	}
}

// LocalhostNodePort: the node itself reaches a NodePort on 127.0.0.1, with
// route_localnet set while the backend runs and restored by Cleanup.
func LocalhostNodePort(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Cfg.LocalhostNodePorts = true
	tp.Put(Svc{Name: "np", ClusterIP: VIP, Port: 80, NodePort: 30080, Eps: []Ep{{IP: "10.211.2.2"}}})
	tp.Sync(false)
	r, err := tp.Node.Request("tcp", tp.At("127.0.0.1", 30080), netns.RequestOptions{Timeout: time.Second})
	if tp.Fam == model.IPv6 {
		// IPv4 only, as in kube-proxy: IPv6 has no route_localnet, and
		// the model gives no ::1 frontend; ::1 is not DNATed.
		if netns.Outcome(err) == "ok" {
			t.Errorf("NodePort answered on [::1]: %+v", r)
		}
		return
	}
	if err != nil || r.Server != tp.IP("10.211.2.2") {
		t.Fatalf("localhost NodePort: %+v %v", r, err)
	}
	if got := strings.TrimSpace(tp.Node.MustExec("sysctl", "-n", "net.ipv4.conf.all.route_localnet")); got != "1" {
		t.Errorf("route_localnet = %s, want 1", got)
	}
	tp.Cleanup()
	if got := strings.TrimSpace(tp.Node.MustExec("sysctl", "-n", "net.ipv4.conf.all.route_localnet")); got != "0" {
		t.Errorf("after cleanup route_localnet = %s, want 0 (restored)", got)
	}
}
