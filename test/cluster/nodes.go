package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// installCRDs applies config/crd/bases with kubectl and waits until every
// CRD is Established.
func (c *Cluster) installCRDs(ctx context.Context) error {
	dir := filepath.Join(c.opts.RepoRoot, "config", "crd", "bases")
	if _, err := c.Kubectl("apply", "--server-side", "-f", dir); err != nil {
		return err
	}
	if _, err := c.Kubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/gatewayconfigs.proxy.synterix.io", "crd/proxynodes.proxy.synterix.io", "crd/proxypolicies.proxy.synterix.io"); err != nil {
		return err
	}
	// The harness's cached discovery must see the new kinds.
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.Kube.Discovery().ServerResourcesForGroupVersion("proxy.synterix.io/v1alpha1")
		return err == nil, nil
	})
}

// registerNodes creates the Node objects and writes their status the way
// kubelet would: addresses, podCIDR, Ready.
func (c *Cluster) registerNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		if err := c.registerNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) registerNode(ctx context.Context, n *Node) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name,
			Labels: map[string]string{
				"kubernetes.io/hostname":        n.Name,
				"kubernetes.io/os":              "linux",
				"topology.kubernetes.io/zone":   n.Zone,
				"topology.kubernetes.io/region": "synx",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}},
	}
	if err := c.Client.Create(ctx, node); err != nil {
		return fmt.Errorf("create Node %s: %w", n.Name, err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "node namespace is up (synx harness)", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: c.opts.K8sVersion},
	}
	if err := c.Client.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("write status of Node %s: %w", n.Name, err)
	}
	return nil
}

// Node returns the node with this name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// DeleteNode removes a node from the cluster: its agent is stopped, its
// pods' namespaces and its own namespace are deleted, and its Node object is
// deleted, as when a machine is decommissioned.
func (c *Cluster) DeleteNode(ctx context.Context, name string) error {
	n := c.Node(name)
	if n == nil {
		return fmt.Errorf("no node %s", name)
	}
	if n.Agent != nil {
		n.Agent.Stop(5 * time.Second)
	}
	c.mu.Lock()
	var pods []*Pod
	for _, p := range c.pods {
		if p.Node == n {
			pods = append(pods, p)
		}
	}
	c.mu.Unlock()
	for _, p := range pods {
		if err := c.DeletePod(p); err != nil {
			return err
		}
	}
	if err := netns.Delete(n.NS.Name); err != nil {
		return err
	}
	for _, m := range c.Nodes {
		if m != n {
			_, _ = m.NS.Exec("ip", "route", "del", n.PodCIDR)
		}
	}
	_, _ = c.Hub.Exec("ip", "route", "del", n.PodCIDR)
	c.mu.Lock()
	var rest []*Node
	for _, m := range c.Nodes {
		if m != n {
			rest = append(rest, m)
		}
	}
	c.Nodes = rest
	c.mu.Unlock()
	err := c.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	return client.IgnoreNotFound(err)
}
