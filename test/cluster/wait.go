package cluster

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Poll calls cond every interval until it returns true, an error, or
// timeout passes; on timeout the error names what and the last state.
func Poll(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, state, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		last = state
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not reached after %s (last: %s)", what, timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WaitGatewayConfigRolledOut waits until the GatewayConfig is Ready at its
// current generation with every selected node ready at one revision, and
// returns it.
func (c *Cluster) WaitGatewayConfigRolledOut(ctx context.Context, name string, timeout time.Duration) (*proxyv1alpha1.GatewayConfig, error) {
	var gc proxyv1alpha1.GatewayConfig
	err := Poll(ctx, timeout, "GatewayConfig "+name+" rolled out", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &gc); err != nil {
			return false, err.Error(), nil
		}
		s := gc.Status
		ready := meta.IsStatusConditionTrue(s.Conditions, proxyv1alpha1.ConditionReady)
		state := fmt.Sprintf("generation %d observed %d ready=%t desired=%d updated=%d readyNodes=%d current=%q updated=%q pending=%q",
			gc.Generation, s.ObservedGeneration, ready, s.DesiredNodes, s.UpdatedNodes, s.ReadyNodes, s.CurrentRevision, s.UpdatedRevision, s.PendingRevision)
		return ready && s.ObservedGeneration == gc.Generation && s.DesiredNodes > 0 &&
			s.ReadyNodes == s.DesiredNodes && s.CurrentRevision != "" && s.CurrentRevision == s.UpdatedRevision, state, nil
	})
	return &gc, err
}

// ProxyNodes returns the ProxyNodes by name.
func (c *Cluster) ProxyNodes(ctx context.Context) (map[string]proxyv1alpha1.ProxyNode, error) {
	var list proxyv1alpha1.ProxyNodeList
	if err := c.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	out := map[string]proxyv1alpha1.ProxyNode{}
	for _, pn := range list.Items {
		out[pn.Name] = pn
	}
	return out, nil
}
