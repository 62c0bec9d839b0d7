package dataplane

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// fakeBackend is a FAKE backend: it programs nothing.
type fakeBackend struct{ name string }

func (f *fakeBackend) Name() string { return f.name }
func (f *fakeBackend) Sync(context.Context, *model.State, backend.SyncOptions) (backend.SyncResult, error) {
	return backend.SyncResult{}, nil
}
func (f *fakeBackend) Cleanup(context.Context) error  { return nil }
func (f *fakeBackend) Unsupported(model.Policy) error { return nil }
func noConntrack(_, _ *model.State) (uint, error)     { return 0, nil }
func fakeFactory(ctx context.Context, b v1alpha1.Backend, _ *v1alpha1.GatewayConfigSpec, _ probe.Capabilities, _ model.Family) (backend.Backend, error) {
	return &fakeBackend{name: string(b)}, nil
}

// ProxyNode counts mean the same on every node, whatever its backend: the
// Plane counts from the model, not from what a backend chooses to count
// (issue 10, defect 3).
func TestCountsComeFromTheModel(t *testing.T) {
	itp := corev1.ServiceInternalTrafficPolicyLocal
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"}, InternalTrafficPolicy: &itp,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	name, port, ready := "http", int32(8080), true
	local, other := "node-a", "node-b"
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "a"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, NodeName: &local, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.0.0.2"}, NodeName: &other, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
		}}
	st := model.Build(model.Input{Config: model.Config{NodeName: local}, Services: []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{es}})
	wantSvc, wantEps := st.Counts()
	for _, b := range []v1alpha1.Backend{v1alpha1.BackendIPTables, v1alpha1.BackendIPVS} {
		p := New(Options{NewBackend: fakeFactory, Conntrack: noConntrack})
		if _, err := p.Ensure(context.Background(), Want{Backend: b}); err != nil {
			t.Fatal(err)
		}
		res, err := p.Sync(context.Background(), st, true)
		if err != nil {
			t.Fatal(err)
		}
		if res.Services != wantSvc || res.Endpoints != wantEps || wantEps != 2 {
			t.Errorf("%s: counts %d services %d endpoints, want the model's %d and %d (2)", b, res.Services, res.Endpoints, wantSvc, wantEps)
		}
	}
}
