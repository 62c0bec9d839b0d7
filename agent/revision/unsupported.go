package revision

import (
	"fmt"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// apiDefaultMasqueradeBit is the API's default of spec.iptables.masqueradeBit
// (its +kubebuilder:default marker): every revision carries a bit, so only
// another value says that somebody chose one.
const apiDefaultMasqueradeBit = 14

// unsupportedSetting returns an error naming a setting of spec that backend
// cannot honour, or nil. Only what the API server cannot refuse is checked
// here: with mode Auto, only the node knows its backend. Refusing the
// revision keeps the node's rules as they are and shows the reason in
// ProxyNode status, instead of programming the node without the setting.
func unsupportedSetting(spec *v1alpha1.GatewayConfigSpec, backend v1alpha1.Backend) error {
	if backend != v1alpha1.BackendIPVS {
		return nil
	}
	if t := spec.IPTables; t != nil && t.MasqueradeBit != nil && *t.MasqueradeBit != apiDefaultMasqueradeBit {
		return fmt.Errorf("spec.iptables.masqueradeBit %d is not supported by the IPVS backend, which marks packets for masquerade "+
			"with a bit of its own (0x1000): set it back to %d, its default, or use mode IPTables or NFTables",
			*t.MasqueradeBit, apiDefaultMasqueradeBit)
	}
	return nil
}

// LocalhostNodePortsUnsupported says why the chosen backend serves no
// NodePorts on 127.0.0.1, or "" when it serves them. The API defaults
// spec.iptables.localhostNodePorts to true, so a revision is not refused
// for it: the model leaves the frontends out and reports it instead.
func (c *Config) LocalhostNodePortsUnsupported() string {
	if c.Choice.Backend == v1alpha1.BackendIPVS {
		return "the IPVS backend does not serve them (IPVS does not forward loopback sources reliably)"
	}
	return ""
}

// settingNotApplied says, in words, what spec sets that backend does not
// use although the revision is accepted, or "". Only spec.ipvs under mode
// Auto on a node without IPVS: Auto means "IPVS where the kernel has it",
// so its tuning is conditional, and refusing it would refuse every node of
// a mixed cluster that has no IPVS.
func settingNotApplied(spec *v1alpha1.GatewayConfigSpec, backend v1alpha1.Backend) string {
	if spec.IPVS != nil && backend != v1alpha1.BackendIPVS {
		return "spec.ipvs is not applied: it tunes the IPVS backend only"
	}
	return ""
}
