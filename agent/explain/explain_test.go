package explain

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// objects is the model's input, served as the watches serve it
// (daemon.Objects): a FAKE of the informer caches, for unit tests only;
// cmd/kubectl-synterix's test runs the real agent.
type objects struct {
	svcs   []*corev1.Service
	slices []*discoveryv1.EndpointSlice
}

func (o *objects) Services() []*corev1.Service { return o.svcs }
func (o *objects) Service(ref model.ServiceRef) *corev1.Service {
	for _, s := range o.svcs {
		if s.Namespace == ref.Namespace && s.Name == ref.Name {
			return s
		}
	}
	return nil
}
func (o *objects) EndpointSlices(ref model.ServiceRef) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range o.slices {
		if s.Namespace == ref.Namespace && s.Labels[discoveryv1.LabelServiceName] == ref.Name {
			out = append(out, s)
		}
	}
	return out
}
func (o *objects) Policies() []*v1alpha1.ProxyPolicy { return nil }

type ep struct {
	ip, node           string
	ready, serving, tm bool
	zone               string
}

// world builds a Service (NodePort, externalTrafficPolicy Local when
// local) with its slice, and the model's State of node-a for it.
func world(local bool, eps ...ep) (*objects, *model.State) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080}}}}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	port, name, proto := int32(8080), "http", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}}
	for _, e := range eps {
		e := e
		d := discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: &e.node,
			Conditions: discoveryv1.EndpointConditions{Ready: &e.ready, Serving: &e.serving, Terminating: &e.tm}}
		if e.zone != "" {
			d.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: e.zone}}}
		}
		es.Endpoints = append(es.Endpoints, d)
	}
	o := &objects{svcs: []*corev1.Service{svc}, slices: []*discoveryv1.EndpointSlice{es}}
	st := model.Build(model.Input{Config: model.Config{NodeName: "node-a", NodeIPs: []netip.Addr{netip.MustParseAddr("10.210.0.1")}},
		Services: o.svcs, EndpointSlices: o.slices})
	return o, st
}

func reasons(t *testing.T, o *objects, st *model.State, zone string) map[string]report.Endpoint {
	t.Helper()
	if len(st.Services) != 1 {
		t.Fatalf("state has %d service ports", len(st.Services))
	}
	s := st.Services[0]
	out := map[string]report.Endpoint{}
	for _, e := range classify(candidates(o.EndpointSlices(model.ServiceRef{Namespace: "ns", Name: "web"}), s, model.IPv4, "node-a"), s, zone, "node-a") {
		out[e.Address] = e
	}
	return out
}

// TestClassify: every endpoint of the slices, with why the model uses it
// or not: not ready, terminating while ready ones exist, remote under
// externalTrafficPolicy Local.
func TestClassify(t *testing.T) {
	o, st := world(true,
		ep{ip: "10.211.1.2", node: "node-a", ready: true, serving: true},
		ep{ip: "10.211.2.2", node: "node-b", ready: true, serving: true},
		ep{ip: "10.211.2.3", node: "node-b", serving: true, tm: true},
		ep{ip: "10.211.2.4", node: "node-b"})
	got := reasons(t, o, st, "")
	want := map[string][2]string{
		"10.211.1.2:8080": {report.Used, report.Used},
		"10.211.2.2:8080": {report.Used, "on another node: externalTrafficPolicy Local uses this node's endpoints only"},
		"10.211.2.3:8080": {"terminating: not used while ready endpoints exist", "terminating: not used while ready endpoints exist"},
		"10.211.2.4:8080": {"not ready", "not ready"},
	}
	for a, w := range want {
		if g := got[a]; g.ClusterIP != w[0] || g.External != w[1] {
			t.Errorf("%s: ClusterIP %q External %q, want %q %q", a, g.ClusterIP, g.External, w[0], w[1])
		}
	}
	if got["10.211.2.3:8080"].Category != "serving-terminating" || !got["10.211.1.2:8080"].Local {
		t.Errorf("categories %+v", got)
	}
}

// TestClassifyTopology: endpoints hinted for another zone are kept out,
// and said so.
func TestClassifyTopology(t *testing.T) {
	o, _ := world(false,
		ep{ip: "10.211.1.2", node: "node-a", ready: true, serving: true, zone: "zone-a"},
		ep{ip: "10.211.2.2", node: "node-b", ready: true, serving: true, zone: "zone-b"})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{zoneLabel: "zone-a"}}}
	st := model.Build(model.Input{Config: model.Config{NodeName: "node-a"}, Node: node, Services: o.svcs, EndpointSlices: o.slices})
	got := reasons(t, o, st, "zone-a")
	if got["10.211.1.2:8080"].ClusterIP != report.Used || !strings.HasPrefix(got["10.211.2.2:8080"].ClusterIP, "topology: hinted for zone zone-b") {
		t.Errorf("topology reasons %+v", got)
	}
}

// TestFindings: the words and the verdict of the common failures.
func TestFindings(t *testing.T) {
	port := func(eps []report.Endpoint, mod ...func(*report.Port)) report.Port {
		p := report.Port{Family: "IPv4", PortName: "http", Protocol: "TCP", Endpoints: eps, Kernel: report.Kernel{Backend: "iptables"},
			Frontends: []report.Frontend{{Kind: "ClusterIP", Address: "10.96.0.10:80"}, {Kind: "NodePort", Address: "10.210.0.1:30080"}}}
		for _, m := range mod {
			m(&p)
		}
		return p
	}
	used := report.Endpoint{Category: "ready", ClusterIP: report.Used, External: report.Used}
	term := report.Endpoint{Category: "serving-terminating", ClusterIP: report.Used, External: report.Used}
	remote := report.Endpoint{Category: "ready", ClusterIP: report.Used, External: "on another node"}
	remoteInternal := report.Endpoint{Category: "ready", ClusterIP: "on another node", External: report.Used}
	for _, tc := range []struct {
		name string
		r    report.Service
		want string
		ok   bool
	}{
		{"healthy", report.Service{Ports: []report.Port{port([]report.Endpoint{used, used})}}, "OK: http/TCP: 2 of 2 endpoints in use", true},
		{"no endpoints", report.Service{Ports: []report.Port{port(nil)}}, "PROBLEM: http/TCP: no endpoints: connections to ClusterIP 10.96.0.10:80, NodePort 10.210.0.1:30080 are rejected", false},
		{"terminating fallback", report.Service{Ports: []report.Port{port([]report.Endpoint{term, term})}}, "OK", true},
		{"local without endpoint", report.Service{Ports: []report.Port{port([]report.Endpoint{remote}, func(p *report.Port) { p.ExternalTrafficPolicyLocal = true })}},
			"PROBLEM: http/TCP: externalTrafficPolicy Local and no local endpoint: external traffic to this node (NodePort 10.210.0.1:30080) is dropped", false},
		{"internal local without endpoint", report.Service{Ports: []report.Port{port([]report.Endpoint{remoteInternal}, func(p *report.Port) { p.InternalTrafficPolicyLocal = true })}},
			"PROBLEM: http/TCP: internalTrafficPolicy Local and no local endpoint: ClusterIP traffic from this node is dropped", false},
		{"internal local without any endpoint rejects", report.Service{Ports: []report.Port{port(nil, func(p *report.Port) { p.InternalTrafficPolicyLocal = true })}},
			"PROBLEM: http/TCP: no endpoints: connections to ClusterIP 10.96.0.10:80, NodePort 10.210.0.1:30080 are rejected", false},
		{"policy", report.Service{Ports: []report.Port{port([]report.Endpoint{used})}, Policies: []report.Policy{{Name: "p", Reason: "UnsupportedByBackend", Message: "m"}}},
			"PROBLEM: the policy p is not programmed on node-3: UnsupportedByBackend (m)", false},
		{"drift", report.Service{Ports: []report.Port{port([]report.Endpoint{used}, func(p *report.Port) {
			p.Drift = []report.Difference{{Kind: "missing", Object: "chain nat X"}}
		})}}, "PROBLEM: http/TCP: the kernel differs from what the agent programmed (1 difference; first: missing chain nat X", false},
		{"unwatched", report.Service{Namespace: "ns", Name: "web"}, "PROBLEM: node-3 does not see Service ns/web", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.Node, r.Watched = "node-3", tc.name != "unwatched"
			findings(&r)
			if !strings.HasPrefix(r.Verdict, tc.want) || r.OK != tc.ok {
				t.Errorf("verdict %q ok=%t, want %q ok=%t; findings %q", r.Verdict, r.OK, tc.want, tc.ok, r.Findings)
			}
			if strings.Contains(tc.want, "no endpoints") && strings.Contains(strings.Join(r.Findings, "\n"), "dropped") {
				t.Errorf("findings %q say dropped where the connections are rejected", r.Findings)
			}
		})
	}
}

// TestHandler: the routes answer JSON, an agent that has not synced 503,
// a bad trace query 400 with what is wrong.
func TestHandler(t *testing.T) {
	var snap *daemon.Snapshot
	srv := httptest.NewServer(Handler(func() *daemon.Snapshot { return snap }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, _ := get(report.PathServices); code != http.StatusServiceUnavailable {
		t.Errorf("before the first sync: %d", code)
	}
	o, st := world(false, ep{ip: "10.211.1.2", node: "node-a", ready: true, serving: true})
	snap = &daemon.Snapshot{NodeName: "node-a", Objects: o, Families: []daemon.FamilySnapshot{{Family: model.IPv4, State: st}}}
	code, body := get(report.PathServices)
	var n report.Node
	if err := json.Unmarshal([]byte(body), &n); code != http.StatusOK || err != nil || len(n.Families[0].Services) != 1 {
		t.Fatalf("services: %d %v %s", code, err, body)
	}
	code, body = get(report.PathServices + "/ns/web")
	var s report.Service
	if err := json.Unmarshal([]byte(body), &s); code != http.StatusOK || err != nil || len(s.Ports) != 1 {
		t.Fatalf("service: %d %v %s", code, err, body)
	}
	// No backend in the snapshot: the kernel part says it could not read.
	if s.Ports[0].Kernel.Error == "" || s.OK {
		t.Errorf("kernel %+v ok=%t", s.Ports[0].Kernel, s.OK)
	}
	for _, q := range []string{"?src=x&dst=10.0.0.1&port=80", "?src=10.0.0.2&dst=10.0.0.1", "?src=10.0.0.2&dst=10.0.0.1&port=80&proto=icmp"} {
		if code, body := get(report.PathTrace + q); code != http.StatusBadRequest || body == "" {
			t.Errorf("trace %s: %d %q", q, code, body)
		}
	}
	if resp, err := http.Post(srv.URL+report.PathDiff, "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v", resp.StatusCode, err)
	}
}
