// Package vm holds self-tests of the test VM built by hack/vm: they prove
// that the tools and kernel features the real-kernel suites rely on work
// inside it (named namespaces, veth, iptables-restore with extensions,
// ipsets over netlink, IPVS). Outside the VM they skip, loudly.
package vm

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/vishvananda/netlink"
)

func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("SYNX_IN_VM") != "1" {
		t.Skip("SKIPPING VM SELF-TEST: not inside the hack/vm test VM (run make test-ipvs-vm)")
	}
	netns.Require(t, "iptables-restore", "iptables-save")
}

func TestKernelHasIPVSAndSchedulers(t *testing.T) {
	requireVM(t)
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Fatalf("no IPVS in the VM kernel: %v", err)
	}
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_dh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh", "ip_set", "veth", "dummy"} {
		if !strings.Contains(string(mods), m+" ") {
			t.Errorf("module %s not loaded", m)
		}
	}
}

func TestIptablesRestoreWithSetMatchInNamespace(t *testing.T) {
	requireVM(t)
	ns := netns.New(t, "ipt")
	err := ns.Do(func() error {
		port := uint16(80)
		if err := netlink.IpsetCreate("SYNX-VMTEST", "hash:ip,port", netlink.IpsetCreateOptions{}); err != nil {
			return err
		}
		return netlink.IpsetAdd("SYNX-VMTEST", &netlink.IPSetEntry{IP: net.ParseIP("10.0.0.1"), Port: &port})
	})
	if err != nil {
		t.Fatalf("ipset over netlink: %v", err)
	}
	rules := `*nat
:SYNX-VMTEST - [0:0]
-A PREROUTING -m comment --comment "vm self-test" -j SYNX-VMTEST
-A SYNX-VMTEST -m set --match-set SYNX-VMTEST dst,dst -j MARK --set-xmark 0x8000/0x8000
-A POSTROUTING -m mark --mark 0x8000/0x8000 -j MASQUERADE
COMMIT
*filter
-A INPUT -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -p tcp -m multiport --dports 1,2 -j REJECT
COMMIT
`
	if out, err := ns.ExecInput([]byte(rules), "iptables-restore", "--noflush"); err != nil {
		t.Fatalf("iptables-restore: %v %s", err, out)
	}
	out := ns.MustExec("iptables-save")
	for _, want := range []string{"--match-set SYNX-VMTEST dst,dst", "-j MASQUERADE", "--dst-type LOCAL"} {
		if !strings.Contains(out, want) {
			t.Errorf("iptables-save lacks %q:\n%s", want, out)
		}
	}
}

func TestVethTrafficBetweenNamespaces(t *testing.T) {
	requireVM(t)
	a, b := netns.New(t, "a"), netns.New(t, "b")
	netns.Veth(t, a, "va", b, "vb")
	a.AddAddr("va", "192.0.2.1/24")
	b.AddAddr("vb", "192.0.2.2/24")
	b.Serve(t, "tcp", "192.0.2.2:8080", "srv")
	r, err := a.Request("tcp", "192.0.2.2:8080", netns.RequestOptions{})
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if r.Server != "srv" || r.ClientIP() != "192.0.2.1" {
		t.Fatalf("unexpected reply %+v", r)
	}
}

// TestNFTCountersCount proves that nftables counters work in the VM kernel:
// iptables-nft puts a counter expression in every rule, so a kernel without
// counter support would fail every iptables suite. Debian's 6.1 has no
// separate nft_counter module (it is part of nf_tables), which the harness
// reports when it stages the modules.
func TestNFTCountersCount(t *testing.T) {
	requireVM(t)
	ns := netns.New(t, "cnt")
	ns.MustExec("iptables-nft", "-w", "-A", "OUTPUT", "-o", "lo", "-p", "icmp", "-m", "comment", "--comment", "vm counter test")
	ns.MustExec("ping", "-c", "3", "-W", "1", "127.0.0.1")
	out := ns.MustExec("iptables-nft", "-w", "-L", "OUTPUT", "-v", "-x", "-n")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "vm counter test") {
			f := strings.Fields(l)
			if len(f) == 0 || f[0] == "0" {
				t.Fatalf("the counter of the rule did not count the pings:\n%s", out)
			}
			return
		}
	}
	t.Fatalf("rule not listed:\n%s", out)
}
