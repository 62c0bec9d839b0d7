// Package daemon wires the node agent together. Each concern has one owner:
//
//   - revision.Acceptor decides which config revision the node runs;
//   - source.Data and source.Tracker watch the Services, EndpointSlices and
//     ProxyPolicies and track what changed;
//   - model.Builder turns them into the node's desired state, rebuilding only
//     what changed;
//   - dataplane.Plane owns the backend and programs the kernel;
//   - status.Writer writes ProxyNode status from each owner's facts.
//
// The sync loop (sync.go) is the one place that drives them, on one
// goroutine, at a bounded frequency.
package daemon

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/dataplane"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/revision"
	"github.com/synterix/synterix-kube-proxy/agent/source"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/agent/syncer"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// RBAC of the agent (generated into config/agent/rbac): config revisions
// only in the operator's namespace (a Role), the rest cluster-wide; the
// status of the agent's own ProxyNode only, by config/policy's admission
// policy.
// +kubebuilder:rbac:groups="",resources=services;nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,namespace=synterix-system,resources=controllerrevisions,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies;proxynodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxynodes/status,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Options configure an agent.
type Options struct {
	NodeName          string
	OperatorNamespace string
	Clients           *informers.Clients
	Recorder          record.EventRecorder
	Metrics           *metrics.Metrics
	Health            *health.State
	// InNetNS runs kernel work; nil runs it on the calling goroutine.
	InNetNS func(func() error) error
	// Listen opens HealthCheckNodePort listeners; nil uses InNetNS around
	// net.Listen.
	Listen       health.Listen
	Prober       probe.Prober
	NewBackend   dataplane.Factory
	AgentVersion string
	// PodTemplateHash is the hash of the agent pod template this agent runs
	// (POD_TEMPLATE_HASH), reported in its ProxyNode status.
	PodTemplateHash string
	// StatusHeartbeat overrides status.DefaultHeartbeat.
	StatusHeartbeat time.Duration
	// Burst is the sync burst; default syncer.DefaultBurst.
	Burst int
	// TracerProvider traces the syncs (tracing.go); nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Agent is a running node agent.
type Agent struct {
	opts   Options
	caps   probe.Capabilities
	runner *syncer.Runner
	hc     *health.NodePorts

	nodeInf, pnInf cache.SharedIndexInformer
	accept         *revision.Acceptor
	writer         *status.Writer
	tracker        *source.Tracker

	// Owned by the sync loop (sync.go).
	loop loopState
	// published is the sync loop's last Snapshot, for other goroutines.
	published atomic.Pointer[Snapshot]
	tracer    trace.Tracer
}

// New returns an agent; Run starts it.
func New(opts Options) *Agent {
	if opts.OperatorNamespace == "" {
		opts.OperatorNamespace = "synterix-system"
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Health == nil {
		opts.Health = health.NewState(time.Minute)
	}
	if opts.InNetNS == nil {
		opts.InNetNS = func(f func() error) error { return f() }
	}
	if opts.Listen == nil {
		opts.Listen = listenIn(opts.InNetNS)
	}
	if opts.Prober.IPVS == nil {
		opts.Prober = probe.Default
	}
	if opts.Recorder == nil {
		opts.Recorder = &record.FakeRecorder{}
	}
	if opts.Burst == 0 {
		opts.Burst = syncer.DefaultBurst
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	a := &Agent{opts: opts, tracer: opts.TracerProvider.Tracer(tracerName)}
	a.runner = syncer.New(a.sync, syncer.DefaultMinSyncPeriod, syncer.DefaultSyncPeriod, opts.Burst)
	a.hc = health.NewNodePorts(opts.Listen, opts.Health)
	a.tracker = source.NewTracker(opts.Metrics, opts.Health, a.runner.Request)
	return a
}

func listenIn(inNetNS func(func() error) error) health.Listen {
	return func(network, addr string) (net.Listener, error) {
		var l net.Listener
		err := inNetNS(func() error {
			var err error
			l, err = net.Listen(network, addr)
			return err
		})
		return l, err
	}
}

// Metrics returns the agent's metrics.
func (a *Agent) Metrics() *metrics.Metrics { return a.opts.Metrics }

// Health returns the agent's health state.
func (a *Agent) Health() *health.State { return a.opts.Health }

// Run runs the agent until ctx ends. It leaves the rules in the kernel when
// it returns.
func (a *Agent) Run(ctx context.Context) error {
	a.loop.started = time.Now()
	if err := a.opts.InNetNS(func() error {
		a.caps = a.opts.Prober.Probe(ctx)
		return nil
	}); err != nil {
		return fmt.Errorf("probe kernel: %w", err)
	}
	klog.InfoS("Probed kernel", "ipvs", a.caps.IPVS, "nftables", a.caps.NFTables, "iptablesMode", a.caps.IPTablesMode,
		"kernel", a.caps.KernelVersion)
	a.startWatches()
	stop := ctx.Done()
	informers.Run(stop, a.nodeInf, a.pnInf)
	if !informers.WaitForSync(stop, a.nodeInf, a.pnInf) {
		return ctx.Err()
	}
	a.accept.Evaluate()
	go a.writer.Run(ctx)
	a.runner.Run(ctx)
	a.accept.Stop()
	if a.loop.data != nil {
		a.loop.data.Stop()
	}
	a.hc.Close()
	return nil
}

// startWatches builds the node and ProxyNode watches, the revision
// acceptor and the status writer.
func (a *Agent) startWatches() {
	c := a.opts.Clients
	a.nodeInf = informers.Node(c, a.opts.NodeName)
	a.pnInf = informers.ProxyNode(c, a.opts.NodeName)
	a.writer = status.New(c.Proxy, a.opts.NodeName,
		status.Static{Capabilities: a.caps.Status(), AgentVersion: a.opts.AgentVersion, PodTemplateHash: a.opts.PodTemplateHash}, a.cachedProxyNode,
		func(r string) { a.opts.Metrics.StatusWrites.WithLabelValues(r).Inc() })
	if a.opts.StatusHeartbeat > 0 {
		a.writer.SetHeartbeat(a.opts.StatusHeartbeat)
	}
	a.accept = revision.New(revision.Options{
		NodeName: a.opts.NodeName, Clients: c, OperatorNamespace: a.opts.OperatorNamespace, Caps: a.caps,
		ProxyNode: a.cachedProxyNode, Facts: a.writer.SetRevision,
		Event:   func(pn *v1alpha1.ProxyNode, typ, reason, msg string) { a.opts.Recorder.Event(pn, typ, reason, msg) },
		Changed: a.runner.RequestFull,
		Refused: a.opts.Metrics.RevisionErrors.Inc,
	})
	_, _ = a.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onNode(nil, obj) },
		UpdateFunc: func(old, obj any) { a.onNode(old, obj) },
	})
	_, _ = a.pnInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.accept.Evaluate() },
		UpdateFunc: func(any, any) { a.accept.Evaluate() },
		DeleteFunc: func(any) { a.accept.Forget() },
	})
}

func (a *Agent) cachedProxyNode() *v1alpha1.ProxyNode {
	obj, ok, err := a.pnInf.GetStore().GetByKey(a.opts.NodeName)
	if err != nil || !ok {
		return nil
	}
	pn, _ := obj.(*v1alpha1.ProxyNode)
	return pn
}

func (a *Agent) cachedNode() *corev1.Node {
	obj, ok, err := a.nodeInf.GetStore().GetByKey(a.opts.NodeName)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}

// onNode follows the node's deletion marks, and asks for a sync when its
// addresses, labels (zone) or pod CIDRs (local traffic detection NodeCIDR)
// change: a kubelet status report changes none and syncs nothing.
func (a *Agent) onNode(oldObj, obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	a.opts.Health.NodeDeleting(informers.NodeDeleting(n))
	if o, ok := oldObj.(*corev1.Node); ok && equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) &&
		equality.Semantic.DeepEqual(o.Labels, n.Labels) && equality.Semantic.DeepEqual(o.Spec.PodCIDRs, n.Spec.PodCIDRs) &&
		o.Spec.PodCIDR == n.Spec.PodCIDR {
		return
	}
	a.tracker.Other()
}

// event posts an Event on the node's ProxyNode.
func (a *Agent) event(typ, reason, msg string) {
	if pn := a.cachedProxyNode(); pn != nil {
		a.opts.Recorder.Event(pn, typ, reason, msg)
	}
}

// modelGlobals is the node-wide part of the model's input for a revision
// and one IP family.
// single says the node programs that family alone.
func (a *Agent) modelGlobals(cfg *revision.Config, fam model.Family, single bool, policies []model.Policy) model.Globals {
	mc := modelConfig(cfg, a.opts.NodeName)
	mc.Family, mc.SingleStack = fam, single
	return model.Globals{Config: mc, Node: a.cachedNode(), Policies: policies}
}
