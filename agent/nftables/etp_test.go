package nftables

import (
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
)

// TestNoStaleEndpointElements: partial syncs leave no endpoint element
// behind when a NodePort Service turns externalTrafficPolicy Local on a
// node without a local endpoint, and when it is then deleted (an e2e run
// under mode NFTables found such elements on one node).
func TestNoStaleEndpointElements(t *testing.T) {
	tp := backendtest.NewTopo(t, harness(Options{}))
	count := func(when string) int {
		out := tp.Node.MustExec("nft", "-j", "list", "map", "ip", DefaultTable, "endpoints")
		n := len(elements(t, out))
		t.Logf("%s: %d endpoint elements", when, n)
		return n
	}
	svc := backendtest.Svc{Name: "etp", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080,
		Eps: []backendtest.Ep{{IP: "10.211.2.2"}, {IP: "10.211.2.3"}, {IP: "10.211.1.2"}}}
	tp.Put(svc)
	tp.Sync(true)
	count("ETP Cluster, full sync")
	svc.ETPLocal = true
	svc.Eps = []backendtest.Ep{{IP: "10.211.2.2"}, {IP: "10.211.2.3"}}
	tp.Put(svc)
	tp.Sync(false)
	local := count("ETP Local, no local endpoint, partial sync")
	tp.Sync(true)
	if full := count("the same, full sync"); full != local {
		t.Errorf("a partial sync left %d endpoint elements where a full sync leaves %d", local, full)
	}
	tp.Del("etp")
	tp.Sync(false)
	if n := count("Service deleted, partial sync"); n != 0 {
		t.Errorf("%d endpoint elements left after the Service was deleted", n)
	}
}
