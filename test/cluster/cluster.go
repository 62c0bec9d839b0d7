// Package cluster is the process tier of the cluster harness: a whole
// Kubernetes cluster on one Linux machine, out of network namespaces and
// host processes, for fast runs of the end-to-end suite (E2E_TIER=process)
// and the specs that need endpoint conditions set exactly. The real tier,
// with kubelets, containerd and the product installed from its images, is
// test/shipped.
//
// The network is test/clusternet's and the control plane (etcd and
// kube-apiserver, no controllers) test/controlplane's, shared with the real
// tier. Here the manager and the agents run as processes (bin/manager in
// the control-plane namespace, bin/agent in each node's namespace, with the
// arguments and ServiceAccounts config/default and the operator's DaemonSet
// give them); each "pod" is a namespace behind its node, running the echo
// server (test/echo) as a process; Nodes and EndpointSlices are written by
// the harness, as kubelet and the EndpointSlice controller would.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/controlplane"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Prefix starts the name of every namespace, folder and process log of every
// cluster the harness makes.
const Prefix = "synx-demo-"

// Options configure a cluster.
type Options struct {
	// Nodes is how many nodes; default 3.
	Nodes int
	// Keep leaves the cluster running when the harness exits: processes are
	// started without a parent-death signal and Down is not expected.
	Keep bool
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// RepoRoot is the repository root; default: found from the working
	// directory.
	RepoRoot string
	// ConfigDir holds the kustomizations default (the operator) and agent
	// (the agent's RBAC); default $SYNX_CONFIG_DIR, else <RepoRoot>/config.
	ConfigDir string
	// K8sVersion is the Kubernetes version of the binaries, which the nodes
	// report as their kubelet version; default testenv.K8sVersionOf(RepoRoot).
	K8sVersion string
	// K8sBin holds etcd, kube-apiserver and kubectl; default
	// testenv.BinaryDirOf(RepoRoot).
	K8sBin string
}

// Cluster is a running cluster.
type Cluster struct {
	// ID is the cluster's name, Prefix plus four hex digits.
	ID string
	// Dir holds certificates, kubeconfigs, etcd's data and the logs.
	Dir string
	// LogDir holds one log file per process.
	LogDir string
	// Hub, CP and ClientNS are the bridge, control-plane and client
	// namespaces.
	Hub, CP, ClientNS *netns.NS
	// Nodes are the nodes, in order.
	Nodes []*Node
	// Plane is the control plane: etcd and kube-apiserver.
	Plane *controlplane.ControlPlane
	// Kubeconfig is the admin kubeconfig; it works from inside the cluster's
	// namespaces (see KubectlCommand).
	Kubeconfig string
	// RESTConfig, Kube and Client talk to the API server as the admin.
	RESTConfig *rest.Config
	Kube       kubernetes.Interface
	Client     client.Client
	// Manager is the operator's process.
	Manager *netns.Process

	opts       Options
	mu         sync.Mutex
	procs      []*netns.Process
	pods       map[string]*Pod
	podCount   int
	nsNames    []string
	operatorNS string
	downOnce   sync.Once
}

// Node is one node: a namespace with the node's address, its pods behind it,
// and the agent process.
type Node struct {
	Name    string
	Index   int
	IP      string
	PodCIDR string
	Zone    string
	NS      *netns.NS
	// Agent is the agent process, once StartAgents ran.
	Agent     *netns.Process
	pods      int
	healthURL string
}

// Progress writes a progress line.
func (c *Cluster) Progress(format string, args ...any) {
	if c.opts.Progress != nil {
		fmt.Fprintf(c.opts.Progress, "==> "+format+"\n", args...)
	}
}

// Up sweeps stale clusters, then builds a new one: namespaces and links,
// etcd and kube-apiserver, the CRDs and the Node objects. On error it tears
// down what it built. The caller must call Down (unless Options.Keep).
func Up(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the cluster harness needs root: it creates network namespaces")
	}
	for _, b := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not found on PATH: install iproute2 and iptables", b)
		}
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Nodes > clusternet.MaxNodes {
		return nil, fmt.Errorf("at most %d nodes, got %d", clusternet.MaxNodes, opts.Nodes)
	}
	if opts.RepoRoot == "" {
		if opts.RepoRoot, err = testenv.RepoRoot(); err != nil {
			return nil, err
		}
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = os.Getenv("SYNX_CONFIG_DIR")
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = filepath.Join(opts.RepoRoot, "config")
	}
	if opts.K8sVersion == "" {
		if opts.K8sVersion, err = testenv.K8sVersionOf(opts.RepoRoot); err != nil {
			return nil, err
		}
	}
	if opts.K8sBin == "" {
		if opts.K8sBin, err = testenv.BinaryDirOf(opts.RepoRoot); err != nil {
			return nil, err
		}
	}
	if n := SweepStale(); n > 0 && opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "==> Removed %d stale cluster(s) left by earlier runs\n", n)
	}
	c := &Cluster{opts: opts, pods: map[string]*Pod{}}
	for {
		suffix := make([]byte, 2)
		_, _ = rand.Read(suffix)
		c.ID = Prefix + hex.EncodeToString(suffix)
		c.Dir = filepath.Join(os.TempDir(), c.ID)
		if _, err := os.Stat(c.Dir); os.IsNotExist(err) && len(netns.List(c.ID+"-")) == 0 {
			break // not taken by a live cluster
		}
	}
	c.LogDir = filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	if opts.Keep {
		_ = os.WriteFile(filepath.Join(c.Dir, "kept"), nil, 0o644)
	}
	defer func() {
		if err != nil {
			c.Down()
		}
	}()

	c.Progress("Creating namespaces and links for %s (%d nodes)", c.ID, opts.Nodes)
	if err := c.buildNetwork(); err != nil {
		return c, fmt.Errorf("network: %w", err)
	}
	c.Progress("Starting etcd and kube-apiserver %s in %s", opts.K8sVersion, c.CP.Name)
	if err := c.startControlPlane(ctx); err != nil {
		return c, fmt.Errorf("control plane: %w", err)
	}
	c.Progress("Installing the CRDs from config/crd/bases")
	if err := c.installCRDs(ctx); err != nil {
		return c, fmt.Errorf("CRDs: %w", err)
	}
	c.Progress("Registering %d Nodes with addresses and podCIDRs", opts.Nodes)
	if err := c.registerNodes(ctx); err != nil {
		return c, fmt.Errorf("nodes: %w", err)
	}
	return c, nil
}

// buildNetwork creates the hub, control-plane, client and node namespaces
// and wires them to the hub's bridge.
func (c *Cluster) buildNetwork() error {
	var err error
	if c.Hub, err = c.addNS("hub"); err != nil {
		return err
	}
	if err := clusternet.SetUpHub(c.Hub); err != nil {
		return err
	}
	if c.CP, err = c.addNS("cp"); err != nil {
		return err
	}
	if err := clusternet.Attach(c.Hub, "cp", c.CP, clusternet.APIServerIP, ""); err != nil {
		return err
	}
	for i := 1; i <= c.opts.Nodes; i++ {
		if _, err := c.addNodeNetwork(i); err != nil {
			return err
		}
	}
	if c.ClientNS, err = c.addNS("client"); err != nil {
		return err
	}
	if err := clusternet.Attach(c.Hub, "cl", c.ClientNS, clusternet.ClientIP, ""); err != nil {
		return err
	}
	return clusternet.RouteClient(c.ClientNS, c.Nodes[0].IP, c.ExternalNode().IP)
}

// addNodeNetwork creates node i's namespace, links it to the hub and
// routes pod networks between it and the other nodes.
func (c *Cluster) addNodeNetwork(i int) (*Node, error) {
	n := &Node{
		Name:    fmt.Sprintf("node-%d", i),
		Index:   i,
		IP:      clusternet.NodeIP(i),
		PodCIDR: clusternet.PodCIDR(i),
		Zone:    clusternet.Zone(i),
	}
	var err error
	if n.NS, err = c.addNS(n.Name); err != nil {
		return nil, err
	}
	if err := clusternet.Attach(c.Hub, fmt.Sprintf("n%d", i), n.NS, n.IP, ""); err != nil {
		return nil, err
	}
	c.mu.Lock()
	others := netsOf(c.Nodes)
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	if err := clusternet.SetUpNode(n.net(), others); err != nil {
		return nil, err
	}
	return n, clusternet.RoutePeers(c.Hub, n.net(), others)
}

func (n *Node) net() clusternet.Node { return clusternet.Node{NS: n.NS, IP: n.IP, PodCIDR: n.PodCIDR} }

func netsOf(nodes []*Node) []clusternet.Node {
	var out []clusternet.Node
	for _, n := range nodes {
		out = append(out, n.net())
	}
	return out
}

// AddNode adds a node to the running cluster: its namespace and routes and
// its Node object. Start its agent with StartAgent.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	c.mu.Lock()
	next := 0
	for _, n := range c.Nodes {
		if n.Index > next {
			next = n.Index
		}
	}
	c.mu.Unlock()
	if next+1 > clusternet.MaxNodes {
		return nil, fmt.Errorf("at most %d nodes", clusternet.MaxNodes)
	}
	n, err := c.addNodeNetwork(next + 1)
	if err != nil {
		return nil, err
	}
	return n, c.registerNode(ctx, n)
}

// addNS creates a namespace named after the cluster and records it for Down.
func (c *Cluster) addNS(label string) (*netns.NS, error) {
	name := c.ID + "-" + label
	c.mu.Lock()
	c.nsNames = append(c.nsNames, name)
	c.mu.Unlock()
	return netns.Create(name)
}

// newProcess records a process for Down; its log goes to LogDir/<name>.log.
func (c *Cluster) newProcess(name string, ns *netns.NS, args ...string) *netns.Process {
	p := &netns.Process{
		Name:    name,
		NS:      ns,
		Args:    args,
		LogPath: filepath.Join(c.LogDir, name+".log"),
		Detach:  c.opts.Keep,
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// Kubectl runs kubectl in the control-plane namespace and returns its output.
func (c *Cluster) Kubectl(args ...string) (string, error) { return c.Plane.Kubectl(args...) }

// KubectlInput is Kubectl with stdin.
func (c *Cluster) KubectlInput(stdin []byte, args ...string) (string, error) {
	return c.Plane.KubectlInput(stdin, args...)
}

// RepoRoot is the repository root the cluster was built from.
func (c *Cluster) RepoRoot() string { return c.opts.RepoRoot }

// Down stops every process and deletes every namespace of the cluster. It
// is safe to call more than once and from a signal handler's goroutine. The
// cluster's folder is removed unless keepLogs is set by a failure (see
// KeepLogs).
func (c *Cluster) Down() error {
	var errs []error
	c.downOnce.Do(func() {
		c.mu.Lock()
		procs := append([]*netns.Process(nil), c.procs...)
		names := append([]string(nil), c.nsNames...)
		c.mu.Unlock()
		// Agents, pods and the manager first, the API server and etcd last.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop(5 * time.Second)
		}
		if c.Plane != nil {
			c.Plane.Stop()
		}
		for i := len(names) - 1; i >= 0; i-- {
			if err := netns.Delete(names[i]); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(filepath.Join(c.Dir, "owner"))
		_ = os.RemoveAll(filepath.Join(c.Dir, "etcd"))
	})
	return errors.Join(errs...)
}

// RemoveDir deletes the cluster's folder, logs included. Call it after a
// successful run; after a failure keep the logs for the reader.
func (c *Cluster) RemoveDir() { _ = os.RemoveAll(c.Dir) }

// SweepStale deletes the namespaces and processes of clusters whose owning
// harness process is gone (crashed, killed, or a cluster kept with KEEP=1),
// and their folders. It returns how many clusters it removed.
func SweepStale() int {
	removed := 0
	for _, id := range ListClusters() {
		dir := filepath.Join(os.TempDir(), id)
		if data, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
				if _, err := os.Stat(filepath.Join(dir, "kept")); err != nil {
					continue // a live run owns it
				}
			}
		}
		TearDown(id)
		removed++
	}
	return removed
}

// TearDown removes everything of the cluster named id: processes (by
// killing what runs in its namespaces), namespaces and folder.
func TearDown(id string) {
	names := netns.List(id + "-")
	// Nodes and pods first, so agents die before the API server.
	for i := len(names) - 1; i >= 0; i-- {
		_ = netns.Delete(names[i])
	}
	_ = os.RemoveAll(filepath.Join(os.TempDir(), id))
}

// ListClusters returns the IDs of every cluster with a namespace or a folder
// on this machine.
func ListClusters() []string {
	ids := map[string]bool{}
	for _, ns := range netns.List(Prefix) {
		rest := strings.TrimPrefix(ns, Prefix)
		if i := strings.IndexByte(rest, '-'); i > 0 {
			ids[Prefix+rest[:i]] = true
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range dirs {
		ids[filepath.Base(d)] = true
	}
	var out []string
	for id := range ids {
		if idPattern.MatchString(id) {
			out = append(out, id)
		}
	}
	return out
}

// idPattern is the shape of a cluster ID; nothing else is ever swept.
var idPattern = regexp.MustCompile(`^` + Prefix + `[0-9a-f]{4}$`)

// Leftovers lists the namespaces of the cluster that still exist; empty
// after a clean Down.
func (c *Cluster) Leftovers() []string { return netns.List(c.ID + "-") }
