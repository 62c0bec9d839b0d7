package trace_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// The unit tests trace over the rules the iptables backend renders for a
// model state (iptables.DesiredFor), as iptables-save would print them on
// a node holding nothing else. The kernel tests of agent/iptables trace
// over what the kernel really holds, request by request (tracetest).

var (
	nodeIP   = netip.MustParseAddr("10.210.0.1")
	clientIP = netip.MustParseAddr("10.210.0.2")
	podIP    = netip.MustParseAddr("10.211.9.9")
	vip      = netip.MustParseAddr("10.96.0.10")
	lbIP     = netip.MustParseAddr("203.0.113.10")
)

func eps(local bool, ips ...string) []model.Endpoint {
	var out []model.Endpoint
	for _, ip := range ips {
		out = append(out, model.Endpoint{Addr: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true, Local: local})
	}
	return out
}

// svc is a service port web:80/TCP with a ClusterIP (masquerade
// OffCluster), a NodePort 30080 (Always) and the given endpoints.
func svc(endpoints []model.Endpoint, opts ...func(*model.Service)) *model.Service {
	s := &model.Service{Key: "test/web:http/TCP", Namespace: "test", Name: "web", PortName: "http", Protocol: model.TCP,
		Frontends: []model.Frontend{
			{Kind: model.KindClusterIP, Addr: vip, Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster},
			{Kind: model.KindNodePort, Addr: nodeIP, Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways},
		},
		InternalEndpoints: endpoints, ExternalEndpoints: endpoints, ClusterEndpoints: endpoints}
	for _, o := range opts {
		o(s)
	}
	return s
}

func state(svcs ...*model.Service) *model.State {
	return &model.State{NodeName: "node-a", Family: model.IPv4, NodeIPs: []netip.Addr{nodeIP},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.211.0.0/16")}}, Services: svcs}
}

func env() trace.Env {
	return trace.Env{
		LocalAddrs: []netip.Addr{nodeIP, netip.MustParseAddr("10.211.1.1")},
		Routes: []trace.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "uplink"},
			{Dst: netip.MustParsePrefix("10.210.0.0/24"), Dev: "to-client"},
			{Dst: netip.MustParsePrefix("10.211.1.0/24"), Dev: "to-b1"},
		},
	}
}

func tracer(t *testing.T, st *model.State, e trace.Env) *trace.IPTables {
	t.Helper()
	d, err := iptables.DesiredFor(st, iptables.Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := trace.ParseSave(strings.NewReader(d.SaveText()))
	if err != nil {
		t.Fatalf("parse the backend's own rules: %v\n%s", err, d.SaveText())
	}
	return &trace.IPTables{Rules: rs, Env: e}
}

func tcp(src, dst netip.Addr, port uint16) trace.Packet {
	return trace.Packet{Proto: "tcp", Src: src, Dst: dst, DstPort: port}
}

func mustTrace(t *testing.T, tr trace.Tracer, p trace.Packet) *trace.Result {
	t.Helper()
	res, err := tr.Trace(p)
	if err != nil {
		t.Fatalf("trace %s: %v", p, err)
	}
	if len(res.Notes) > 0 {
		t.Errorf("trace %s over our own rules left notes: %v", p, res.Notes)
	}
	return res
}

// expect checks a trace's paths: the endpoint (or verdict) of each, its
// probability and masquerade.
type expect struct {
	verdict trace.Verdict
	to      string
	prob    float64
	masq    bool
	conds   int
}

func check(t *testing.T, res *trace.Result, want []expect) {
	t.Helper()
	if len(res.Paths) != len(want) {
		t.Fatalf("%s: %d paths, want %d:\n%s", res.Packet, len(res.Paths), len(want), dump(res))
	}
	for i, w := range want {
		p := res.Paths[i]
		if p.Verdict != w.verdict || p.Endpoint != w.to || p.Masquerade != w.masq || len(p.Conditions) != w.conds ||
			(w.prob != 0 && !near(p.Probability, w.prob)) {
			t.Errorf("%s path %d: got %s %s p=%v masq=%t conds=%v, want %+v\n%s", res.Packet, i+1, p.Verdict, p.Endpoint,
				p.Probability, p.Masquerade, p.Conditions, w, dump(res))
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }

func dump(res *trace.Result) string {
	var b strings.Builder
	for i, p := range res.Paths {
		b.WriteString("path " + string(rune('1'+i)) + ": " + string(p.Verdict) + " " + p.Endpoint + "\n")
		for _, s := range p.Steps {
			b.WriteString("    " + s.String() + "\n")
		}
	}
	return b.String()
}

// TestClusterIPRandom: four endpoints, each taken by a quarter of the new
// connections (the statistic probabilities 1/4, 1/3, 1/2, then the rest);
// an off-cluster client is masqueraded, a pod is not.
func TestClusterIPRandom(t *testing.T) {
	tr := tracer(t, state(svc(eps(false, "10.211.1.2", "10.211.1.3", "10.211.2.2", "10.211.2.3"))), env())
	for _, tc := range []struct {
		src  netip.Addr
		masq bool
	}{{clientIP, true}, {podIP, false}} {
		res := mustTrace(t, tr, tcp(tc.src, vip, 80))
		var want []expect
		for _, ip := range []string{"10.211.1.2", "10.211.1.3", "10.211.2.2", "10.211.2.3"} {
			want = append(want, expect{verdict: trace.VerdictDNAT, to: ip + ":8080", prob: 0.25, masq: tc.masq})
		}
		check(t, res, want)
		if got := res.Summary(); !strings.Contains(got, "10.211.1.2:8080 (25%)") {
			t.Errorf("summary %q", got)
		}
	}
}

// TestNoEndpoints: a ClusterIP without endpoints is rejected; a NodePort
// with externalTrafficPolicy Local and no local endpoint is dropped for an
// external client, while a pod is sent to every endpoint.
func TestNoEndpoints(t *testing.T) {
	empty := svc(nil)
	empty.Frontends = empty.Frontends[:1]
	local := svc(nil, func(s *model.Service) {
		s.Key, s.Name = "test/local:http/TCP", "local"
		s.Frontends[0].Addr = netip.MustParseAddr("10.96.0.11")
		s.Frontends[1].Masquerade = model.MasqueradeNever
		s.InternalEndpoints = eps(false, "10.211.2.2")
		s.ClusterEndpoints = s.InternalEndpoints
		s.ExternalLocal = true
	})
	tr := tracer(t, state(empty, local), env())
	res := mustTrace(t, tr, tcp(clientIP, vip, 80))
	check(t, res, []expect{{verdict: trace.VerdictReject, prob: 1}})
	if res.Paths[0].Reject != "icmp-port-unreachable" {
		t.Errorf("reject with %q", res.Paths[0].Reject)
	}
	check(t, mustTrace(t, tr, tcp(clientIP, nodeIP, 30080)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
	check(t, mustTrace(t, tr, tcp(podIP, nodeIP, 30080)), []expect{{verdict: trace.VerdictDNAT, to: "10.211.2.2:8080", prob: 1}})
}

// TestSourceRanges: a load balancer IP with source ranges serves the
// clients in them and drops the others.
func TestSourceRanges(t *testing.T) {
	s := svc(eps(false, "10.211.1.2"), func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: lbIP, Port: 80,
			Protocol: model.TCP, Masquerade: model.MasqueradeAlways, SourceRanges: []netip.Prefix{netip.PrefixFrom(clientIP, 32)}})
	})
	tr := tracer(t, state(s), env())
	check(t, mustTrace(t, tr, tcp(clientIP, lbIP, 80)), []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1, masq: true}})
	check(t, mustTrace(t, tr, tcp(netip.MustParseAddr("10.210.0.3"), lbIP, 80)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
}

// TestAffinity: a client in an endpoint's affinity list goes back to it
// while its entry is fresh (a condition: the entry's age is not read),
// else is balanced; a client in no list is balanced.
func TestAffinity(t *testing.T) {
	s := svc(eps(false, "10.211.1.2", "10.211.1.3"), func(s *model.Service) {
		s.Affinity = model.Affinity{ClientIP: true, Timeout: 30 * time.Second}
	})
	e := env()
	d, _ := iptables.DesiredFor(state(s), iptables.Options{}, true)
	list := ""
	for c, rules := range d.Chains["nat"] {
		if strings.HasPrefix(c, "SYNX-SVC-") {
			list = strings.Fields(rules[len(rules)-1][strings.Index(rules[len(rules)-1], "--name ")+7:])[0]
		}
	}
	e.Recent = map[string][]netip.Addr{list: {clientIP}}
	tr := tracer(t, state(s), e)
	res := mustTrace(t, tr, tcp(clientIP, vip, 80))
	check(t, res, []expect{
		{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 0.5, masq: true, conds: 1},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 0.5, masq: true, conds: 1},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 1, masq: true, conds: 1},
	})
	if c := res.Paths[2].Conditions[0]; !strings.Contains(c, "less than 30s ago") {
		t.Errorf("affinity condition %q", c)
	}
	other := mustTrace(t, tr, tcp(netip.MustParseAddr("10.210.0.3"), vip, 80))
	check(t, other, []expect{
		{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 0.5, masq: true},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 0.5, masq: true},
	})
}

// TestHairpin: a local endpoint reaching itself through its ClusterIP is
// masqueraded in POSTROUTING.
func TestHairpin(t *testing.T) {
	self := netip.MustParseAddr("10.211.1.2")
	tr := tracer(t, state(svc(eps(true, "10.211.1.2"))), env())
	res := mustTrace(t, tr, tcp(self, vip, 80))
	check(t, res, []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1, masq: true}})
	last := res.Paths[0].Steps[len(res.Paths[0].Steps)-1]
	if last.Hook != "POSTROUTING" || !strings.Contains(last.Effect, "MASQUERADE") {
		t.Errorf("last step %s, want the MASQUERADE of POSTROUTING", last)
	}
}

// TestFromNode: the node's own connection to a localhost NodePort takes
// the OUTPUT path and is masqueraded.
func TestFromNode(t *testing.T) {
	st := state(svc(eps(false, "10.211.2.2"), func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr("127.0.0.1"),
			Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways, Localhost: true})
	}))
	st.LocalhostNodePorts = true
	p := tcp(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), 30080)
	p.FromNode = true
	res := mustTrace(t, tracer(t, st, env()), p)
	check(t, res, []expect{{verdict: trace.VerdictDNAT, to: "10.211.2.2:8080", prob: 1, masq: true}})
	if res.Paths[0].Steps[0].Hook != "OUTPUT" {
		t.Errorf("first step %s, want OUTPUT", res.Paths[0].Steps[0])
	}
}

// TestNoRule: a destination no frontend has goes where routing sends it,
// unchanged; one of the node's own addresses is delivered locally.
func TestNoRule(t *testing.T) {
	tr := tracer(t, state(svc(eps(false, "10.211.1.2"))), env())
	res := mustTrace(t, tr, tcp(clientIP, netip.MustParseAddr("10.96.0.99"), 80))
	check(t, res, []expect{{verdict: trace.VerdictNoRule, prob: 1}})
	if res.Paths[0].Delivery != "forward" {
		t.Errorf("delivery %q", res.Paths[0].Delivery)
	}
	res = mustTrace(t, tr, tcp(clientIP, nodeIP, 22))
	if res.Paths[0].Delivery != "local" || !strings.Contains(res.Summary(), "delivered to the node") {
		t.Errorf("to the node: %s", res.Summary())
	}
}

// TestRoundRobin: the nth rotation gives each endpoint its share.
func TestRoundRobin(t *testing.T) {
	tr := tracer(t, state(svc(eps(false, "10.211.1.2", "10.211.1.3", "10.211.2.2"), func(s *model.Service) {
		s.Algorithm = model.AlgorithmRoundRobin
	})), env())
	res := mustTrace(t, tr, tcp(podIP, vip, 80))
	got := res.Endpoints()
	for _, ip := range []string{"10.211.1.2", "10.211.1.3", "10.211.2.2"} {
		if !near(got[ip+":8080"], 1.0/3) {
			t.Errorf("round robin shares %v", got)
		}
	}
}
