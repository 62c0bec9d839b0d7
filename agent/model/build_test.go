package model

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestServiceSelection(t *testing.T) {
	cases := []struct {
		name      string
		proxyName string
		svc       *corev1.Service
		want      []string // service keys
	}{
		{"plain ClusterIP", "", svcObj("a"), []string{"ns/a:http/TCP"}},
		{"headless skipped", "", svcObj("a", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"}
		}), nil},
		{"ExternalName skipped", "", svcObj("a", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
		}), nil},
		{"unallocated clusterIP skipped", "", svcObj("a", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		}), nil},
		{"IPv6-only skipped in IPv4 state", "", svcObj("a", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::10", []string{"fd00::10"}
		}), nil},
		{"any proxy-name label skipped when unnamed", "", svcObj("a", func(s *corev1.Service) {
			s.Labels = map[string]string{LabelServiceProxyName: "synterix"}
		}), nil},
		{"matching proxy-name handled", "synterix", svcObj("a", func(s *corev1.Service) {
			s.Labels = map[string]string{LabelServiceProxyName: "synterix"}
		}), []string{"ns/a:http/TCP"}},
		{"other proxy-name skipped", "synterix", svcObj("a", func(s *corev1.Service) {
			s.Labels = map[string]string{LabelServiceProxyName: "other"}
		}), nil},
		{"unlabelled handled when named", "synterix", svcObj("a"), []string{"ns/a:http/TCP"}},
		{"ports become service ports, protocols kept apart", "", svcObj("dns", func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{
				{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
				{Name: "sctp", Port: 53, Protocol: corev1.ProtocolSCTP},
			}
		}), []string{"ns/dns:dns-tcp/TCP", "ns/dns:dns-udp/UDP", "ns/dns:sctp/SCTP"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.ServiceProxyName = tc.proxyName
			st := Build(Input{Config: cfg, Services: []*corev1.Service{tc.svc}})
			var got []string
			for _, s := range st.Services {
				got = append(got, s.Key)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("services = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFrontends(t *testing.T) {
	lb := func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	}
	cases := []struct {
		name  string
		cfg   func(*Config)
		node  *corev1.Node
		svc   *corev1.Service
		want  []string
		masq  []Masquerade
		local bool
	}{
		{name: "ClusterIP only", svc: svcObj("a"),
			want: []string{"ClusterIP 10.96.0.10:80/TCP"}, masq: []Masquerade{MasqueradeOffCluster}},
		{name: "masqueradeAll", cfg: func(c *Config) { c.MasqueradeAll = true }, svc: svcObj("a"),
			want: []string{"ClusterIP 10.96.0.10:80/TCP"}, masq: []Masquerade{MasqueradeAlways}},
		{name: "NodePort on every node address incl. Node status",
			node: nodeObj("", "192.168.2.10", "not-an-ip"),
			svc: svcObj("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP", "NodePort 192.168.2.10:30080/TCP"},
			masq: []Masquerade{MasqueradeOffCluster, MasqueradeAlways, MasqueradeAlways}},
		{name: "NodePort primary only",
			cfg:  func(c *Config) { c.NodePortAddresses = []string{NodePortPrimary} },
			node: nodeObj("", "192.168.2.10"),
			svc: svcObj("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP"}},
		{name: "NodePort CIDR filter",
			cfg:  func(c *Config) { c.NodePortAddresses = []string{"192.168.2.0/24"} },
			node: nodeObj("", "192.168.2.10"),
			svc: svcObj("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.2.10:30080/TCP"}},
		{name: "localhost NodePort",
			cfg: func(c *Config) { c.LocalhostNodePorts = true },
			svc: svcObj("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 127.0.0.1:30080/TCP", "NodePort 192.168.1.10:30080/TCP"},
			masq: []Masquerade{MasqueradeOffCluster, MasqueradeAlways, MasqueradeNever}, local: true},
		{name: "localhost NodePort not when nodePortAddresses excludes loopback",
			cfg: func(c *Config) {
				c.LocalhostNodePorts = true
				c.NodePortAddresses = []string{"192.168.1.0/24"}
			},
			svc: svcObj("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP"}},
		{name: "LoadBalancer with ingress IP and externalIP",
			svc: svcObj("a", lb, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.1", "bogus"} }),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP",
				"LoadBalancer 203.0.113.7:80/TCP", "ExternalIP 198.51.100.1:80/TCP"}},
		{name: "LoadBalancer ipMode Proxy not captured",
			svc: svcObj("a", lb, func(s *corev1.Service) {
				s.Status.LoadBalancer.Ingress[0].IPMode = ptr(corev1.LoadBalancerIPModeProxy)
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP"}},
		{name: "eTP Local does not masquerade external frontends",
			svc: svcObj("a", lb, func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			want: []string{"ClusterIP 10.96.0.10:80/TCP", "NodePort 192.168.1.10:30080/TCP", "LoadBalancer 203.0.113.7:80/TCP"},
			masq: []Masquerade{MasqueradeOffCluster, MasqueradeNever, MasqueradeNever}, local: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			st := Build(Input{Config: cfg, Node: tc.node, Services: []*corev1.Service{tc.svc}})
			if len(st.Services) != 1 {
				t.Fatalf("got %d services, want 1; problems %v", len(st.Services), st.Problems)
			}
			s := st.Services[0]
			if got := frontends(s.Frontends); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("frontends =\n %v\nwant\n %v", got, tc.want)
			}
			if tc.masq != nil {
				var got []Masquerade
				for _, f := range s.Frontends {
					got = append(got, f.Masquerade)
				}
				if !reflect.DeepEqual(got, tc.masq) {
					t.Errorf("masquerade = %v, want %v", got, tc.masq)
				}
			}
			if s.ExternalLocal != tc.local {
				t.Errorf("ExternalLocal = %v, want %v", s.ExternalLocal, tc.local)
			}
		})
	}
}

func TestHealthCheckAndSourceRanges(t *testing.T) {
	svc := svcObj("a", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.HealthCheckNodePort = 32000
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "192.0.2.1", "nope/33"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	})
	st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{svc}})
	s := st.Services[0]
	if s.HealthCheckNodePort != 32000 {
		t.Errorf("HealthCheckNodePort = %d, want 32000", s.HealthCheckNodePort)
	}
	var lbf *Frontend
	for i := range s.Frontends {
		if s.Frontends[i].Kind == KindLoadBalancer {
			lbf = &s.Frontends[i]
		} else if len(s.Frontends[i].SourceRanges) != 0 {
			t.Errorf("%s has source ranges, only LoadBalancer frontends should", s.Frontends[i])
		}
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
	if lbf == nil || !reflect.DeepEqual(lbf.SourceRanges, want) {
		t.Errorf("LB source ranges = %v, want %v", lbf, want)
	}
	if !hasProblem(st, "Service ns/a", `"nope/33"`) {
		t.Errorf("expected a problem for the bad source range, got %v", st.Problems)
	}
}

func hasProblem(st *State, object, substr string) bool {
	for _, p := range st.Problems {
		if p.Object == object && strings.Contains(p.Message, substr) {
			return true
		}
	}
	return false
}

func TestTrafficPolicies(t *testing.T) {
	T, F := ptr(true), ptr(false)
	cases := []struct {
		name               string
		mut                func(*corev1.Service)
		node               *corev1.Node
		eps                []epSpec
		internal, external []string
	}{
		{name: "ready endpoints, cluster policy",
			eps:      []epSpec{{ip: "10.0.1.1", node: "node-a"}, {ip: "10.0.2.1", node: "node-b"}},
			internal: []string{"10.0.1.1:8080", "10.0.2.1:8080"},
			external: []string{"10.0.1.1:8080", "10.0.2.1:8080"}},
		{name: "not ready dropped",
			eps:      []epSpec{{ip: "10.0.1.1", ready: F, serving: F}, {ip: "10.0.2.1"}},
			internal: []string{"10.0.2.1:8080"}, external: []string{"10.0.2.1:8080"}},
		{name: "terminating not used while ready ones exist",
			eps:      []epSpec{{ip: "10.0.1.1", ready: F, serving: T, terminating: T}, {ip: "10.0.2.1"}},
			internal: []string{"10.0.2.1:8080"}, external: []string{"10.0.2.1:8080"}},
		{name: "terminating fallback when none ready",
			eps: []epSpec{{ip: "10.0.1.1", ready: F, serving: T, terminating: T},
				{ip: "10.0.2.1", ready: F, serving: F, terminating: T}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.1.1:8080"}},
		{name: "internalTrafficPolicy Local",
			mut:      func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) },
			eps:      []epSpec{{ip: "10.0.1.1", node: "node-a"}, {ip: "10.0.2.1", node: "node-b"}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.1.1:8080", "10.0.2.1:8080"}},
		{name: "externalTrafficPolicy Local",
			mut: func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			},
			eps:      []epSpec{{ip: "10.0.1.1", node: "node-a"}, {ip: "10.0.2.1", node: "node-b"}},
			internal: []string{"10.0.1.1:8080", "10.0.2.1:8080"}, external: []string{"10.0.1.1:8080"}},
		{name: "local fallback to local terminating, not remote ready",
			mut: func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) },
			eps: []epSpec{{ip: "10.0.1.1", node: "node-a", ready: F, serving: T, terminating: T},
				{ip: "10.0.2.1", node: "node-b"}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.2.1:8080"}},
		{name: "Local with no local endpoints is empty",
			mut:      func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) },
			eps:      []epSpec{{ip: "10.0.2.1", node: "node-b"}},
			internal: nil, external: []string{"10.0.2.1:8080"}},
		{name: "zone hints narrow to our zone",
			node: nodeObj("z1"),
			eps: []epSpec{{ip: "10.0.1.1", zoneHints: []string{"z1"}}, {ip: "10.0.2.1", zoneHints: []string{"z2"}},
				{ip: "10.0.3.1", zoneHints: []string{"z1", "z2"}}},
			internal: []string{"10.0.1.1:8080", "10.0.3.1:8080"}, external: []string{"10.0.1.1:8080", "10.0.3.1:8080"}},
		{name: "zone hints ignored when one endpoint lacks hints",
			node:     nodeObj("z1"),
			eps:      []epSpec{{ip: "10.0.1.1", zoneHints: []string{"z1"}}, {ip: "10.0.2.1"}},
			internal: []string{"10.0.1.1:8080", "10.0.2.1:8080"}, external: []string{"10.0.1.1:8080", "10.0.2.1:8080"}},
		{name: "zone hints ignored when none is for our zone",
			node:     nodeObj("z3"),
			eps:      []epSpec{{ip: "10.0.1.1", zoneHints: []string{"z1"}}, {ip: "10.0.2.1", zoneHints: []string{"z2"}}},
			internal: []string{"10.0.1.1:8080", "10.0.2.1:8080"}, external: []string{"10.0.1.1:8080", "10.0.2.1:8080"}},
		{name: "zone hints ignored when node has no zone",
			eps:      []epSpec{{ip: "10.0.1.1", zoneHints: []string{"z1"}}, {ip: "10.0.2.1", zoneHints: []string{"z2"}}},
			internal: []string{"10.0.1.1:8080", "10.0.2.1:8080"}, external: []string{"10.0.1.1:8080", "10.0.2.1:8080"}},
		{name: "PreferSameNode uses node hints",
			mut: func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferSameNode)
			},
			node: nodeObj("z1"),
			eps: []epSpec{{ip: "10.0.1.1", nodeHints: []string{"node-a"}, zoneHints: []string{"z1"}},
				{ip: "10.0.2.1", nodeHints: []string{"node-b"}, zoneHints: []string{"z1"}}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.1.1:8080"}},
		{name: "PreferSameNode falls back to zone hints",
			mut: func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferSameNode)
			},
			node: nodeObj("z1"),
			eps: []epSpec{{ip: "10.0.1.1", nodeHints: []string{"node-c"}, zoneHints: []string{"z1"}},
				{ip: "10.0.2.1", nodeHints: []string{"node-b"}, zoneHints: []string{"z2"}}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.1.1:8080"}},
		{name: "topology not applied to Local policy",
			mut:  func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) },
			node: nodeObj("z1"),
			eps: []epSpec{{ip: "10.0.1.1", node: "node-a", zoneHints: []string{"z2"}},
				{ip: "10.0.2.1", node: "node-b", zoneHints: []string{"z1"}}},
			internal: []string{"10.0.1.1:8080"}, external: []string{"10.0.2.1:8080"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc := svcObj("a")
			if tc.mut != nil {
				tc.mut(svc)
			}
			st := Build(Input{Config: baseConfig(), Node: tc.node, Services: []*corev1.Service{svc},
				EndpointSlices: []*discoveryv1.EndpointSlice{sliceObj("a", "a-1", 8080, tc.eps...)}})
			s := st.Services[0]
			if got := addrs(s.InternalEndpoints); !reflect.DeepEqual(got, tc.internal) {
				t.Errorf("internal = %v, want %v", got, tc.internal)
			}
			if got := addrs(s.ExternalEndpoints); !reflect.DeepEqual(got, tc.external) {
				t.Errorf("external = %v, want %v", got, tc.external)
			}
		})
	}
}

func TestEndpointSliceMatching(t *testing.T) {
	other := sliceObj("a", "a-2", 9090, epSpec{ip: "10.0.9.9"})
	other.Ports[0].Name = ptr("metrics")
	udp := sliceObj("a", "a-3", 8080, epSpec{ip: "10.0.8.8"})
	udp.Ports[0].Protocol = ptr(corev1.ProtocolUDP)
	v6 := sliceObj("a", "a-4", 8080, epSpec{ip: "fd00::1"})
	v6.AddressType = discoveryv1.AddressTypeIPv6
	foreign := sliceObj("b", "b-1", 8080, epSpec{ip: "10.0.7.7"})
	dup := sliceObj("a", "a-5", 8080, epSpec{ip: "10.0.1.1", ready: ptr(false)}, epSpec{ip: "10.0.1.2"})
	main := sliceObj("a", "a-1", 8080, epSpec{ip: "10.0.1.1"})
	st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{svcObj("a")},
		EndpointSlices: []*discoveryv1.EndpointSlice{other, udp, v6, foreign, dup, main, nil}})
	got := addrs(st.Services[0].InternalEndpoints)
	want := []string{"10.0.1.1:8080", "10.0.1.2:8080"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints = %v, want %v", got, want)
	}
}

func TestMalformedInput(t *testing.T) {
	many := make([]corev1.ServicePort, 3000)
	for i := range many {
		many[i] = corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(i%65535 + 1), Protocol: corev1.ProtocolTCP}
	}
	badSlice := sliceObj("a", "a-1", 8080, epSpec{ip: "10.0.1.1"}, epSpec{ip: "999.1.1.1"}, epSpec{ip: "zzz"})
	badSlice.Endpoints = append(badSlice.Endpoints, discoveryv1.Endpoint{}) // no addresses
	noPort := sliceObj("a", "a-2", 8080, epSpec{ip: "10.0.1.5"})
	noPort.Ports[0].Port = nil
	hugePort := sliceObj("a", "a-3", 70000, epSpec{ip: "10.0.1.6"})

	cases := []struct {
		name     string
		svcs     []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		nSvc     int
		problems []string // substrings, each must appear
	}{
		{name: "invalid endpoint addresses skipped", svcs: []*corev1.Service{svcObj("a")},
			slices: []*discoveryv1.EndpointSlice{badSlice}, nSvc: 1,
			problems: []string{`EndpointSlice ns/a-1: skipped 2 endpoint(s) with an invalid address (first "999.1.1.1")`}},
		{name: "slice ports out of range", svcs: []*corev1.Service{svcObj("a")},
			slices: []*discoveryv1.EndpointSlice{noPort, hugePort}, nSvc: 1,
			problems: []string{`EndpointSlice ns/a-2: port "http" number <nil> out of range`,
				`EndpointSlice ns/a-3: port "http" number 70000 out of range`}},
		{name: "service port out of range", nSvc: 1,
			svcs: []*corev1.Service{svcObj("a", func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "bad", Port: 70000},
					corev1.ServicePort{Name: "neg", Port: 1, NodePort: -4},
					corev1.ServicePort{Name: "icmp", Port: 1, Protocol: "ICMP"})
			})},
			problems: []string{`port "bad" number 70000 out of range`, `port "neg" nodePort -4 out of range`,
				`port "icmp" has unsupported protocol "ICMP"`}},
		{name: "invalid cluster IP", nSvc: 0,
			svcs: []*corev1.Service{svcObj("a", func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.300", []string{"10.96.0.300"}
			})},
			problems: []string{`invalid clusterIP "10.96.0.300" skipped`}},
		{name: "thousands of ports capped", nSvc: MaxPortsPerService,
			svcs:     []*corev1.Service{svcObj("a", func(s *corev1.Service) { s.Spec.Ports = many })},
			problems: []string{"has 3000 ports, only the first 1000 are proxied"}},
		{name: "duplicate service", nSvc: 1, svcs: []*corev1.Service{svcObj("a"), svcObj("a")},
			problems: []string{`duplicate service port "ns/a:http/TCP" skipped`}},
		{name: "nil service", nSvc: 0, svcs: []*corev1.Service{nil}},
		{name: "bad affinity timeout", nSvc: 1,
			svcs: []*corev1.Service{svcObj("a", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(-5))}}
			})},
			problems: []string{"session affinity timeout -5 out of range"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := Build(Input{Config: baseConfig(), Services: tc.svcs, EndpointSlices: tc.slices})
			if len(st.Services) != tc.nSvc {
				t.Errorf("got %d services, want %d", len(st.Services), tc.nSvc)
			}
			var all []string
			for _, p := range st.Problems {
				all = append(all, p.String())
			}
			joined := strings.Join(all, "\n")
			for _, want := range tc.problems {
				if !strings.Contains(joined, want) {
					t.Errorf("problem %q not reported; got:\n%s", want, joined)
				}
			}
			if len(tc.problems) == 0 && len(all) != 0 {
				t.Errorf("unexpected problems: %v", all)
			}
		})
	}
}

func TestAffinity(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*corev1.Service)
		want Affinity
	}{
		{"none", nil, Affinity{}},
		{"ClientIP default timeout", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP },
			Affinity{ClientIP: true, Timeout: DefaultAffinityTimeout}},
		{"ClientIP custom timeout", func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(30))}}
		}, Affinity{ClientIP: true, Timeout: 30 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc := svcObj("a")
			if tc.mut != nil {
				tc.mut(svc)
			}
			st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{svc}})
			if got := st.Services[0].Affinity; got != tc.want {
				t.Errorf("affinity = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPolicies(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ref := ServiceRef{Namespace: "ns", Name: "a"}
	lbSvc := func() *corev1.Service {
		return svcObj("a", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: 9090})
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
		})
	}
	cases := []struct {
		name     string
		policies []Policy
		// per port key: policy, algorithm, affinity, LB source ranges
		want    map[string][4]string
		problem string
	}{
		{name: "no policy keeps service defaults",
			want: map[string][4]string{
				"ns/a:http/TCP":    {"", "", "{false 0s}", "[10.0.0.0/8]"},
				"ns/a:metrics/TCP": {"", "", "{false 0s}", "[10.0.0.0/8]"}}},
		{name: "policy overrides all ports",
			policies: []Policy{{Namespace: "ns", Name: "p", Services: []ServiceRef{ref}, Algorithm: AlgorithmRoundRobin,
				Affinity: &Affinity{ClientIP: true}, SourceRanges: []string{"192.0.2.0/24"}, Created: t0}},
			want: map[string][4]string{
				"ns/a:http/TCP":    {"ns/p", "RoundRobin", "{true 3h0m0s}", "[192.0.2.0/24]"},
				"ns/a:metrics/TCP": {"ns/p", "RoundRobin", "{true 3h0m0s}", "[192.0.2.0/24]"}}},
		{name: "port-restricted policy",
			policies: []Policy{{Namespace: "ns", Name: "p", Services: []ServiceRef{ref}, Ports: []PolicyPort{{Port: 9090}},
				Algorithm: AlgorithmLeastConnections, Created: t0}},
			want: map[string][4]string{
				"ns/a:http/TCP":    {"", "", "{false 0s}", "[10.0.0.0/8]"},
				"ns/a:metrics/TCP": {"ns/p", "LeastConnections", "{false 0s}", "[10.0.0.0/8]"}}},
		{name: "older policy wins a conflict regardless of input order",
			policies: []Policy{
				{Namespace: "ns", Name: "young", Services: []ServiceRef{ref}, Algorithm: AlgorithmMaglev, Created: t0.Add(time.Hour)},
				{Namespace: "ns", Name: "old", Services: []ServiceRef{ref}, Algorithm: AlgorithmRandom, Created: t0}},
			want: map[string][4]string{
				"ns/a:http/TCP":    {"ns/old", "Random", "{false 0s}", "[10.0.0.0/8]"},
				"ns/a:metrics/TCP": {"ns/old", "Random", "{false 0s}", "[10.0.0.0/8]"}},
			problem: "Policy ns/young: ignored for ns/a port \"http\": older policy ns/old takes precedence"},
		{name: "unknown algorithm ignored",
			policies: []Policy{{Namespace: "ns", Name: "p", Services: []ServiceRef{ref}, Algorithm: "Quantum", Created: t0}},
			want: map[string][4]string{
				"ns/a:http/TCP":    {"ns/p", "", "{false 0s}", "[10.0.0.0/8]"},
				"ns/a:metrics/TCP": {"ns/p", "", "{false 0s}", "[10.0.0.0/8]"}},
			problem: `Policy ns/p: unknown algorithm "Quantum" ignored`},
		{name: "policy for another service ignored",
			policies: []Policy{{Namespace: "ns", Name: "p", Services: []ServiceRef{{Namespace: "ns", Name: "b"}}, Algorithm: AlgorithmRandom}},
			want: map[string][4]string{
				"ns/a:http/TCP":    {"", "", "{false 0s}", "[10.0.0.0/8]"},
				"ns/a:metrics/TCP": {"", "", "{false 0s}", "[10.0.0.0/8]"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{lbSvc()}, Policies: tc.policies})
			got := map[string][4]string{}
			for _, s := range st.Services {
				var rs []netip.Prefix
				for _, f := range s.Frontends {
					if f.Kind == KindLoadBalancer {
						rs = f.SourceRanges
					}
				}
				got[s.Key] = [4]string{s.Policy, string(s.Algorithm), fmt.Sprintf("%v", s.Affinity), fmt.Sprint(rs)}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
			if tc.problem != "" {
				found := false
				for _, p := range st.Problems {
					found = found || p.String() == tc.problem
				}
				if !found {
					t.Errorf("problem %q missing in %v", tc.problem, st.Problems)
				}
			}
		})
	}
}

// bigInput makes n Services with eps endpoints each, across two nodes.
func bigInput(n, eps int) Input {
	in := Input{Config: baseConfig()}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%05d", i)
		s := svcObj(name, func(s *corev1.Service) {
			ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = int32(30000 + i%2768)
		})
		var specs []epSpec
		for j := 0; j < eps; j++ {
			node := "node-a"
			if j%2 == 1 {
				node = "node-b"
			}
			specs = append(specs, epSpec{ip: fmt.Sprintf("10.%d.%d.%d", 100+j, i/250, i%250+1), node: node})
		}
		in.Services = append(in.Services, s)
		in.EndpointSlices = append(in.EndpointSlices, sliceObj(name, name+"-1", 8080, specs...))
	}
	return in
}

func TestDeterministic(t *testing.T) {
	in := bigInput(50, 4)
	want := Build(in)
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 5; i++ {
		r.Shuffle(len(in.Services), func(a, b int) { in.Services[a], in.Services[b] = in.Services[b], in.Services[a] })
		r.Shuffle(len(in.EndpointSlices), func(a, b int) {
			in.EndpointSlices[a], in.EndpointSlices[b] = in.EndpointSlices[b], in.EndpointSlices[a]
		})
		for _, es := range in.EndpointSlices {
			r.Shuffle(len(es.Endpoints), func(a, b int) { es.Endpoints[a], es.Endpoints[b] = es.Endpoints[b], es.Endpoints[a] })
		}
		if got := Build(in); !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffle %d: state differs", i)
		}
	}
}

func TestDiffAndHash(t *testing.T) {
	in := bigInput(5, 2)
	old := Build(in)
	if c := Diff(old, Build(in)); !c.Empty() {
		t.Fatalf("identical input changed: %+v", c)
	}
	if c := Diff(nil, old); len(c.Added) != 5 {
		t.Fatalf("from nil: %+v", c)
	}
	// Change one endpoint, drop one service, add one.
	in.EndpointSlices[1].Endpoints[0].Addresses = []string{"10.200.0.1"}
	in.Services = in.Services[1:]
	extra := bigInput(6, 2)
	in.Services = append(in.Services, extra.Services[5])
	in.EndpointSlices = append(in.EndpointSlices, extra.EndpointSlices[5])
	c := Diff(old, Build(in))
	want := Changes{Added: []string{"ns/svc-00005:http/TCP"}, Removed: []string{"ns/svc-00000:http/TCP"},
		Changed: []string{"ns/svc-00001:http/TCP"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("diff = %+v, want %+v", c, want)
	}
	// Readiness flips change the hash too.
	in2 := bigInput(1, 2)
	a := Build(in2)
	in2.EndpointSlices[0].Endpoints[0].Conditions.Ready = ptr(false)
	if Build(in2).Services[0].Hash == a.Services[0].Hash {
		t.Error("hash did not change when an endpoint became unready")
	}
	if old.Service("ns/svc-00003:http/TCP") == nil || old.Service("ns/nope:x/TCP") != nil {
		t.Error("State.Service lookup broken")
	}
}

// TestDropsWithoutEndpoints: a ClusterIP with internalTrafficPolicy Local
// and no local endpoint drops while usable endpoints exist on other nodes
// and rejects when there are none anywhere, as kube-proxy does; an
// external frontend with a Local policy always drops.
func TestDropsWithoutEndpoints(t *testing.T) {
	T, F := ptr(true), ptr(false)
	for _, tc := range []struct {
		name     string
		eps      []epSpec
		internal bool
	}{
		{name: "remote ready endpoint", eps: []epSpec{{ip: "10.0.2.1", node: "node-b"}}, internal: true},
		{name: "remote serving terminating endpoint",
			eps: []epSpec{{ip: "10.0.2.1", node: "node-b", ready: F, serving: T, terminating: T}}, internal: true},
		{name: "remote endpoint neither ready nor serving",
			eps: []epSpec{{ip: "10.0.2.1", node: "node-b", ready: F, serving: F}}, internal: false},
		{name: "no endpoint anywhere", internal: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := svcObj("a")
			svc.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			svc.Spec.Type = corev1.ServiceTypeNodePort
			svc.Spec.Ports[0].NodePort = 30080
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{svc},
				EndpointSlices: []*discoveryv1.EndpointSlice{sliceObj("a", "a-1", 8080, tc.eps...)}})
			s := st.Services[0]
			if len(s.InternalEndpoints) != 0 {
				t.Fatalf("internal endpoints %v, want none on this node", addrs(s.InternalEndpoints))
			}
			if got := s.DropsWithoutEndpoints(KindClusterIP); got != tc.internal {
				t.Errorf("ClusterIP drops = %t, want %t", got, tc.internal)
			}
			if !s.DropsWithoutEndpoints(KindNodePort) {
				t.Error("NodePort with externalTrafficPolicy Local does not drop")
			}
		})
	}
}
