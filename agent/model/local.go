package model

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// LocalMode says how traffic from pods is told apart from traffic from
// outside the cluster (kube-proxy's detectLocalMode).
type LocalMode string

// Local traffic detection modes.
const (
	// LocalNone detects nothing: every source counts as outside.
	LocalNone LocalMode = ""
	// LocalClusterCIDR: the source is in the cluster's pod CIDRs.
	LocalClusterCIDR LocalMode = "ClusterCIDR"
	// LocalNodeCIDR: the source is in the node's spec.podCIDRs.
	LocalNodeCIDR LocalMode = "NodeCIDR"
	// LocalBridgeInterface: the packet arrived on one bridge.
	LocalBridgeInterface LocalMode = "BridgeInterface"
	// LocalInterfaceNamePrefix: the packet arrived on an interface whose
	// name starts with a prefix.
	LocalInterfaceNamePrefix LocalMode = "InterfaceNamePrefix"
)

// LocalDetection is the configured local traffic detection, for every
// family at once.
type LocalDetection struct {
	Mode LocalMode
	// ClusterCIDRs are the cluster's pod networks, of either family
	// (mode ClusterCIDR); each family's state keeps its own.
	ClusterCIDRs []netip.Prefix
	// Interface is the bridge (mode BridgeInterface) or the interface
	// name prefix (mode InterfaceNamePrefix).
	Interface string
}

// LocalTraffic is the detection resolved for one family: what a backend
// matches to recognise traffic from pods. At most one of CIDRs and
// Interface is set; the zero value detects nothing.
type LocalTraffic struct {
	// CIDRs: a source inside one of them is a pod (modes ClusterCIDR and
	// NodeCIDR), of the state's family, masked and sorted.
	CIDRs []netip.Prefix
	// Interface: a packet that arrived on it comes from a pod (mode
	// BridgeInterface); with InterfacePrefix, a packet that arrived on any
	// interface whose name starts with it (mode InterfaceNamePrefix).
	Interface       string
	InterfacePrefix bool
}

// Detects reports whether anything is recognised as pod traffic. Without
// detection, MasqueradeOffCluster means never.
func (l LocalTraffic) Detects() bool { return len(l.CIDRs) > 0 || l.Interface != "" }

// Equal reports whether two detections match the same packets.
func (l LocalTraffic) Equal(o LocalTraffic) bool {
	return slices.Equal(l.CIDRs, o.CIDRs) && l.Interface == o.Interface && l.InterfacePrefix == o.InterfacePrefix
}

// String renders the detection for logs and render keys.
func (l LocalTraffic) String() string {
	switch {
	case l.Interface != "" && l.InterfacePrefix:
		return "iif " + l.Interface + "*"
	case l.Interface != "":
		return "iif " + l.Interface
	}
	parts := make([]string, len(l.CIDRs))
	for i, p := range l.CIDRs {
		parts[i] = p.String()
	}
	return "saddr " + strings.Join(parts, ",")
}

// initLocal resolves the local traffic detection for the builder's family:
// the cluster CIDRs of the family, the node's pod CIDRs of the family, or
// the interface. A CIDR mode without a CIDR of the family detects nothing
// on that family, and says so: off-cluster clients of ClusterIPs are then
// not masqueraded, and pods count as outside clients of external
// addresses with externalTrafficPolicy Local.
func (b *builder) initLocal(node *corev1.Node) {
	d := b.cfg.LocalDetection
	const effect = "ClusterIP traffic from outside the cluster is not masqueraded, and pods count as outside clients of external addresses"
	switch d.Mode {
	case LocalClusterCIDR:
		var given []string
		for _, p := range d.ClusterCIDRs {
			given = append(given, p.String())
			if p.IsValid() && b.familyOf(p.Addr()) {
				b.local.CIDRs = append(b.local.CIDRs, p.Masked())
			}
		}
		if len(b.local.CIDRs) == 0 {
			b.problem("Config", "localTrafficDetection.clusterCIDRs has no %s CIDR (given: %s): on %s, %s",
				b.family, strings.Join(given, ", "), b.family, effect)
		}
	case LocalNodeCIDR:
		b.local.CIDRs = b.podCIDRs(node)
		if len(b.local.CIDRs) == 0 {
			b.problem(nodeObject(node, b.cfg.NodeName), "localTrafficDetection NodeCIDR: the node has no %s spec.podCIDRs: on %s, %s",
				b.family, b.family, effect)
		}
	case LocalBridgeInterface:
		b.local.Interface = d.Interface
	case LocalInterfaceNamePrefix:
		b.local.Interface, b.local.InterfacePrefix = d.Interface, true
	}
	slices.SortFunc(b.local.CIDRs, func(x, y netip.Prefix) int {
		if prefixLess(x, y) {
			return -1
		}
		if prefixLess(y, x) {
			return 1
		}
		return 0
	})
	b.local.CIDRs = slices.Compact(b.local.CIDRs)
}

// podCIDRs returns the node's spec.podCIDRs (or podCIDR) of the builder's
// family, reporting those that do not parse.
func (b *builder) podCIDRs(node *corev1.Node) []netip.Prefix {
	if node == nil {
		return nil
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			b.problem("Node "+node.Name, "invalid spec.podCIDRs entry %q skipped", s)
			continue
		}
		if b.familyOf(p.Addr()) {
			out = append(out, p.Masked())
		}
	}
	return out
}

func nodeObject(node *corev1.Node, name string) string {
	if node != nil {
		name = node.Name
	}
	return "Node " + name
}
