package health

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestNodePortBothFamilies: a HealthCheckNodePort opened the way the agent
// opens it (":port" in the node's network namespace) answers a load
// balancer over IPv4 and over IPv6, on the node's addresses and on its
// loopbacks. Real namespaces: node (10.77.0.1, fd00:77::1) and lb
// (10.77.0.2, fd00:77::2) joined by a veth pair.
func TestNodePortBothFamilies(t *testing.T) {
	netns.Require(t)
	node, lb := netns.New(t, "hc-node"), netns.New(t, "hc-lb")
	netns.Veth(t, node, "eth0", lb, "eth0")
	node.AddAddr("eth0", "10.77.0.1/24")
	lb.AddAddr("eth0", "10.77.0.2/24")
	node.MustExec("ip", "addr", "add", "fd00:77::1/64", "dev", "eth0", "nodad")
	lb.MustExec("ip", "addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad")

	st := NewState(time.Minute)
	n := NewNodePorts(func(network, addr string) (l net.Listener, err error) {
		err = node.Do(func() (err error) { l, err = net.Listen(network, addr); return err })
		return l, err
	}, st)
	defer n.Close()
	if err := n.Update(map[int32]NodePortService{30123: {Service: ServiceRef{"ns", "web"}, LocalEndpoints: 1}}); err != nil {
		t.Fatal(err)
	}
	targets := []struct {
		from *netns.NS
		url  string
	}{
		{lb, "http://10.77.0.1:30123/"},
		{lb, "http://[fd00:77::1]:30123/"},
		{node, "http://127.0.0.1:30123/"},
		{node, "http://[::1]:30123/"},
	}
	check := func(want int, healthy bool) {
		t.Helper()
		for _, tg := range targets {
			code, r, _ := nodePortGet(t, tg.from.HTTPClient(5*time.Second), tg.url)
			if code != want || r.LocalEndpoints != 1 || r.ServiceProxyHealthy != healthy {
				t.Errorf("%s from %s: %d %+v, want %d with serviceProxyHealthy %t", tg.url, tg.from.Label(), code, r, want, healthy)
			}
		}
	}
	check(http.StatusOK, true)
	st.NodeDeleting("tainted ToBeDeletedByClusterAutoscaler")
	check(http.StatusServiceUnavailable, false)
}
