// Package shipped is the real tier of the cluster harness: the product run
// the way a user installs it. Real nodes (test/kubenode: a kubelet and a
// containerd per node, no kube-proxy anywhere) get the images `make images`
// built; hack/deploy.sh applies config/default with those images, so the
// operator runs as a Deployment and its DaemonSets run the agent pods;
// backends are echo pods (the echo image) whose readiness the real
// EndpointSlice controller turns into EndpointSlices. The demo (make demo)
// and the end-to-end suite (make test-e2e) run here.
//
// Before installing, Install creates the ConfigMap synterix-apiserver with
// the API server's real address, as docs/install.md asks of clusters
// without kube-proxy: the kubernetes Service's ClusterIP, which kubelet
// gives every pod, works only once an agent has programmed it.
package shipped

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/poll"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// OperatorNamespace is where config/default installs the operator.
const OperatorNamespace = "synterix-system"

// APIServerConfigMap gives the operator and the agents the API server's
// real address (controllers.APIServerConfigMap).
const APIServerConfigMap = "synterix-apiserver"

// Options configure a cluster.
type Options struct {
	// Nodes is how many nodes; default 3.
	Nodes int
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// RepoRoot is the repository root; default: found from the working
	// directory.
	RepoRoot string
	// MaxEndpointsPerSlice is the EndpointSlice controller's slice size
	// (default 2: a Service with three or more endpoints spans slices, so
	// every Service exercises the agent's merging of slices).
	MaxEndpointsPerSlice int
	// ImagesDir holds the images the nodes import (its images.json);
	// default <RepoRoot>/bin/images. The upgrade test gives one that lists
	// two releases' images.
	ImagesDir string
	// DualStack builds a dual-stack cluster, IPv4 primary (see
	// kubenode.Options).
	DualStack bool
}

// Cluster is a running real cluster with the product installed.
type Cluster struct {
	*kubenode.Cluster
	// Client talks to the API server as the admin, with the project's
	// kinds.
	Client client.Client
	// KubectlPath runs kubectl as the admin (for scripts and humans).
	KubectlPath string

	opts Options
	mu   sync.Mutex
	seq  int
}

// Up builds a real cluster (see kubenode.Up) and returns it once every node
// is Ready; Install puts the product on it. On error it tears down what it
// built; otherwise the caller calls Down.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.MaxEndpointsPerSlice <= 0 {
		opts.MaxEndpointsPerSlice = 2
	}
	if opts.RepoRoot == "" {
		var err error
		if opts.RepoRoot, err = testenv.RepoRoot(); err != nil {
			return nil, err
		}
	}
	kc, err := kubenode.Up(ctx, kubenode.Options{
		Nodes: opts.Nodes, Progress: opts.Progress, RepoRoot: opts.RepoRoot,
		ControllerManagerArgs: []string{"--max-endpoints-per-slice=" + strconv.Itoa(opts.MaxEndpointsPerSlice)},
		ImagesDir:             opts.ImagesDir,
		DualStack:             opts.DualStack,
	})
	if err != nil {
		return nil, err
	}
	c := &Cluster{Cluster: kc, opts: opts, KubectlPath: filepath.Join(kc.Dir, "kubectl")}
	if err := c.connect(); err != nil {
		_ = c.Down()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) connect() error {
	if err := c.WriteKubectl(c.KubectlPath); err != nil {
		return err
	}
	var err error
	c.Client, err = client.New(c.RESTConfig, client.Options{Scheme: testenv.Scheme()})
	return err
}

// Progress writes a progress line.
func (c *Cluster) Progress(format string, args ...any) {
	if c.opts.Progress != nil {
		fmt.Fprintf(c.opts.Progress, "==> "+format+"\n", args...)
	}
}

// ManagerImage and AgentImage are the product's images imported into the
// nodes.
func (c *Cluster) ManagerImage() string { return c.Images["manager"].Image }

// AgentImage is the agent's image; the operator's default.
func (c *Cluster) AgentImage() string { return c.Images["agent"].Image }

// Install installs the product as docs/install.md tells a user to on a
// cluster without kube-proxy: the ConfigMap with the API server's real
// address, then hack/deploy.sh (config/default with this build's images,
// applied server-side); it waits until the operator's Deployment is
// available. The script's output goes to out.
func (c *Cluster) Install(ctx context.Context, out io.Writer) error {
	for _, img := range []string{"manager", "agent"} {
		if _, ok := c.Images[img]; !ok {
			return fmt.Errorf("no %s image in %s: run 'make images'", img, filepath.Join(c.opts.RepoRoot, "bin", "images"))
		}
	}
	return c.Deploy(ctx, out, Release{Root: c.opts.RepoRoot, Manager: c.ManagerImage(), Agent: c.AgentImage()})
}

// Release is one release of the product to deploy: the checkout whose
// hack/deploy.sh and config/default install it, and its images (already
// imported into the nodes).
type Release struct {
	Root, Manager, Agent string
}

// Deploy installs release r, or upgrades or downgrades the installed one
// to it, as a user would: the ConfigMap with the API server's real address
// (kept when present), then r's hack/deploy.sh with r's images, applied
// server-side over whatever is installed. It waits until the operator's
// Deployment has rolled out.
func (c *Cluster) Deploy(ctx context.Context, out io.Writer, r Release) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OperatorNamespace}}
	if err := client.IgnoreAlreadyExists(c.Client.Create(ctx, ns)); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: APIServerConfigMap, Namespace: OperatorNamespace},
		Data: map[string]string{
			"KUBERNETES_SERVICE_HOST": clusternet.APIServerIP,
			"KUBERNETES_SERVICE_PORT": strconv.Itoa(clusternet.APIServerPort),
		},
	}
	if err := client.IgnoreAlreadyExists(c.Client.Create(ctx, cm)); err != nil {
		return err
	}
	if err := c.scriptIn(out, r.Root, "hack/deploy.sh", "IMG="+r.Manager, "AGENT_IMG="+r.Agent); err != nil {
		return err
	}
	return c.WaitOperatorAvailable(ctx, 3*time.Minute)
}

// Uninstall runs hack/undeploy.sh: CRs first (the operator releases their
// finalizers and the agents their rules), then the operator, then the CRDs.
func (c *Cluster) Uninstall(out io.Writer) error { return c.script(out, "hack/undeploy.sh") }

// script runs a script of the repository with KUBECTL set to this
// cluster's kubectl and env added.
func (c *Cluster) script(out io.Writer, path string, env ...string) error {
	return c.scriptIn(out, c.opts.RepoRoot, path, env...)
}

// scriptIn runs the script path of the checkout root, in root.
func (c *Cluster) scriptIn(out io.Writer, root, path string, env ...string) error {
	cmd := exec.Command(filepath.Join(root, path))
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "KUBECTL="+c.KubectlPath), env...)
	if out == nil {
		out = io.Discard
	}
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = io.MultiWriter(out, &buf), io.MultiWriter(out, &buf)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, strings.TrimSpace(buf.String()))
	}
	return nil
}

// WaitOperatorAvailable waits until every replica of the operator's
// Deployment is updated and ready, and no replica of an older pod template
// is left.
func (c *Cluster) WaitOperatorAvailable(ctx context.Context, timeout time.Duration) error {
	return poll.Until(ctx, timeout, "the operator's Deployment available", func(ctx context.Context) (bool, string, error) {
		var d appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: OperatorNamespace, Name: "synterix-operator"}, &d); err != nil {
			return false, err.Error(), nil
		}
		s := d.Status
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		return s.ObservedGeneration == d.Generation && s.Replicas == want && s.UpdatedReplicas == want && s.ReadyReplicas == want && s.AvailableReplicas == want,
			fmt.Sprintf("replicas %d updated %d ready %d available %d of %d", s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, want), nil
	})
}

// Node returns the node with this name, or nil.
func (c *Cluster) Node(name string) *kubenode.Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
