package trace_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/expr"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// nftTracer traces over the table the nftables backend writes for a state
// (nftables.DesiredTable: its rendered rules decoded back into
// expressions, and its map elements).
func nftTracer(t *testing.T, st *model.State, extra ...*trace.NFTable) *trace.NFTables {
	t.Helper()
	tb, err := nftables.DesiredTable(st, nftables.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range tb.Chains {
		for i, r := range c.Rules {
			if r.Bad != "" {
				t.Fatalf("rule %d of %s not decoded: %s", i+1, c.Name, r.Bad)
			}
		}
	}
	return &trace.NFTables{Tables: append([]*trace.NFTable{tb}, extra...), Env: env()}
}

func TestNFTClusterIPRandom(t *testing.T) {
	tr := nftTracer(t, state(svc(eps(false, "10.211.1.2", "10.211.1.3", "10.211.2.2", "10.211.2.3"))))
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
	}
	// The steps name the dispatch map, the shared pick chain and its
	// endpoints map lookup.
	res := mustTrace(t, tr, tcp(clientIP, vip, 80))
	text := dump(res)
	for _, want := range []string{"ip daddr . meta l4proto . th dport vmap @service-ips", "go to pick-4-offcluster",
		"numgen random mod 4 map @endpoints", "DNAT to 10.211.1.2:8080", "ct state new jump filter-services",
		"meta mark set meta mark | 0x20000", "masquerade fully-random"} {
		if !strings.Contains(text, want) {
			t.Errorf("trace lacks %q:\n%s", want, text)
		}
	}
}

// TestNFTNoEndpoints: a ClusterIP without endpoints is rejected; a
// NodePort with externalTrafficPolicy Local and no local endpoint drops an
// external client and sends a pod to every endpoint.
func TestNFTNoEndpoints(t *testing.T) {
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
	tr := nftTracer(t, state(empty, local))
	res := mustTrace(t, tr, tcp(clientIP, vip, 80))
	check(t, res, []expect{{verdict: trace.VerdictReject, prob: 1}})
	if res.Paths[0].Reject != "icmp port-unreachable" {
		t.Errorf("reject with %q", res.Paths[0].Reject)
	}
	check(t, mustTrace(t, tr, tcp(clientIP, nodeIP, 30080)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
	check(t, mustTrace(t, tr, tcp(podIP, nodeIP, 30080)), []expect{{verdict: trace.VerdictDNAT, to: "10.211.2.2:8080", prob: 1}})
}

func TestNFTSourceRanges(t *testing.T) {
	s := svc(eps(false, "10.211.1.2"), func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: lbIP, Port: 80,
			Protocol: model.TCP, Masquerade: model.MasqueradeAlways, SourceRanges: []netip.Prefix{netip.PrefixFrom(clientIP, 32)}})
	})
	tr := nftTracer(t, state(s))
	check(t, mustTrace(t, tr, tcp(clientIP, lbIP, 80)), []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1, masq: true}})
	check(t, mustTrace(t, tr, tcp(netip.MustParseAddr("10.210.0.3"), lbIP, 80)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
}

// TestNFTAffinity: a client with a binding in the affinity set goes back
// to its endpoint while the binding lives, and is balanced once it has
// expired; a client without one is balanced.
func TestNFTAffinity(t *testing.T) {
	s := svc(eps(false, "10.211.1.2", "10.211.1.3"), func(s *model.Service) {
		s.Affinity = model.Affinity{ClientIP: true, Timeout: 30 * time.Second}
	})
	tr := nftTracer(t, state(s))
	other := mustTrace(t, tr, tcp(netip.MustParseAddr("10.210.0.3"), vip, 80))
	check(t, other, []expect{
		{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 0.5, masq: true},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 0.5, masq: true},
	})
	// The binding the kernel records: client . anchor . endpoint.
	key := append(append(append(clientIP.AsSlice(), vip.AsSlice()...), 0, 80, 0, 0), netip.MustParseAddr("10.211.1.3").AsSlice()...)
	key = append(key, 0x1f, 0x90, 0, 0)
	tr.Tables[0].Set("affinity").Elems = []trace.NFElem{{Key: key}}
	res := mustTrace(t, tr, tcp(clientIP, vip, 80))
	check(t, res, []expect{
		{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 0.5, masq: true, conds: 1},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 1, masq: true, conds: 1},
		{verdict: trace.VerdictDNAT, to: "10.211.1.3:8080", prob: 0.5, masq: true, conds: 1},
	})
	if c := res.Paths[1].Conditions[0]; !strings.Contains(c, "binding in @affinity lives") {
		t.Errorf("affinity condition %q", c)
	}
}

func TestNFTHairpin(t *testing.T) {
	self := netip.MustParseAddr("10.211.1.2")
	tr := nftTracer(t, state(svc(eps(true, "10.211.1.2"))))
	res := mustTrace(t, tr, tcp(self, vip, 80))
	check(t, res, []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1, masq: true}})
	last := res.Paths[0].Steps[len(res.Paths[0].Steps)-1]
	if last.Hook != "POSTROUTING" || !strings.Contains(last.Effect, "masquerade") {
		t.Errorf("last step %s, want the masquerade of POSTROUTING", last)
	}
}

func TestNFTFromNode(t *testing.T) {
	st := state(svc(eps(false, "10.211.2.2"), func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr("127.0.0.1"),
			Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways, Localhost: true})
	}))
	st.LocalhostNodePorts = true
	p := tcp(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), 30080)
	p.FromNode = true
	res := mustTrace(t, nftTracer(t, st), p)
	check(t, res, []expect{{verdict: trace.VerdictDNAT, to: "10.211.2.2:8080", prob: 1, masq: true}})
	if res.Paths[0].Steps[0].Hook != "OUTPUT" {
		t.Errorf("first step %s, want OUTPUT", res.Paths[0].Steps[0])
	}
}

func TestNFTNoRule(t *testing.T) {
	tr := nftTracer(t, state(svc(eps(false, "10.211.1.2"))))
	res := mustTrace(t, tr, tcp(clientIP, netip.MustParseAddr("10.96.0.99"), 80))
	check(t, res, []expect{{verdict: trace.VerdictNoRule, prob: 1}})
	if res.Paths[0].Delivery != "forward" {
		t.Errorf("delivery %q", res.Paths[0].Delivery)
	}
	res = mustTrace(t, tr, tcp(clientIP, nodeIP, 22))
	if res.Paths[0].Delivery != "local" {
		t.Errorf("to the node: %s", res.Summary())
	}
}

// TestNFTRoundRobinAndHashing: a rotation and a source hash give each
// endpoint its share, under a condition the tracer cannot see.
func TestNFTRoundRobinAndHashing(t *testing.T) {
	for _, alg := range []model.Algorithm{model.AlgorithmRoundRobin, model.AlgorithmSourceHashing} {
		tr := nftTracer(t, state(svc(eps(false, "10.211.1.2", "10.211.1.3", "10.211.2.2"), func(s *model.Service) {
			s.Algorithm = alg
		})))
		res := mustTrace(t, tr, tcp(podIP, vip, 80))
		got := res.Endpoints()
		for _, ip := range []string{"10.211.1.2", "10.211.1.3", "10.211.2.2"} {
			if !near(got[ip+":8080"], 1.0/3) {
				t.Errorf("%s shares %v\n%s", alg, got, dump(res))
			}
		}
		if len(res.Paths[0].Conditions) == 0 {
			t.Errorf("%s: a path without condition\n%s", alg, dump(res))
		}
	}
}

// TestNFTOtherTable: a kube-proxy-like table beside ours is walked too,
// by priority, and its DNAT counts.
func TestNFTOtherTable(t *testing.T) {
	foreign := netip.MustParseAddr("10.96.9.9")
	key := append(append(foreign.AsSlice(), 6, 0, 0, 0), 0, 80, 0, 0)
	other := &trace.NFTable{Family: "ip", Name: "kube-proxy",
		Sets: []*trace.NFSet{{Name: "service-ips", Map: true, Elems: []trace.NFElem{
			{Key: key, Verdict: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc"}}}}},
		Chains: []*trace.NFChain{
			{Name: "svc", Rules: []trace.NFRule{{Exprs: []expr.Any{
				&expr.Immediate{Register: 1, Data: netip.MustParseAddr("10.211.1.4").AsSlice()},
				&expr.Immediate{Register: 2, Data: []byte{0x1f, 0x90}},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: 2, RegAddrMin: 1, RegProtoMin: 2}}}}},
			{Name: "pre", Hook: "PREROUTING", Type: "nat", Priority: -100, Rules: []trace.NFRule{{Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
				&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: "service-ips", DestRegister: 0, IsDestRegSet: true}}}}},
		}}
	tr := nftTracer(t, state(svc(eps(false, "10.211.1.2"))), other)
	res := mustTrace(t, tr, tcp(clientIP, foreign, 80))
	check(t, res, []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.4:8080", prob: 1}})
	if !strings.Contains(dump(res), "ip kube-proxy") {
		t.Errorf("steps do not name the other table:\n%s", dump(res))
	}
}

// TestNFTUnknownInput: rules the tracer does not understand (a rule not
// decoded, an expression it does not interpret, registers out of range,
// a missing set or chain) become unknown steps or notes, never a panic.
func TestNFTUnknownInput(t *testing.T) {
	tb := &trace.NFTable{Family: "ip", Name: "odd", Sets: []*trace.NFSet{nil}, Chains: []*trace.NFChain{nil,
		{Name: "pre", Hook: "PREROUTING", Type: "nat", Priority: -100, Rules: []trace.NFRule{
			{Bad: "expression \"tproxy\" not decoded"},
			{Exprs: []expr.Any{&expr.Limit{Rate: 1}, &expr.Verdict{Kind: expr.VerdictJump, Chain: "missing"}}},
			{Exprs: []expr.Any{&expr.Payload{DestRegister: 99, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Verdict{Kind: expr.VerdictDrop}}},
			{Exprs: []expr.Any{&expr.Cmp{Register: 30, Data: []byte{1}}, &expr.Verdict{Kind: expr.VerdictDrop}}},
			{Exprs: []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: "nope"}, &expr.Verdict{Kind: expr.VerdictDrop}}},
			{Exprs: []expr.Any{&expr.Numgen{Register: 1, Modulus: 0}, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4}}},
			{Exprs: []expr.Any{nil}},
		}}}}
	res, err := (&trace.NFTables{Tables: []*trace.NFTable{tb}, Env: env()}).Trace(tcp(clientIP, vip, 80))
	if err != nil {
		t.Fatal(err)
	}
	text := dump(res)
	if !strings.Contains(text, "unknown rule") {
		t.Errorf("no unknown rule step:\n%s", text)
	}
	for _, p := range res.Paths {
		if p.Verdict != trace.VerdictNoRule {
			t.Errorf("path %s, want no rule\n%s", p.Verdict, text)
		}
	}
	if len(res.Notes) == 0 {
		t.Error("no notes")
	}
}
