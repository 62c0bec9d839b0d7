package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// waitHealthy polls url with hc until it answers 200 OK, for at most
// timeout; with no url, until the processes have stayed up for two seconds.
// It fails at once when one of procs exits. The last of procs is the one
// waited for; the error names its log.
func waitHealthy(ctx context.Context, hc *http.Client, url string, timeout time.Duration, procs ...*netns.Process) error {
	p := procs[len(procs)-1]
	start := time.Now()
	return poll.Until(ctx, timeout, fmt.Sprintf("%s healthy at %q (log %s)", p.Name, url, p.LogPath), func(context.Context) (bool, string, error) {
		for _, q := range procs {
			if !q.Running() {
				return false, "", fmt.Errorf("%s exited: see %s", q.Name, q.LogPath)
			}
		}
		if url == "" {
			return time.Since(start) > 2*time.Second, "running", nil
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error(), nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body))), nil
	})
}

// WaitGatewayConfigRolledOut waits until the GatewayConfig is Ready at its
// current generation with every selected node ready at one revision, and
// returns it.
func (c *Cluster) WaitGatewayConfigRolledOut(ctx context.Context, name string, timeout time.Duration) (*proxyv1alpha1.GatewayConfig, error) {
	var gc proxyv1alpha1.GatewayConfig
	err := poll.Until(ctx, timeout, "GatewayConfig "+name+" rolled out", func(ctx context.Context) (bool, string, error) {
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
