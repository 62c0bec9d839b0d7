package trace_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/ipvs"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// ipvsTracer traces over what the IPVS backend keeps in the kernel for a
// state (ipvs.DesiredFor): its virtual servers, ipsets and glue, on a node
// whose dummy interface holds the VIPs.
func ipvsTracer(t *testing.T, st *model.State) *trace.IPVS {
	t.Helper()
	d, err := ipvs.DesiredFor(st, ipvs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := trace.ParseSave(strings.NewReader(d.SaveText()))
	if err != nil {
		t.Fatalf("parse the glue: %v\n%s", err, d.SaveText())
	}
	e := env()
	e.LocalAddrs = append(e.LocalAddrs, d.VIPs...)
	e.Sets = map[string]*trace.Set{}
	for name, s := range d.Sets {
		e.Sets[name] = &trace.Set{Name: name, Type: s.Type, Members: s.Members}
	}
	tr := &trace.IPVS{Rules: rs, Env: e}
	for _, s := range d.Servers {
		v := trace.VirtualServer{Addr: s.Addr, Proto: s.Proto, Port: s.Port, Scheduler: s.Scheduler, Persistent: s.Persistent, Timeout: s.Timeout}
		for _, ap := range s.Dests {
			v.Dests = append(v.Dests, trace.Destination{Addr: ap.Addr(), Port: ap.Port(), Weight: 1, Forward: "masq"})
		}
		tr.Services = append(tr.Services, v)
	}
	return tr
}

// TestIPVSBalanceAndMasquerade: each destination gets its share; an
// off-cluster client of a ClusterIP is masqueraded (OffCluster), a pod is
// not; a NodePort (Always) is.
func TestIPVSBalanceAndMasquerade(t *testing.T) {
	tr := ipvsTracer(t, state(svc(eps(false, "10.211.1.2", "10.211.1.3", "10.211.2.2"))))
	for _, tc := range []struct {
		src, dst netip.Addr
		port     uint16
		masq     bool
	}{{clientIP, vip, 80, true}, {podIP, vip, 80, false}, {podIP, nodeIP, 30080, true}} {
		res := mustTrace(t, tr, tcp(tc.src, tc.dst, tc.port))
		var want []expect
		for _, ip := range []string{"10.211.1.2", "10.211.1.3", "10.211.2.2"} {
			want = append(want, expect{verdict: trace.VerdictDNAT, to: ip + ":8080", prob: 1.0 / 3, masq: tc.masq})
		}
		check(t, res, want)
	}
}

// TestIPVSNoEndpoints: no endpoints with a Cluster policy is rejected by
// the glue before IPVS, with a Local policy dropped.
func TestIPVSNoEndpoints(t *testing.T) {
	local := svc(nil, func(s *model.Service) {
		s.Key, s.Name = "test/local:http/TCP", "local"
		s.Frontends = []model.Frontend{{Kind: model.KindLoadBalancer, Addr: lbIP, Port: 82, Protocol: model.TCP}}
		s.ExternalLocal = true
	})
	tr := ipvsTracer(t, state(svc(nil), local))
	check(t, mustTrace(t, tr, tcp(clientIP, vip, 80)), []expect{{verdict: trace.VerdictReject, prob: 1}})
	check(t, mustTrace(t, tr, tcp(clientIP, lbIP, 82)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
}

// TestIPVSHairpinAndRanges: an endpoint reaching itself is masqueraded
// (hairpin set); a load balancer with source ranges drops other clients.
func TestIPVSHairpinAndRanges(t *testing.T) {
	s := svc(eps(true, "10.211.1.2"), func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: lbIP, Port: 80,
			Protocol: model.TCP, Masquerade: model.MasqueradeNever, SourceRanges: []netip.Prefix{netip.PrefixFrom(clientIP, 32)}})
	})
	tr := ipvsTracer(t, state(s))
	check(t, mustTrace(t, tr, tcp(netip.MustParseAddr("10.211.1.2"), vip, 80)),
		[]expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1, masq: true}})
	check(t, mustTrace(t, tr, tcp(clientIP, lbIP, 80)), []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.2:8080", prob: 1}})
	check(t, mustTrace(t, tr, tcp(netip.MustParseAddr("10.210.0.3"), lbIP, 80)), []expect{{verdict: trace.VerdictDrop, prob: 1}})
}

// TestIPVSZeroWeight: destinations at weight 0 (draining) take no new
// connection; a virtual server with none left is answered by IPVS with ICMP
// port unreachable: an IPv4 client is refused; over IPv6 the client does
// not act on the ICMPv6 error, a drop.
func TestIPVSZeroWeight(t *testing.T) {
	tr := &trace.IPVS{Env: trace.Env{LocalAddrs: []netip.Addr{vip}}, Services: []trace.VirtualServer{{
		Addr: vip, Proto: "udp", Port: 53, Scheduler: "rr",
		Dests: []trace.Destination{{Addr: netip.MustParseAddr("10.211.1.2"), Port: 53, Weight: 0}, {Addr: netip.MustParseAddr("10.211.1.3"), Port: 53, Weight: 2}},
	}}}
	p := trace.Packet{Proto: "udp", Src: clientIP, Dst: vip, DstPort: 53}
	check(t, mustTrace(t, tr, p), []expect{{verdict: trace.VerdictDNAT, to: "10.211.1.3:53", prob: 1}})
	tr.Services[0].Dests[1].Weight = 0
	check(t, mustTrace(t, tr, p), []expect{{verdict: trace.VerdictReject, prob: 1}})

	vip6 := netip.MustParseAddr("fd00:10:96::10")
	tr6 := &trace.IPVS{Env: trace.Env{LocalAddrs: []netip.Addr{vip6}}, Services: []trace.VirtualServer{{
		Addr: vip6, Proto: "tcp", Port: 80, Scheduler: "rr"}}}
	p6 := trace.Packet{Proto: "tcp", Src: netip.MustParseAddr("fd00:10:210::2"), Dst: vip6, DstPort: 80}
	check(t, mustTrace(t, tr6, p6), []expect{{verdict: trace.VerdictDrop, prob: 1}})
}
