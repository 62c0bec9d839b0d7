package daemon

import (
	"net/netip"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/revision"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// modelConfig is the model configuration of a revision on this node.
func modelConfig(c *revision.Config, nodeName string) model.Config {
	s := c.Spec
	mc := model.Config{
		NodeName:          nodeName,
		Family:            model.IPv4,
		NodePortAddresses: s.NodePortAddresses,
		ServiceProxyName:  s.ServiceProxyName,
	}
	if d := s.LocalTrafficDetection; d != nil && d.Mode == v1alpha1.LocalTrafficDetectionClusterCIDR {
		for _, cidr := range d.ClusterCIDRs {
			if p, err := netip.ParsePrefix(string(cidr)); err == nil {
				mc.ClusterCIDRs = append(mc.ClusterCIDRs, p)
			}
		}
	}
	if t := s.IPTables; t != nil {
		mc.MasqueradeAll = t.MasqueradeAll != nil && *t.MasqueradeAll
		mc.LocalhostNodePorts = t.LocalhostNodePorts != nil && *t.LocalhostNodePorts
	}
	return mc
}
