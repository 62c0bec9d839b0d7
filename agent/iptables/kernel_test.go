package iptables

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

const vip = "10.96.0.10"

func fourEndpoints() []ep {
	return []ep{{ip: "10.211.1.2"}, {ip: "10.211.1.3"}, {ip: "10.211.2.2"}, {ip: "10.211.2.3"}}
}

// TestDistribution: random balancing reaches every endpoint over TCP and
// UDP. With 200 requests over 4 endpoints each expects 50; fewer than 15 has
// a probability below 1e-10, so the bound only fails when balancing is
// broken.
func TestDistribution(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, eps: fourEndpoints()})
	tp.put(svcSpec{name: "dns", clusterIP: "10.96.0.11", proto: corev1.ProtocolUDP, port: 53, eps: fourEndpoints()})
	tp.sync(false)
	for _, tc := range []struct{ proto, target string }{{"tcp", vip + ":80"}, {"udp", "10.96.0.11:53"}} {
		got := tp.client.Tally(tc.proto, tc.target, 200, netns.RequestOptions{})
		t.Logf("%s distribution: %v", tc.proto, got)
		for _, e := range fourEndpoints() {
			if got[e.ip] < 15 {
				t.Errorf("%s: endpoint %s got %d of 200 requests: %v", tc.proto, e.ip, got[e.ip], got)
			}
		}
		if got[""] != 0 || len(got) != 4 {
			t.Errorf("%s: unexpected answers: %v", tc.proto, got)
		}
	}
}

// TestRoundRobin: the nth-based RoundRobin policy rotates strictly.
func TestRoundRobin(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, eps: fourEndpoints()})
	st := tp.state()
	st.Services[0].Algorithm = "RoundRobin"
	st.Services[0].Hash += "-rr"
	if err := tp.node.Do(func() error { _, err := tp.be.Sync(context.Background(), st, syncOpts(false)); return err }); err != nil {
		t.Fatal(err)
	}
	got := tp.client.Tally("tcp", vip+":80", 40, netns.RequestOptions{})
	for _, e := range fourEndpoints() {
		if got[e.ip] != 10 {
			t.Errorf("round robin: %s got %d of 40, want exactly 10: %v", e.ip, got[e.ip], got)
		}
	}
}

// TestAffinity: ClientIP affinity pins a client to one endpoint, and the
// binding is forgotten once the timeout passed without traffic.
func TestAffinity(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, affinity: 2, eps: fourEndpoints()})
	tp.sync(false)
	got := tp.client.Tally("tcp", vip+":80", 30, netns.RequestOptions{})
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
		r, err := tp.client.Request("tcp", vip+":80", netns.RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		moved = r.Server != first
	}
	if !moved {
		t.Errorf("affinity never expired: every request after the 2s timeout still went to %s", first)
	}
	// A second client IP gets its own binding and stays on it.
	got2 := tp.client.Tally("tcp", vip+":80", 10, netns.RequestOptions{Local: client2IP})
	if len(got2) != 1 {
		t.Errorf("second client not sticky: %v", got2)
	}
}

// TestRejectVersusDrop: no endpoints rejects (fast failure); Local traffic
// without a local endpoint is dropped (timeout) while the ClusterIP of the
// same Service still works.
func TestRejectVersusDrop(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "empty", clusterIP: vip, port: 80})
	tp.put(svcSpec{name: "empty-udp", clusterIP: "10.96.0.12", proto: corev1.ProtocolUDP, port: 53})
	tp.put(svcSpec{name: "local", clusterIP: "10.96.0.11", port: 80, nodePort: 30080, etpLocal: true,
		eps: []ep{{ip: "10.211.2.2"}}})
	tp.sync(false)
	opts := netns.RequestOptions{Timeout: time.Second}
	for _, tc := range []struct{ proto, target, want string }{
		{"tcp", vip + ":80", "refused"},
		{"udp", "10.96.0.12:53", "refused"},
		{"tcp", nodeIP + ":30080", "timeout"},
		{"tcp", "10.96.0.11:80", "ok"},
	} {
		_, err := tp.client.Request(tc.proto, tc.target, opts)
		if got := netns.Outcome(err); got != tc.want {
			t.Errorf("%s %s: outcome %s (%v), want %s", tc.proto, tc.target, got, err, tc.want)
		}
	}
}

// TestSourceRanges: a LoadBalancer IP with loadBalancerSourceRanges serves
// clients inside the ranges and drops the others.
func TestSourceRanges(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "lb", clusterIP: vip, port: 80, nodePort: 30080, lbIP: "203.0.113.10",
		ranges: []string{clientIP + "/32"}, eps: fourEndpoints()})
	tp.sync(false)
	if _, err := tp.client.Request("tcp", "203.0.113.10:80", netns.RequestOptions{Local: clientIP}); err != nil {
		t.Errorf("allowed source %s: %v", clientIP, err)
	}
	_, err := tp.client.Request("tcp", "203.0.113.10:80", netns.RequestOptions{Local: client2IP, Timeout: time.Second})
	if netns.Outcome(err) != "timeout" {
		t.Errorf("denied source %s: outcome %s (%v), want timeout (dropped)", client2IP, netns.Outcome(err), err)
	}
}

// TestExternalFrontends: NodePort and LoadBalancer IPs work; with
// externalTrafficPolicy Cluster the server sees the node (masquerade), with
// Local it sees the real client and only local endpoints answer.
func TestExternalFrontends(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "cluster", clusterIP: vip, port: 80, nodePort: 30080, lbIP: "203.0.113.10", eps: fourEndpoints()})
	tp.put(svcSpec{name: "local", clusterIP: "10.96.0.11", port: 80, nodePort: 30081, lbIP: "203.0.113.11", etpLocal: true,
		eps: []ep{{ip: "10.211.1.2", local: true}, {ip: "10.211.1.3", local: true}, {ip: "10.211.2.2"}}})
	tp.sync(false)
	for _, target := range []string{nodeIP + ":30080", "203.0.113.10:80"} {
		for i := 0; i < 10; i++ {
			r, err := tp.client.Request("tcp", target, netns.RequestOptions{})
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			if ip := r.ClientIP(); ip == clientIP || !strings.HasPrefix(ip, "10.211.") || !strings.HasSuffix(ip, ".1") {
				t.Errorf("%s (Cluster policy): server %s saw client %s, want the node's address", target, r.Server, ip)
			}
		}
	}
	for _, target := range []string{nodeIP + ":30081", "203.0.113.11:80"} {
		got := map[string]int{}
		for i := 0; i < 40; i++ {
			r, err := tp.client.Request("tcp", target, netns.RequestOptions{})
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			if r.ClientIP() != clientIP {
				t.Errorf("%s (Local policy): server saw %s, want the real client %s", target, r.ClientIP(), clientIP)
			}
			got[r.Server]++
		}
		if got["10.211.2.2"] != 0 || got["10.211.1.2"] == 0 || got["10.211.1.3"] == 0 {
			t.Errorf("%s (Local policy): want only the two local endpoints, got %v", target, got)
		}
	}
}

// TestHairpin: a local endpoint reaching its own Service through the
// ClusterIP is answered by itself, which only works when the connection is
// masqueraded.
func TestHairpin(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "self", clusterIP: vip, port: 80, eps: []ep{{ip: "10.211.1.2", local: true}}})
	tp.sync(false)
	r, err := tp.b1.Request("tcp", vip+":80", netns.RequestOptions{Local: "10.211.1.2"})
	if err != nil {
		t.Fatalf("hairpin request: %v", err)
	}
	if r.Server != "10.211.1.2" || r.ClientIP() != "10.211.1.1" {
		t.Errorf("hairpin: got %+v, want server 10.211.1.2 seeing the node 10.211.1.1", r)
	}
}

// TestSamePortDifferentProtocols: port 53 over TCP and over UDP of one
// Service go to different endpoints.
func TestSamePortDifferentProtocols(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "dns", clusterIP: vip, port: 53, portName: "tcp", eps: []ep{{ip: "10.211.1.2"}},
		extraPort: &svcSpec{portName: "udp", proto: corev1.ProtocolUDP, port: 53, eps: []ep{{ip: "10.211.2.3"}}}})
	tp.sync(false)
	for _, tc := range []struct{ proto, want string }{{"tcp", "10.211.1.2"}, {"udp", "10.211.2.3"}} {
		got := tp.client.Tally(tc.proto, vip+":53", 10, netns.RequestOptions{})
		if got[tc.want] != 10 {
			t.Errorf("%s %s:53: got %v, want all 10 from %s", tc.proto, vip, got, tc.want)
		}
	}
}

// TestLocalhostNodePort: the node itself reaches a NodePort on 127.0.0.1.
func TestLocalhostNodePort(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.cfg.LocalhostNodePorts = true
	tp.put(svcSpec{name: "np", clusterIP: vip, port: 80, nodePort: 30080, eps: []ep{{ip: "10.211.2.2"}}})
	tp.sync(false)
	r, err := tp.node.Request("tcp", "127.0.0.1:30080", netns.RequestOptions{})
	if err != nil || r.Server != "10.211.2.2" {
		t.Fatalf("localhost NodePort: %+v %v", r, err)
	}
	if got := strings.TrimSpace(tp.node.MustExec("sysctl", "-n", "net.ipv4.conf.all.route_localnet")); got != "1" {
		t.Errorf("route_localnet = %s, want 1", got)
	}
	tp.cleanup()
	if got := strings.TrimSpace(tp.node.MustExec("sysctl", "-n", "net.ipv4.conf.all.route_localnet")); got != "0" {
		t.Errorf("after cleanup route_localnet = %s, want 0 (restored)", got)
	}
}
