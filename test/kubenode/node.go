package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/controlplane"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// Node is one Kubernetes node: a network namespace with the node's address,
// a private mount namespace, and in them containerd and a kubelet. Every
// process of the node, containers included, lives below the cgroup
// Cgroups.Path, which is kubelet's cgroupRoot; Stop kills what is there and
// removes it, and the mount namespace, with every mount made in it (overlay
// snapshots, pod volumes, shm, netns files), goes with its last process.
type Node struct {
	Name string
	// Index numbers the node from 1; its addresses derive from it
	// (test/clusternet).
	Index   int
	IP      string
	PodCIDR string
	// IP6 and PodCIDR6 are the node's IPv6 address and pod network on a
	// dual-stack cluster, empty on a single-stack one.
	IP6, PodCIDR6 string
	Zone          string
	// CgroupPath is kubelet's cgroupRoot, made in every hierarchy; the
	// node's own processes live in its "runtime" child.
	CgroupPath string
	// NS is the node's network namespace, created by the caller.
	NS *netns.NS
	// Dir holds the node's configs, state and logs. Paths under it are the
	// same inside the node's mount namespace and outside.
	Dir string
	// Bin holds kubelet; CNIBin holds the CNI plugins.
	Bin, CNIBin string
	// PKI signs the kubelet's client certificate; Images are OCI archives
	// imported into containerd's k8s.io namespace before kubelet starts.
	PKI    *controlplane.PKI
	Images []string
	// SandboxImage is containerd's pause image, one of Images.
	SandboxImage string

	Cgroups                       *CgroupTree
	Holder, Containerd, Kubelet   *netns.Process
	kubeletKubeconfig, kubeletCfg string
	cluster                       *Cluster
}

// net is what the pod routes need of the node.
func (n *Node) net() clusternet.Node {
	return clusternet.Node{NS: n.NS, IP: n.IP, PodCIDR: n.PodCIDR, IP6: n.IP6, PodCIDR6: n.PodCIDR6}
}

// IPs are the node's addresses, IPv4 first.
func (n *Node) IPs() []string {
	if n.IP6 == "" {
		return []string{n.IP}
	}
	return []string{n.IP, n.IP6}
}

// PodCIDRs are the node's pod networks, IPv4 first, as in its Node's
// spec.podCIDRs.
func (n *Node) PodCIDRs() []string {
	if n.PodCIDR6 == "" {
		return []string{n.PodCIDR}
	}
	return []string{n.PodCIDR, n.PodCIDR6}
}

// hubIf is the hub's end of the node's link.
func (n *Node) hubIf() string { return fmt.Sprintf("n%d", n.Index) }

// setUpNetwork plugs the node's (new) namespace into the hub and routes
// the other nodes' pod networks from it. bridge-nf-call-iptables (and
// -ip6tables): a Service proxy's rules must see pod traffic that stays on
// the node's bridge (built into this kernel).
func (n *Node) setUpNetwork() error {
	if err := clusternet.Attach(n.cluster.Hub, n.hubIf(), n.NS, n.IP, n.IP6); err != nil {
		return err
	}
	var others []clusternet.Node
	for _, m := range n.cluster.Nodes {
		if m != n {
			others = append(others, m.net())
		}
	}
	if err := clusternet.SetUpNode(n.net(), others); err != nil {
		return err
	}
	return n.NS.SetSysctls("net.bridge.bridge-nf-call-iptables", "1", "net.bridge.bridge-nf-call-ip6tables", "1")
}

// Mount points that containerd, its shims, CRI and the CNI plugins use
// whatever their config says (shim sockets in /run/containerd/s, pod netns
// files in /var/run/netns, CNI results in /var/lib/cni, container log links
// in /var/log/containers). Inside the node's mount namespace each is the
// node's own: a tmpfs, or a folder of Dir bound over it. The copy of the
// host's /run/netns is detached first: its nsfs mounts would keep every
// network namespace that existed then (the cluster's, other programs')
// alive after "ip netns del" until the node stops.
const holderScript = `set -e
umount --recursive --lazy /run/netns 2>/dev/null || true
mount -t tmpfs -o mode=0755,size=64m synx-run /run
mount --bind "$1/var-lib" /var/lib
mount --bind "$1/var-log" /var/log
touch "$1/holder.ready"
exec sleep infinity`

// Start brings the node up: cgroups, the mount namespace, containerd with
// the images, then kubelet. The node registers itself; see
// Cluster.WaitNodesReady.
func (n *Node) Start(ctx context.Context) error {
	for _, d := range []string{"var-lib", "var-log", "containerd", "kubelet", "cni/net.d", "cni/ipam", "logs"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	var err error
	if n.Cgroups, err = NewCgroupTree(n.CgroupPath, "runtime"); err != nil {
		return err
	}
	n.Holder = n.process("holder", []string{"nsenter", "--net=" + n.NS.Path(), "--",
		"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", holderScript, "sh", n.Dir})
	if err := n.Holder.Start(); err != nil {
		return err
	}
	if err := waitFile(ctx, filepath.Join(n.Dir, "holder.ready"), n.Holder); err != nil {
		return err
	}
	if err := n.writeConfigs(); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	return n.startKubelet()
}

// process is a Process of this node, started in its runtime cgroup.
func (n *Node) process(name string, argv []string) *netns.Process {
	return &netns.Process{
		Name:    n.Name + "/" + name,
		Args:    argv,
		Cgroups: n.Cgroups.ProcsFiles("runtime"),
		LogPath: filepath.Join(n.Dir, "logs", name+".log"),
	}
}

// Enter is the command prefix that runs a program in the node's network and
// mount namespaces.
func (n *Node) Enter() []string {
	return []string{"nsenter", "--target", strconv.Itoa(n.Holder.Pid()), "--mount", "--net", "--"}
}

// Exec runs a command inside the node (network and mount namespace) and
// returns its combined output.
func (n *Node) Exec(args ...string) (string, error) {
	if n.Holder == nil || !n.Holder.Running() {
		return "", fmt.Errorf("node %s is not running", n.Name)
	}
	argv := append(n.Enter(), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("on %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *Node) containerdSocket() string { return "/run/containerd/containerd.sock" }

// startContainerd starts containerd, waits for its socket and imports the
// images (again after a restart: containerd keeps them, the import only
// checks).
func (n *Node) startContainerd(ctx context.Context) error {
	n.Containerd = n.process("containerd", append(n.Enter(), "containerd", "--config", filepath.Join(n.Dir, "containerd.toml")))
	if err := n.Containerd.Start(); err != nil {
		return err
	}
	if err := n.waitContainerd(ctx); err != nil {
		return err
	}
	for _, img := range n.Images {
		if _, err := n.Exec("ctr", "--address", n.containerdSocket(), "-n", "k8s.io", "images", "import", img); err != nil {
			return fmt.Errorf("import %s: %w", img, err)
		}
	}
	return nil
}

// waitContainerd waits until containerd answers on its socket.
func (n *Node) waitContainerd(ctx context.Context) error {
	return poll.Until(ctx, time.Minute, "containerd of "+n.Name+" (log "+n.Containerd.LogPath+")", func(context.Context) (bool, string, error) {
		if !n.Containerd.Running() {
			return false, "", fmt.Errorf("containerd exited")
		}
		_, err := n.Exec("ctr", "--address", n.containerdSocket(), "version")
		return err == nil, fmt.Sprint(err), nil
	})
}

func (n *Node) startKubelet() error {
	n.Kubelet = n.process("kubelet", append(n.Enter(), filepath.Join(n.Bin, "kubelet"),
		"--config="+n.kubeletCfg,
		"--kubeconfig="+n.kubeletKubeconfig,
		"--root-dir="+filepath.Join(n.Dir, "kubelet"),
		"--hostname-override="+n.Name,
		"--node-ip="+strings.Join(n.IPs(), ","),
		"--node-labels=topology.kubernetes.io/zone="+n.Zone,
		"--v=2"))
	return n.Kubelet.Start()
}

// Stop stops kubelet, then kills every process left in the node's cgroups
// (containerd, shims, containers, the holder), which ends the node's mount
// namespace, and removes the cgroups. The network namespace is the
// caller's. Stop is safe on a node that never started.
func (n *Node) Stop() error {
	if n.Kubelet != nil {
		n.Kubelet.Stop(5 * time.Second)
	}
	if n.Containerd != nil {
		n.Containerd.Stop(5 * time.Second)
	}
	var errs []error
	if n.Cgroups != nil {
		errs = append(errs, n.Cgroups.Destroy(30*time.Second))
	}
	if n.Holder != nil {
		n.Holder.Stop(time.Second)
	}
	return errors.Join(errs...)
}

// waitFile waits until path exists, failing early when proc exits.
func waitFile(ctx context.Context, path string, proc *netns.Process) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if !proc.Running() || time.Now().After(deadline) {
			return fmt.Errorf("%s did not get ready: see %s", proc.Name, proc.LogPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PodNetNS is the network namespace of a pod running on this node, found
// through the pod's cgroup.
func (n *Node) PodNetNS(uid string) (NetNSPath, error) {
	pids := n.Cgroups.PodPids(uid)
	if len(pids) == 0 {
		return "", fmt.Errorf("node %s: no process of pod %s in %s", n.Name, uid, n.CgroupPath)
	}
	return NetNSPath(fmt.Sprintf("/proc/%d/ns/net", pids[0])), nil
}

// KillContainerd kills containerd with SIGKILL, as a crash would. The
// shims and containers live on; so must every Service the node's agent
// programmed. RestartContainerd starts it again.
func (n *Node) KillContainerd() error { return n.Containerd.Kill() }

// RestartContainerd starts containerd again after KillContainerd and
// waits for its socket.
func (n *Node) RestartContainerd(ctx context.Context) error {
	if err := n.Containerd.Start(); err != nil {
		return err
	}
	return n.waitContainerd(ctx)
}

// KillKubelet kills kubelet with SIGKILL; RestartKubelet starts it again.
func (n *Node) KillKubelet() error { return n.Kubelet.Kill() }

// RestartKubelet starts kubelet again after KillKubelet.
func (n *Node) RestartKubelet() error { return n.Kubelet.Start() }

// Reboot is a power cycle of the node: every process of the node (pods,
// containerd, kubelet) is killed at once and its mount namespace with its
// tmpfs /run goes; the network namespace, with every rule, route, bridge
// and conntrack entry the kernel held, is made anew, as after a boot; then
// containerd and kubelet start again on the same disk (the node's folder:
// containerd's images and metadata, kubelet's state). Nothing else helps
// the node back: kubelet restarts its pods, among them the Service proxy.
func (n *Node) Reboot(ctx context.Context) error {
	if err := n.Cgroups.Destroy(30 * time.Second); err != nil {
		return fmt.Errorf("power off %s: %w", n.Name, err)
	}
	n.Holder.Stop(time.Second)
	if err := netns.Delete(n.NS.Name); err != nil {
		return err
	}
	// Another name or an open socket may keep the old namespace alive, and
	// with it its end of the hub's link: cut the link from the hub's side.
	if _, err := n.cluster.Hub.Exec("ip", "link", "show", n.hubIf()); err == nil {
		if err := n.cluster.Hub.Run([]string{"ip", "link", "del", n.hubIf()}); err != nil {
			return err
		}
	}
	var err error
	if n.NS, err = netns.Create(n.NS.Name); err != nil {
		return err
	}
	if err := n.setUpNetwork(); err != nil {
		return fmt.Errorf("boot %s: network: %w", n.Name, err)
	}
	_ = os.Remove(filepath.Join(n.Dir, "holder.ready"))
	return n.Start(ctx)
}
