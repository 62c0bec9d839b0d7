package backendtest

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// DualStack: one node with both families and one backend per family, as
// the agent runs them. A PreferDualStack Service answers on its ClusterIP
// and NodePort of each family from the endpoints of that family; a
// single-stack Service only in its own family. Each family's rules stand
// alone: wiping or removing the IPv6 rules leaves IPv4 serving, and a sync
// of IPv6 alone restores IPv6.
func DualStack(t *testing.T, h Harness) {
	h.Family = model.IPv4
	tp := NewTopo(t, h)
	tp.AddFamily(model.IPv6)
	both := []model.Family{model.IPv4, model.IPv6}
	tp.Put(Svc{Name: "dual", ClusterIP: VIP, Port: 80, NodePort: 30080, Families: both,
		Policy: corev1.IPFamilyPolicyPreferDualStack, Eps: FourEndpoints()})
	tp.Put(Svc{Name: "v6only", ClusterIP: "10.96.0.11", Port: 80, Families: []model.Family{model.IPv6},
		Eps: []Ep{{IP: "10.211.2.2"}}})
	tp.Put(Svc{Name: "v4only", ClusterIP: "10.96.0.12", Port: 80, Families: []model.Family{model.IPv4},
		Eps: []Ep{{IP: "10.211.1.2"}}})
	tp.SyncFamily(model.IPv4, false)
	tp.SyncFamily(model.IPv6, false)

	short := netns.RequestOptions{Timeout: time.Second}
	// expect checks one request: the server's identity (the endpoint of
	// the family), or "timeout" when the address must not be served.
	expect := func(stage string, fam model.Family, v4, want string, port int) {
		t.Helper()
		r, err := tp.Client.Request("tcp", At(fam, v4, port), short)
		switch {
		case want == "timeout" && netns.Outcome(err) != "timeout":
			t.Errorf("%s: %s %s: outcome %s (%+v %v), want timeout", stage, fam, At(fam, v4, port), netns.Outcome(err), r, err)
		case want != "timeout" && (err != nil || r.Server != IP(fam, want)):
			t.Errorf("%s: %s %s: %+v %v, want an answer from %s", stage, fam, At(fam, v4, port), r, err, IP(fam, want))
		}
	}
	serves := func(stage string, fam model.Family) {
		t.Helper()
		got := tp.Client.Tally("tcp", At(fam, VIP, 80), 20, netns.RequestOptions{})
		for srv := range got {
			if !isEndpoint(fam, srv) {
				t.Errorf("%s: %s ClusterIP answered by %q: %v", stage, fam, srv, got)
			}
		}
		if r, err := tp.Client.Request("tcp", At(fam, NodeIP, 30080), netns.RequestOptions{}); err != nil || !isEndpoint(fam, r.Server) {
			t.Errorf("%s: %s NodePort: %+v %v", stage, fam, r, err)
		}
	}
	serves("both synced", model.IPv4)
	serves("both synced", model.IPv6)
	expect("single-stack", model.IPv6, "10.96.0.11", "10.211.2.2", 80)
	expect("single-stack", model.IPv4, "10.96.0.11", "timeout", 80)
	expect("single-stack", model.IPv4, "10.96.0.12", "10.211.1.2", 80)
	expect("single-stack", model.IPv6, "10.96.0.12", "timeout", 80)

	tp.H.Wipe(t, tp.Node, model.IPv6)
	expect("IPv6 rules wiped", model.IPv6, VIP, "timeout", 80)
	serves("IPv6 rules wiped", model.IPv4)
	if res := tp.SyncFamily(model.IPv6, false); !res.Full {
		t.Errorf("IPv6 sync after its rules were wiped: %+v, want a full sync", res)
	}
	serves("IPv6 restored alone", model.IPv6)

	tp.CleanupFamily(model.IPv6)
	expect("IPv6 removed", model.IPv6, VIP, "timeout", 80)
	serves("IPv6 removed", model.IPv4)
}

// isEndpoint reports whether a server identity is one of the backend
// addresses of fam.
func isEndpoint(fam model.Family, id string) bool {
	for _, ip := range BackendIPs {
		if IP(fam, ip) == id {
			return true
		}
	}
	return false
}
