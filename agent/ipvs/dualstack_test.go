package ipvs

// Unit tests, against the FAKE handle and node of fake_test.go, of what
// the two family instances of a dual-stack node share: the kernel's IPVS
// table and the dummy interface. The real kernel is exercised by
// TestScenarios/DualStack in the VM.

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

var (
	vip6    = netip.MustParseAddr("fd00:96::10")
	nodeIP6 = netip.MustParseAddr("fd00:50::2")
	ep6     = netip.MustParseAddr("fd00:244::1")
)

func state6(svcs ...*model.Service) *model.State {
	return &model.State{NodeName: "n1", Family: model.IPv6, NodeIPs: []netip.Addr{nodeIP6},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:244::/64")}}, Services: svcs}
}

func svc6(name string, endpoints ...netip.Addr) *model.Service {
	return &model.Service{
		Key: "default/" + name + ":http/TCP", Namespace: "default", Name: name, Protocol: model.TCP,
		Frontends: []model.Frontend{
			{Kind: model.KindClusterIP, Addr: vip6, Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster},
			{Kind: model.KindNodePort, Addr: nodeIP6, Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways},
		},
		InternalEndpoints: eps(endpoints...), ExternalEndpoints: eps(endpoints...),
	}
}

// One family's sync and cleanup never touch the other family's virtual
// servers or VIPs; the dummy interface goes with the last family.
func TestFamiliesShareTheTableAndTheDummy(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(0, 0)}
	b4 := newTestBackend(t, h, n, c, Config{})
	b6 := newTestBackend(t, h, n, c, Config{Family: model.IPv6})
	doSync(t, b4, state(svc("web", model.TCP, ep1)))
	doSync(t, b6, state6(svc6("web", ep6)))
	both := []string{
		"10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1]",
		"192.168.50.2:30080/tcp rr -> [10.244.1.1:8080:1]",
		"[fd00:50::2]:30080/tcp rr -> [[fd00:244::1]:8080:1]",
		"[fd00:96::10]:80/tcp rr -> [[fd00:244::1]:8080:1]",
	}
	wantTable(t, h, both...)
	if d := n.dummy[DefaultDummyInterface]; !d[vip] || !d[vip6] || len(d) != 2 {
		t.Fatalf("dummy addresses %v, want both ClusterIPs", d)
	}
	// Each family's sync of its own state again writes nothing, and does
	// not see the other family's servers as stale.
	if res := doSync(t, b6, state6(svc6("web", ep6))); res.Rules != 0 || res.Changed != 0 {
		t.Errorf("IPv6 resync: %+v, want nothing written", res)
	}
	wantTable(t, h, both...)

	if err := b6.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h, both[:2]...)
	if d, ok := n.dummy[DefaultDummyInterface]; !ok || !d[vip] || len(d) != 1 {
		t.Fatalf("after the IPv6 cleanup the dummy is %v (exists %t), want it holding the IPv4 ClusterIP alone", d, ok)
	}
	if err := b4.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h)
	if _, ok := n.dummy[DefaultDummyInterface]; ok {
		t.Errorf("the dummy survived the cleanup of both families")
	}
}

// An empty IPv6 state removes the IPv6 servers and VIPs only.
func TestEmptyFamilyStateLeavesTheOtherFamily(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(0, 0)}
	b4 := newTestBackend(t, h, n, c, Config{})
	b6 := newTestBackend(t, h, n, c, Config{Family: model.IPv6})
	doSync(t, b4, state(svc("web", model.TCP, ep1)))
	doSync(t, b6, state6(svc6("web", ep6)))
	if res := doSync(t, b6, state6()); res.Changed != 2 {
		t.Errorf("IPv6 sync of no services: changed %d, want its 2 virtual servers deleted", res.Changed)
	}
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1]", "192.168.50.2:30080/tcp rr -> [10.244.1.1:8080:1]")
	if d := n.dummy[DefaultDummyInterface]; !d[vip] || len(d) != 1 {
		t.Errorf("dummy addresses %v, want the IPv4 ClusterIP alone", d)
	}
}

// Changed counts service ports whose virtual servers or destinations were
// written: an endpoint change is one, whatever its frontends.
func TestChangedCountsServicePorts(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(0, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	other := svc("other", model.UDP, ep3)
	if res := doSync(t, b, state(svc("web", model.TCP, ep1, ep2), other)); res.Changed != 2 {
		t.Errorf("first sync: changed %d, want 2 service ports", res.Changed)
	}
	res := doSync(t, b, state(svc("web", model.TCP, ep1), other))
	if res.Changed != 1 || res.Rules != 2 {
		t.Errorf("one endpoint removed: %+v, want 1 service port changed, 2 destinations deleted", res)
	}
	if res := doSync(t, b, state(svc("web", model.TCP, ep1), other)); res.Changed != 0 || res.Rules != 0 {
		t.Errorf("same state: %+v, want nothing", res)
	}
}

// Local traffic detected by input interface: off-cluster masquerade is
// decided by the interface the packet came in on (a name, or a prefix).
func TestLocalTrafficByInterface(t *testing.T) {
	for _, tc := range []struct {
		local model.LocalTraffic
		want  string
	}{
		{model.LocalTraffic{Interface: "cbr0"}, "! -i cbr0 -j SYNXIPVS-MARK-MASQ"},
		{model.LocalTraffic{Interface: "veth", InterfacePrefix: true}, "! -i veth+ -j SYNXIPVS-MARK-MASQ"},
	} {
		h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(0, 0)}
		b := newTestBackend(t, h, n, c, Config{})
		st := state(svc("web", model.TCP, ep1))
		st.Local = tc.local
		doSync(t, b, st)
		text := b.rules(st).render()
		if !strings.Contains(text, "-m set --match-set SYNXIPVS-MASQ-OFFCL dst,dst "+tc.want) || strings.Contains(text, "CLUSTER-CIDR src") {
			t.Errorf("%s: glue lacks %q or still matches CIDRs:\n%s", tc.local, tc.want, text)
		}
		if !n.sets["SYNXIPVS-MASQ-OFFCL"][setEntry{IP: vip, Proto: 6, Port: 80}] {
			t.Errorf("%s: the ClusterIP is not in MASQ-OFFCL: %v", tc.local, n.sets["SYNXIPVS-MASQ-OFFCL"])
		}
	}
}

// Over IPv6 a TCP frontend without endpoints is refused with a reset, the
// rest with the default ICMPv6 error; IPv4 keeps ICMP port unreachable.
func TestRejectOverIPv6ResetsTCP(t *testing.T) {
	const reset = "-p tcp -m set --match-set SYNXIPVS6-NOEP-REJECT dst,dst -j REJECT --reject-with tcp-reset"
	v6 := rulesConfig{Prefix: "SYNXIPVS6-", Sets: newSetNames("SYNXIPVS6-"), MasqMark: 0x1000, V6: true}.render()
	if !strings.Contains(v6, reset) || strings.Index(v6, reset) > strings.Index(v6, "SYNXIPVS6-NOEP-REJECT dst,dst -j REJECT\n") {
		t.Errorf("IPv6 glue lacks the TCP reset before the generic REJECT:\n%s", v6)
	}
	if v4 := (rulesConfig{Prefix: "SYNXIPVS-", Sets: newSetNames("SYNXIPVS-"), MasqMark: 0x1000}).render(); strings.Contains(v4, "tcp-reset") {
		t.Errorf("IPv4 glue resets TCP:\n%s", v4)
	}
}

// The explain view's desired glue (DesiredFor) is what the backend writes,
// in both families and with local traffic detected by interface.
func TestDesiredGlueIsTheBackendsGlue(t *testing.T) {
	for _, fam := range []model.Family{model.IPv4, model.IPv6} {
		h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(0, 0)}
		b := newTestBackend(t, h, n, c, Config{Family: fam})
		st := state6(svc6("web", ep6))
		if fam == model.IPv4 {
			st = state(svc("web", model.TCP, ep1))
		}
		st.Local = model.LocalTraffic{Interface: "veth", InterfacePrefix: true}
		d, err := DesiredFor(st, Config{Family: fam})
		if err != nil {
			t.Fatal(err)
		}
		if want := b.rules(st).render(); d.Glue != want {
			t.Errorf("%s: DesiredFor glue\n%s\nbackend glue\n%s", fam, d.Glue, want)
		}
	}
}
