package ipvs

// Unit tests of the diff logic against FAKES (fake_test.go). The real
// kernel is exercised by kernel_test.go inside the test VM.

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

var (
	vip    = netip.MustParseAddr("10.96.0.10")
	nodeIP = netip.MustParseAddr("192.168.50.2")
	ep1    = netip.MustParseAddr("10.244.1.1")
	ep2    = netip.MustParseAddr("10.244.1.2")
	ep3    = netip.MustParseAddr("10.244.1.3")
)

func eps(addrs ...netip.Addr) []model.Endpoint {
	var out []model.Endpoint
	for _, a := range addrs {
		out = append(out, model.Endpoint{Addr: a, Port: 8080, Ready: true, Serving: true})
	}
	return out
}

// svc builds a model service with a ClusterIP and a NodePort frontend.
func svc(name string, proto model.Protocol, endpoints ...netip.Addr) *model.Service {
	return &model.Service{
		Key: "default/" + name + ":http/" + string(proto), Namespace: "default", Name: name, Protocol: proto,
		Frontends: []model.Frontend{
			{Kind: model.KindClusterIP, Addr: vip, Port: 80, Protocol: proto, Masquerade: model.MasqueradeOffCluster},
			{Kind: model.KindNodePort, Addr: nodeIP, Port: 30080, Protocol: proto, Masquerade: model.MasqueradeAlways},
		},
		InternalEndpoints: eps(endpoints...),
		ExternalEndpoints: eps(endpoints...),
	}
}

func state(svcs ...*model.Service) *model.State {
	return &model.State{NodeName: "n1", Family: model.IPv4, NodeIPs: []netip.Addr{nodeIP},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}, Services: svcs}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestBackend(t *testing.T, h *fakeHandle, n *fakeNode, c *clock, cfg Config) *Backend {
	t.Helper()
	b, err := newBackend(cfg, h, n, (&fakeGlue{}).runner, c.now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func doSync(t *testing.T, b *Backend, st *model.State) backend.SyncResult {
	t.Helper()
	res, err := b.Sync(context.Background(), st, backend.SyncOptions{})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func wantTable(t *testing.T, h *fakeHandle, want ...string) {
	t.Helper()
	got := h.table()
	if !slices.Equal(got, want) {
		t.Fatalf("ipvs table:\n got %q\nwant %q", got, want)
	}
}

func TestSyncCreatesServersAndVIPs(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	doSync(t, b, state(svc("web", model.TCP, ep1, ep2)))
	wantTable(t, h,
		"10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1 10.244.1.2:8080:1]",
		"192.168.50.2:30080/tcp rr -> [10.244.1.1:8080:1 10.244.1.2:8080:1]")
	if !n.dummy[DefaultDummyInterface][vip] || len(n.dummy[DefaultDummyInterface]) != 1 {
		t.Fatalf("dummy addresses = %v, want only the ClusterIP (not the node IP)", n.dummy[DefaultDummyInterface])
	}
	owned := n.sets["SYNXIPVS-OWNED"]
	if len(owned) != 2 {
		t.Fatalf("OWNED set = %v, want both virtual servers", owned)
	}
	if n.sysctl["net/ipv4/vs/conntrack"] != "1" {
		t.Fatalf("vs/conntrack not set: %v", n.sysctl)
	}
	if _, ok := n.sysctl["net/ipv4/conf/all/arp_ignore"]; ok {
		t.Fatal("strict ARP sysctls set although StrictARP is off")
	}
}

func TestSyncAgainWritesNothing(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	st := state(svc("web", model.TCP, ep1, ep2))
	doSync(t, b, st)
	h.resetWrites()
	doSync(t, b, st)
	if len(h.writes) != 0 {
		t.Fatalf("second sync wrote %v", h.writes)
	}
}

func TestRestartAdoptsKernelStateWithoutGap(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	st := state(svc("web", model.TCP, ep1, ep2))
	doSync(t, newTestBackend(t, h, n, c, Config{}), st)
	h.resetWrites()
	// A new process: fresh backend, same kernel.
	b2 := newTestBackend(t, h, n, c, Config{})
	doSync(t, b2, st)
	if len(h.writes) != 0 {
		t.Fatalf("restarted backend rewrote the kernel: %v", h.writes)
	}
	// And it still owns what the first one created: removing the service
	// deletes both virtual servers.
	doSync(t, b2, state())
	wantTable(t, h)
	if len(n.dummy[DefaultDummyInterface]) != 0 {
		t.Fatalf("VIP still bound: %v", n.dummy)
	}
}

func TestDiffAddsAndRemovesOnlyDifferences(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{GracefulTimeout: -1})
	doSync(t, b, state(svc("web", model.TCP, ep1, ep2)))
	h.resetWrites()
	doSync(t, b, state(svc("web", model.TCP, ep2, ep3)))
	slices.Sort(h.writes)
	want := []string{
		"add-dst 10.96.0.10:80/tcp 10.244.1.3:8080 w=1",
		"add-dst 192.168.50.2:30080/tcp 10.244.1.3:8080 w=1",
		"del-dst 10.96.0.10:80/tcp 10.244.1.1:8080",
		"del-dst 192.168.50.2:30080/tcp 10.244.1.1:8080",
	}
	if !slices.Equal(h.writes, want) {
		t.Fatalf("writes:\n got %q\nwant %q", h.writes, want)
	}
}

func TestForeignServicesAreLeftAlone(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	foreign := &libipvs.Service{Address: netipToIP(netip.MustParseAddr("172.17.0.9")), Protocol: unix.IPPROTO_TCP,
		Port: 443, SchedName: "wlc", AddressFamily: unix.AF_INET, Netmask: 0xffffffff}
	if err := h.NewService(foreign); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, h, n, c, Config{})
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	doSync(t, b, state())
	wantTable(t, h, "172.17.0.9:443/tcp wlc -> []")
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h, "172.17.0.9:443/tcp wlc -> []")
}

func TestSchedulerPersistenceAndUpdates(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{Scheduler: "wlc"})
	s := svc("web", model.TCP, ep1)
	s.Frontends = s.Frontends[:1]
	doSync(t, b, state(s))
	wantTable(t, h, "10.96.0.10:80/tcp wlc -> [10.244.1.1:8080:1]")

	s2 := svc("web", model.TCP, ep1)
	s2.Frontends = s2.Frontends[:1]
	s2.Algorithm = model.AlgorithmSourceHashing
	s2.Affinity = model.Affinity{ClientIP: true, Timeout: 30 * time.Second}
	h.resetWrites()
	doSync(t, b, state(s2))
	wantTable(t, h, "10.96.0.10:80/tcp sh persistent=30 -> [10.244.1.1:8080:1]")
	if !slices.Equal(h.writes, []string{"upd-svc 10.96.0.10:80/tcp sh"}) {
		t.Fatalf("writes %q, want one service update", h.writes)
	}
	for a, want := range map[model.Algorithm]string{
		model.AlgorithmRoundRobin: "rr", model.AlgorithmWeightedRoundRobin: "wrr", model.AlgorithmLeastConnections: "lc",
		model.AlgorithmWeightedLeastConnections: "wlc", model.AlgorithmDestinationHashing: "dh", model.AlgorithmMaglev: "mh",
	} {
		if got, ok := schedulerFor(a, "rr"); !ok || got != want {
			t.Errorf("schedulerFor(%s) = %s %v, want %s", a, got, ok, want)
		}
	}
	if _, err := newBackend(Config{Scheduler: "bogus"}, h, n, (&fakeGlue{}).runner, nil); err == nil {
		t.Fatal("unknown scheduler accepted")
	}
}

func TestGracefulTerminationDrainsThenDeletes(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{GracefulTimeout: time.Minute})
	s := svc("web", model.TCP, ep1, ep2)
	s.Frontends = s.Frontends[:1]
	doSync(t, b, state(s))
	k := vsKey{Addr: vip, Proto: unix.IPPROTO_TCP, Port: 80}
	h.setConns(k, rsKey{ep1, 8080}, 1, 2)

	s = svc("web", model.TCP, ep2)
	s.Frontends = s.Frontends[:1]
	doSync(t, b, state(s))
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:0 10.244.1.2:8080:1]")
	if b.Draining() != 1 {
		t.Fatalf("draining = %d, want 1", b.Draining())
	}
	// Still connections: kept.
	c.t = c.t.Add(30 * time.Second)
	doSync(t, b, state(s))
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:0 10.244.1.2:8080:1]")
	// Connections gone: deleted.
	h.setConns(k, rsKey{ep1, 8080}, 0, 0)
	doSync(t, b, state(s))
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.2:8080:1]")
	if b.Draining() != 0 {
		t.Fatalf("draining = %d after delete", b.Draining())
	}
}

func TestGracefulTerminationTimeoutAndRevival(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{GracefulTimeout: time.Minute})
	both := svc("web", model.TCP, ep1, ep2)
	both.Frontends = both.Frontends[:1]
	one := svc("web", model.TCP, ep2)
	one.Frontends = one.Frontends[:1]
	k := vsKey{Addr: vip, Proto: unix.IPPROTO_TCP, Port: 80}

	doSync(t, b, state(both))
	h.setConns(k, rsKey{ep1, 8080}, 5, 0)
	doSync(t, b, state(one))
	// The endpoint comes back while draining: weight restored, not re-added.
	h.resetWrites()
	doSync(t, b, state(both))
	if !slices.Equal(h.writes, []string{"upd-dst 10.96.0.10:80/tcp 10.244.1.1:8080 w=1"}) {
		t.Fatalf("revival writes %q", h.writes)
	}
	// Removed again: the deadline starts over, then passes with open
	// connections: deleted anyway.
	doSync(t, b, state(one))
	c.t = c.t.Add(59 * time.Second)
	doSync(t, b, state(one))
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:0 10.244.1.2:8080:1]")
	c.t = c.t.Add(time.Second)
	doSync(t, b, state(one))
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.2:8080:1]")
}

func TestDrainingAdoptedAfterRestart(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	both := svc("web", model.TCP, ep1, ep2)
	both.Frontends = both.Frontends[:1]
	one := svc("web", model.TCP, ep2)
	one.Frontends = one.Frontends[:1]
	k := vsKey{Addr: vip, Proto: unix.IPPROTO_TCP, Port: 80}
	b := newTestBackend(t, h, n, c, Config{GracefulTimeout: time.Minute})
	doSync(t, b, state(both))
	h.setConns(k, rsKey{ep1, 8080}, 1, 0)
	doSync(t, b, state(one))
	b2 := newTestBackend(t, h, n, c, Config{GracefulTimeout: time.Minute})
	doSync(t, b2, state(one))
	if b2.Draining() != 1 {
		t.Fatalf("restarted backend does not track the draining destination")
	}
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:0 10.244.1.2:8080:1]")
}

func TestUDPDestinationsGoAtOnce(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{GracefulTimeout: time.Hour})
	s := svc("dns", model.UDP, ep1, ep2)
	s.Frontends = s.Frontends[:1]
	doSync(t, b, state(s))
	h.setConns(vsKey{Addr: vip, Proto: unix.IPPROTO_UDP, Port: 80}, rsKey{ep1, 8080}, 0, 3)
	s = svc("dns", model.UDP, ep2)
	s.Frontends = s.Frontends[:1]
	doSync(t, b, state(s))
	wantTable(t, h, "10.96.0.10:80/udp rr -> [10.244.1.2:8080:1]")
}

func TestSamePortDifferentProtocols(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	tcp := svc("dns", model.TCP, ep1)
	tcp.Frontends = tcp.Frontends[:1]
	udp := svc("dns", model.UDP, ep2)
	udp.Frontends = udp.Frontends[:1]
	doSync(t, b, state(tcp, udp))
	wantTable(t, h,
		"10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1]",
		"10.96.0.10:80/udp rr -> [10.244.1.2:8080:1]")
	doSync(t, b, state(udp))
	wantTable(t, h, "10.96.0.10:80/udp rr -> [10.244.1.2:8080:1]")
	if !n.dummy[DefaultDummyInterface][vip] {
		t.Fatal("VIP unbound although the UDP service still uses it")
	}
}

func TestSetsForMasqueradeNoEndpointsSourceRangesHairpin(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	lbIP := netip.MustParseAddr("203.0.113.7")
	web := svc("web", model.TCP, ep1)
	web.Frontends = append(web.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: lbIP, Port: 80,
		Protocol: model.TCP, Masquerade: model.MasqueradeNever,
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
	local := svc("local", model.TCP)
	local.Frontends = []model.Frontend{{Kind: model.KindExternalIP, Addr: netip.MustParseAddr("203.0.113.8"), Port: 81, Protocol: model.TCP, Masquerade: model.MasqueradeNever}}
	local.ExternalLocal = true
	empty := svc("empty", model.UDP)
	empty.Frontends = empty.Frontends[:1]
	// internalTrafficPolicy Local: drops while endpoints exist elsewhere,
	// rejects when there are none anywhere.
	itpRemote := svc("itp-remote", model.SCTP)
	itpRemote.Frontends = itpRemote.Frontends[:1]
	itpRemote.InternalLocal, itpRemote.ClusterEndpoints = true, eps(ep2)
	itpNone := svc("itp-none", model.TCP)
	itpNone.Frontends = []model.Frontend{{Kind: model.KindClusterIP, Addr: vip, Port: 82, Protocol: model.TCP}}
	itpNone.InternalLocal = true
	doSync(t, b, state(web, local, empty, itpRemote, itpNone))

	has := func(set, entry string) {
		t.Helper()
		for e := range n.sets[set] {
			if e.String() == entry {
				return
			}
		}
		t.Errorf("set %s lacks %s; has %v", set, entry, n.sets[set])
	}
	has("SYNXIPVS-MASQ", "192.168.50.2,tcp:30080")
	has("SYNXIPVS-MASQ-OFFCL", "10.96.0.10,tcp:80")
	has("SYNXIPVS-CLUSTER-CIDR", "10.244.0.0/16")
	has("SYNXIPVS-HAIRPIN", "10.244.1.1,tcp:8080,10.244.1.1")
	has("SYNXIPVS-LB-FW", "203.0.113.7,tcp:80")
	has("SYNXIPVS-LB-SRC", "203.0.113.7,tcp:80,198.51.100.0/24")
	has("SYNXIPVS-NOEP-DROP", "203.0.113.8,tcp:81")
	has("SYNXIPVS-NOEP-REJECT", "10.96.0.10,udp:80")
	has("SYNXIPVS-NOEP-DROP", "10.96.0.10,sctp:80")
	has("SYNXIPVS-NOEP-REJECT", "10.96.0.10,tcp:82")
	if len(n.sets["SYNXIPVS-MASQ"]) != 1 {
		t.Errorf("MASQ has %v; the Never LB frontend must not be there", n.sets["SYNXIPVS-MASQ"])
	}
}

func TestRulesTouchOnlyOurChains(t *testing.T) {
	rc := rulesConfig{Prefix: "SYNXIPVS-", Sets: newSetNames("SYNXIPVS-"), MasqMark: 0x1000, ClusterCIDRs: true}
	text := rc.render()
	for _, l := range splitLines(text) {
		if l == "" || l == "COMMIT" || l[0] == '*' {
			continue
		}
		f := strings.Fields(l)
		chain := strings.TrimPrefix(f[0], ":")
		if f[0] == "-A" {
			chain = f[1]
		}
		if !strings.HasPrefix(chain, "SYNXIPVS-") {
			t.Errorf("rule outside our chains: %s", l)
		}
		if strings.Contains(l, "KUBE-") {
			t.Errorf("rule mentions KUBE-: %s", l)
		}
	}
	if !strings.Contains(text, "! --match-set SYNXIPVS-CLUSTER-CIDR src") {
		t.Errorf("no off-cluster masquerade rule:\n%s", text)
	}
	for _, j := range rc.jumps() {
		if !strings.HasPrefix(j.Args[len(j.Args)-1], "SYNXIPVS-") {
			t.Errorf("jump to a foreign chain: %v", j)
		}
	}
}

func TestCleanupRemovesEverythingOurs(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{StrictARP: true})
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	if n.sysctl["net/ipv4/conf/all/arp_ignore"] != "1" || n.sysctl["net/ipv4/conf/all/arp_announce"] != "2" {
		t.Fatalf("strict ARP sysctls: %v", n.sysctl)
	}
	n.sets["OTHER-SET"] = map[setEntry]bool{}
	if rules, _ := fakeRunner(b).Rules("nat", "PREROUTING"); len(rules) != 1 {
		t.Fatalf("after the sync nat PREROUTING holds %q, want our jump", rules)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h)
	if dump := fakeRunner(b).Dump(); strings.Contains(dump, "SYNXIPVS") {
		t.Fatalf("glue left after Cleanup:\n%s", dump)
	}
	if _, ok := n.dummy[DefaultDummyInterface]; ok {
		t.Fatal("dummy interface left")
	}
	if len(n.sets) != 1 || n.sets["OTHER-SET"] == nil {
		t.Fatalf("sets after cleanup: %v", n.sets)
	}
}

func TestErrorsAreReportedAndRetried(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	b := newTestBackend(t, h, n, c, Config{})
	h.failNew = errors.New("boom")
	if _, err := b.Sync(context.Background(), state(svc("web", model.TCP, ep1)), backend.SyncOptions{}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("sync error = %v, want the handle's error", err)
	}
	h.failNew = nil
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	if len(h.table()) != 2 {
		t.Fatalf("retry did not create the servers: %v", h.table())
	}
}

func TestCallTimeoutAbortsAndReturns(t *testing.T) {
	release := make(chan struct{})
	aborted := false
	err := withTimeout(10*time.Millisecond, func() error { <-release; return nil }, func() { aborted = true; close(release) }, "Test")
	if !errors.Is(err, ErrCallTimeout) || !aborted {
		t.Fatalf("err=%v aborted=%v, want ErrCallTimeout and abort", err, aborted)
	}
	if err := withTimeout(time.Minute, func() error { return errors.New("x") }, func() { t.Fatal("abort on success") }, "Test"); err == nil || err.Error() != "x" {
		t.Fatalf("err = %v", err)
	}
}

func TestUnsupportedRandomOnly(t *testing.T) {
	b := &Backend{}
	if err := b.Unsupported(model.Policy{Algorithm: model.AlgorithmRandom}); err == nil {
		t.Fatal("Random accepted")
	}
	for _, a := range model.KnownAlgorithms {
		if a == model.AlgorithmRandom {
			continue
		}
		p := model.Policy{Algorithm: a, Affinity: &model.Affinity{ClientIP: true}, SourceRanges: []string{"10.0.0.0/8"}}
		if err := b.Unsupported(p); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
}

func TestLocalhostNodePortSkipped(t *testing.T) {
	s := svc("web", model.TCP, ep1)
	s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr("127.0.0.1"), Port: 30080, Protocol: model.TCP, Localhost: true})
	d := buildDesired(state(s), "rr")
	if len(d.Servers) != 2 || len(d.Problems) != 1 {
		t.Fatalf("servers %d problems %v", len(d.Servers), d.Problems)
	}
}

// The iptables backend treats every chain starting with "SYNX-" (and every
// jump to one) as its own; ours must not match that prefix.
func TestPrefixesStayOutOfTheIptablesBackendsNamespace(t *testing.T) {
	for _, fam := range []model.Family{model.IPv4, model.IPv6} {
		b, err := newBackend(Config{Family: fam}, newFakeHandle(), newFakeNode(), (&fakeGlue{}).runner, nil)
		if err != nil {
			t.Fatal(err)
		}
		rc := b.rules(nil)
		for _, chains := range rc.chains() {
			for _, ch := range chains {
				if strings.HasPrefix(ch, "SYNX-") || strings.HasPrefix(ch, "KUBE-") || len(ch) > 28 {
					t.Errorf("chain name %q", ch)
				}
			}
		}
		for _, s := range b.sets.all() {
			if strings.HasPrefix(s.Name, "SYNX-") || len(s.Name) > 31 {
				t.Errorf("ipset name %q", s.Name)
			}
		}
		if b.cfg.MasqueradeMark&(0x4000|0x8000) != 0 {
			t.Errorf("default mark %#x collides with kube-proxy's bits", b.cfg.MasqueradeMark)
		}
	}
}

// Against the FAKE handle: the real kernel is checked by
// TestKernelTimeoutsAndExcludeCIDRs in the VM.
func TestTimeoutsSetOnlyWhenTheyDiffer(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	// TCP differs, TCP-FIN equals the kernel's, UDP is 0 (kept); 1.2s
	// rounds up to the kernel's whole seconds.
	b := newTestBackend(t, h, n, c, Config{TCPTimeout: 1200*time.Millisecond + time.Hour, TCPFinTimeout: 120 * time.Second})
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	got := h.timeouts
	want := libipvs.Config{TimeoutTCP: time.Hour + 2*time.Second, TimeoutTCPFin: 120 * time.Second, TimeoutUDP: 300 * time.Second}
	if got != want {
		t.Fatalf("timeouts = %+v, want %+v", got, want)
	}
	var sets []string
	for _, w := range h.writes {
		if strings.HasPrefix(w, "set-config") {
			sets = append(sets, w)
		}
	}
	if !slices.Equal(sets, []string{"set-config tcp=1h0m2s tcpfin=0s udp=0s"}) {
		t.Fatalf("SetConfig calls = %q, want one that sets only tcp", sets)
	}
	h.resetWrites()
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	if len(h.writes) != 0 {
		t.Fatalf("second sync wrote %v", h.writes)
	}
}

func TestNoTimeoutsConfiguredLeavesKernelAlone(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	h.timeouts = libipvs.Config{TimeoutTCP: 7 * time.Second, TimeoutTCPFin: 8 * time.Second, TimeoutUDP: 9 * time.Second}
	b := newTestBackend(t, h, n, c, Config{})
	doSync(t, b, state(svc("web", model.TCP, ep1)))
	if h.timeouts != (libipvs.Config{TimeoutTCP: 7 * time.Second, TimeoutTCPFin: 8 * time.Second, TimeoutUDP: 9 * time.Second}) {
		t.Fatalf("timeouts changed: %+v", h.timeouts)
	}
}

func TestNegativeTimeoutRejected(t *testing.T) {
	if _, err := newBackend(Config{UDPTimeout: -time.Second}, newFakeHandle(), newFakeNode(), (&fakeGlue{}).runner, nil); err == nil {
		t.Fatal("negative timeout accepted")
	}
}

// A virtual server in an exclude CIDR is never deleted, by a sync or a
// cleanup, although the backend created it and recorded it as its own.
func TestExcludedVirtualServersAreNeverDeleted(t *testing.T) {
	h, n, c := newFakeHandle(), newFakeNode(), &clock{t: time.Unix(1000, 0)}
	// Created by a backend without exclusion: OWNED and bound VIP.
	doSync(t, newTestBackend(t, h, n, c, Config{}), state(svc("web", model.TCP, ep1)))
	cfg := Config{ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}}
	b := newTestBackend(t, h, n, c, cfg)
	h.resetWrites()
	doSync(t, b, state())
	// The NodePort server (not excluded) goes, the ClusterIP one stays.
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1]")
	if slices.ContainsFunc(h.writes, func(w string) bool { return strings.Contains(w, "10.96.0.10") }) {
		t.Fatalf("sync touched the excluded server: %v", h.writes)
	}
	if len(n.sets["SYNXIPVS-OWNED"]) != 0 {
		t.Fatalf("OWNED still records %v; an excluded server must not stay adopted", n.sets["SYNXIPVS-OWNED"])
	}
	// Bind the VIP again (as if ours), then clean up: still kept.
	n.dummy[DefaultDummyInterface][vip] = true
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h, "10.96.0.10:80/tcp rr -> [10.244.1.1:8080:1]")
	// Without the exclusion the same kernel state is cleaned up.
	doSync(t, newTestBackend(t, h, n, c, Config{}), state(svc("web", model.TCP, ep1)))
	if err := newTestBackend(t, h, n, c, Config{}).Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTable(t, h)
}
