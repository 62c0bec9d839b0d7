// Package kubenode runs a real Kubernetes cluster on one Linux machine: the
// control plane of test/controlplane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) in a control-plane network
// namespace, and nodes that are each a kubelet with its own containerd, in
// the node's own network and mount namespaces, with the images `make
// images` built imported into every node. No kube-proxy runs: Service
// ClusterIPs work only once a Service proxy (the project's agent) does;
// kubelets reach the API server by its real address.
//
// Topology (test/clusternet, the same as the process tier's):
//
//	                 hub (bridge br0, 10.77.0.1/24; routes podCIDRs to nodes)
//	┌──────────────────┼──────────────────────┬───────────────────┐
//	cp 10.77.0.2       node-1 10.77.0.11      node-N 10.77.0.1N   client 10.77.0.100
//	etcd, apiserver,   containerd, kubelet    ...                 (outside the nodes;
//	controller-manager └ cni0 10.244.1.1/24                        LB range via node-1,
//	scheduler            └ pods 10.244.1.x                         external IPs via node-2)
//
// Isolation: each node's processes enter its network namespace and a mount
// namespace held by a "holder" process, with a private /run, and its own
// folders bound over /var/lib and /var/log, so no mount of containerd,
// kubelet or a pod shows in the host's mount table. Each node's processes
// and containers live in the cgroup /<cluster-id>-node-<i> of every
// hierarchy (kubelet's cgroupRoot). Down kills by cgroup, which also ends
// the mount namespaces, removes the cgroups and deletes the network
// namespaces; Leftovers proves nothing is left.
package kubenode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/controlplane"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Prefix starts the name of every namespace, folder and cgroup of every
// cluster this package makes.
const Prefix = "synx-kn-"

// Options configure a cluster.
type Options struct {
	// Nodes is how many nodes; default 2, at most clusternet.MaxNodes.
	Nodes int
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// RepoRoot is the repository root; default: found from the working
	// directory.
	RepoRoot string
	// K8sVersion is the Kubernetes version of the binaries; default
	// testenv.K8sVersionOf(RepoRoot).
	K8sVersion string
	// K8sBin holds the Kubernetes binaries; default
	// testenv.BinaryDirOf(RepoRoot).
	K8sBin string
	// CNIBin holds the CNI plugins; default /usr/lib/cni (Debian's
	// containernetworking-plugins).
	CNIBin string
	// ImagesDir holds the images `make images` built, listed in its
	// images.json; every one is imported into every node, and the pause
	// image is containerd's sandbox image. Default <RepoRoot>/bin/images.
	ImagesDir string
	// ControllerManagerArgs are added to kube-controller-manager's
	// command line.
	ControllerManagerArgs []string
	// DualStack builds a dual-stack cluster, IPv4 primary: two service
	// ranges and two cluster CIDRs (test/controlplane), an IPv6 address on
	// every namespace of the cluster network, and nodes with both families
	// (kubelet's --node-ip, two podCIDRs, a CNI network of both families,
	// IPv6 pod routes through each node).
	DualStack bool
}

// Cluster is a running cluster.
type Cluster struct {
	ID, Dir string
	// Hub joins every namespace; Client is the outside client.
	Hub, ClientNS *netns.NS
	*controlplane.ControlPlane
	Nodes []*Node
	// Images are the images imported into every node, by target.
	Images map[string]Image
	// Timings records how long each step of Up took, in order.
	Timings []Timing

	opts     Options
	mu       sync.Mutex
	nsNames  []string
	downOnce sync.Once
	downErr  error
}

// Timing is one step of Up and how long it took.
type Timing struct {
	Step string
	Took time.Duration
}

func (c *Cluster) progress(format string, args ...any) {
	if c.opts.Progress != nil {
		fmt.Fprintf(c.opts.Progress, "==> "+format+"\n", args...)
	}
}

// step runs fn, records its duration and wraps its error with the step.
func (c *Cluster) step(name string, fn func() error) error {
	c.progress("%s", name)
	start := time.Now()
	err := fn()
	c.Timings = append(c.Timings, Timing{Step: name, Took: time.Since(start)})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Up sweeps clusters left by dead runs, then builds a new one and returns
// when every node is Ready. On error it tears down what it built; the
// caller calls Down in every other case.
func Up(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := defaults(&opts); err != nil {
		return nil, err
	}
	images, err := LoadImages(opts.ImagesDir)
	if err != nil {
		return nil, err
	}
	if n := SweepStale(); n > 0 && opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "==> Removed %d stale kubenode cluster(s)\n", n)
	}
	c := &Cluster{opts: opts, Images: images}
	if err := c.claimID(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Down()
		}
	}()
	if err := c.step(fmt.Sprintf("Creating namespaces and links for %s (%d nodes)", c.ID, opts.Nodes), c.buildNetwork); err != nil {
		return c, err
	}
	if err := c.step("Starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler "+opts.K8sVersion, func() error {
		return c.startControlPlane(ctx)
	}); err != nil {
		return c, err
	}
	if err := c.step(fmt.Sprintf("Starting containerd (importing the %d images of %s) and kubelet on %d nodes", len(c.Images), relPath(c.opts.RepoRoot, c.opts.ImagesDir), len(c.Nodes)), func() error {
		return c.startNodes(ctx)
	}); err != nil {
		return c, err
	}
	if err := c.step("Waiting for every Node to register and be Ready", func() error {
		return c.WaitNodesReady(ctx, 3*time.Minute)
	}); err != nil {
		return c, err
	}
	return c, nil
}

func checkTools() error {
	if os.Geteuid() != 0 {
		return errors.New("kubenode needs root: it creates namespaces, mounts and cgroups")
	}
	for _, b := range []string{"ip", "nsenter", "unshare", "iptables", "containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found on PATH: install iproute2, util-linux, iptables, containerd and runc", b)
		}
	}
	return nil
}

func defaults(opts *Options) error {
	var err error
	if opts.Nodes <= 0 {
		opts.Nodes = 2
	}
	if opts.Nodes > clusternet.MaxNodes {
		return fmt.Errorf("at most %d nodes, got %d", clusternet.MaxNodes, opts.Nodes)
	}
	if opts.RepoRoot == "" {
		if opts.RepoRoot, err = testenv.RepoRoot(); err != nil {
			return err
		}
	}
	if opts.K8sVersion == "" {
		if opts.K8sVersion, err = testenv.K8sVersionOf(opts.RepoRoot); err != nil {
			return err
		}
	}
	if opts.K8sBin == "" {
		if opts.K8sBin, err = testenv.BinaryDirOf(opts.RepoRoot); err != nil {
			return err
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(opts.K8sBin, b)); err != nil {
			return fmt.Errorf("%s is missing from %s: run 'hack/build-k8s.sh %s'", b, opts.K8sBin, b)
		}
	}
	if opts.CNIBin == "" {
		opts.CNIBin = "/usr/lib/cni"
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(opts.CNIBin, p)); err != nil {
			return fmt.Errorf("CNI plugin %s is missing from %s: install containernetworking-plugins", p, opts.CNIBin)
		}
	}
	if opts.ImagesDir == "" {
		opts.ImagesDir = filepath.Join(opts.RepoRoot, "bin", "images")
	}
	return nil
}

// claimID picks a free cluster ID and makes its folder, owned by this
// process (SweepStale spares clusters whose owner lives).
func (c *Cluster) claimID() error {
	for {
		suffix := make([]byte, 2)
		_, _ = rand.Read(suffix)
		c.ID = Prefix + hex.EncodeToString(suffix)
		c.Dir = filepath.Join(os.TempDir(), c.ID)
		if err := os.Mkdir(c.Dir, 0o755); err == nil {
			break
		} else if !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// AddNS creates a namespace named after the cluster (<ID>-<label>) and
// records it for Down.
func (c *Cluster) AddNS(label string) (*netns.NS, error) {
	name := c.ID + "-" + label
	c.mu.Lock()
	c.nsNames = append(c.nsNames, name)
	c.mu.Unlock()
	return netns.Create(name)
}

// AttachNS names the network namespace of process pid (a pod's) after the
// cluster, <ID>-<label>, so that the harness can open sockets and run
// tools in it like in its own namespaces. DetachNS removes the name; Down
// removes what is left, once every process of the nodes is gone.
func (c *Cluster) AttachNS(label string, pid int) (*netns.NS, error) {
	name := c.ID + "-" + label
	if out, err := exec.Command("ip", "netns", "attach", name, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns attach %s %d: %w: %s", name, pid, err, out)
	}
	c.mu.Lock()
	c.nsNames = append(c.nsNames, name)
	c.mu.Unlock()
	return &netns.NS{Name: name}, nil
}

// DetachNS removes a name AttachNS gave, leaving the namespace and the
// processes in it alone (netns.Delete would kill them).
func DetachNS(ns *netns.NS) error {
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil && netns.Exists(ns.Name) {
		return fmt.Errorf("ip netns del %s: %w: %s", ns.Name, err, out)
	}
	return nil
}

// buildNetwork creates the hub, the control-plane namespace, the nodes'
// namespaces with their pod routes, and the outside client.
func (c *Cluster) buildNetwork() error {
	var err error
	if c.Hub, err = c.AddNS("hub"); err != nil {
		return err
	}
	if err := clusternet.SetUpHub(c.Hub); err != nil {
		return err
	}
	cpNS, err := c.AddNS("cp")
	if err != nil {
		return err
	}
	if err := clusternet.Attach(c.Hub, "cp", cpNS, clusternet.APIServerIP, c.v6(clusternet.APIServerIP6)); err != nil {
		return err
	}
	c.ControlPlane = &controlplane.ControlPlane{
		Dir: filepath.Join(c.Dir, "cp"), LogDir: filepath.Join(c.Dir, "logs"), Bin: c.opts.K8sBin, NS: cpNS,
		Controllers: true, ControllerManagerArgs: c.opts.ControllerManagerArgs, DualStack: c.opts.DualStack,
	}
	for i := 1; i <= c.opts.Nodes; i++ {
		n := &Node{
			Name:         fmt.Sprintf("node-%d", i),
			Index:        i,
			IP:           clusternet.NodeIP(i),
			PodCIDR:      clusternet.PodCIDR(i),
			IP6:          c.v6(clusternet.NodeIP6(i)),
			PodCIDR6:     c.v6(clusternet.PodCIDR6(i)),
			Zone:         clusternet.Zone(i),
			CgroupPath:   fmt.Sprintf("/%s-node-%d", c.ID, i),
			Dir:          filepath.Join(c.Dir, fmt.Sprintf("node-%d", i)),
			Bin:          c.opts.K8sBin,
			CNIBin:       c.opts.CNIBin,
			Images:       archives(c.Images),
			SandboxImage: c.Images["pause"].Image,
			cluster:      c,
		}
		if n.NS, err = c.AddNS(n.Name); err != nil {
			return err
		}
		if err := n.setUpNetwork(); err != nil {
			return err
		}
		if err := clusternet.RoutePeers(c.Hub, n.net(), netsOf(c.Nodes)); err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if c.ClientNS, err = c.AddNS("client"); err != nil {
		return err
	}
	if err := clusternet.Attach(c.Hub, "cl", c.ClientNS, clusternet.ClientIP, c.v6(clusternet.ClientIP6)); err != nil {
		return err
	}
	return clusternet.RouteClient(c.ClientNS, c.Nodes[0].IP, c.ExternalNode().IP)
}

// v6 is addr on a dual-stack cluster, and empty on a single-stack one.
func (c *Cluster) v6(addr string) string {
	if c.opts.DualStack {
		return addr
	}
	return ""
}

// DualStack reports whether the cluster is dual-stack.
func (c *Cluster) DualStack() bool { return c.opts.DualStack }

// ExternalNode is the node the client routes external IPs through.
func (c *Cluster) ExternalNode() *Node {
	if len(c.Nodes) > 1 {
		return c.Nodes[1]
	}
	return c.Nodes[0]
}

func netsOf(nodes []*Node) []clusternet.Node {
	var out []clusternet.Node
	for _, n := range nodes {
		out = append(out, n.net())
	}
	return out
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	if err := c.ControlPlane.Start(ctx); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		n.PKI = c.PKI
	}
	return nil
}

// startNodes starts every node at once.
func (c *Cluster) startNodes(ctx context.Context) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Start(ctx); err != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Down stops every node (killing by cgroup, which also ends each node's
// mount namespace) and the control plane, and deletes the namespaces. The
// folder stays for its logs until RemoveDir. Safe to call more than once,
// and from a signal handler.
func (c *Cluster) Down() error {
	c.downOnce.Do(func() {
		var errs []error
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.Stop(); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if c.ControlPlane != nil {
			c.ControlPlane.Stop()
		}
		c.mu.Lock()
		names := append([]string(nil), c.nsNames...)
		c.mu.Unlock()
		for i := len(names) - 1; i >= 0; i-- {
			if err := netns.Delete(names[i]); err != nil {
				errs = append(errs, err)
			}
		}
		if c.ControlPlane != nil {
			_ = os.RemoveAll(filepath.Join(c.ControlPlane.Dir, "etcd"))
		}
		_ = os.Remove(filepath.Join(c.Dir, "owner"))
		c.downErr = errors.Join(errs...)
	})
	return c.downErr
}

// RemoveDir deletes the cluster's folder, logs included. Call it after a
// successful run; after a failure keep the logs for the reader.
func (c *Cluster) RemoveDir() error { return os.RemoveAll(c.Dir) }

// DownOnSignal tears the cluster down, folder included, and exits when the
// process gets SIGINT or SIGTERM (Ctrl-C). Call the returned function to
// stop listening.
func (c *Cluster) DownOnSignal() (stop func()) {
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "==> %v: tearing %s down\n", s, c.ID)
			err := c.Down()
			if err == nil {
				err = c.RemoveDir()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "==> teardown: %v\n", err)
			}
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// SweepStale removes every cluster whose owning process is gone: its
// processes and cgroups, namespaces and folder. It returns how many.
func SweepStale() int {
	removed := 0
	for _, id := range ListClusters() {
		dir := filepath.Join(os.TempDir(), id)
		if data, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
				continue // a live run owns it
			}
		}
		_ = TearDown(id)
		removed++
	}
	return removed
}

// TearDown removes everything of the cluster named id without its Cluster
// value: processes (by cgroup, then by network namespace), cgroups,
// namespaces, folder.
func TearDown(id string) error {
	var errs []error
	for _, cg := range LeftoverCgroups(id + "-") {
		t, err := OpenCgroupTree("/" + filepath.Base(cg))
		if err == nil {
			err = t.Destroy(30 * time.Second)
		}
		errs = append(errs, err)
	}
	names := netns.List(id + "-")
	for i := len(names) - 1; i >= 0; i-- {
		errs = append(errs, netns.Delete(names[i]))
	}
	errs = append(errs, os.RemoveAll(filepath.Join(os.TempDir(), id)))
	return errors.Join(errs...)
}

// ListClusters returns the IDs of every cluster with a namespace, a cgroup
// or a folder on this machine.
func ListClusters() []string {
	ids := map[string]bool{}
	add := func(name string) {
		if m := idPattern.FindString(name); m != "" {
			ids[m] = true
		}
	}
	for _, ns := range netns.List(Prefix) {
		add(ns)
	}
	for _, cg := range LeftoverCgroups(Prefix) {
		add(filepath.Base(cg))
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range dirs {
		add(filepath.Base(d))
	}
	var out []string
	for id := range ids {
		out = append(out, id)
	}
	return out
}

// idPattern is the shape of a cluster ID; nothing else is ever swept.
var idPattern = regexp.MustCompile(`^` + Prefix + `[0-9a-f]{4}`)

// RepoRoot is the repository root the cluster was built from.
func (c *Cluster) RepoRoot() string { return c.opts.RepoRoot }

// relPath is path relative to root when it is below root.
func relPath(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
