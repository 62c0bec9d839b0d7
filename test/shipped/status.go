package shipped

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// WaitRolledOut waits until the GatewayConfig is Ready at its current
// generation with every selected node ready at one revision, and returns
// it. Both tiers' callers use it: it needs only an API client. It reads the
// GatewayConfig's status, never the agent DaemonSet's: the DaemonSet's
// update strategy is OnDelete (the operator replaces agent pods as its
// rollout goes), so the DaemonSet's own updated counts say nothing of the
// rollout. A node counts in readyNodes only once its agent reports the
// revision's pod template, and in updatedNodes only once no agent pod of
// another pod template is left on it.
func WaitRolledOut(ctx context.Context, cl client.Client, name string, timeout time.Duration) (*proxyv1alpha1.GatewayConfig, error) {
	var gc proxyv1alpha1.GatewayConfig
	err := poll.Until(ctx, timeout, "GatewayConfig "+name+" rolled out", func(ctx context.Context) (bool, string, error) {
		if err := cl.Get(ctx, client.ObjectKey{Name: name}, &gc); err != nil {
			return false, err.Error(), nil
		}
		s := gc.Status
		ready := meta.IsStatusConditionTrue(s.Conditions, proxyv1alpha1.ConditionReady)
		state := fmt.Sprintf("generation %d observed %d ready=%t desired=%d updated=%d readyNodes=%d current=%q updated=%q pending=%q",
			gc.Generation, s.ObservedGeneration, ready, s.DesiredNodes, s.UpdatedNodes, s.ReadyNodes, s.CurrentRevision, s.UpdatedRevision, s.PendingRevision)
		return ready && s.ObservedGeneration == gc.Generation && s.DesiredNodes > 0 &&
			s.ReadyNodes == s.DesiredNodes && s.UpdatedNodes == s.DesiredNodes &&
			s.CurrentRevision != "" && s.CurrentRevision == s.UpdatedRevision, state, nil
	})
	return &gc, err
}

// ProxyNodes returns the ProxyNodes by name.
func ProxyNodes(ctx context.Context, cl client.Client) (map[string]proxyv1alpha1.ProxyNode, error) {
	var list proxyv1alpha1.ProxyNodeList
	if err := cl.List(ctx, &list); err != nil {
		return nil, err
	}
	out := map[string]proxyv1alpha1.ProxyNode{}
	for _, pn := range list.Items {
		out[pn.Name] = pn
	}
	return out, nil
}

// SetLoadBalancerIngress writes the Service's status.loadBalancer.ingress,
// as a LoadBalancer controller (a cloud's, MetalLB) would; the client
// routes clusternet.LoadBalancerCIDR through node 1.
func SetLoadBalancerIngress(ctx context.Context, cl client.Client, svc *corev1.Service, ip string) error {
	mode := corev1.LoadBalancerIPModeVIP
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: &mode}}
	return cl.Status().Update(ctx, svc)
}
