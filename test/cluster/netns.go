package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// NS is a named network namespace of the cluster ("ip netns" name).
type NS struct {
	Name string
}

// nsAdd creates a namespace and brings its loopback up.
func nsAdd(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	n := &NS{Name: name}
	if _, err := n.Exec("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(args ...string) (string, error) {
	return n.ExecInput(nil, args...)
}

// ExecInput is Exec with stdin fed to the command.
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

// run is Exec for a list of commands, stopping at the first error.
func (n *NS) run(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := n.Exec(c...); err != nil {
			return err
		}
	}
	return nil
}

// Do runs fn on an OS thread switched into the namespace. Sockets that fn
// creates stay in the namespace and may be used from any goroutine.
func (n *NS) Do(fn func() error) error { return netns.In(n.Name, fn) }

// Dial opens a connection from inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// veth joins namespace a (interface aIf) and b (interface bIf) and brings both
// ends up.
func veth(a *NS, aIf string, b *NS, bIf string) error {
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

// sysctls sets sysctls inside the namespace by writing /proc/sys.
func (n *NS) sysctls(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if _, err := n.Exec("sysctl", "-q", "-w", kv[i]+"="+kv[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// listNamespaces returns the names of the namespaces whose name starts with
// prefix.
func listNamespaces(prefix string) []string {
	entries, err := os.ReadDir("/run/netns")
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

// deleteNamespace kills every process inside the namespace, then deletes it.
// Deleting the namespace removes its veth ends, which removes their peers.
func deleteNamespace(name string) error {
	for attempt := 0; attempt < 20; attempt++ {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 && pid != os.Getpid() {
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

// noRedirects turns ICMP redirects off in the namespace, both ways. A node
// that forwards a packet for a Service address before its rules exist would
// otherwise redirect the client to the hub, and the client would cache that
// route and bypass the node for minutes.
// The interfaces named are set too, as the kernel combines their values
// with "all".
func (n *NS) noRedirects(ifaces ...string) error {
	for _, i := range append([]string{"all", "default"}, ifaces...) {
		if err := n.sysctls(
			"net.ipv4.conf."+i+".accept_redirects", "0",
			"net.ipv4.conf."+i+".send_redirects", "0",
		); err != nil {
			return err
		}
	}
	return nil
}
