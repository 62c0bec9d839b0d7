// Package source is the node agent's data: the watches on the Services,
// EndpointSlices and ProxyPolicies it handles, which feed a change Tracker
// and serve the model as its Source, by Service, so that an incremental
// build looks up only what changed.
package source

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// byService indexes EndpointSlices by "namespace/service name".
const byService = "byService"

// Data is the set of watches for one serviceProxyName.
type Data struct {
	ProxyName     string
	svc, eps, pol cache.SharedIndexInformer
	stop, synced  chan struct{}
}

// Start starts the watches for proxyName, feeding t. onSynced runs once
// every watch has listed.
func Start(c *informers.Clients, proxyName string, t *Tracker, onSynced func(*Data)) *Data {
	d := &Data{ProxyName: proxyName, stop: make(chan struct{}), synced: make(chan struct{}),
		svc: informers.Services(c, proxyName), eps: informers.EndpointSlices(c, proxyName), pol: informers.ProxyPolicies(c)}
	_ = d.eps.AddIndexers(cache.Indexers{byService: sliceServiceIndex})
	_, _ = d.svc.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { trackService(t, obj) },
		UpdateFunc: func(_, obj any) { trackService(t, obj) },
		DeleteFunc: func(obj any) { trackService(t, obj) },
	})
	_, _ = d.eps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { trackSlice(t, nil, obj) },
		UpdateFunc: func(old, obj any) { trackSlice(t, old, obj) },
		DeleteFunc: func(obj any) { trackSlice(t, nil, obj) },
	})
	// Policies are few: a change of one makes the model compare every
	// policy, and rebuild the Services whose policies changed.
	_, _ = d.pol.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { t.Other() },
		UpdateFunc: func(any, any) { t.Other() },
		DeleteFunc: func(any) { t.Other() },
	})
	informers.Run(d.stop, d.svc, d.eps, d.pol)
	go func() {
		if informers.WaitForSync(d.stop, d.svc, d.eps, d.pol) {
			close(d.synced)
			klog.InfoS("Watches synced", "serviceProxyName", proxyName, "services", len(d.svc.GetStore().ListKeys()),
				"endpointSlices", len(d.eps.GetStore().ListKeys()))
			onSynced(d)
		}
	}()
	return d
}

// Ready reports whether every watch has listed.
func (d *Data) Ready() bool {
	select {
	case <-d.synced:
		return true
	default:
		return false
	}
}

// Stop ends the watches.
func (d *Data) Stop() { close(d.stop) }

// Services implements model.Source.
func (d *Data) Services() []*corev1.Service {
	objs := d.svc.GetStore().List()
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Service))
	}
	return out
}

// Service implements model.Source.
func (d *Data) Service(ref model.ServiceRef) *corev1.Service {
	obj, ok, _ := d.svc.GetStore().GetByKey(ref.Namespace + "/" + ref.Name)
	if !ok {
		return nil
	}
	return obj.(*corev1.Service)
}

// EndpointSlices implements model.Source.
func (d *Data) EndpointSlices(ref model.ServiceRef) []*discoveryv1.EndpointSlice {
	objs, _ := d.eps.GetIndexer().ByIndex(byService, ref.Namespace+"/"+ref.Name)
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// Policies returns every ProxyPolicy.
func (d *Data) Policies() []*v1alpha1.ProxyPolicy {
	objs := d.pol.GetStore().List()
	out := make([]*v1alpha1.ProxyPolicy, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*v1alpha1.ProxyPolicy))
	}
	return out
}

// ServicesIn returns the Services of one namespace, which a policy's
// selector picks from.
func (d *Data) ServicesIn(namespace string) []*corev1.Service {
	objs, _ := d.svc.GetIndexer().ByIndex(cache.NamespaceIndex, namespace)
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Service))
	}
	return out
}

func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || es.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]}, nil
}

func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

func trackService(t *Tracker, obj any) {
	if s, ok := unwrap(obj).(*corev1.Service); ok {
		t.Service(model.ServiceRef{Namespace: s.Namespace, Name: s.Name}, time.Now())
	}
}

// trackSlice records a slice change under its Service, and under the
// Service it belonged to before when its label changed. The trigger time
// is the EndpointSlice controller's annotation when it is older than now.
func trackSlice(t *Tracker, oldObj, obj any) {
	es, ok := unwrap(obj).(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	at := time.Now()
	if v, ok := es.Annotations[informers.AnnotationTriggerTime]; ok {
		if tt, err := time.Parse(time.RFC3339Nano, v); err == nil && tt.Before(at) {
			at = tt
		}
	}
	key := es.Namespace + "/" + es.Name
	t.Slice(key, model.ServiceRef{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]}, at)
	if old, ok := oldObj.(*discoveryv1.EndpointSlice); ok &&
		old.Labels[discoveryv1.LabelServiceName] != es.Labels[discoveryv1.LabelServiceName] {
		t.Service(model.ServiceRef{Namespace: old.Namespace, Name: old.Labels[discoveryv1.LabelServiceName]}, at)
	}
}
