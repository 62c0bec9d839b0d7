package backendtest

import (
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// LocalTrafficDetection: each mode tells pods from outside clients with
// real packets. A ClusterIP is masqueraded for an outside client (the
// server sees the node) and not for a pod (the server sees the pod); a
// NodePort with externalTrafficPolicy Local and no local endpoint drops
// outside clients but sends pods on to the remote endpoint. The pod is on
// b2 (10.211.2.2, arriving on interface to-b2); the endpoint on b1.
// Without detection nothing counts as a pod: no masquerade, and the pod is
// dropped like an outside client.
func LocalTrafficDetection(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		set  func(tp *Topo)
		none bool
	}{
		{name: "ClusterCIDR", set: func(tp *Topo) {}},
		{name: "NodeCIDR", set: func(tp *Topo) {
			tp.Cfg.LocalDetection = model.LocalDetection{Mode: model.LocalNodeCIDR}
			tp.NodeObj.Spec.PodCIDRs = []string{tp.IP("10.211.2.0/24")}
		}},
		{name: "BridgeInterface", set: func(tp *Topo) {
			tp.Cfg.LocalDetection = model.LocalDetection{Mode: model.LocalBridgeInterface, Interface: "to-b2"}
		}},
		{name: "InterfaceNamePrefix", set: func(tp *Topo) {
			tp.Cfg.LocalDetection = model.LocalDetection{Mode: model.LocalInterfaceNamePrefix, Interface: "to-b"}
		}},
		{name: "control without detection", none: true, set: func(tp *Topo) { tp.Cfg.LocalDetection = model.LocalDetection{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := NewTopo(t, h)
			tc.set(tp)
			tp.Put(Svc{Name: "web", ClusterIP: VIP, Port: 80, Eps: []Ep{{IP: "10.211.1.2"}}})
			tp.Put(Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30081, ETPLocal: true,
				Eps: []Ep{{IP: "10.211.1.3"}}})
			st := tp.State()
			if got := st.Local.Detects(); got == tc.none {
				t.Fatalf("the model's detection %+v: detects=%t", st.Local, got)
			}
			tp.SyncState(st, false)
			if res := tp.SyncState(st, true); res.Rules != 0 {
				t.Errorf("a full sync of the same state rewrote %d rules: the kernel shows the detection otherwise than rendered", res.Rules)
			}
			pod := netns.RequestOptions{Local: tp.IP("10.211.2.2"), Timeout: time.Second}
			outside := netns.RequestOptions{Timeout: time.Second}
			seen := func(from *netns.NS, opts netns.RequestOptions) string {
				t.Helper()
				r, err := from.Request("tcp", tp.At(VIP, 80), opts)
				if err != nil {
					t.Fatalf("ClusterIP from %s: %v", from.Name, err)
				}
				return r.ClientIP()
			}
			node := tp.IP("10.211.1.1")
			wantOutside := node // masqueraded
			if tc.none {
				wantOutside = tp.IP(ClientIP)
			}
			if got := seen(tp.Client, outside); got != wantOutside {
				t.Errorf("ClusterIP from an outside client: the server saw %s, want %s", got, wantOutside)
			}
			if got := seen(tp.B2, pod); got != tp.IP("10.211.2.2") {
				t.Errorf("ClusterIP from a pod: the server saw %s, want the pod (not masqueraded)", got)
			}
			np := tp.At(NodeIP, 30081)
			if _, err := tp.Client.Request("tcp", np, outside); netns.Outcome(err) != "timeout" {
				t.Errorf("Local NodePort without local endpoints from outside: outcome %s (%v), want timeout", netns.Outcome(err), err)
			}
			if h.Limited(t, "LocalTrafficDetection/pod to a Local external frontend") {
				return
			}
			_, err := tp.B2.Request("tcp", np, pod)
			want := "ok"
			if tc.none {
				want = "timeout"
			}
			if got := netns.Outcome(err); got != want {
				t.Errorf("Local NodePort without local endpoints from a pod: outcome %s (%v), want %s", got, err, want)
			}
		})
	}
}

// ExternalIPs: a Service's externalIPs answer; with externalTrafficPolicy
// Cluster the server sees the node (masquerade), with Local the real
// client, from the local endpoint only.
func ExternalIPs(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	tp.Put(Svc{Name: "cluster", ClusterIP: VIP, Port: 80, ExternalIPs: []string{"198.51.100.10"}, Eps: FourEndpoints()})
	tp.Put(Svc{Name: "local", ClusterIP: "10.96.0.11", Port: 80, ExternalIPs: []string{"198.51.100.11"}, ETPLocal: true,
		Eps: []Ep{{IP: "10.211.1.2", Local: true}, {IP: "10.211.2.2"}}})
	tp.Sync(false)
	nodeSide := map[string]bool{tp.IP("10.211.1.1"): true, tp.IP("10.211.2.1"): true}
	for i := 0; i < 10; i++ {
		r, err := tp.Client.Request("tcp", tp.At("198.51.100.10", 80), netns.RequestOptions{})
		if err != nil {
			t.Fatalf("external IP (Cluster policy): %v", err)
		}
		if !nodeSide[r.ClientIP()] {
			t.Errorf("external IP (Cluster policy): server %s saw %s, want the node's address", r.Server, r.ClientIP())
		}
		r, err = tp.Client.Request("tcp", tp.At("198.51.100.11", 80), netns.RequestOptions{})
		if err != nil {
			t.Fatalf("external IP (Local policy): %v", err)
		}
		if r.Server != tp.IP("10.211.1.2") || r.ClientIP() != tp.IP(ClientIP) {
			t.Errorf("external IP (Local policy): %s saw %s, want the local endpoint seeing the client", r.Server, r.ClientIP())
		}
	}
	// An external IP is not a NodePort address: other ports are not served.
	if _, err := tp.Client.Request("tcp", tp.At("198.51.100.10", 81), netns.RequestOptions{Timeout: time.Second}); netns.Outcome(err) == "ok" {
		t.Errorf("external IP answered on a port the Service does not have")
	}
}
