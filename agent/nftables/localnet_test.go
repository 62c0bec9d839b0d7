package nftables

import (
	"context"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestLocalnetRefusedIsASyncError: when route_localnet cannot be written (a
// container without the host's /proc/sys/net, here a sysctl root that lacks
// it), a revision asking for localhost NodePorts fails its sync with that
// reason, as on the iptables backend, instead of a log line only; the rules
// are in place all the same.
func TestLocalnetRefusedIsASyncError(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	tp.Cfg.LocalhostNodePorts = true
	tp.Put(backendtest.Svc{Name: "np", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080, Eps: []backendtest.Ep{{IP: "10.211.2.2"}}})
	sysctl.SetRoot(t.TempDir())
	t.Cleanup(func() { sysctl.SetRoot(sysctl.DefaultRoot) })
	var err error
	if derr := tp.Node.Do(func() error {
		_, err = tp.Backend.Sync(context.Background(), tp.State(), backend.SyncOptions{Full: true})
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	if err == nil || !strings.Contains(err.Error(), "localhost NodePorts cannot work") {
		t.Fatalf("sync error %v, want one saying localhost NodePorts cannot work", err)
	}
	r, rerr := tp.Client.Request("tcp", tp.At(backendtest.VIP, 80), netns.RequestOptions{})
	if rerr != nil || r.Server != tp.IP("10.211.2.2") {
		t.Fatalf("the ClusterIP is not served after the sync: %+v %v", r, rerr)
	}
}
