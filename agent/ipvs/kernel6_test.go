package ipvs

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestKernelIPv6 runs an IPv6 backend instance (Family IPv6: SYNXIPVS6-*
// sets and chains, ip6tables) against IPv6 namespaces: round robin over a
// ClusterIP, NodePort, masquerade of an off-cluster client, and Cleanup.
func TestKernelIPv6(t *testing.T) {
	requireKernel(t)
	const (
		cli6  = "fd00:50::100"
		node6 = "fd00:50::2"
		gw6   = "fd00:244::ffff"
		vip6  = "fd00:96::10"
	)
	client, node := netns.New(t, "cli6"), netns.New(t, "node6")
	netns.Veth(t, client, "c0", node, "n-c")
	client.MustExec("ip", "-6", "addr", "add", cli6+"/64", "dev", "c0", "nodad")
	client.MustExec("ip", "-6", "route", "add", "default", "via", node6)
	node.MustExec("ip", "-6", "addr", "add", node6+"/64", "dev", "n-c", "nodad")
	node.Sysctl("net.ipv6.conf.all.forwarding", "1")
	var backendIPs []string
	for i := 1; i <= 2; i++ {
		b := netns.New(t, fmt.Sprintf("b6%d", i))
		ip := fmt.Sprintf("fd00:244::%d", i)
		nodeIf := fmt.Sprintf("n-b%d", i)
		netns.Veth(t, node, nodeIf, b, "b0")
		node.MustExec("ip", "-6", "addr", "add", gw6+"/128", "dev", nodeIf, "nodad")
		node.MustExec("ip", "-6", "route", "add", ip+"/128", "dev", nodeIf)
		b.MustExec("ip", "-6", "addr", "add", ip+"/128", "dev", "b0", "nodad")
		b.MustExec("ip", "-6", "route", "add", gw6+"/128", "dev", "b0")
		b.MustExec("ip", "-6", "route", "add", "default", "via", gw6, "dev", "b0")
		serveHold(t, b, net.JoinHostPort(ip, "8080"), fmt.Sprintf("b%d", i))
		backendIPs = append(backendIPs, ip)
	}
	be, err := New(Config{Family: model.IPv6, NetNSPath: "/run/netns/" + node.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	var eps []model.Endpoint
	for _, ip := range backendIPs {
		eps = append(eps, model.Endpoint{Addr: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true})
	}
	svc := &model.Service{Key: "default/web6:p/TCP", Namespace: "default", Name: "web6", Protocol: model.TCP,
		Frontends: []model.Frontend{
			{Kind: model.KindClusterIP, Addr: netip.MustParseAddr(vip6), Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster},
			{Kind: model.KindNodePort, Addr: netip.MustParseAddr(node6), Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways},
		},
		InternalEndpoints: eps, ExternalEndpoints: eps}
	st := &model.State{NodeName: "node", Family: model.IPv6, NodeIPs: []netip.Addr{netip.MustParseAddr(node6)},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:244::/64")}}, Services: []*model.Service{svc}}
	kSync(t, be, st)

	counts := map[string]int{}
	for i := 0; i < 4; i++ {
		h := dialHold(t, client, net.JoinHostPort(vip6, "80"))
		counts[h.server]++
		if host, _, _ := net.SplitHostPort(h.from); host != gw6 {
			t.Errorf("off-cluster IPv6 client seen as %s, want masquerade to %s", h.from, gw6)
		}
		h.reset()
	}
	if counts["b1"] != 2 || counts["b2"] != 2 {
		t.Errorf("rr over 2 IPv6 backends, 4 requests: %v", counts)
	}
	h := dialHold(t, client, net.JoinHostPort(node6, "30080"))
	h.ping(t)
	h.reset()

	if err := be.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// The backend's own flavour, as detected in the namespace.
	if save := node.MustExec(xtables.BinariesFor(model.IPv6, be.cfg.IPTablesMode).Save); strings.Contains(save, "SYNXIPVS") {
		t.Errorf("IPv6 rules survived Cleanup:\n%s", save)
	}
	svcs, err := be.ipvs.GetServices()
	if err != nil || len(svcs) != 0 {
		t.Errorf("after Cleanup: %d services, %v", len(svcs), err)
	}
}
