// Package netns is the one toolkit of the tests for throw-away networks:
// named network namespaces, the veth pairs, addresses, routes and sysctls
// between them, programs run inside them, echo servers (test/echo) inside
// them, and clients that report which server answered and which client
// address it saw.
//
// Two kinds of callers share it. Tests call New, which names a namespace
// "synx-t-<pid>-<n>-<label>", deletes it with t.Cleanup (also when the test
// fails or panics) and sweeps namespaces left by killed test processes; the
// methods that take or hold a testing.TB fail the test on error. Long-lived
// harnesses (test/cluster) call Create and Delete and use only the methods
// that return errors.
//
// The package knows nothing about iptables or IPVS; callers run their own
// tools inside a namespace with NS.Exec or NS.Do.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace New creates.
const Prefix = "synx-t-"

// runDir holds the bind-mount file of every named namespace.
const runDir = "/run/netns/"

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

// NS is a named network namespace ("ip netns" name).
type NS struct {
	Name string
	// t is the test that owns the namespace (New); nil for Create.
	t testing.TB
	// label is New's label.
	label string
	// servers are the echo servers Serve started, by identity.
	mu      sync.Mutex
	servers map[string][]string
}

var sweepOnce sync.Once

// New creates a namespace whose name ends with label and registers its
// deletion with t.Cleanup. Loopback is brought up.
func New(t testing.TB, label string) *NS {
	t.Helper()
	sweepOnce.Do(sweepStale)
	name := fmt.Sprintf("%s%d-%d-%s", Prefix, os.Getpid(), counter.Add(1), label)
	n, err := Create(name)
	if err != nil {
		t.Fatal(err)
	}
	n.t, n.label = t, label
	register(t, n)
	t.Cleanup(func() {
		if err := Delete(name); err != nil {
			t.Error(err)
		}
	})
	return n
}

// Create creates the named namespace and brings its loopback up. The caller
// deletes it with Delete; on error nothing is left behind.
func Create(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	n := &NS{Name: name}
	if _, err := n.Exec("ip", "link", "set", "lo", "up"); err != nil {
		_ = Delete(name)
		return nil, err
	}
	return n, nil
}

// Delete kills every process inside the named namespace, then deletes it.
// Deleting a namespace removes its veth ends, which removes their peers. A
// namespace that is already gone is not an error.
func Delete(name string) error {
	for attempt := 0; attempt < 30; attempt++ {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		if !Exists(name) {
			return nil
		}
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, out)
	}
	return nil
}

// List returns the names of the namespaces whose name starts with prefix.
func List(prefix string) []string {
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// Exists reports whether a namespace with this name is present.
func Exists(name string) bool {
	_, err := os.Stat(runDir + name)
	return err == nil
}

// sweepStale deletes the namespaces of test processes that no longer exist.
func sweepStale() {
	for _, name := range List(Prefix) {
		rest := strings.TrimPrefix(name, Prefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			continue // still running
		}
		_ = Delete(name)
	}
}

// fail fails the owning test. A namespace made by Create has none: calling
// a failing method on it is a programming error.
func (n *NS) fail(err error) {
	if n.t == nil {
		panic(fmt.Sprintf("netns: %v (namespace %s comes from Create, so it has no test to fail: use the methods that return errors)", err, n.Name))
	}
	n.t.Helper()
	n.t.Fatal(err)
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
		return string(out), fmt.Errorf("in netns %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Run is Exec for a list of commands, stopping at the first error.
func (n *NS) Run(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := n.Exec(c...); err != nil {
			return err
		}
	}
	return nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(args ...string) string {
	if n.t != nil {
		n.t.Helper()
	}
	out, err := n.Exec(args...)
	if err != nil {
		n.fail(err)
	}
	return out
}

// Path is the namespace's bind-mount file, e.g. for nsenter --net.
func (n *NS) Path() string { return runDir + n.Name }

// Do runs fn on an OS thread switched into the namespace. Sockets created by
// fn stay in the namespace after Do returns and may be used from any
// goroutine.
func (n *NS) Do(fn func() error) error { return InPath(n.Path(), fn) }

// In runs fn on an OS thread switched into the named network namespace, and
// switches the thread back afterwards. Sockets created by fn stay in that
// namespace and may be used from any goroutine.
func In(name string, fn func() error) error { return InPath(runDir+name, fn) }

// InPath is In for a namespace named by a file, such as /proc/<pid>/ns/net
// of a container's process.
func InPath(path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	fnErr := fn()
	if err := vnetns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine exits instead of reusing a thread in the wrong netns.
		return fmt.Errorf("return from netns %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Dial opens a connection from inside the namespace; it fits
// http.Transport.DialContext and rest.Config.Dial.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, n.Path(), network, addr)
}

// DialIn opens a connection from inside the namespace whose file is path.
func DialIn(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InPath(path, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections start inside the
// namespace, one per request.
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout,
		Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}}
}

// Handle returns a namespace handle for netlink calls; the caller closes it.
func (n *NS) Handle() (vnetns.NsHandle, error) { return vnetns.GetFromPath(n.Path()) }
