package conntrack

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

func udpService(key string, proto model.Protocol, vip string, eps ...string) *model.Service {
	s := &model.Service{Key: key, Protocol: proto,
		Frontends: []model.Frontend{{Kind: model.KindClusterIP, Addr: netip.MustParseAddr(vip), Port: 53, Protocol: proto}}}
	for _, e := range eps {
		s.InternalEndpoints = append(s.InternalEndpoints, model.Endpoint{Addr: netip.MustParseAddr(e), Port: 5353, Ready: true})
	}
	s.ExternalEndpoints = s.InternalEndpoints
	return s
}

func state(svcs ...*model.Service) *model.State { return &model.State{Services: svcs} }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestCompute(t *testing.T) {
	cases := []struct {
		name     string
		old, cur *model.State
		stale    []flowKey
		served   []Frontend
	}{
		{name: "no change",
			old: state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1")),
			cur: state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1"))},
		{name: "endpoint replaced",
			old:   state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1", "10.0.0.2")),
			cur:   state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.2", "10.0.0.3")),
			stale: []flowKey{{ap("10.96.0.10:53"), ap("10.0.0.1:5353")}}},
		{name: "service removed",
			old:   state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1")),
			cur:   state(),
			stale: []flowKey{{ap("10.96.0.10:53"), ap("10.0.0.1:5353")}}},
		{name: "first endpoint",
			old:    state(udpService("a", model.UDP, "10.96.0.10")),
			cur:    state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1")),
			served: []Frontend{{model.UDP, ap("10.96.0.10:53")}}},
		{name: "new service with endpoints",
			old:    state(),
			cur:    state(udpService("a", model.UDP, "10.96.0.10", "10.0.0.1")),
			served: []Frontend{{model.UDP, ap("10.96.0.10:53")}}},
		{name: "TCP endpoint replaced: no stale flows",
			old: state(udpService("a", model.TCP, "10.96.0.10", "10.0.0.1")),
			cur: state(udpService("a", model.TCP, "10.96.0.10", "10.0.0.2"))},
		{name: "TCP frontend moved: newly served",
			old:    state(udpService("a", model.TCP, "10.96.0.10", "10.0.0.1")),
			cur:    state(udpService("a", model.TCP, "10.96.0.11", "10.0.0.2")),
			served: []Frontend{{model.TCP, ap("10.96.0.11:53")}}},
		{name: "TCP frontend without endpoints: not served",
			old: state(),
			cur: state(udpService("a", model.TCP, "10.96.0.11"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Compute(tc.old, tc.cur)
			if !reflect.DeepEqual(p.Stale, tc.stale) || !reflect.DeepEqual(p.NewlyServed, tc.served) {
				t.Errorf("plan = %+v, want stale %v served %v", p, tc.stale, tc.served)
			}
		})
	}
}

// TestFilter checks the netlink filter against hand-made flow records (a
// fake of the kernel's dump, which the kernel tests in agent/iptables
// exercise for real).
func TestFilter(t *testing.T) {
	f := &filter{
		stale: map[flowKey]bool{{ap("10.96.0.10:53"), ap("10.0.0.1:5353")}: true},
		served: map[Frontend]bool{{model.UDP, ap("10.96.0.11:53")}: true, {model.TCP, ap("10.96.0.12:80")}: true,
			{model.SCTP, ap("10.96.0.13:80")}: true},
	}
	flow := func(proto uint8, dst string, dport uint16, rsrc string, rport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP("10.1.0.1"), DstIP: net.ParseIP(dst), DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(rsrc), SrcPort: rport},
		}
	}
	tcp := func(f *netlink.ConntrackFlow, state uint8) *netlink.ConntrackFlow {
		f.ProtoInfo = &netlink.ProtoInfoTCP{State: state}
		return f
	}
	for _, tc := range []struct {
		name string
		f    *netlink.ConntrackFlow
		want bool
	}{
		{"stale endpoint", flow(unix.IPPROTO_UDP, "10.96.0.10", 53, "10.0.0.1", 5353), true},
		{"other endpoint", flow(unix.IPPROTO_UDP, "10.96.0.10", 53, "10.0.0.2", 5353), false},
		{"tcp same tuple", flow(unix.IPPROTO_TCP, "10.96.0.10", 53, "10.0.0.1", 5353), false},
		{"newly served frontend", flow(unix.IPPROTO_UDP, "10.96.0.11", 53, "10.96.0.11", 53), true},
		{"other port", flow(unix.IPPROTO_UDP, "10.96.0.11", 54, "10.96.0.11", 54), false},
		{"tcp to a UDP frontend", tcp(flow(unix.IPPROTO_TCP, "10.96.0.11", 53, "10.96.0.11", 53), 1), false},
		{"tcp unanswered, untranslated", tcp(flow(unix.IPPROTO_TCP, "10.96.0.12", 80, "10.96.0.12", 80), 1), true},
		{"tcp SYN_SENT2, untranslated", tcp(flow(unix.IPPROTO_TCP, "10.96.0.12", 80, "10.96.0.12", 80), 9), true},
		{"tcp answered, untranslated", tcp(flow(unix.IPPROTO_TCP, "10.96.0.12", 80, "10.96.0.12", 80), 3), false},
		{"tcp unanswered, translated", tcp(flow(unix.IPPROTO_TCP, "10.96.0.12", 80, "10.0.0.1", 8080), 1), false},
		{"tcp without protocol info", flow(unix.IPPROTO_TCP, "10.96.0.12", 80, "10.96.0.12", 80), false},
		{"sctp untranslated", flow(unix.IPPROTO_SCTP, "10.96.0.13", 80, "10.96.0.13", 80), true},
		{"sctp translated", flow(unix.IPPROTO_SCTP, "10.96.0.13", 80, "10.0.0.1", 8080), false},
	} {
		if got := f.MatchConntrackFlow(tc.f); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
