package backendtest

import (
	"net/netip"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// NodePortAddresses: a NodePort answers on the node addresses that
// nodePortAddresses selects and on no other. The node gets a second
// address of the family (10.210.0.9) beside its primary one (NodeIP);
// "primary" selects NodeIP alone, a CIDR the addresses inside it, and the
// default every address.
func NodePortAddresses(t *testing.T, h Harness) {
	const second = "10.210.0.9"
	for _, tc := range []struct {
		name            string
		addrs           []string
		primary, second bool // answers on NodeIP, on the second address
	}{
		{name: "default: every address", primary: true, second: true},
		{name: "primary", addrs: []string{"primary"}, primary: true},
		{name: "a CIDR", addrs: []string{second + "/32"}, second: true},
		{name: "primary and a CIDR", addrs: []string{"primary", second + "/32"}, primary: true, second: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := NewTopo(t, h)
			args := []string{"ip", "addr", "add", tp.IP(second), "dev", "to-client"}
			if tp.IP(second) != second {
				args = append(args, "nodad")
			}
			tp.Node.MustExec(args...)
			tp.Cfg.NodeIPs = append(tp.Cfg.NodeIPs, netip.MustParseAddr(tp.IP(second)))
			for _, a := range tc.addrs {
				if a != "primary" {
					a = tp.IP(a) // a /32 becomes a /128
				}
				tp.Cfg.NodePortAddresses = append(tp.Cfg.NodePortAddresses, a)
			}
			tp.Put(Svc{Name: "np", ClusterIP: VIP, Port: 80, NodePort: 30080, Eps: []Ep{{IP: "10.211.2.2"}}})
			tp.Sync(false)
			for _, c := range []struct {
				addr   string
				served bool
			}{{NodeIP, tc.primary}, {second, tc.second}} {
				_, err := tp.Client.Request("tcp", tp.At(c.addr, 30080), netns.RequestOptions{Timeout: time.Second})
				if got := netns.Outcome(err) == "ok"; got != c.served {
					t.Errorf("NodePort on %s: outcome %s (%v), want served=%t", tp.IP(c.addr), netns.Outcome(err), err, c.served)
				}
			}
		})
	}
}
