package e2e

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// The two tiers the suite runs on (E2E_TIER):
//   - shipped (the default): real nodes, kubelet and containerd, the product
//     installed from config/default with the images of make images
//     (test/shipped);
//   - process: the manager and agents as host processes, pods as
//     namespaces, EndpointSlices written by the harness (test/cluster).
//
// Specs labelled "process" need what only the process tier gives
// (endpoint conditions set exactly, nodes added at run time, the agent as a
// process to SIGKILL); specs labelled "shipped" need real pods, kubelet or
// containerd. Every other spec runs on both.
const (
	tierShipped = "shipped"
	tierProcess = "process"
)

func tierName() string {
	if t := os.Getenv("E2E_TIER"); t != "" {
		return t
	}
	return tierShipped
}

// node is a node of either tier: its name, addresses, zone and network
// namespace (traffic from it leaves from the node itself). IP6 is its IPv6
// address on a dual-stack cluster (the shipped tier), empty otherwise.
type node struct {
	Name, IP, IP6, Zone string
	NS                  *netns.NS
}

// pod is an echo pod of either tier: its name is the identity its echo
// server answers with; traffic sent from NS leaves from the pod.
type pod struct {
	Name, Namespace, IP string
	// IPs are the pod's addresses, one per family, IP first (the shipped
	// tier; the process tier's pods have IP only).
	IPs  []string
	Node *node
	NS   *netns.NS

	proc *cluster.Pod
	real *shipped.Pod
}

// tier is what the common specs need of a cluster.
type tier interface {
	Nodes() []*node
	// Client is the outside client's namespace.
	Client() *netns.NS
	API() client.Client
	Kubectl(args ...string) (string, error)
	OperatorNamespace() string
	// StartPods starts one echo pod per node in namespace ns.
	StartPods(ns, prefix string, nodes []*node) ([]*pod, error)
	DeletePod(p *pod) error
	// Select prepares a Service before it is created to take its backends
	// from SetBackends.
	Select(svc *corev1.Service)
	// SetBackends makes pods the ready endpoints of svc, over slices
	// EndpointSlices where the tier writes them (on the shipped tier the
	// EndpointSlice controller packs them, see shipped.Options).
	SetBackends(svc *corev1.Service, pods []*pod, slices int) error
	// Logs says where the logs of every process are.
	Logs() string
}

// Every echo pod serves these ports.
var (
	podTCP = []int{8080, 8081, 5353}
	podUDP = []int{8080, 5353}
)

// processTier is test/cluster.
type processTier struct {
	c     *cluster.Cluster
	nodes []*node
}

func newProcessTier(c *cluster.Cluster) *processTier {
	t := &processTier{c: c}
	t.sync()
	return t
}

// sync follows nodes added to and removed from the cluster.
func (t *processTier) sync() {
	t.nodes = nil
	for _, n := range t.c.Nodes {
		t.nodes = append(t.nodes, &node{Name: n.Name, IP: n.IP, Zone: n.Zone, NS: n.NS})
	}
}

func (t *processTier) Nodes() []*node                         { return t.nodes }
func (t *processTier) Client() *netns.NS                      { return t.c.ClientNS }
func (t *processTier) API() client.Client                     { return t.c.Client }
func (t *processTier) Kubectl(args ...string) (string, error) { return t.c.Kubectl(args...) }
func (t *processTier) OperatorNamespace() string              { return t.c.OperatorNamespace() }
func (t *processTier) Logs() string                           { return t.c.LogDir }

func (t *processTier) StartPods(_, prefix string, nodes []*node) ([]*pod, error) {
	var out []*pod
	for _, n := range nodes {
		p, err := t.c.AddPod(context.Background(), t.c.Node(n.Name), uniq(prefix), podTCP, podUDP)
		if err != nil {
			return out, err
		}
		out = append(out, &pod{Name: p.Name, IP: p.IP, Node: n, NS: p.NS, proc: p})
	}
	return out, nil
}

func (t *processTier) DeletePod(p *pod) error { return t.c.DeletePod(p.proc) }

// Select does nothing: the harness writes the EndpointSlices of Services
// without a selector.
func (t *processTier) Select(*corev1.Service) {}

func (t *processTier) SetBackends(svc *corev1.Service, pods []*pod, slices int) error {
	var ps []*cluster.Pod
	for _, p := range pods {
		ps = append(ps, p.proc)
	}
	return t.c.SetEndpoints(context.Background(), svc, cluster.Ready(ps...), slices)
}

// shippedTier is test/shipped.
type shippedTier struct {
	c     *shipped.Cluster
	nodes []*node
}

func newShippedTier(c *shipped.Cluster) *shippedTier {
	t := &shippedTier{c: c}
	for _, n := range c.Nodes {
		t.nodes = append(t.nodes, &node{Name: n.Name, IP: n.IP, IP6: n.IP6, Zone: n.Zone, NS: n.NS})
	}
	return t
}

func (t *shippedTier) Nodes() []*node                         { return t.nodes }
func (t *shippedTier) Client() *netns.NS                      { return t.c.ClientNS }
func (t *shippedTier) API() client.Client                     { return t.c.Client }
func (t *shippedTier) Kubectl(args ...string) (string, error) { return t.c.Kubectl(args...) }
func (t *shippedTier) OperatorNamespace() string              { return shipped.OperatorNamespace }
func (t *shippedTier) Logs() string {
	return fmt.Sprintf("%s (control plane and nodes' containerd and kubelet; pods' logs under <node>/pod-logs)", t.c.Dir)
}

func (t *shippedTier) StartPods(ns, prefix string, nodes []*node) ([]*pod, error) {
	var kn []*kubenode.Node
	for _, n := range nodes {
		kn = append(kn, t.c.Node(n.Name))
	}
	ps, err := t.c.RunPods(context.Background(), ns, prefix, kn, shipped.PodOptions{TCP: podTCP, UDP: podUDP})
	var out []*pod
	for i, p := range ps {
		out = append(out, &pod{Name: p.Name, Namespace: p.Namespace, IP: p.IP, IPs: p.IPs, Node: nodes[i], NS: p.NS, real: p})
	}
	return out, err
}

func (t *shippedTier) DeletePod(p *pod) error { return t.c.DeletePod(context.Background(), p.real) }

// backendLabel is the label that makes a pod a backend of svc.
func backendLabel(svc *corev1.Service) string { return "e2e.synterix.io/" + svc.Name }

// Select gives the Service its selector before it is created: the API
// server refuses to add one to a headless Service made without.
func (t *shippedTier) Select(svc *corev1.Service) {
	svc.Spec.Selector = map[string]string{backendLabel(svc): "1"}
}

// SetBackends selects exactly pods with the Service's selector: each pod
// carries the label e2e.synterix.io/<service>=1 or not, and the real
// EndpointSlice controller does the rest.
func (t *shippedTier) SetBackends(svc *corev1.Service, pods []*pod, _ int) error {
	ctx := context.Background()
	key := backendLabel(svc)
	want := map[string]bool{}
	for _, p := range pods {
		want[p.Name] = true
	}
	var list corev1.PodList
	if err := t.c.Client.List(ctx, &list, client.InNamespace(svc.Namespace)); err != nil {
		return err
	}
	for i := range list.Items {
		p := &list.Items[i]
		if has := p.Labels[key] == "1"; has == want[p.Name] {
			continue
		}
		patch := client.MergeFrom(p.DeepCopy())
		if want[p.Name] {
			if p.Labels == nil {
				p.Labels = map[string]string{}
			}
			p.Labels[key] = "1"
		} else {
			delete(p.Labels, key)
		}
		if err := t.c.Client.Patch(ctx, p, patch); err != nil {
			return err
		}
	}
	if svc.Spec.Selector[key] == "1" {
		return nil
	}
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Spec.Selector = map[string]string{key: "1"}
	return t.c.Client.Patch(ctx, svc, patch)
}
