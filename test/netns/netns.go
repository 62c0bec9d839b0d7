// Package netns builds throw-away network topologies for kernel tests: named
// network namespaces joined by veth pairs, addresses and routes, real Go
// TCP and UDP servers inside them, and a client that reports which
// server answered and which client address the server saw.
//
// Every namespace is named "synx-t-<pid>-<n>-<label>" and is deleted by
// t.Cleanup, also when the test fails or panics. Namespaces left behind by a
// killed test process are swept by New on the next run.
//
// The package knows nothing about iptables or IPVS; callers run their own
// tools inside a namespace with NS.Exec or NS.Do.
package netns

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	vnetns "github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "synx-t-"

var counter atomic.Int64

// Require skips the test, loudly, unless it runs as root and every named
// binary (plus "ip") is on PATH.
func Require(t testing.TB, binaries ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING KERNEL TEST: needs root to create network namespaces")
	}
	for _, b := range append([]string{"ip"}, binaries...) {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("SKIPPING KERNEL TEST: %q not found on PATH (install iproute2/iptables/conntrack)", b)
		}
	}
}

// NS is a named network namespace owned by a test.
type NS struct {
	Name string
	t    testing.TB
}

var sweepOnce sync.Once

// New creates a namespace whose name ends with label and registers its
// deletion with t.Cleanup. Loopback is brought up.
func New(t testing.TB, label string) *NS {
	t.Helper()
	sweepOnce.Do(sweepStale)
	name := fmt.Sprintf("%s%d-%d-%s", Prefix, os.Getpid(), counter.Add(1), label)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.MustExec("ip", "link", "set", "lo", "up")
	return n
}

// sweepStale deletes namespaces created by test processes that no longer
// exist.
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) {
			continue
		}
		rest := strings.TrimPrefix(f[0], Prefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			continue // still running
		}
		_ = exec.Command("ip", "netns", "del", f[0]).Run()
	}
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(args ...string) (string, error) {
	return n.ExecInput(nil, args...)
}

// ExecInput is Exec with data fed to the command's standard input.
func (n *NS) ExecInput(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(args ...string) string {
	n.t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the namespace (dotted or slashed key).
func (n *NS) Sysctl(key, value string) {
	n.t.Helper()
	n.MustExec("sysctl", "-q", "-w", key+"="+value)
}

// Do runs fn on an OS thread switched into the namespace. Sockets created by
// fn stay in the namespace after Do returns and may be used from any
// goroutine.
func (n *NS) Do(fn func() error) error { return In(n.Name, fn) }

// In runs fn on an OS thread switched into the named network namespace, and
// switches the thread back afterwards. Sockets created by fn stay in that
// namespace and may be used from any goroutine. It needs no testing.T, so
// non-test code such as the local cluster harness shares it.
func In(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	fnErr := fn()
	if err := vnetns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine exits instead of reusing a thread in the wrong netns.
		return fmt.Errorf("return from netns %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Handle returns a namespace handle for netlink calls; the caller closes it.
func (n *NS) Handle() (vnetns.NsHandle, error) { return vnetns.GetFromName(n.Name) }

// Veth connects two namespaces with a veth pair named aIf in a and bIf in b
// (at most 15 characters each) and brings both ends up.
func Veth(t testing.TB, a *NS, aIf string, b *NS, bIf string) {
	t.Helper()
	out, err := exec.Command("ip", "link", "add", aIf, "netns", a.Name, "type", "veth",
		"peer", "name", bIf, "netns", b.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("veth %s/%s <-> %s/%s: %v: %s", a.Name, aIf, b.Name, bIf, err, out)
	}
	a.MustExec("ip", "link", "set", aIf, "up")
	b.MustExec("ip", "link", "set", bIf, "up")
}

// AddAddr assigns an address in CIDR notation to an interface.
func (n *NS) AddAddr(ifname, cidr string) {
	n.t.Helper()
	n.MustExec("ip", "addr", "add", cidr, "dev", ifname)
}

// AddRoute adds a route; via may be empty for an on-link route through dev.
func (n *NS) AddRoute(dst, via, dev string) {
	n.t.Helper()
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

// EnableForwarding turns on IPv4 forwarding in the namespace.
func (n *NS) EnableForwarding() {
	n.t.Helper()
	n.Sysctl("net.ipv4.ip_forward", "1")
}

// Exists reports whether a namespace with this name is present.
func Exists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}
