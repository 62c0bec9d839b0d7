package daemon

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestLocalDetection: every mode of spec.localTrafficDetection reaches the
// model, with the CIDRs of both families.
func TestLocalDetection(t *testing.T) {
	cases := []struct {
		name string
		in   *v1alpha1.LocalTrafficDetection
		want model.LocalDetection
	}{
		{name: "unset", want: model.LocalDetection{}},
		{name: "ClusterCIDR, both families",
			in: &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionClusterCIDR,
				ClusterCIDRs: []v1alpha1.CIDR{"10.244.0.0/16", "fd00:244::/56"}},
			want: model.LocalDetection{Mode: model.LocalClusterCIDR, ClusterCIDRs: []netip.Prefix{
				netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")}}},
		{name: "NodeCIDR", in: &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionNodeCIDR},
			want: model.LocalDetection{Mode: model.LocalNodeCIDR}},
		{name: "BridgeInterface",
			in:   &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionBridgeInterface, BridgeInterface: "cbr0"},
			want: model.LocalDetection{Mode: model.LocalBridgeInterface, Interface: "cbr0"}},
		{name: "InterfaceNamePrefix",
			in:   &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionInterfaceNamePrefix, InterfaceNamePrefix: "veth"},
			want: model.LocalDetection{Mode: model.LocalInterfaceNamePrefix, Interface: "veth"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := localDetection(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
