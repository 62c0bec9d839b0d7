package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// EndpointSlices the harness writes. No kube-controller-manager runs in the
// cluster: the harness plays the EndpointSlice controller for its pods, so
// the tests control readiness and termination exactly.
const ManagedBy = "synx-harness.synterix.io"

// Endpoint is one pod in a Service's EndpointSlices, with its conditions.
type Endpoint struct {
	Pod *Pod
	// Ready, Serving and Terminating are the endpoint's conditions. The
	// zero value is turned into ready and serving by Ready(p).
	Ready, Serving, Terminating bool
}

// Ready returns ready, serving endpoints for the pods.
func Ready(pods ...*Pod) []Endpoint {
	out := make([]Endpoint, len(pods))
	for i, p := range pods {
		out[i] = Endpoint{Pod: p, Ready: true, Serving: true}
	}
	return out
}

// Terminating returns endpoints for pods that are terminating but still
// serving, as during a graceful shutdown.
func Terminating(pods ...*Pod) []Endpoint {
	out := make([]Endpoint, len(pods))
	for i, p := range pods {
		out[i] = Endpoint{Pod: p, Serving: true, Terminating: true}
	}
	return out
}

// SetEndpoints writes the EndpointSlices of svc, split over slices slices
// (at least one), the way the EndpointSlice controller would: labelled with
// the service name, owned by the Service, with the Service's ports resolved
// to its numeric targetPorts, and per endpoint its node, zone and
// conditions. Slices of the Service left over from an earlier call are
// deleted.
func (c *Cluster) SetEndpoints(ctx context.Context, svc *corev1.Service, eps []Endpoint, slices int) error {
	if slices < 1 {
		slices = 1
	}
	var ports []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		target := sp.TargetPort.IntVal
		if target == 0 {
			if sp.TargetPort.StrVal != "" {
				return fmt.Errorf("service %s/%s port %s: the harness resolves only numeric targetPorts", svc.Namespace, svc.Name, sp.Name)
			}
			target = sp.Port
		}
		ports = append(ports, discoveryv1.EndpointPort{
			Name:     ptr.To(sp.Name),
			Protocol: ptr.To(sp.Protocol),
			Port:     ptr.To(target),
		})
	}
	want := map[string]bool{}
	for i := 0; i < slices; i++ {
		name := fmt.Sprintf("%s-synx-%d", svc.Name, i)
		want[name] = true
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name:      name,
				Namespace: svc.Namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name,
					discoveryv1.LabelManagedBy:   ManagedBy,
				},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
				}},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       ports,
			Endpoints:   []discoveryv1.Endpoint{},
		}
		for j := i; j < len(eps); j += slices {
			e := eps[j]
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses: []string{e.Pod.IP},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptr.To(e.Ready), Serving: ptr.To(e.Serving), Terminating: ptr.To(e.Terminating),
				},
				NodeName: ptr.To(e.Pod.Node.Name),
				Zone:     ptr.To(e.Pod.Node.Zone),
				TargetRef: &corev1.ObjectReference{
					Kind: "Pod", Namespace: svc.Namespace, Name: e.Pod.Name,
				},
			})
		}
		var cur discoveryv1.EndpointSlice
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(es), &cur)
		switch {
		case apierrors.IsNotFound(err):
			if err := c.Client.Create(ctx, es); err != nil {
				return fmt.Errorf("create EndpointSlice %s/%s: %w", es.Namespace, es.Name, err)
			}
		case err != nil:
			return err
		default:
			es.ResourceVersion = cur.ResourceVersion
			if err := c.Client.Update(ctx, es); err != nil {
				return fmt.Errorf("update EndpointSlice %s/%s: %w", es.Namespace, es.Name, err)
			}
		}
	}
	var list discoveryv1.EndpointSliceList
	if err := c.Client.List(ctx, &list, client.InNamespace(svc.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy}); err != nil {
		return err
	}
	for i := range list.Items {
		if !want[list.Items[i].Name] {
			if err := c.Client.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	return nil
}
