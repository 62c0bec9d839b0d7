package model

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fuzzInput decodes fuzz bytes into Services and EndpointSlices: every byte
// picks one field from a small alphabet of valid, odd and invalid values
// (bad and wrong-family addresses, ports out of range, nil conditions,
// unknown protocols, FQDN slices, slices of missing Services, duplicate
// endpoints). Names are unique, as in an informer cache.
type fuzzInput struct{ data []byte }

func (f *fuzzInput) next() int {
	if len(f.data) == 0 {
		return 0
	}
	b := f.data[0]
	f.data = f.data[1:]
	return int(b)
}

func pick[T any](f *fuzzInput, opts ...T) T { return opts[f.next()%len(opts)] }

func (f *fuzzInput) boolPtr() *bool { return pick(f, nil, ptr(true), ptr(false)) }

var (
	fuzzIPs       = []string{"10.0.0.1", "10.0.0.2", "10.0.0.1", "192.168.1.10", "fd00::1", "::ffff:10.0.0.3", "", "bogus", "10.0.0.1/32", "0.0.0.0", "10.0.0.01", "255.255.255.255"}
	fuzzPortNames = []string{"", "http", "dns", "HTTP"}
	fuzzProtocols = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "", "ICMP"}
	fuzzNames     = []string{"a", "b", "c"}
)

func (f *fuzzInput) service(i int) *corev1.Service {
	name := fuzzNames[i%len(fuzzNames)]
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	s.Spec.Type = pick(f, corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName, "")
	ip := pick(f, "10.96.0.10", "None", "", "fd00::10", "bogus", "10.96.0.11")
	s.Spec.ClusterIP = ip
	if ip != "" {
		s.Spec.ClusterIPs = []string{ip}
	}
	if f.next()%3 == 0 {
		s.Spec.ExternalIPs = []string{pick(f, fuzzIPs...)}
	}
	if f.next()%3 == 0 {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: pick(f, fuzzIPs...)}}
		s.Spec.LoadBalancerSourceRanges = []string{pick(f, "10.0.0.0/8", "bogus", "", "fd00::/8", "1.2.3.4")}
	}
	s.Spec.ExternalTrafficPolicy = pick(f, "", corev1.ServiceExternalTrafficPolicyLocal, corev1.ServiceExternalTrafficPolicyCluster, "Odd")
	s.Spec.InternalTrafficPolicy = pick(f, nil, ptr(corev1.ServiceInternalTrafficPolicyLocal), ptr(corev1.ServiceInternalTrafficPolicyCluster))
	if f.next()%4 == 0 {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = pick(f, nil, &corev1.SessionAffinityConfig{},
			&corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: pick(f, nil, ptr[int32](0), ptr[int32](-1), ptr[int32](10800), ptr[int32](1<<30))}})
	}
	s.Spec.HealthCheckNodePort = pick[int32](f, 0, 30000, -5, 70000)
	if f.next()%5 == 0 {
		s.Labels = map[string]string{LabelServiceProxyName: "other"}
	}
	for n := f.next() % 4; n > 0; n-- {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: pick(f, fuzzPortNames...), Protocol: pick(f, fuzzProtocols...),
			Port: pick[int32](f, 80, 53, 0, -1, 65535, 65536), NodePort: pick[int32](f, 0, 30080, -1, 70000),
		})
	}
	return s
}

func (f *fuzzInput) slice(i int) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}}
	if svc := f.next() % (len(fuzzNames) + 1); svc < len(fuzzNames) {
		es.Labels = map[string]string{discoveryv1.LabelServiceName: fuzzNames[svc]}
	}
	es.AddressType = pick(f, discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN)
	for n := f.next() % 3; n > 0; n-- {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{
			Name: pick(f, nil, ptr(""), ptr("http"), ptr("dns")), Protocol: pick(f, nil, &fuzzProtocols[0], &fuzzProtocols[1], &fuzzProtocols[4]),
			Port: pick(f, nil, ptr[int32](8080), ptr[int32](0), ptr[int32](65536), ptr[int32](53)),
		})
	}
	for n := f.next() % 5; n > 0; n-- {
		e := discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{Ready: f.boolPtr(), Serving: f.boolPtr(), Terminating: f.boolPtr()}}
		for k := f.next() % 3; k > 0; k-- {
			e.Addresses = append(e.Addresses, pick(f, fuzzIPs...))
		}
		e.NodeName = pick(f, nil, ptr("node-a"), ptr("node-b"), ptr(""))
		e.Zone = pick(f, nil, ptr("zone-a"), ptr("zone-b"))
		if f.next()%3 == 0 {
			e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: pick(f, "zone-a", "zone-b", "")}}}
		}
		es.Endpoints = append(es.Endpoints, e)
	}
	return es
}

func (f *fuzzInput) input() Input {
	in := Input{Config: baseConfig(), Node: nodeObj(pick(f, "", "zone-a"), "192.168.1.10")}
	in.Config.NodePortAddresses = pick(f, nil, []string{"primary"}, []string{"192.168.0.0/16"}, []string{"bogus"},
		[]string{"localhost", "primary"}, []string{"all"}, []string{"::1/128", "fd00::/8"})
	in.Config.LocalhostNodePorts = f.next()%2 == 0
	in.Config.Family = pick(f, IPv4, IPv6)
	in.Config.SingleStack = f.next()%2 == 0
	in.Config.LocalDetection = pick(f, LocalDetection{},
		LocalDetection{Mode: LocalClusterCIDR, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		LocalDetection{Mode: LocalNodeCIDR}, LocalDetection{Mode: LocalInterfaceNamePrefix, Interface: "veth"})
	in.Node.Spec.PodCIDRs = pick(f, nil, []string{"10.1.0.0/24", "fd00:1::/64"}, []string{"bogus"})
	for i, n := 0, f.next()%4; i < n; i++ {
		in.Services = append(in.Services, f.service(i))
	}
	for i, n := 0, f.next()%6; i < n; i++ {
		in.EndpointSlices = append(in.EndpointSlices, f.slice(i))
	}
	return in
}

// FuzzBuild builds the model from random Services and EndpointSlices (API
// objects any user or controller may write). It must never panic, and:
//   - the State is valid: sorted service ports, every frontend and endpoint
//     a valid address of the State's family with a port in 1-65535, no
//     address:port twice in one endpoint list;
//   - the same objects in another order give the same State;
//   - an incremental build after a change equals a build from scratch.
func FuzzBuild(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0})
	f.Add([]byte("the quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps over the lazy dog"))
	f.Add([]byte{3, 2, 1, 1, 2, 3, 1, 1, 2, 2, 0, 3, 4, 1, 2, 3, 3, 3, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 1, 4, 4, 1, 1, 1, 0, 0, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := (&fuzzInput{data: data}).input()
		st := Build(in)
		checkState(t, st)

		rev := in
		rev.Services = slices.Clone(in.Services)
		rev.EndpointSlices = slices.Clone(in.EndpointSlices)
		slices.Reverse(rev.Services)
		slices.Reverse(rev.EndpointSlices)
		if again := Build(rev); !sameState(st, again) {
			t.Fatalf("the same objects in reverse order give another State: %s", stateDiff(st, again))
		}

		// Incremental: start without the last slice, then add it back and
		// name its Service as changed.
		if len(in.EndpointSlices) == 0 {
			return
		}
		before := in
		before.EndpointSlices = in.EndpointSlices[:len(in.EndpointSlices)-1]
		var m Builder
		g := Globals{Config: in.Config, Node: in.Node}
		m.Build(g, newListSource(before), nil)
		last := in.EndpointSlices[len(in.EndpointSlices)-1]
		changed := []ServiceRef{{Namespace: last.Namespace, Name: last.Labels[discoveryv1.LabelServiceName]}}
		if got := m.Build(g, newListSource(in), changed); !sameState(got, st) {
			t.Fatalf("incremental build differs from a full build: %s", stateDiff(got, st))
		}
	})
}

// sameState compares two States, an empty list equal to none (the
// incremental build keeps empty lists where a full build has none).
func sameState(a, b *State) bool {
	return cmp.Equal(a, b, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}))
}

func stateDiff(a, b *State) string {
	return cmp.Diff(a, b, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}))
}

// checkState checks what every backend relies on in a State.
func checkState(t *testing.T, st *State) {
	t.Helper()
	v6 := st.Family == IPv6
	validAddr := func(a netip.Addr) bool { return a.IsValid() && a.Is6() == v6 && !a.Is4In6() }
	for i, s := range st.Services {
		if i > 0 && st.Services[i-1].Key >= s.Key {
			t.Fatalf("service ports not sorted or duplicated: %q then %q", st.Services[i-1].Key, s.Key)
		}
		for _, fe := range s.Frontends {
			if !validAddr(fe.Addr) || fe.Port < 1 || fe.Port > 65535 {
				t.Fatalf("%s: invalid frontend %s", s.Key, fe)
			}
		}
		for _, eps := range [][]Endpoint{s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints} {
			seen := map[netip.AddrPort]bool{}
			for _, e := range eps {
				if !validAddr(e.Addr) || e.Port < 1 || e.Port > 65535 {
					t.Fatalf("%s: invalid endpoint %s", s.Key, e)
				}
				if seen[e.AddrPort()] {
					t.Fatalf("%s: endpoint %s twice", s.Key, e)
				}
				seen[e.AddrPort()] = true
			}
		}
	}
}
