package backendtest

import (
	"strings"
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

	strayEndpointSlice(t, tp, expect)

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

// strayEndpointSlice: bad input, an IPv6 EndpointSlice for the IPv4-only
// Service. The IPv6 build reports it and builds nothing from it; neither
// family's rules change, and the Service keeps serving over IPv4.
func strayEndpointSlice(t *testing.T, tp *Topo, expect func(string, model.Family, string, string, int)) {
	t.Helper()
	es := endpointSlice("v4only", &Svc{Eps: []Ep{{IP: "10.211.2.3"}}}, corev1.ProtocolTCP, model.IPv6)
	es.Name = "v4only-stray-ipv6"
	tp.slices[es.Name] = es
	defer delete(tp.slices, es.Name)
	st6 := tp.BuildState(model.IPv6)
	want := "holds IPv6 endpoints, but Service test/v4only has no IPv6 ClusterIP"
	if len(st6.Problems) != 1 || !strings.Contains(st6.Problems[0].String(), want) {
		t.Errorf("stray IPv6 slice: IPv6 problems %v, want one saying %q", st6.Problems, want)
	}
	if res := tp.syncWith(tp.Backends[model.IPv6], st6, false); res.Changed != 0 || res.Rules != 0 {
		t.Errorf("stray IPv6 slice: the IPv6 sync changed %d service ports, wrote %d rules; want none", res.Changed, res.Rules)
	}
	if res := tp.SyncFamily(model.IPv4, false); res.Changed != 0 || res.Rules != 0 {
		t.Errorf("stray IPv6 slice: the IPv4 sync changed %d service ports, wrote %d rules; want none", res.Changed, res.Rules)
	}
	expect("stray IPv6 slice", model.IPv4, "10.96.0.12", "10.211.1.2", 80)
	expect("stray IPv6 slice", model.IPv6, "10.96.0.12", "timeout", 80)
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
