package controllers

import (
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// NewScheme returns a scheme with the core Kubernetes kinds and this project's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := proxyv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// ControllerName is the reporting controller of the operator's Events.
const ControllerName = "synterix-operator"

// CacheOptions restricts the cache of the objects the operator keeps in its
// own namespace (agent DaemonSets, config revisions) to that namespace, and
// that of pods to the agent pods there.
func CacheOptions(namespace string) cache.Options {
	own := cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}}
	agents := cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}},
		Label: labels.SelectorFromSet(labels.Set{labelName: agentAppName})}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&appsv1.DaemonSet{}:          own,
		&appsv1.ControllerRevision{}: own,
		&corev1.Pod{}:                agents,
	}}
}

// SetupOption tunes Setup.
type SetupOption func(*setupOptions)

type setupOptions struct {
	tracer trace.TracerProvider
}

// WithTracerProvider traces the reconciles and rollout batches of
// GatewayConfigs with tp (internal/telemetry builds it from OTEL_*).
func WithTracerProvider(tp trace.TracerProvider) SetupOption {
	return func(o *setupOptions) { o.tracer = tp }
}

// Setup registers every reconciler of the operator with mgr.
func Setup(mgr manager.Manager, agent AgentOptions, opts ...SetupOption) error {
	var so setupOptions
	for _, o := range opts {
		o(&so)
	}
	if agent.Namespace == "" {
		return fmt.Errorf("the operator namespace is required")
	}
	if agent.DefaultImage == "" {
		return fmt.Errorf("the default agent image is required")
	}
	if allowed := agent.allowedImages(); !ImageAllowed(agent.DefaultImage, allowed) {
		return fmt.Errorf("the default agent image %s is not in the allowed agent images %s", agent.DefaultImage, strings.Join(allowed, ", "))
	}
	agent = agent.WithDefaults()
	rec := mgr.GetEventRecorder(ControllerName)
	gcr := &GatewayConfigReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: rec, Agent: agent}
	if so.tracer != nil {
		gcr.Tracer = so.tracer.Tracer(tracerName)
	}
	if err := gcr.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the GatewayConfig controller: %w", err)
	}
	if err := (&ProxyPolicyReconciler{Client: mgr.GetClient(), Recorder: rec}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ProxyPolicy controller: %w", err)
	}
	if err := (&ProxyNodeReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ProxyNode controller: %w", err)
	}
	return nil
}

// WithDefaults returns o with the default agent ports where none is set.
func (o AgentOptions) WithDefaults() AgentOptions {
	if o.HealthPort == 0 {
		o.HealthPort = DefaultAgentHealthPort
	}
	if o.MetricsPort == 0 {
		o.MetricsPort = DefaultAgentMetricsPort
	}
	return o
}

// The agent's default ports. They differ from kube-proxy's (10256, 10249) so
// that the agent and kube-proxy can share a node while
// spec.serviceProxyName splits the Services between them.
const (
	DefaultAgentHealthPort  int32 = 10356
	DefaultAgentMetricsPort int32 = 10349
)

// The operator's default client rate limits: a rollout batch of 100 nodes is
// 100 ProxyNode writes.
const (
	DefaultQPS   = 50
	DefaultBurst = 100
)
