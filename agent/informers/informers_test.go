package informers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
