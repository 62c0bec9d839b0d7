package informers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestServiceSelector(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"", nil, true},
		{"", map[string]string{LabelServiceProxyName: "synterix"}, false},
		{"", map[string]string{LabelHeadless: ""}, false},
		{"synterix", map[string]string{LabelServiceProxyName: "synterix"}, true},
		{"synterix", map[string]string{LabelServiceProxyName: "other"}, false},
		{"synterix", nil, false},
		{"synterix", map[string]string{LabelServiceProxyName: "synterix", LabelHeadless: ""}, false},
	} {
		sel, err := labels.Parse(ServiceSelector(tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sel.Matches(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("proxy name %q, labels %v: match %t, want %t", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestTransforms(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "x"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Labels: map[string]string{"app": "a"},
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}, ManagedFields: mf}}
	o, _ := TransformService(svc)
	s := o.(*corev1.Service)
	if s.ManagedFields != nil || s.Annotations != nil || s.Labels["app"] != "a" {
		t.Errorf("service after transform: %+v", s.ObjectMeta)
	}
	host := "h"
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "e", ManagedFields: mf,
		Labels:      map[string]string{discoveryv1.LabelServiceName: "s", "app": "a"},
		Annotations: map[string]string{AnnotationTriggerTime: "2026-01-01T00:00:00Z", "other": "x"}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Hostname: &host, TargetRef: &corev1.ObjectReference{Name: "p"}}}}
	o, _ = TransformEndpointSlice(es)
	e := o.(*discoveryv1.EndpointSlice)
	if e.ManagedFields != nil || len(e.Annotations) != 1 || e.Annotations[AnnotationTriggerTime] == "" ||
		len(e.Labels) != 1 || e.Endpoints[0].TargetRef != nil || e.Endpoints[0].Hostname != nil || e.Endpoints[0].Addresses[0] != "10.0.0.1" {
		t.Errorf("slice after transform: %+v", e)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ManagedFields: mf},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.1.1.1"}},
			Images: []corev1.ContainerImage{{Names: []string{"big"}}}}}
	o, _ = TransformNode(n)
	if nn := o.(*corev1.Node); nn.Status.Images != nil || len(nn.Status.Addresses) != 1 {
		t.Errorf("node after transform: %+v", nn.Status)
	}
}

func TestNodeDeleting(t *testing.T) {
	now := metav1.Now()
	if NodeDeleting(&corev1.Node{}) != "" {
		t.Error("plain node deleting")
	}
	if NodeDeleting(&corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}) == "" {
		t.Error("deletionTimestamp ignored")
	}
	if NodeDeleting(&corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintToBeDeleted}}}}) == "" {
		t.Error("autoscaler taint ignored")
	}
}

func TestPolicy(t *testing.T) {
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{"tier": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", Labels: map[string]string{"tier": "db"}}},
	}
	timeout := int32(60)
	port := int32(80)
	p := &v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
		Spec: v1alpha1.ProxyPolicySpec{
			TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "b"}, {Kind: "Service", Name: "x", Namespace: "other"},
				{Kind: "Deployment", Name: "y"}},
			Selector:        &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			Ports:           []v1alpha1.PolicyPort{{Name: "http"}, {Port: &port}},
			LoadBalancing:   &v1alpha1.LoadBalancingSpec{Algorithm: v1alpha1.AlgorithmSourceHash},
			SessionAffinity: &v1alpha1.SessionAffinitySpec{Type: "ClientIP", TimeoutSeconds: &timeout},
			SourceRanges:    []v1alpha1.CIDR{"10.0.0.0/8"},
		}}
	mp, err := Policy(p, svcs)
	if err != nil {
		t.Fatal(err)
	}
	if len(mp.Services) != 2 || mp.Services[0].Name != "b" || mp.Services[1].Name != "a" {
		t.Errorf("targets %v, want b (ref) and a (selector) only", mp.Services)
	}
	if mp.Algorithm != model.AlgorithmSourceHashing || mp.Affinity == nil || !mp.Affinity.ClientIP ||
		mp.Affinity.Timeout.Seconds() != 60 || len(mp.SourceRanges) != 1 || len(mp.Ports) != 2 || mp.Ports[1].Port != 80 {
		t.Errorf("converted %+v", mp)
	}
	// A policy that targets nothing converts to one with no services.
	empty := &v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e"},
		Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Name: "missing-is-fine-but-absent"}}}}
	if mp, err := Policy(empty, nil); err != nil || len(mp.Services) != 1 {
		t.Errorf("empty policy: %+v %v", mp, err)
	}
	bad := &v1alpha1.ProxyPolicy{Spec: v1alpha1.ProxyPolicySpec{Selector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}}}
	if _, err := Policy(bad, svcs); err == nil {
		t.Error("an invalid selector converted")
	}
}
