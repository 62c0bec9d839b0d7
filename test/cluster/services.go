package cluster

import (
	"context"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NextLoadBalancerIP hands out an address of clusternet.LoadBalancerCIDR,
// which the client routes through node 1.
func (c *Cluster) NextLoadBalancerIP() string { return clusternet.NextLoadBalancerIP() }

// NextExternalIP hands out an address of clusternet.ExternalIPCIDR, which
// the client routes through node 2.
func (c *Cluster) NextExternalIP() string { return clusternet.NextExternalIP() }

// CreateNamespace creates a namespace.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	return c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// SetLoadBalancerIngress writes the Service's status.loadBalancer.ingress, as
// a LoadBalancer controller (MetalLB, a cloud) would.
func (c *Cluster) SetLoadBalancerIngress(ctx context.Context, svc *corev1.Service, ip string) error {
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptrIPMode(corev1.LoadBalancerIPModeVIP)}}
	return c.Client.Status().Update(ctx, svc)
}

func ptrIPMode(m corev1.LoadBalancerIPMode) *corev1.LoadBalancerIPMode { return &m }

// ExternalNode is the node the client routes external IPs through.
func (c *Cluster) ExternalNode() *Node {
	if len(c.Nodes) > 1 {
		return c.Nodes[1]
	}
	return c.Nodes[0]
}

// AgentLogs returns the log paths of the agents, for failure messages.
func (c *Cluster) AgentLogs() []string {
	var out []string
	for _, n := range c.Nodes {
		if n.Agent != nil {
			out = append(out, n.Agent.LogPath)
		}
	}
	return out
}
