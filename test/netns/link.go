package netns

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// AddVeth connects two namespaces with a veth pair named aIf in a and bIf
// in b (at most 15 characters each) and brings both ends up.
func AddVeth(a *NS, aIf string, b *NS, bIf string) error {
	out, err := exec.Command("ip", "link", "add", aIf, "netns", a.Name, "type", "veth",
		"peer", "name", bIf, "netns", b.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("veth %s/%s <-> %s/%s: %w: %s", a.Name, aIf, b.Name, bIf, err, out)
	}
	if _, err := a.Exec("ip", "link", "set", aIf, "up"); err != nil {
		return err
	}
	_, err = b.Exec("ip", "link", "set", bIf, "up")
	return err
}

// Veth is AddVeth that fails the test on error.
func Veth(t testing.TB, a *NS, aIf string, b *NS, bIf string) {
	t.Helper()
	if err := AddVeth(a, aIf, b, bIf); err != nil {
		t.Fatal(err)
	}
}

// AddAddr assigns an address in CIDR notation to an interface.
func (n *NS) AddAddr(ifname, cidr string) {
	if n.t != nil {
		n.t.Helper()
	}
	n.MustExec("ip", "addr", "add", cidr, "dev", ifname)
}

// AddRoute adds a route; via may be empty for an on-link route through dev.
func (n *NS) AddRoute(dst, via, dev string) {
	if n.t != nil {
		n.t.Helper()
	}
	args := []string{"ip", "route", "add", dst}
	if via != "" {
		args = append(args, "via", via)
	}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	n.MustExec(args...)
}

// Link joins a router namespace and a leaf namespace with a veth pair,
// assigns routerCIDR/leafCIDR (e.g. "10.1.0.1/24", "10.1.0.2/24") and gives
// the leaf a default route via the router's address. Call EnableForwarding
// on the router to let it route between its leaves.
func Link(t testing.TB, router *NS, routerIf, routerCIDR string, leaf *NS, leafIf, leafCIDR string) {
	t.Helper()
	Veth(t, router, routerIf, leaf, leafIf)
	router.AddAddr(routerIf, routerCIDR)
	leaf.AddAddr(leafIf, leafCIDR)
	gw := strings.SplitN(routerCIDR, "/", 2)[0]
	leaf.AddRoute("default", gw, leafIf)
}

// SetSysctls sets sysctls inside the namespace, given as key, value pairs
// (dotted or slashed keys).
func (n *NS) SetSysctls(kv ...string) error {
	if len(kv)%2 != 0 {
		return fmt.Errorf("sysctls in %s: %d arguments, want key, value pairs", n.Name, len(kv))
	}
	for i := 0; i < len(kv); i += 2 {
		if _, err := n.Exec("sysctl", "-q", "-w", kv[i]+"="+kv[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// Sysctl is SetSysctls of one key that fails the test on error.
func (n *NS) Sysctl(key, value string) {
	if n.t != nil {
		n.t.Helper()
	}
	if err := n.SetSysctls(key, value); err != nil {
		n.fail(err)
	}
}

// EnableForwarding turns on IPv4 forwarding in the namespace.
func (n *NS) EnableForwarding() {
	if n.t != nil {
		n.t.Helper()
	}
	n.Sysctl("net.ipv4.ip_forward", "1")
}

// NoRedirects turns ICMP redirects off in the namespace, both ways, for
// "all", "default" and the interfaces named (the kernel combines their
// values with "all"). A router that forwards a packet for a Service address
// before its rules exist would otherwise redirect the client to the next
// hop, and the client would cache that route and bypass the router for
// minutes. IPv6 redirects are refused too (Linux has no switch to stop
// sending them).
func (n *NS) NoRedirects(ifaces ...string) error {
	for _, i := range append([]string{"all", "default"}, ifaces...) {
		if err := n.SetSysctls(
			"net.ipv4.conf."+i+".accept_redirects", "0",
			"net.ipv4.conf."+i+".send_redirects", "0",
			"net.ipv6.conf."+i+".accept_redirects", "0",
		); err != nil {
			return err
		}
	}
	return nil
}
