package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/echo"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// roleEnv makes the harness's own executable a pod's echo server; see
// RunHelperIfRequested.
const roleEnv = "SYNX_CLUSTER_ROLE"

// RunHelperIfRequested runs the echo server (echo.Main) and exits when
// this process was started by the harness as a pod's server; otherwise it
// returns at once. Call it at the start of main (or TestMain) of every
// program that uses the harness.
func RunHelperIfRequested() {
	if os.Getenv(roleEnv) != "echo" {
		return
	}
	os.Exit(echo.Main(os.Args[1:]))
}

// Pod is a backend: a namespace behind its node, with an address in the
// node's podCIDR, running the echo server as a process. Its server answers
// with the pod's name as its ID.
type Pod struct {
	Name string
	Node *Node
	IP   string
	NS   *netns.NS
	// Server is the echo server process; Stop and Start it to cycle it.
	Server *netns.Process
	// TCP and UDP are the ports it serves.
	TCP, UDP []int
	ifName   string
}

// helperBinary returns a copy of the harness's own executable in the
// cluster's folder, which the pods run as their echo server (it outlives the
// harness when the cluster is kept).
func (c *Cluster) helperBinary() (string, error) {
	dst := filepath.Join(c.Dir, "bin", "synx-echo")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	src, err := os.Executable()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp, dst)
}

// AddPod starts a pod named name on node, serving the given TCP and UDP
// ports, and waits until it answers from its node. Names must be unique in
// the cluster.
func (c *Cluster) AddPod(ctx context.Context, node *Node, name string, tcp, udp []int) (*Pod, error) {
	bin, err := c.helperBinary()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, dup := c.pods[name]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("pod %s already exists", name)
	}
	c.podCount++
	idx := c.podCount
	node.pods++
	host := 10 + node.pods
	c.mu.Unlock()
	if host > 250 {
		return nil, fmt.Errorf("node %s is full", node.Name)
	}
	p := &Pod{
		Name:   name,
		Node:   node,
		IP:     fmt.Sprintf("10.244.%d.%d", node.Index, host),
		TCP:    tcp,
		UDP:    udp,
		ifName: fmt.Sprintf("p%d", idx),
	}
	if p.NS, err = c.addNS(fmt.Sprintf("pod-%d", idx)); err != nil {
		return nil, err
	}
	gw := fmt.Sprintf("10.244.%d.1", node.Index)
	if err := netns.AddVeth(node.NS, p.ifName, p.NS, "eth0"); err != nil {
		return nil, err
	}
	if err := node.NS.Run(
		[]string{"ip", "addr", "add", gw + "/32", "dev", p.ifName},
		[]string{"ip", "route", "add", p.IP + "/32", "dev", p.ifName},
		[]string{"sysctl", "-q", "-w", "net.ipv4.conf." + p.ifName + ".rp_filter=0"},
	); err != nil {
		return nil, err
	}
	if err := p.NS.Run(
		[]string{"ip", "addr", "add", p.IP + "/32", "dev", "eth0"},
		[]string{"ip", "route", "add", gw, "dev", "eth0", "scope", "link"},
		[]string{"ip", "route", "add", "default", "via", gw, "dev", "eth0"},
	); err != nil {
		return nil, err
	}
	p.Server = c.newProcess("pod-"+name, p.NS, append([]string{bin}, echo.Args(name, tcp, udp)...)...)
	p.Server.Env = []string{roleEnv + "=echo"}
	if err := p.Server.Start(); err != nil {
		return nil, err
	}
	if err := p.WaitServing(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.pods[name] = p
	c.mu.Unlock()
	return p, nil
}

// WaitServing waits until the pod's first port answers from its node.
func (p *Pod) WaitServing(ctx context.Context) error {
	proto, port := "tcp", 0
	if len(p.TCP) > 0 {
		port = p.TCP[0]
	} else if len(p.UDP) > 0 {
		proto, port = "udp", p.UDP[0]
	} else {
		return nil
	}
	addr := fmt.Sprintf("%s:%d", p.IP, port)
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if !p.Server.Running() {
			return fmt.Errorf("pod %s: server exited: see %s", p.Name, p.Server.LogPath)
		}
		r, err := p.Node.NS.Request(proto, addr, netns.RequestOptions{Timeout: 500 * time.Millisecond})
		if err == nil && r.Server == p.Name {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("pod %s does not answer on %s %s from %s: %v", p.Name, proto, addr, p.Node.Name, last)
}

// Pod returns the pod with this name, or nil.
func (c *Cluster) Pod(name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pods[name]
}

// DeletePod stops the pod's server and deletes its namespace.
func (c *Cluster) DeletePod(p *Pod) error {
	p.Server.Stop(2 * time.Second)
	if err := netns.Delete(p.NS.Name); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.pods, p.Name)
	c.mu.Unlock()
	return nil
}
