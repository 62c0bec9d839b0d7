package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Counts are the same whatever a backend programs: with
// internalTrafficPolicy Local, the local endpoint serves ClusterIPs and all
// three serve the node's external frontends; each counts once.
func TestCountsUnionOfEndpointSets(t *testing.T) {
	svc := svcObj("a", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30001
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	})
	es := sliceObj("a", "a-1", 8080, epSpec{ip: "10.0.0.1", node: "node-a"}, epSpec{ip: "10.0.0.2", node: "node-b"},
		epSpec{ip: "10.0.0.3", node: "node-b"})
	st := Build(Input{Config: baseConfig(), Services: []*corev1.Service{svc, svcObj("b")},
		EndpointSlices: []*discoveryv1.EndpointSlice{es}})
	if s, e := st.Counts(); s != 2 || e != 3 {
		t.Fatalf("counts %d services %d endpoints, want 2 and 3", s, e)
	}
	if n := len(st.Services[0].InternalEndpoints); n != 1 {
		t.Fatalf("internal endpoints %d, want the local one only", n)
	}
}
