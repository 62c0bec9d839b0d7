package daemon

import (
	"net/netip"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/revision"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// modelConfig is the model configuration of a revision on this node, for
// every family: the model keeps what belongs to the family it builds.
func modelConfig(c *revision.Config, nodeName string) model.Config {
	s := c.Spec
	mc := model.Config{
		NodeName:          nodeName,
		Family:            model.IPv4,
		NodePortAddresses: s.NodePortAddresses,
		ServiceProxyName:  s.ServiceProxyName,
		LocalDetection:    localDetection(s.LocalTrafficDetection),
	}
	if t := s.IPTables; t != nil {
		mc.MasqueradeAll = t.MasqueradeAll != nil && *t.MasqueradeAll
		mc.LocalhostNodePorts = t.LocalhostNodePorts != nil && *t.LocalhostNodePorts
	}
	mc.LocalhostUnsupported = c.LocalhostNodePortsUnsupported()
	return mc
}

// localDetection translates spec.localTrafficDetection. CIDRs that do not
// parse are left out (the API validates them).
func localDetection(d *v1alpha1.LocalTrafficDetection) model.LocalDetection {
	if d == nil {
		return model.LocalDetection{}
	}
	out := model.LocalDetection{}
	switch d.Mode {
	case v1alpha1.LocalTrafficDetectionClusterCIDR:
		out.Mode = model.LocalClusterCIDR
		for _, cidr := range d.ClusterCIDRs {
			if p, err := netip.ParsePrefix(string(cidr)); err == nil {
				out.ClusterCIDRs = append(out.ClusterCIDRs, p)
			}
		}
	case v1alpha1.LocalTrafficDetectionNodeCIDR:
		out.Mode = model.LocalNodeCIDR
	case v1alpha1.LocalTrafficDetectionBridgeInterface:
		out.Mode, out.Interface = model.LocalBridgeInterface, d.BridgeInterface
	case v1alpha1.LocalTrafficDetectionInterfaceNamePrefix:
		out.Mode, out.Interface = model.LocalInterfaceNamePrefix, d.InterfaceNamePrefix
	}
	return out
}
