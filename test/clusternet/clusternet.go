// Package clusternet is the network that both cluster tiers build on one
// machine, out of network namespaces: test/cluster (the process tier) and
// test/kubenode (real kubelets and containerd). It holds the addresses, the
// hub that joins every namespace, and the routes of a host-gateway pod
// network. Everything lives inside the cluster's own namespaces; the host's
// namespace gets nothing, not a link, not a route, not a rule.
//
//	                  hub (bridge br0, 10.77.0.1/24, fd77::1/64)
//	┌───────────────┬─────────┴──────┬────────────────┐
//	cp 10.77.0.2    node-1 .11   ... node-N .1N       client 10.77.0.100
//	   fd77::2      fd77::11         fd77::1N           fd77::100
//	control plane   pods 10.244.1.x  10.244.N.x       (outside the nodes; routes
//	                fd44:0:0:1::x    fd44:0:0:N::x     LB addresses via node-1,
//	                                                   external IPs via node-2)
//
// A dual-stack cluster (IPv4 primary) gives every namespace both families:
// the functions take an IPv6 address or pod network beside the IPv4 one,
// and leave IPv6 out where it is empty (a single-stack IPv4 cluster).
package clusternet

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Addresses of the cluster network.
const (
	HubIP         = "10.77.0.1"   // the hub's bridge
	APIServerIP   = "10.77.0.2"   // the control-plane namespace
	ClientIP      = "10.77.0.100" // the outside client
	APIServerPort = 6443
	ServiceCIDR   = "10.96.0.0/16"
	// ClusterCIDR covers every node's pod network 10.244.<n>.0/24.
	ClusterCIDR = "10.244.0.0/16"
	// LoadBalancerCIDR holds the LoadBalancer addresses a harness hands
	// out, as a LoadBalancer controller would; the client routes it via
	// node 1, as a router that learnt it from that node would.
	LoadBalancerCIDR = "10.77.200.0/24"
	// ExternalIPCIDR holds addresses for Services' externalIPs; the client
	// routes it via node 2 (node 1 when there is one node).
	ExternalIPCIDR = "10.77.201.0/24"
	// MaxNodes bounds the node index: addresses are 10.77.0.1<n>.
	MaxNodes = 9
)

// IPv6 addresses of a dual-stack cluster: the same shape, one per
// namespace, on the cluster network fd77::/64.
const (
	HubIP6       = "fd77::1"
	APIServerIP6 = "fd77::2"
	ClientIP6    = "fd77::100"
	// ServiceCIDR6 is the second service range of a dual-stack API server.
	ServiceCIDR6 = "fd96::/112"
	// ClusterCIDR6 covers every node's IPv6 pod network fd44:0:0:<n>::/64.
	ClusterCIDR6 = "fd44::/48"
)

// APIServerURL is the API server's real address inside the cluster network.
// Nothing that starts before a Service proxy may use the kubernetes
// Service's ClusterIP instead: no kube-proxy runs.
var APIServerURL = fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort)

// NodeIP is the address of node i (1-based).
func NodeIP(i int) string { return fmt.Sprintf("10.77.0.%d", 10+i) }

// PodCIDR is the pod network of node i.
func PodCIDR(i int) string { return fmt.Sprintf("10.244.%d.0/24", i) }

// PodGateway is node i's address on its pod network.
func PodGateway(i int) string { return fmt.Sprintf("10.244.%d.1", i) }

// NodeIP6 is the IPv6 address of node i (1-based) in a dual-stack cluster.
func NodeIP6(i int) string { return fmt.Sprintf("fd77::%d", 10+i) }

// PodCIDR6 is the IPv6 pod network of node i in a dual-stack cluster.
func PodCIDR6(i int) string { return fmt.Sprintf("fd44:0:0:%d::/64", i) }

// Zone is the topology zone of node i: three zones, round robin.
func Zone(i int) string { return fmt.Sprintf("zone-%c", 'a'+(i-1)%3) }

// SetUpHub makes ns the hub: a bridge with HubIP and HubIP6, forwarding on
// in both families, ICMP redirects off. The hub routes pod networks to
// nodes (RoutePeers) and has no default route in either family: a packet
// for an address nobody routes (such as a Service address that left a node
// un-translated) gets ICMP net unreachable (ICMPv6 no route).
func SetUpHub(hub *netns.NS) error {
	if err := hub.Run(
		[]string{"ip", "link", "add", "br0", "type", "bridge"},
		[]string{"ip", "link", "set", "br0", "up"},
		[]string{"ip", "addr", "add", HubIP + "/24", "dev", "br0"},
		[]string{"ip", "-6", "addr", "add", HubIP6 + "/64", "dev", "br0", "nodad"},
	); err != nil {
		return err
	}
	if err := hub.SetSysctls("net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "1"); err != nil {
		return err
	}
	return hub.NoRedirects("br0")
}

// Attach plugs ns into the hub's bridge: a veth pair hubIf (enslaved to
// br0) and eth0 (with ip/24 and the default route via the hub; with ip6/64
// and the IPv6 default route via the hub too when ip6 is not empty), and no
// ICMP redirects. A router that forwards a packet for a Service address
// before its rules exist would otherwise redirect the sender past itself.
// IPv6 addresses skip duplicate address detection: every address of the
// cluster network is unique by construction, and a tentative address would
// not be usable for a second or more.
func Attach(hub *netns.NS, hubIf string, ns *netns.NS, ip, ip6 string) error {
	if err := netns.AddVeth(hub, hubIf, ns, "eth0"); err != nil {
		return err
	}
	if err := ns.Run(
		[]string{"ip", "addr", "add", ip + "/24", "dev", "eth0"},
		[]string{"ip", "route", "add", "default", "via", HubIP, "dev", "eth0"},
	); err != nil {
		return err
	}
	if ip6 != "" {
		if err := ns.Run(
			[]string{"ip", "-6", "addr", "add", ip6 + "/64", "dev", "eth0", "nodad"},
			[]string{"ip", "-6", "route", "add", "default", "via", HubIP6, "dev", "eth0"},
		); err != nil {
			return err
		}
	}
	if err := hub.Run([]string{"ip", "link", "set", hubIf, "master", "br0"}); err != nil {
		return err
	}
	return ns.NoRedirects("eth0")
}

// Node is what the routes need of a node. IP6 and PodCIDR6 are empty on a
// single-stack (IPv4) cluster.
type Node struct {
	NS                         *netns.NS
	IP, PodCIDR, IP6, PodCIDR6 string
}

// SetUpNode turns forwarding on (IPv6 too on a dual-stack node) and
// reverse-path filtering off in the node's namespace (packets to Service
// addresses arrive on one interface and leave by another) and routes every
// other node's pod networks through that node's addresses, as a
// host-gateway CNI would. Call it for a new node and again when a node's
// namespace was made anew (a reboot).
func SetUpNode(n Node, others []Node) error {
	if err := n.NS.SetSysctls(
		"net.ipv4.ip_forward", "1",
		"net.ipv4.conf.all.rp_filter", "0",
		"net.ipv4.conf.default.rp_filter", "0",
		"net.ipv4.conf.eth0.rp_filter", "0",
	); err != nil {
		return err
	}
	if n.IP6 != "" {
		if err := n.NS.SetSysctls("net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
	}
	for _, m := range others {
		if err := n.NS.Run(podRoutes(m, "eth0")...); err != nil {
			return err
		}
	}
	return nil
}

// podRoutes are the commands that route m's pod networks through m's
// addresses on dev: IPv4, and IPv6 when both ends have it.
func podRoutes(m Node, dev string) [][]string {
	out := [][]string{{"ip", "route", "add", m.PodCIDR, "via", m.IP, "dev", dev}}
	if m.PodCIDR6 != "" && m.IP6 != "" {
		out = append(out, []string{"ip", "-6", "route", "add", m.PodCIDR6, "via", m.IP6, "dev", dev})
	}
	return out
}

// RoutePeers routes the node's pod networks from the hub and from every
// other node through the node's addresses.
func RoutePeers(hub *netns.NS, n Node, others []Node) error {
	errs := []error{hub.Run(podRoutes(n, "br0")...)}
	for _, m := range others {
		errs = append(errs, m.NS.Run(podRoutes(n, "eth0")...))
	}
	return errors.Join(errs...)
}

// UnroutePeers removes what RoutePeers added, for a node that leaves.
func UnroutePeers(hub *netns.NS, n Node, others []Node) {
	for _, ns := range append([]*netns.NS{hub}, nsOf(others)...) {
		_, _ = ns.Exec("ip", "route", "del", n.PodCIDR)
		if n.PodCIDR6 != "" {
			_, _ = ns.Exec("ip", "-6", "route", "del", n.PodCIDR6)
		}
	}
}

func nsOf(nodes []Node) []*netns.NS {
	var out []*netns.NS
	for _, m := range nodes {
		out = append(out, m.NS)
	}
	return out
}

// RouteClient gives the outside client its routes to LoadBalancer
// addresses (via lbNode) and external IPs (via extNode), as a router that
// learnt them from those nodes would.
func RouteClient(client *netns.NS, lbNode, extNode string) error {
	return client.Run(
		[]string{"ip", "route", "add", LoadBalancerCIDR, "via", lbNode, "dev", "eth0"},
		[]string{"ip", "route", "add", ExternalIPCIDR, "via", extNode, "dev", "eth0"},
	)
}

var lbNext, extNext atomic.Int32

// NextLoadBalancerIP hands out an address of LoadBalancerCIDR, as a
// LoadBalancer controller would.
func NextLoadBalancerIP() string { return fmt.Sprintf("10.77.200.%d", 10+lbNext.Add(1)%240) }

// NextExternalIP hands out an address of ExternalIPCIDR.
func NextExternalIP() string { return fmt.Sprintf("10.77.201.%d", 10+extNext.Add(1)%240) }
