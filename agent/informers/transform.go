package informers

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// AnnotationTriggerTime is the EndpointSlice annotation with the time of the
// change that caused the slice's last update; it starts the network
// programming latency clock.
const AnnotationTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"

// TaintToBeDeleted is set by the cluster autoscaler on a node it removes.
const TaintToBeDeleted = "ToBeDeletedByClusterAutoscaler"

// stripMeta drops managedFields from any object; it is the transform of the
// small kinds.
func stripMeta(obj any) (any, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d, nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// TransformService keeps what the model reads of a Service: name,
// namespace, labels (proxy name, policy selectors), spec and load-balancer
// ingress.
func TransformService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	s.Annotations = nil
	s.OwnerReferences = nil
	s.Finalizers = nil
	s.Status.Conditions = nil
	for i := range s.Status.LoadBalancer.Ingress {
		s.Status.LoadBalancer.Ingress[i].Ports = nil
	}
	return s, nil
}

// TransformEndpointSlice keeps what the model reads of an EndpointSlice and
// the trigger-time annotation.
func TransformEndpointSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	es.ManagedFields = nil
	es.OwnerReferences = nil
	es.Finalizers = nil
	if t, ok := es.Annotations[AnnotationTriggerTime]; ok {
		es.Annotations = map[string]string{AnnotationTriggerTime: t}
	} else {
		es.Annotations = nil
	}
	keep := map[string]string{}
	if v, ok := es.Labels[discoveryv1.LabelServiceName]; ok {
		keep[discoveryv1.LabelServiceName] = v
	}
	es.Labels = keep
	for i := range es.Endpoints {
		e := &es.Endpoints[i]
		e.TargetRef = nil
		e.Hostname = nil
		e.DeprecatedTopology = nil
	}
	return es, nil
}

// TransformNode keeps the node's labels, addresses, taints and deletion
// timestamp.
func TransformNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	n.ManagedFields = nil
	n.Annotations = nil
	n.OwnerReferences = nil
	n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	return n, nil
}

// TransformProxyPolicy drops the policy's status, which the operator writes
// and the agent never reads.
func TransformProxyPolicy(obj any) (any, error) {
	p, ok := obj.(*v1alpha1.ProxyPolicy)
	if !ok {
		return obj, nil
	}
	p.ManagedFields = nil
	p.Annotations = nil
	p.Status = v1alpha1.ProxyPolicyStatus{}
	return p, nil
}

// NodeDeleting says why the node is going away, or "".
func NodeDeleting(n *corev1.Node) string {
	if n == nil {
		return ""
	}
	if n.DeletionTimestamp != nil {
		return "deletionTimestamp is set"
	}
	for _, t := range n.Spec.Taints {
		if t.Key == TaintToBeDeleted {
			return "tainted " + TaintToBeDeleted
		}
	}
	return ""
}
