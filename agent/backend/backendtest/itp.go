package backendtest

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// InternalTrafficPolicyLocal: with internalTrafficPolicy Local a ClusterIP
// sends every client (a pod, the node itself, a client outside) to the
// endpoints on this node only. Without one it drops the traffic (a
// timeout, never the remote endpoint) while endpoints exist on other
// nodes, and rejects it when there are none anywhere, as kube-proxy does.
// The NodePort of the same Service keeps its Cluster external policy and
// reaches every endpoint; with both policies Local, a pod reaching the
// NodePort gets the local endpoint only. The local endpoint is 10.211.1.2
// (b1), the remote one 10.211.2.2 (b2), the pod 10.211.2.3 (b2).
func InternalTrafficPolicyLocal(t *testing.T, h Harness) {
	tp := NewTopo(t, h)
	local, remote := Ep{IP: "10.211.1.2", Local: true}, Ep{IP: "10.211.2.2"}
	put := func(eps ...Ep) {
		tp.Put(Svc{Name: "itp", ClusterIP: VIP, Port: 80, NodePort: 30080, ITPLocal: true, Eps: eps})
		tp.Put(Svc{Name: "both", ClusterIP: "10.96.0.11", Port: 80, NodePort: 30081, ITPLocal: true, ETPLocal: true, Eps: eps})
		tp.Sync(false)
	}
	clients := []struct {
		name string
		ns   *netns.NS
		opts netns.RequestOptions
	}{
		{"a pod", tp.B2, netns.RequestOptions{Local: tp.IP("10.211.2.3"), Timeout: time.Second}},
		{"the node", tp.Node, netns.RequestOptions{Timeout: time.Second}},
		{"an outside client", tp.Client, netns.RequestOptions{Timeout: time.Second}},
	}
	onlyFrom := func(what, target string, from *netns.NS, opts netns.RequestOptions, want ...string) {
		t.Helper()
		got := from.Spread("tcp", target, 40, opts)
		ok := got.Failures == 0 && len(got.Servers) == len(want)
		for _, w := range want {
			ok = ok && got.Servers[tp.IP(w)] > 0
		}
		if !ok {
			t.Errorf("%s: %s, want answers from %v only", what, got, tp.IPs(want...))
		}
	}

	put(local, remote)
	for _, c := range clients {
		onlyFrom("ClusterIP from "+c.name, tp.At(VIP, 80), c.ns, c.opts, local.IP)
	}
	onlyFrom("NodePort (externalTrafficPolicy Cluster) from an outside client", tp.At(NodeIP, 30080), tp.Client,
		netns.RequestOptions{}, local.IP, remote.IP)
	onlyFrom("NodePort with both policies Local from a pod", tp.At(NodeIP, 30081), tp.B2, clients[0].opts, local.IP)

	// outcomes checks the ClusterIP's outcome from every client; a check
	// the backend cannot pass is named "InternalTrafficPolicyLocal/<client>
	// <case>" in its Limits.
	outcomes := func(what, want string) {
		t.Helper()
		for _, c := range clients {
			_, err := c.ns.Request("tcp", tp.At(VIP, 80), c.opts)
			got := dropOutcome(err)
			if h.Limited(t, "InternalTrafficPolicyLocal/"+c.name+" "+what) {
				t.Logf("ClusterIP from %s %s: outcome %s (%v)", c.name, what, got, err)
				continue
			}
			if got != want {
				t.Errorf("ClusterIP from %s %s: outcome %s (%v), want %s", c.name, what, got, err, want)
			}
		}
	}

	put(remote) // no local endpoint left
	outcomes("without a local endpoint", "dropped")
	onlyFrom("NodePort (externalTrafficPolicy Cluster) without a local endpoint", tp.At(NodeIP, 30080), tp.Client,
		netns.RequestOptions{}, remote.IP)

	put() // no endpoint anywhere
	outcomes("without any endpoint", "refused")
}

// dropOutcome is netns.Outcome, with "dropped" for a timeout and for the
// EPERM a local sender gets when its own packet is dropped on output.
func dropOutcome(err error) string {
	if errors.Is(err, syscall.EPERM) {
		return "dropped"
	}
	if o := netns.Outcome(err); o != "timeout" {
		return o
	}
	return "dropped"
}
