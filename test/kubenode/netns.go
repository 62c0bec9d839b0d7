package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// NS is a named network namespace ("ip netns" name) of the cluster.
type NS struct {
	Name string
}

// Path is the namespace's bind-mount file, for nsenter --net.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// addNS creates a namespace and brings its loopback up.
func addNS(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	n := &NS{Name: name}
	return n, n.run([]string{"ip", "link", "set", "lo", "up"})
}

// Exec runs a command in the namespace (and the host's mount namespace) and
// returns its combined output.
func (n *NS) Exec(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *NS) run(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := n.Exec(c...); err != nil {
			return err
		}
	}
	return nil
}

// Dial opens a connection from inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.In(n.Name, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// veth joins namespace a (interface aIf) and b (interface bIf), both up.
func veth(a *NS, aIf string, b *NS, bIf string) error {
	out, err := exec.Command("ip", "link", "add", aIf, "netns", a.Name, "type", "veth",
		"peer", "name", bIf, "netns", b.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("veth %s/%s <-> %s/%s: %w: %s", a.Name, aIf, b.Name, bIf, err, out)
	}
	return errors.Join(a.run([]string{"ip", "link", "set", aIf, "up"}), b.run([]string{"ip", "link", "set", bIf, "up"}))
}

// sysctls sets key/value pairs inside the namespace.
func (n *NS) sysctls(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if _, err := n.Exec("sysctl", "-q", "-w", kv[i]+"="+kv[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// listNamespaces returns the names of namespaces starting with prefix.
func listNamespaces(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// deleteNamespace kills what still runs in the namespace, then deletes it.
func deleteNamespace(name string) error {
	for attempt := 0; attempt < 30; attempt++ {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		if _, statErr := os.Stat("/run/netns/" + name); os.IsNotExist(statErr) {
			return nil
		}
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, out)
	}
	return nil
}

// NetNSPath is a network namespace by file, such as /proc/<pid>/ns/net of a
// pod's process, for HTTPGet from inside a pod.
type NetNSPath string

// HTTPGet sends one GET from inside the namespace and returns the body.
func (p NetNSPath) HTTPGet(ctx context.Context, url string) (string, error) {
	return httpGet(ctx, string(p), p.Dial, url)
}

// Dial opens a connection from inside the namespace.
func (p NetNSPath) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inPath(string(p), func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// inPath is netns.In for a namespace named by a file rather than by its
// "ip netns" name (the lead may fold it into test/netns).
func inPath(path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
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
		return fmt.Errorf("return from netns %s: %w", path, err) // thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
	return fnErr
}
