package model

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// dualSvc is a dual-stack NodePort Service (IPv4 first) with one slice of
// each family.
func dualSvc(policy corev1.IPFamilyPolicy) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	svc := svcObj("web", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
		s.Spec.IPFamilyPolicy = &policy
	})
	v4 := sliceObj("web", "web-v4", 8080, epSpec{ip: "10.1.0.2"})
	v6 := sliceObj("web", "web-v6", 8080, epSpec{ip: "fd00:1::2"})
	v6.AddressType = discoveryv1.AddressTypeIPv6
	return svc, []*discoveryv1.EndpointSlice{v4, v6}
}

func dualConfig(f Family) Config {
	return Config{NodeName: "node-a", Family: f,
		NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00:168::10")}}
}

// TestDualStackService: each family's build holds that family's ClusterIP,
// NodePort address and endpoints only, and reports nothing.
func TestDualStackService(t *testing.T) {
	svc, slices := dualSvc(corev1.IPFamilyPolicyPreferDualStack)
	for _, tc := range []struct {
		fam       Family
		frontends []string
		eps       []string
	}{
		{IPv4, []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP"}, []string{"10.1.0.2:8080"}},
		{IPv6, []string{"ClusterIP [fd00:96::10]:80/TCP", "NodePort [fd00:168::10]:30080/TCP"}, []string{"[fd00:1::2]:8080"}},
	} {
		st := Build(Input{Config: dualConfig(tc.fam), Services: []*corev1.Service{svc}, EndpointSlices: slices})
		if len(st.Problems) != 0 || len(st.Services) != 1 {
			t.Fatalf("%s: %d services, problems %v", tc.fam, len(st.Services), st.Problems)
		}
		s := st.Services[0]
		if got := frontends(s.Frontends); !reflect.DeepEqual(got, tc.frontends) {
			t.Errorf("%s frontends %v, want %v", tc.fam, got, tc.frontends)
		}
		if got := addrs(s.InternalEndpoints); !reflect.DeepEqual(got, tc.eps) {
			t.Errorf("%s endpoints %v, want %v", tc.fam, got, tc.eps)
		}
		if st.Family != tc.fam {
			t.Errorf("state family %s, want %s", st.Family, tc.fam)
		}
	}
}

// TestFamilyProblems: the bad input of issue 12 is reported, by one family
// only, and builds exactly what a clean input of the family builds.
func TestFamilyProblems(t *testing.T) {
	v4only := svcObj("v4") // SingleStack IPv4
	v6slice := sliceObj("v4", "v4-v6", 8080, epSpec{ip: "fd00:1::9"})
	v6slice.AddressType = discoveryv1.AddressTypeIPv6
	v4slice := sliceObj("v4", "v4-v4", 8080, epSpec{ip: "10.1.0.2"})
	v6only := svcObj("v6", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00:96::11", []string{"fd00:96::11"} })
	require, requireSlices := dualSvc(corev1.IPFamilyPolicyRequireDualStack)
	prefer, preferSlices := dualSvc(corev1.IPFamilyPolicyPreferDualStack)
	prefer.Name = "prefer"
	for _, es := range preferSlices {
		es.Name, es.Labels[discoveryv1.LabelServiceName] = "prefer-"+es.Name, "prefer"
	}
	cases := []struct {
		name        string
		fam         Family
		single      bool
		svcs        []*corev1.Service
		slices      []*discoveryv1.EndpointSlice
		want        []string // substrings, one per problem, in order
		wantService int
	}{
		{name: "IPv6 slice of an IPv4 Service, reported by the IPv6 family", fam: IPv6,
			svcs: []*corev1.Service{v4only}, slices: []*discoveryv1.EndpointSlice{v4slice, v6slice},
			want: []string{"EndpointSlice ns/v4-v6: holds IPv6 endpoints, but Service ns/v4 has no IPv6 ClusterIP"}},
		{name: "the IPv4 family of a dual-stack node is silent about it", fam: IPv4,
			svcs: []*corev1.Service{v4only}, slices: []*discoveryv1.EndpointSlice{v4slice, v6slice}, wantService: 1},
		{name: "an IPv4-only node reports the IPv6 slice itself", fam: IPv4, single: true,
			svcs: []*corev1.Service{v4only}, slices: []*discoveryv1.EndpointSlice{v4slice, v6slice}, wantService: 1,
			want: []string{"EndpointSlice ns/v4-v6: holds IPv6 endpoints"}},
		{name: "RequireDualStack on an IPv4-only node", fam: IPv4, single: true,
			svcs: []*corev1.Service{require}, slices: requireSlices, wantService: 1,
			want: []string{"Service ns/web: asks ipFamilyPolicy RequireDualStack, but this node has no IPv6 address: only its IPv4 ClusterIP 10.96.0.10 is served on this node, not fd00:96::10"}},
		{name: "RequireDualStack on a dual-stack node", fam: IPv4,
			svcs: []*corev1.Service{require}, slices: requireSlices, wantService: 1},
		{name: "PreferDualStack on an IPv4-only node is fine", fam: IPv4, single: true,
			svcs: []*corev1.Service{prefer}, slices: preferSlices, wantService: 1},
		{name: "IPv6-only Service on an IPv4-only node", fam: IPv4, single: true,
			svcs: []*corev1.Service{v6only},
			want: []string{"Service ns/v6: has only IPv6 ClusterIPs (fd00:96::11), and this node has no IPv6 address"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualConfig(tc.fam)
			cfg.SingleStack = tc.single
			st := Build(Input{Config: cfg, Services: tc.svcs, EndpointSlices: tc.slices})
			if len(st.Problems) != len(tc.want) {
				t.Fatalf("problems %v, want %d", st.Problems, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(st.Problems[i].String(), w) {
					t.Errorf("problem %q does not say %q", st.Problems[i], w)
				}
			}
			if len(st.Services) != tc.wantService {
				t.Errorf("%d service ports built, want %d", len(st.Services), tc.wantService)
			}
			for _, s := range st.Services {
				for _, e := range s.ClusterEndpoints {
					if e.Addr.Is4() != (tc.fam == IPv4) {
						t.Errorf("endpoint %s of the other family in the %s state", e, tc.fam)
					}
				}
			}
		})
	}
}

// TestLocalDetection: every mode resolves per family, and a CIDR mode
// without a CIDR of the family says so.
func TestLocalDetection(t *testing.T) {
	node := nodeObj("")
	node.Spec.PodCIDRs = []string{"10.1.3.0/24", "fd00:1:3::/64"}
	v4only := nodeObj("")
	v4only.Spec.PodCIDR = "10.1.3.0/24"
	clusterBoth := LocalDetection{Mode: LocalClusterCIDR, ClusterCIDRs: []netip.Prefix{
		netip.MustParsePrefix("fd00:1::/48"), netip.MustParsePrefix("10.1.0.0/16")}}
	clusterV4 := LocalDetection{Mode: LocalClusterCIDR, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	cases := []struct {
		name    string
		det     LocalDetection
		node    *corev1.Node
		fam     Family
		want    LocalTraffic
		problem string
	}{
		{name: "none", fam: IPv4},
		{name: "ClusterCIDR IPv4", det: clusterBoth, fam: IPv4, want: LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
		{name: "ClusterCIDR IPv6", det: clusterBoth, fam: IPv6, want: LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:1::/48")}}},
		{name: "ClusterCIDR: an IPv4 CIDR for an IPv6 family", det: clusterV4, fam: IPv6,
			problem: "Config: localTrafficDetection.clusterCIDRs has no IPv6 CIDR (given: 10.1.0.0/16)"},
		{name: "NodeCIDR IPv4", det: LocalDetection{Mode: LocalNodeCIDR}, node: node, fam: IPv4,
			want: LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.3.0/24")}}},
		{name: "NodeCIDR IPv6", det: LocalDetection{Mode: LocalNodeCIDR}, node: node, fam: IPv6,
			want: LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:1:3::/64")}}},
		{name: "NodeCIDR from the old podCIDR field", det: LocalDetection{Mode: LocalNodeCIDR}, node: v4only, fam: IPv4,
			want: LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.3.0/24")}}},
		{name: "NodeCIDR without a pod CIDR of the family", det: LocalDetection{Mode: LocalNodeCIDR}, node: v4only, fam: IPv6,
			problem: "Node node-a: localTrafficDetection NodeCIDR: the node has no IPv6 spec.podCIDRs"},
		{name: "BridgeInterface", det: LocalDetection{Mode: LocalBridgeInterface, Interface: "cbr0"}, fam: IPv6,
			want: LocalTraffic{Interface: "cbr0"}},
		{name: "InterfaceNamePrefix", det: LocalDetection{Mode: LocalInterfaceNamePrefix, Interface: "veth"}, fam: IPv4,
			want: LocalTraffic{Interface: "veth", InterfacePrefix: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualConfig(tc.fam)
			cfg.LocalDetection = tc.det
			st := Build(Input{Config: cfg, Node: tc.node, Services: []*corev1.Service{svcObj("a")}})
			if !st.Local.Equal(tc.want) {
				t.Errorf("local traffic %+v, want %+v", st.Local, tc.want)
			}
			switch {
			case tc.problem == "" && len(st.Problems) > 0:
				t.Errorf("unexpected problems %v", st.Problems)
			case tc.problem != "" && (len(st.Problems) != 1 || !strings.Contains(st.Problems[0].String(), tc.problem)):
				t.Errorf("problems %v, want one saying %q", st.Problems, tc.problem)
			}
		})
	}
}

// TestNodePortAddressKeywords: primary, localhost and all, alone and
// combined, per family, as kube-proxy resolves them.
func TestNodePortAddressKeywords(t *testing.T) {
	node := nodeObj("", "192.168.2.10", "fd00:168::20")
	np := svcObj("a", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
	})
	cases := []struct {
		name      string
		addrs     []string
		localhost bool
		// unsupported is Config.LocalhostUnsupported: the backend serves no
		// localhost NodePorts.
		unsupported string
		fam         Family
		want        []string
		problem     string
	}{
		{name: "empty is every address and 127.0.0.1", localhost: true, fam: IPv4,
			want: []string{"127.0.0.1", "192.168.1.10", "192.168.2.10"}},
		{name: "all is the same", addrs: []string{"all"}, localhost: true, fam: IPv4,
			want: []string{"127.0.0.1", "192.168.1.10", "192.168.2.10"}},
		{name: "all on IPv6: no loopback, no problem", addrs: []string{"all"}, localhost: true, fam: IPv6,
			want: []string{"fd00:168::10", "fd00:168::20"}},
		{name: "primary per family, IPv4", addrs: []string{"primary"}, fam: IPv4, want: []string{"192.168.1.10"}},
		{name: "primary per family, IPv6", addrs: []string{"primary"}, fam: IPv6, want: []string{"fd00:168::10"}},
		{name: "localhost alone", addrs: []string{"localhost"}, localhost: true, fam: IPv4, want: []string{"127.0.0.1"}},
		{name: "primary and localhost", addrs: []string{"primary", "localhost"}, localhost: true, fam: IPv4,
			want: []string{"127.0.0.1", "192.168.1.10"}},
		{name: "only IPv4 CIDRs: IPv6 answers on every address, as kube-proxy", addrs: []string{"192.168.2.0/24"}, fam: IPv6,
			want: []string{"fd00:168::10", "fd00:168::20"}},
		{name: "only IPv4 CIDRs: IPv4 answers inside them", addrs: []string{"192.168.2.0/24"}, fam: IPv4,
			want: []string{"192.168.2.10"}},
		{name: "primary and a CIDR", addrs: []string{"primary", "192.168.2.0/24", "fd00:168::20/128"}, fam: IPv6,
			want: []string{"fd00:168::10", "fd00:168::20"}},
		{name: "localhost on IPv6 says it cannot", addrs: []string{"primary", "localhost"}, localhost: true, fam: IPv6,
			want: []string{"fd00:168::10"}, problem: "nodePortAddresses includes the IPv6 loopback ::1"},
		{name: "::1/128 on IPv6 says it cannot", addrs: []string{"::1/128"}, localhost: true, fam: IPv6,
			problem: "nodePortAddresses includes the IPv6 loopback ::1"},
		{name: "localhost with localhostNodePorts false", addrs: []string{"localhost", "primary"}, fam: IPv4,
			want: []string{"192.168.1.10"}, problem: "iptables.localhostNodePorts is false"},
		{name: "all with localhostNodePorts false is quiet", addrs: []string{"all"}, fam: IPv4,
			want: []string{"192.168.1.10", "192.168.2.10"}},
		// The IPVS backend serves no 127.0.0.1 NodePort: it skipped the
		// frontends without a word; the model now leaves them out and says so.
		{name: "localhostNodePorts on a backend without them says so", localhost: true, unsupported: "the IPVS backend does not serve them", fam: IPv4,
			want:    []string{"192.168.1.10", "192.168.2.10"},
			problem: "iptables.localhostNodePorts is true, but the IPVS backend does not serve them: NodePorts do not answer on 127.0.0.1"},
		{name: "localhost named on a backend without them says so", addrs: []string{"primary", "localhost"}, localhost: true,
			unsupported: "the IPVS backend does not serve them", fam: IPv4,
			want: []string{"192.168.1.10"}, problem: "iptables.localhostNodePorts is true, but the IPVS backend"},
		{name: "a backend without them, localhostNodePorts false: quiet", unsupported: "the IPVS backend does not serve them", fam: IPv4,
			want: []string{"192.168.1.10", "192.168.2.10"}},
		{name: "a backend without them, IPv6: quiet", localhost: true, unsupported: "the IPVS backend does not serve them", fam: IPv6,
			want: []string{"fd00:168::10", "fd00:168::20"}},
		{name: "a backend without them, NodePorts off the loopback: quiet", addrs: []string{"primary"}, localhost: true,
			unsupported: "the IPVS backend does not serve them", fam: IPv4, want: []string{"192.168.1.10"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualConfig(tc.fam)
			cfg.NodePortAddresses, cfg.LocalhostNodePorts, cfg.LocalhostUnsupported = tc.addrs, tc.localhost, tc.unsupported
			st := Build(Input{Config: cfg, Node: node, Services: []*corev1.Service{np}})
			var got []string
			for _, f := range st.Services[0].Frontends {
				if f.Kind == KindNodePort {
					got = append(got, f.Addr.String())
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("NodePort addresses %v, want %v", got, tc.want)
			}
			switch {
			case tc.problem == "" && len(st.Problems) > 0:
				t.Errorf("unexpected problems %v", st.Problems)
			case tc.problem != "" && (len(st.Problems) != 1 || !strings.Contains(st.Problems[0].String(), tc.problem)):
				t.Errorf("problems %v, want one saying %q", st.Problems, tc.problem)
			}
		})
	}
}
