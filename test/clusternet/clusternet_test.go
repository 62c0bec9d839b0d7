package clusternet

import (
	"net/netip"
	"testing"
)

// TestAddressPlan checks that every node's pod networks lie in the cluster
// CIDR of their family and do not overlap, and that node addresses lie on
// the cluster network: local-traffic detection by cluster CIDR, the
// controller manager's --cluster-cidr and the hub's routes rely on it.
func TestAddressPlan(t *testing.T) {
	cluster4, cluster6 := netip.MustParsePrefix(ClusterCIDR), netip.MustParsePrefix(ClusterCIDR6)
	net4 := netip.MustParsePrefix(HubIP + "/24").Masked()
	net6 := netip.MustParsePrefix(HubIP6 + "/64").Masked()
	var seen []netip.Prefix
	for i := 1; i <= MaxNodes; i++ {
		for _, c := range []struct {
			pod     string
			cluster netip.Prefix
		}{{PodCIDR(i), cluster4}, {PodCIDR6(i), cluster6}} {
			p := netip.MustParsePrefix(c.pod)
			if p != p.Masked() || !c.cluster.Contains(p.Addr()) || p.Bits() < c.cluster.Bits() {
				t.Errorf("node %d: pod network %s is not a network inside cluster CIDR %s", i, p, c.cluster)
			}
			for _, q := range seen {
				if q.Overlaps(p) {
					t.Errorf("node %d: pod network %s overlaps %s", i, p, q)
				}
			}
			seen = append(seen, p)
		}
		if a := netip.MustParseAddr(NodeIP(i)); !net4.Contains(a) {
			t.Errorf("node %d: %s is not on %s", i, a, net4)
		}
		if a := netip.MustParseAddr(NodeIP6(i)); !net6.Contains(a) {
			t.Errorf("node %d: %s is not on %s", i, a, net6)
		}
	}
	for _, a := range []string{APIServerIP6, ClientIP6} {
		if !net6.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s is not on %s", a, net6)
		}
	}
}
