package ipvs

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestScenarios runs the kernel scenarios every backend passes (package
// backendtest) against the IPVS backend, with real packets, once per
// family (TestScenarios/Hairpin/IPv6) and once dual-stack
// (TestScenarios/DualStack). Only inside the hack/vm VM, whose kernel has
// IPVS.
func TestScenarios(t *testing.T) {
	requireKernel(t)
	backendtest.Run(t, scenarioHarness())
}

// ipvsLimits are the shared checks IPVS cannot pass, with the reason; each
// is stated in docs/backends.md (IPVS backend, Limits).
var ipvsLimits = map[string]string{
	"LocalhostNodePort/IPv4": "the IPVS backend serves no NodePort on 127.0.0.1: the frontend is skipped with a problem " +
		"(IPVS does not forward loopback sources reliably), as in kube-proxy's IPVS mode; over IPv6 the scenario runs",
	"Affinity/expiry": "IPVS keeps a client's persistence template while a connection it made still exists " +
		"(an IPVS TCP connection stays in TIME_WAIT for 2 minutes), so a 2 s timeout cannot be seen to expire; " +
		"the stickiness checks run",
	"UDPEndpointReplaced/control without cleanup": "IPVS does not let a flow keep its deleted destination: with " +
		"expire_nodest_conn=1 (set by the backend) it expires the connection itself, so without the conntrack cleanup " +
		"the old endpoint never answers again; the next datagram is dropped or scheduled anew, as the timing falls " +
		"(both seen in the VM); with the cleanup it reaches the new endpoint (checked)",
	"InternalTrafficPolicyLocal/the node without a local endpoint/IPv4": "IPVS takes the node's own packets to a " +
		"virtual server in LOCAL_OUT, before any filter rule, and answers one without destinations itself with ICMP " +
		"port unreachable: the node is refused where the glue drops (pods and outside clients, filtered in INPUT " +
		"before IPVS, are dropped: checked); over IPv6 the TCP client ignores the ICMPv6 error and times out, as if dropped",
	"InternalTrafficPolicyLocal/the node without any endpoint/IPv6": "IPVS answers the node's own packets to a " +
		"virtual server without destinations itself in LOCAL_OUT, before the glue's TCP reset, with ICMPv6 port " +
		"unreachable, which a Linux TCP client ignores for its SYN: the node times out instead of being refused " +
		"(pods and outside clients get the reset: checked; over IPv4 the ICMP error refuses the node too)",
	"TCPFirstEndpoint/control without cleanup": "IPVS takes a packet to its virtual server at LOCAL_IN whatever " +
		"conntrack recorded for it, so a SYN that joins an entry left un-NATed before the VIP existed is still scheduled " +
		"(seen in the VM in both families); with the cleanup it is answered too (checked)",
	"LocalTrafficDetection/pod to a Local external frontend": "IPVS picks destinations per virtual server, not per client: " +
		"a pod reaching an external frontend with externalTrafficPolicy Local gets its local endpoints only, like an " +
		"outside client; the masquerade checks of every mode run",
}

// scenarioHarness tells the scenarios how to build the IPVS backend and
// how to read and disturb what it programs: virtual servers, VIPs on the
// dummy interface, ipsets and the glue rules.
func scenarioHarness() backendtest.Harness {
	var mu sync.Mutex
	modes := map[model.Family]xtables.Mode{} // of the backend built last, per family
	bins := func(fam model.Family) xtables.Binaries {
		mu.Lock()
		defer mu.Unlock()
		return xtables.BinariesFor(fam, modes[fam])
	}
	return backendtest.Harness{
		Tools: []string{"iptables-save", "ip6tables-save", "ipset"},
		New: func(ctx context.Context, fam model.Family) (backend.Backend, error) {
			path, err := threadNetNSPath()
			if err != nil {
				return nil, err
			}
			b, err := New(Config{Family: fam, NetNSPath: path})
			if err == nil {
				mu.Lock()
				modes[fam] = b.cfg.IPTablesMode
				mu.Unlock()
			}
			return b, err
		},
		Dump: func(t testing.TB, node *netns.NS, fam model.Family) string {
			t.Helper()
			return strings.Join([]string{ipvsDump(t, node, fam), dummyDump(t, node, fam), ipsetDump(t, node),
				canonicalSave(node.MustExec(bins(fam).Save))}, "\n")
		},
		Owned: func(t testing.TB, node *netns.NS, fam model.Family) int {
			t.Helper()
			n := 0
			for _, l := range strings.Split(ipvsDump(t, node, fam), "\n") {
				if l != "" {
					n++ // a virtual server or one of its destinations
				}
			}
			return n
		},
		Dispatch: func(t testing.TB, node *netns.NS, fam model.Family) []string {
			t.Helper()
			var out []string
			for _, s := range familyServices(t, node, fam) {
				k, _ := keyOf(s)
				out = append(out, fmt.Sprintf("%s %s %d", k.Addr, protoName(k.Proto), k.Port))
			}
			return out
		},
		// What another program would do: ipvsadm -C (of the family), the
		// family's addresses flushed off the dummy, the nat table flushed.
		Wipe: func(t testing.TB, node *netns.NS, fam model.Family) {
			t.Helper()
			deleteServices(t, node, fam)
			node.MustExec("ip", "-"+famDigit(fam), "addr", "flush", "dev", DefaultDummyInterface)
			node.MustExec(bins(fam).Cmd, "-w", "-t", "nat", "-F")
		},
		WipeDispatch: func(t testing.TB, node *netns.NS, fam model.Family) { t.Helper(); deleteServices(t, node, fam) },
		Foreign: func(t testing.TB, node *netns.NS, fam model.Family) {
			t.Helper()
			foreignState(t, node, fam, bins(fam).Cmd)
		},
		// One endpoint added, the four old ones deleted (no connections
		// to drain).
		OneEndpointWrites: 5,
		EverySyncFull:     true,
		Limits:            ipvsLimits,
	}
}

// threadNetNSPath finds the /run/netns path of the namespace the calling
// thread is in: Harness.New runs on a thread switched into the node
// namespace, and the backend opens that path for every later call.
func threadNetNSPath() (string, error) {
	var self syscall.Stat_t
	if err := syscall.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return "", err
	}
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		var st syscall.Stat_t
		p := "/run/netns/" + e.Name()
		if syscall.Stat(p, &st) == nil && st.Ino == self.Ino && st.Dev == self.Dev {
			return p, nil
		}
	}
	return "", fmt.Errorf("the calling thread's network namespace is not under /run/netns")
}

func famDigit(fam model.Family) string {
	if fam == model.IPv6 {
		return "6"
	}
	return "4"
}

// familyServices lists the node namespace's virtual servers of fam.
func familyServices(t testing.TB, node *netns.NS, fam model.Family) []*libipvs.Service {
	t.Helper()
	h, err := libipvs.New(node.Path())
	if err != nil {
		t.Fatalf("open IPVS in %s: %v", node.Name, err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		t.Fatalf("list IPVS services: %v", err)
	}
	var out []*libipvs.Service
	for _, s := range svcs {
		if k, ok := keyOf(s); ok && k.Addr.Is6() == (fam == model.IPv6) {
			out = append(out, s)
		}
	}
	return out
}

// ipvsDump renders the virtual servers of fam and their destinations, one
// line each, sorted, without counters.
func ipvsDump(t testing.TB, node *netns.NS, fam model.Family) string {
	t.Helper()
	h, err := libipvs.New(node.Path())
	if err != nil {
		t.Fatalf("open IPVS in %s: %v", node.Name, err)
	}
	defer h.Close()
	var lines []string
	for _, s := range familyServices(t, node, fam) {
		k, _ := keyOf(s)
		lines = append(lines, fmt.Sprintf("vs %s %s flags=%#x timeout=%d", k, s.SchedName, s.Flags&svcFlagPersistent, s.Timeout))
		ds, err := h.GetDestinations(s)
		if err != nil {
			t.Fatalf("list destinations of %s: %v", k, err)
		}
		for _, d := range ds {
			rk, _ := rsKeyOf(d)
			lines = append(lines, fmt.Sprintf("vs %s -> %s weight=%d fwd=%#x", k, rk, d.Weight, d.ConnectionFlags&libipvs.ConnectionFlagFwdMask))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// dummyDump lists the dummy interface's addresses of fam.
func dummyDump(t testing.TB, node *netns.NS, fam model.Family) string {
	t.Helper()
	out, err := node.Exec("ip", "-"+famDigit(fam), "-o", "addr", "show", "dev", DefaultDummyInterface)
	if err != nil {
		return "no " + DefaultDummyInterface
	}
	var addrs []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 3 {
			addrs = append(addrs, f[3])
		}
	}
	sort.Strings(addrs)
	return DefaultDummyInterface + " " + strings.Join(addrs, " ")
}

var initvalRE = regexp.MustCompile(` initval 0x[0-9a-f]+`)

// ipsetDump is every ipset of the namespace (ours and others), sorted,
// without the random hash seed.
func ipsetDump(t testing.TB, node *netns.NS) string {
	t.Helper()
	lines := strings.Split(initvalRE.ReplaceAllString(node.MustExec("ipset", "save"), ""), "\n")
	sort.Strings(lines)
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// canonicalSave drops comment lines and counters from iptables-save output.
func canonicalSave(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		keep = append(keep, counterRE.ReplaceAllString(l, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}

// deleteServices deletes every virtual server of fam, as ipvsadm -D would.
func deleteServices(t testing.TB, node *netns.NS, fam model.Family) {
	t.Helper()
	h, err := libipvs.New(node.Path())
	if err != nil {
		t.Fatalf("open IPVS in %s: %v", node.Name, err)
	}
	defer h.Close()
	for _, s := range familyServices(t, node, fam) {
		if err := h.DelService(s); err != nil {
			t.Fatalf("delete virtual server: %v", err)
		}
	}
}

// foreignState installs another program's state in the node namespace:
// a kube-proxy-like DNAT of ForeignVIP:80 to 10.211.1.4:8080, a masquerade
// and filter rules (with ipt, the tools of the backend's flavour), an
// ipset and an IPVS virtual server.
func foreignState(t testing.TB, node *netns.NS, fam model.Family, ipt string) {
	t.Helper()
	ip := func(v4 string) string { return backendtest.IP(fam, v4) }
	node.MustExec(ipt, "-w", "-t", "nat", "-N", "KUBE-SERVICES")
	node.MustExec(ipt, "-w", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
	node.MustExec(ipt, "-w", "-t", "nat", "-A", "KUBE-SERVICES", "-d", ip(backendtest.ForeignVIP), "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", backendtest.At(fam, "10.211.1.4", 8080))
	node.MustExec(ipt, "-w", "-t", "nat", "-A", "POSTROUTING", "-s", ip("10.211.0.0/16"), "-o", "uplink", "-j", "MASQUERADE")
	node.MustExec(ipt, "-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	node.MustExec(ipt, "-w", "-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "someone else", "-j", "ACCEPT")
	setFam := "inet"
	if fam == model.IPv6 {
		setFam = "inet6"
	}
	node.MustExec("ipset", "create", "FOREIGN-SET", "hash:ip", "family", setFam)
	node.MustExec("ipset", "add", "FOREIGN-SET", ip("10.99.0.1"))
	h, err := libipvs.New(node.Path())
	if err != nil {
		t.Fatalf("open IPVS in %s: %v", node.Name, err)
	}
	defer h.Close()
	a := netip.MustParseAddr(ip("10.99.0.1"))
	foreign := &libipvs.Service{Address: net.IP(a.AsSlice()), Protocol: unix.IPPROTO_TCP, Port: 99, SchedName: "wlc",
		AddressFamily: family(a), Netmask: 0xffffffff}
	if a.Is6() {
		foreign.Netmask = 128
	}
	if err := h.NewService(foreign); err != nil {
		t.Fatalf("foreign virtual server: %v", err)
	}
}
