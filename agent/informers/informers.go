// Package informers builds the agent's watches: shared informers that are
// cheap for the API server (label and field selectors so that only what
// this node needs is sent, protobuf for core kinds) and cheap for the agent
// (transform functions strip what the model never reads before objects
// reach the cache). It only watches: agent/translate converts what it
// caches into the model's input.
package informers

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Well-known labels the selectors use.
const (
	LabelServiceProxyName = v1alpha1.ServiceProxyNameLabel
	LabelHeadless         = "service.kubernetes.io/headless"
)

// ProtobufContentType is what core clients ask for.
const ProtobufContentType = "application/vnd.kubernetes.protobuf"

// Clients are the two clients the agent uses: a protobuf clientset for core
// kinds and a JSON REST client for proxy.synterix.io.
type Clients struct {
	Core  kubernetes.Interface
	Proxy rest.Interface
}

// NewClients builds both clients from one config. The config is copied.
func NewClients(cfg *rest.Config) (*Clients, error) {
	core := rest.CopyConfig(cfg)
	core.ContentType = ProtobufContentType
	core.AcceptContentTypes = ProtobufContentType + ",application/json"
	cs, err := kubernetes.NewForConfig(core)
	if err != nil {
		return nil, err
	}
	proxy, err := NewProxyClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Core: cs, Proxy: proxy}, nil
}

// Scheme holds the proxy.synterix.io kinds.
var Scheme = runtime.NewScheme()

func init() {
	if err := v1alpha1.AddToScheme(Scheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(Scheme, v1alpha1.GroupVersion)
}

// NewProxyClient returns a JSON REST client for proxy.synterix.io/v1alpha1.
func NewProxyClient(cfg *rest.Config) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	gv := v1alpha1.GroupVersion
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.AcceptContentTypes = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}

// ServiceSelector is the label selector of the Services (and their
// EndpointSlices) an agent with this serviceProxyName handles.
func ServiceSelector(serviceProxyName string) string {
	if serviceProxyName == "" {
		return "!" + LabelServiceProxyName + ",!" + LabelHeadless
	}
	return LabelServiceProxyName + "=" + serviceProxyName + ",!" + LabelHeadless
}

func newInformer(lw cache.ListerWatcher, obj runtime.Object, name string, transform cache.TransformFunc) cache.SharedIndexInformer {
	inf := cache.NewSharedIndexInformerWithOptions(lw, obj, cache.SharedIndexInformerOptions{
		Indexers:          cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
		ObjectDescription: name,
	})
	if transform != nil {
		if err := inf.SetTransform(transform); err != nil {
			panic(fmt.Sprintf("set transform of %s informer: %v", name, err))
		}
	}
	return inf
}

// Services watches the Services this agent handles.
func Services(c *Clients, serviceProxyName string) cache.SharedIndexInformer {
	sel := ServiceSelector(serviceProxyName)
	lw := cache.NewFilteredListWatchFromClient(c.Core.CoreV1().RESTClient(), "services", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = sel })
	return newInformer(lw, &corev1.Service{}, "services", TransformService)
}

// EndpointSlices watches the EndpointSlices of the Services this agent
// handles (the EndpointSlice controller copies the Service's labels).
func EndpointSlices(c *Clients, serviceProxyName string) cache.SharedIndexInformer {
	sel := ServiceSelector(serviceProxyName)
	lw := cache.NewFilteredListWatchFromClient(c.Core.DiscoveryV1().RESTClient(), "endpointslices", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = sel })
	return newInformer(lw, &discoveryv1.EndpointSlice{}, "endpointslices", TransformEndpointSlice)
}

// Node watches this node only.
func Node(c *Clients, nodeName string) cache.SharedIndexInformer {
	sel := fields.OneTermEqualSelector("metadata.name", nodeName).String()
	lw := cache.NewFilteredListWatchFromClient(c.Core.CoreV1().RESTClient(), "nodes", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.FieldSelector = sel })
	return newInformer(lw, &corev1.Node{}, "nodes", TransformNode)
}

// Revisions watches the ControllerRevisions of one GatewayConfig in the
// operator's namespace.
func Revisions(c *Clients, namespace, gatewayConfig string) cache.SharedIndexInformer {
	sel := v1alpha1.RevisionGatewayConfigLabel + "=" + gatewayConfig
	lw := cache.NewFilteredListWatchFromClient(c.Core.AppsV1().RESTClient(), "controllerrevisions", namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = sel })
	return newInformer(lw, &appsv1.ControllerRevision{}, "controllerrevisions", stripMeta)
}

// ProxyNode watches this node's ProxyNode only.
func ProxyNode(c *Clients, nodeName string) cache.SharedIndexInformer {
	sel := fields.OneTermEqualSelector("metadata.name", nodeName).String()
	lw := cache.NewFilteredListWatchFromClient(c.Proxy, "proxynodes", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.FieldSelector = sel })
	return newInformer(lw, &v1alpha1.ProxyNode{}, "proxynodes", stripMeta)
}

// ProxyPolicies watches every ProxyPolicy; status is stripped.
func ProxyPolicies(c *Clients) cache.SharedIndexInformer {
	lw := cache.NewFilteredListWatchFromClient(c.Proxy, "proxypolicies", metav1.NamespaceAll, func(*metav1.ListOptions) {})
	return newInformer(lw, &v1alpha1.ProxyPolicy{}, "proxypolicies", TransformProxyPolicy)
}

// WaitForSync waits until every informer has listed, or stop closes.
func WaitForSync(stop <-chan struct{}, infs ...cache.SharedIndexInformer) bool {
	fns := make([]cache.InformerSynced, len(infs))
	for i, inf := range infs {
		fns[i] = inf.HasSynced
	}
	return cache.WaitForCacheSync(stop, fns...)
}

// Run starts informers until stop closes.
func Run(stop <-chan struct{}, infs ...cache.SharedIndexInformer) {
	for _, inf := range infs {
		go inf.Run(stop)
	}
}

// EventTime is when an informer event was handled; it dates changes that
// carry no trigger time.
func EventTime() time.Time { return time.Now() }
