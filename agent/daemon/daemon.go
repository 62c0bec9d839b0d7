// Package daemon is the node agent's core loop: it watches this node's
// ProxyNode, the config revision it names, Services, EndpointSlices,
// ProxyPolicies and its Node; it chooses the backend, syncs the kernel at a
// bounded frequency, and reports health, metrics and ProxyNode status.
//
// All kernel work (probing, backend construction, syncs, cleanups and the
// HealthCheckNodePort listeners) goes through Options.InNetNS, so a test
// can run the whole agent in-process against a test network namespace.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/agent/syncer"
	"github.com/synterix/synterix-kube-proxy/agent/translate"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// RBAC of the agent (generated into config/agent/rbac):
// +kubebuilder:rbac:groups="",resources=services;nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=controllerrevisions,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies;proxynodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxynodes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch;update

// Event reasons.
const (
	ReasonRevisionApplied    = "RevisionApplied"
	ReasonRevisionInvalid    = "RevisionInvalid"
	ReasonBackendUnavailable = "BackendUnavailable"
	ReasonRevisionNotFound   = "RevisionNotFound"
	ReasonSyncFailed         = "SyncFailed"
	ReasonSynced             = "Synced"
	ReasonRulesRemoved       = "RulesRemoved"
	ReasonBackendSwitched    = "BackendSwitched"
	ReasonNoProxyNode        = "NoProxyNode"
	ReasonSyncing            = "Syncing"
	ReasonInvalidInput       = "InvalidInput"
)

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
	NewBackend   NewBackend
	AgentVersion string
	// StatusHeartbeat overrides status.DefaultHeartbeat.
	StatusHeartbeat time.Duration
	// Burst is the sync burst; default syncer.DefaultBurst.
	Burst int
}

// Agent is a running node agent.
type Agent struct {
	opts   Options
	caps   probe.Capabilities
	runner *syncer.Runner
	writer *status.Writer
	hc     *health.NodePorts

	nodeInf, pnInf cache.SharedIndexInformer

	mu sync.Mutex
	// revision informer of the current GatewayConfig
	gcName  string
	revInf  cache.SharedIndexInformer
	revStop chan struct{}
	// data informers for the current serviceProxyName
	data *dataSet
	// desired is the accepted revision to run; nil when there is none.
	desired *revisionConfig
	// revErr is why the assigned revision is not accepted.
	revErr       error
	revErrReason string
	// revErrGeneration is the ProxyNode generation revErr is about, so that
	// a failure is reported as observed at that generation.
	revErrGeneration int64
	// applied is the revision in the kernel.
	applied    *revisionConfig
	be         backend.Backend
	beKey      string
	oldBackend backend.Backend // cleaned up after the new one synced
	// tunedRevision is the revision/generation whose conntrack tuning was
	// applied.
	tunedRevision string
	// removeRules is set when our ProxyNode was deleted.
	removeRules bool
	hadNode     bool
	// pending changes: key -> trigger time
	pendingEP, pendingSvc map[string]time.Time
	lastSync              *v1alpha1.SyncStatus
	lastErr               error
	counts                v1alpha1.RuleCounts
	failedPolicies        []v1alpha1.FailedPolicy
	appliedGeneration     int64
	started               time.Time
	// problems is a digest of the last reported invalid input.
	problems string
}

type dataSet struct {
	proxyName     string
	svc, eps, pol cache.SharedIndexInformer
	stop          chan struct{}
	synced        chan struct{}
}

func (d *dataSet) ready() bool {
	select {
	case <-d.synced:
		return true
	default:
		return false
	}
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
		in := opts.InNetNS
		opts.Listen = func(network, addr string) (net.Listener, error) {
			var l net.Listener
			err := in(func() error {
				var err error
				l, err = net.Listen(network, addr)
				return err
			})
			return l, err
		}
	}
	if opts.Prober.IPVS == nil {
		opts.Prober = probe.Default
	}
	if opts.NewBackend == nil {
		opts.NewBackend = DefaultNewBackend
	}
	if opts.Recorder == nil {
		opts.Recorder = &record.FakeRecorder{}
	}
	if opts.Burst == 0 {
		opts.Burst = syncer.DefaultBurst
	}
	a := &Agent{opts: opts, pendingEP: map[string]time.Time{}, pendingSvc: map[string]time.Time{}}
	a.runner = syncer.New(a.sync, syncer.DefaultMinSyncPeriod, syncer.DefaultSyncPeriod, opts.Burst)
	a.hc = health.NewNodePorts(opts.Listen)
	return a
}

// Metrics returns the agent's metrics.
func (a *Agent) Metrics() *metrics.Metrics { return a.opts.Metrics }

// Health returns the agent's health state.
func (a *Agent) Health() *health.State { return a.opts.Health }

// Run runs the agent until ctx ends. It leaves the rules in the kernel when
// it returns.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	if err := a.opts.InNetNS(func() error {
		a.caps = a.opts.Prober.Probe(ctx)
		return nil
	}); err != nil {
		return fmt.Errorf("probe kernel: %w", err)
	}
	klog.InfoS("Probed kernel", "ipvs", a.caps.IPVS, "nftables", a.caps.NFTables, "iptablesMode", a.caps.IPTablesMode,
		"kernel", a.caps.KernelVersion)
	c := a.opts.Clients
	a.nodeInf = informers.Node(c, a.opts.NodeName)
	a.pnInf = informers.ProxyNode(c, a.opts.NodeName)
	a.writer = status.New(c.Proxy, a.opts.NodeName, a.cachedProxyNode, func(r string) {
		a.opts.Metrics.StatusWrites.WithLabelValues(r).Inc()
	})
	if a.opts.StatusHeartbeat > 0 {
		a.writer.SetHeartbeat(a.opts.StatusHeartbeat)
	}
	_, _ = a.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onNode(nil, obj) },
		UpdateFunc: func(old, obj any) { a.onNode(old, obj) },
	})
	_, _ = a.pnInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.evaluate() },
		UpdateFunc: func(any, any) { a.evaluate() },
		DeleteFunc: func(any) { a.onProxyNodeDeleted() },
	})
	stop := ctx.Done()
	informers.Run(stop, a.nodeInf, a.pnInf)
	if !informers.WaitForSync(stop, a.nodeInf, a.pnInf) {
		return ctx.Err()
	}
	a.evaluate()
	go a.writer.Run(ctx)
	a.runner.Run(ctx)
	a.mu.Lock()
	if a.revStop != nil {
		close(a.revStop)
	}
	if a.data != nil {
		close(a.data.stop)
	}
	a.mu.Unlock()
	a.hc.Close()
	return nil
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

func (a *Agent) onNode(oldObj, obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	a.opts.Health.NodeDeleting(informers.NodeDeleting(n))
	// Only addresses and labels (zone) change what the model builds; a
	// Node update that changes neither (a kubelet status report) syncs
	// nothing.
	if o, ok := oldObj.(*corev1.Node); ok && equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) &&
		equality.Semantic.DeepEqual(o.Labels, n.Labels) {
		return
	}
	a.queueService("node/"+n.Name, time.Now())
}

// queueService records a change that is not an endpoint change.
func (a *Agent) queueService(key string, t time.Time) {
	a.mu.Lock()
	if _, ok := a.pendingSvc[key]; !ok {
		a.pendingSvc[key] = t
		a.opts.Metrics.ServiceChangesTotal.Inc()
	}
	a.opts.Metrics.ServiceChangesPending.Set(float64(len(a.pendingSvc)))
	a.mu.Unlock()
	a.queued(t)
	a.runner.Request()
}

func (a *Agent) queueEndpoints(es *discoveryv1.EndpointSlice) {
	t := time.Now()
	if v, ok := es.Annotations[informers.AnnotationTriggerTime]; ok {
		if tt, err := time.Parse(time.RFC3339Nano, v); err == nil && tt.Before(t) {
			t = tt
		}
	}
	key := es.Namespace + "/" + es.Name
	a.mu.Lock()
	if old, ok := a.pendingEP[key]; !ok || t.Before(old) {
		a.pendingEP[key] = t
	}
	a.opts.Metrics.EndpointChangesTotal.Inc()
	a.opts.Metrics.EndpointChangesPending.Set(float64(len(a.pendingEP)))
	a.mu.Unlock()
	a.queued(t)
	a.runner.Request()
}

func (a *Agent) queued(t time.Time) {
	a.opts.Health.Queued(time.Now())
	_ = t
	a.mu.Lock()
	oldest := time.Time{}
	for _, m := range []map[string]time.Time{a.pendingEP, a.pendingSvc} {
		for _, v := range m {
			if oldest.IsZero() || v.Before(oldest) {
				oldest = v
			}
		}
	}
	a.mu.Unlock()
	if !oldest.IsZero() {
		a.opts.Metrics.LastQueued.Set(float64(oldest.UnixNano()) / 1e9)
	}
}

// evaluate reads the ProxyNode and the revision it names and decides what
// the agent should run.
func (a *Agent) evaluate() {
	pn := a.cachedProxyNode()
	a.mu.Lock()
	defer a.mu.Unlock()
	if pn == nil {
		if !a.hadNode {
			a.revErr, a.revErrReason = fmt.Errorf("no ProxyNode %q yet", a.opts.NodeName), ReasonNoProxyNode
		}
		return
	}
	a.hadNode = true
	a.removeRules = false
	if pn.Spec.GatewayConfig != a.gcName {
		a.startRevisionsLocked(pn.Spec.GatewayConfig)
		return // the new informer's handlers call evaluate again
	}
	if a.revInf == nil || !a.revInf.HasSynced() {
		return
	}
	key := a.opts.OperatorNamespace + "/" + pn.Spec.Revision
	obj, ok, _ := a.revInf.GetStore().GetByKey(key)
	if !ok {
		a.setRevErrLocked(ReasonRevisionNotFound, fmt.Errorf("ControllerRevision %s not found (label %s=%s)", key,
			v1alpha1.RevisionGatewayConfigLabel, pn.Spec.GatewayConfig), pn)
		return
	}
	cr := obj.(*appsv1.ControllerRevision)
	spec, err := v1alpha1.DecodeRevision(cr.Data.Raw)
	if err != nil {
		a.setRevErrLocked(ReasonRevisionInvalid, fmt.Errorf("revision %s: %w", pn.Spec.Revision, err), pn)
		return
	}
	choice, err := probe.Choose(spec.Mode, a.caps)
	if err != nil {
		a.setRevErrLocked(ReasonBackendUnavailable, fmt.Errorf("revision %s: %w", pn.Spec.Revision, err), pn)
		return
	}
	cfg := &revisionConfig{Name: pn.Spec.Revision, Generation: pn.Generation, Spec: spec, Choice: choice}
	a.revErr, a.revErrReason = nil, ""
	prev := a.desired
	a.desired = cfg
	minP, p := cfg.periods()
	a.runner.SetPeriods(minP, p, a.opts.Burst)
	a.opts.Health.SetThreshold(max(2*p+minP, time.Minute))
	if a.data == nil || a.data.proxyName != spec.ServiceProxyName {
		a.startDataLocked(spec.ServiceProxyName)
	}
	if prev == nil || prev.Name != cfg.Name || prev.Generation != cfg.Generation {
		klog.InfoS("Config revision accepted", "revision", cfg.Name, "backend", choice.Backend, "reason", choice.Reason)
		a.pendingSvc["revision"] = time.Now()
		go a.runner.RequestFull()
	}
	go a.report()
}

func (a *Agent) setRevErrLocked(reason string, err error, pn *v1alpha1.ProxyNode) {
	changed := a.revErr == nil || a.revErr.Error() != err.Error()
	a.revErr, a.revErrReason, a.revErrGeneration = err, reason, pn.Generation
	if changed {
		a.opts.Metrics.RevisionErrors.Inc()
		klog.ErrorS(err, "Config revision not applied; keeping the current rules", "reason", reason)
		a.opts.Recorder.Event(pn, corev1.EventTypeWarning, reason, err.Error())
	}
	go a.report()
}

func (a *Agent) startRevisionsLocked(gc string) {
	if a.revStop != nil {
		close(a.revStop)
	}
	a.gcName = gc
	a.revStop = make(chan struct{})
	a.revInf = informers.Revisions(a.opts.Clients, a.opts.OperatorNamespace, gc)
	h := func() { go a.evaluate() }
	_, _ = a.revInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { h() },
		UpdateFunc: func(any, any) { h() },
		DeleteFunc: func(any) { h() },
	})
	inf, stop := a.revInf, a.revStop
	go inf.Run(stop)
	go func() {
		if informers.WaitForSync(stop, inf) {
			a.evaluate()
		}
	}()
}

func (a *Agent) startDataLocked(proxyName string) {
	if a.data != nil {
		close(a.data.stop)
	}
	c := a.opts.Clients
	d := &dataSet{proxyName: proxyName, stop: make(chan struct{}), synced: make(chan struct{}),
		svc: informers.Services(c, proxyName), eps: informers.EndpointSlices(c, proxyName), pol: informers.ProxyPolicies(c)}
	svcKey := func(obj any) string {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			return k
		}
		return "?"
	}
	_, _ = d.svc.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.queueService("svc/"+svcKey(obj), time.Now()) },
		UpdateFunc: func(_, obj any) { a.queueService("svc/"+svcKey(obj), time.Now()) },
		DeleteFunc: func(obj any) { a.queueService("svc/"+svcKey(obj), time.Now()) },
	})
	onSlice := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
			a.queueEndpoints(es)
		}
	}
	_, _ = d.eps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onSlice,
		UpdateFunc: func(_, obj any) { onSlice(obj) },
		DeleteFunc: onSlice,
	})
	_, _ = d.pol.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.queueService("policy/"+svcKey(obj), time.Now()) },
		UpdateFunc: func(_, obj any) { a.queueService("policy/"+svcKey(obj), time.Now()) },
		DeleteFunc: func(obj any) { a.queueService("policy/"+svcKey(obj), time.Now()) },
	})
	a.data = d
	informers.Run(d.stop, d.svc, d.eps, d.pol)
	go func() {
		if informers.WaitForSync(d.stop, d.svc, d.eps, d.pol) {
			close(d.synced)
			klog.InfoS("Watches synced", "serviceProxyName", proxyName, "services", len(d.svc.GetStore().ListKeys()),
				"endpointSlices", len(d.eps.GetStore().ListKeys()), "sinceStart", time.Since(a.started))
			a.runner.RequestFull()
		}
	}()
}

func (a *Agent) onProxyNodeDeleted() {
	a.mu.Lock()
	a.desired = nil
	a.removeRules = a.be != nil || a.applied != nil
	if a.revStop != nil {
		close(a.revStop)
		a.revStop, a.revInf, a.gcName = nil, nil, ""
	}
	if a.data != nil {
		close(a.data.stop)
		a.data = nil
	}
	a.mu.Unlock()
	klog.InfoS("ProxyNode deleted: its GatewayConfig no longer selects this node", "proxyNode", a.opts.NodeName)
	a.runner.RequestFull()
}

// sync is the syncer's function.
func (a *Agent) sync(ctx context.Context, full bool) error {
	a.mu.Lock()
	cfg, data, remove := a.desired, a.data, a.removeRules
	a.mu.Unlock()
	if cfg == nil {
		if remove {
			if err := a.removeAll(ctx); err != nil {
				return err
			}
		}
		// Nothing to program: changes seen so far are not overdue.
		a.mu.Lock()
		a.pendingEP, a.pendingSvc = map[string]time.Time{}, map[string]time.Time{}
		a.mu.Unlock()
		a.opts.Health.Idle(time.Now())
		a.opts.Metrics.LastQueued.Set(0)
		return nil
	}
	if data == nil || !data.ready() {
		return nil // the watches' sync requests a sync
	}
	start := time.Now()
	a.mu.Lock()
	pendEP, pendSvc := a.pendingEP, a.pendingSvc
	a.pendingEP, a.pendingSvc = map[string]time.Time{}, map[string]time.Time{}
	a.mu.Unlock()
	requeue := func() {
		a.mu.Lock()
		for k, v := range pendEP {
			if old, ok := a.pendingEP[k]; !ok || v.Before(old) {
				a.pendingEP[k] = v
			}
		}
		for k, v := range pendSvc {
			if old, ok := a.pendingSvc[k]; !ok || v.Before(old) {
				a.pendingSvc[k] = v
			}
		}
		a.mu.Unlock()
	}

	be, err := a.backendFor(ctx, cfg)
	if err != nil {
		requeue()
		return a.syncFailed(cfg, start, fmt.Errorf("start %s backend: %w", cfg.Choice.Backend, err))
	}
	in := model.Input{Config: cfg.modelConfig(a.opts.NodeName), Node: a.cachedNode()}
	for _, o := range data.svc.GetStore().List() {
		in.Services = append(in.Services, o.(*corev1.Service))
	}
	for _, o := range data.eps.GetStore().List() {
		in.EndpointSlices = append(in.EndpointSlices, o.(*discoveryv1.EndpointSlice))
	}
	var failed []v1alpha1.FailedPolicy
	for _, o := range data.pol.GetStore().List() {
		p := o.(*v1alpha1.ProxyPolicy)
		var svcs []*corev1.Service
		if objs, err := data.svc.GetIndexer().ByIndex(cache.NamespaceIndex, p.Namespace); err == nil {
			for _, s := range objs {
				svcs = append(svcs, s.(*corev1.Service))
			}
		}
		mp, err := translate.Policy(p, svcs)
		if err != nil {
			failed = append(failed, v1alpha1.FailedPolicy{Namespace: p.Namespace, Name: p.Name, Reason: "Invalid", Message: err.Error()})
			continue
		}
		if err := be.Unsupported(mp); err != nil {
			failed = append(failed, v1alpha1.FailedPolicy{Namespace: p.Namespace, Name: p.Name,
				Reason: v1alpha1.ReasonUnsupportedByBackend, Message: err.Error()})
			continue
		}
		in.Policies = append(in.Policies, mp)
	}
	sort.Slice(failed, func(i, j int) bool {
		if failed[i].Namespace != failed[j].Namespace {
			return failed[i].Namespace < failed[j].Namespace
		}
		return failed[i].Name < failed[j].Name
	})
	st := model.Build(in)
	built := time.Now()
	a.mu.Lock()
	newRevision := a.applied == nil || a.applied.Name != cfg.Name || a.applied.Generation != cfg.Generation
	a.mu.Unlock()
	full = full || newRevision
	a.tuneConntrack(cfg)
	var res backend.SyncResult
	err = a.opts.InNetNS(func() error {
		var err error
		res, err = be.Sync(ctx, st, backend.SyncOptions{Full: full})
		return err
	})
	if err != nil {
		requeue()
		a.opts.Metrics.SyncFailures.WithLabelValues(be.Name()).Inc()
		return a.syncFailed(cfg, start, err)
	}
	end := time.Now()
	// The new backend is in the kernel: remove the old one's rules.
	a.mu.Lock()
	old := a.oldBackend
	a.oldBackend = nil
	a.mu.Unlock()
	if old != nil {
		if err := a.opts.InNetNS(func() error { return old.Cleanup(ctx) }); err != nil {
			klog.ErrorS(err, "Failed to remove the rules of the previous backend", "backend", old.Name())
		} else {
			klog.InfoS("Removed the rules of the previous backend", "backend", old.Name(), "now", be.Name())
			a.event(corev1.EventTypeNormal, ReasonBackendSwitched, fmt.Sprintf("Switched from %s to %s", old.Name(), be.Name()))
		}
	}
	m := a.opts.Metrics
	typ := "partial"
	if res.Full {
		typ = "full"
		m.SyncFull.Inc()
	} else {
		m.SyncPartial.Inc()
	}
	m.SyncDuration.WithLabelValues(typ).Observe(end.Sub(start).Seconds())
	m.LastSync.Set(float64(end.UnixNano()) / 1e9)
	a.mu.Lock()
	firstSync := a.applied == nil
	a.mu.Unlock()
	// The first sync of a run takes in the initial listing, whose objects
	// are not changes: only later changes count as programming latency.
	if !firstSync {
		for _, t := range pendEP {
			m.NetworkProgramming.Observe(end.Sub(t).Seconds())
		}
	}
	m.Services.Set(float64(res.Services))
	m.Endpoints.Set(float64(res.Endpoints))
	m.Rules.Set(float64(res.Rules))
	m.Problems.Set(float64(len(st.Problems)))
	m.FailedPolicies.Set(float64(len(failed)))
	a.reportProblems(st.Problems)
	a.updateNodePorts(st)
	a.opts.Health.Synced(start, end)

	a.mu.Lock()
	if len(a.pendingEP)+len(a.pendingSvc) == 0 {
		m.LastQueued.Set(0)
	}
	m.EndpointChangesPending.Set(float64(len(a.pendingEP)))
	m.ServiceChangesPending.Set(float64(len(a.pendingSvc)))
	wasApplied := a.applied
	a.applied = cfg
	a.appliedGeneration = cfg.Generation
	recovered := a.lastErr != nil
	a.lastErr = nil
	ms := int32(min(end.Sub(start).Milliseconds(), 1<<31-1))
	syncType := v1alpha1.SyncPartial
	if res.Full {
		syncType = v1alpha1.SyncFull
	}
	a.lastSync = &v1alpha1.SyncStatus{Time: &metav1.Time{Time: end}, DurationMilliseconds: &ms, Type: syncType}
	a.counts = v1alpha1.RuleCounts{Services: int32(res.Services), Endpoints: int32(res.Endpoints), Rules: int32(res.Rules)}
	a.failedPolicies = failed
	a.mu.Unlock()
	if recovered {
		a.event(corev1.EventTypeNormal, ReasonSynced, "Rules in sync again")
	}
	m.Backend.Reset()
	m.Backend.WithLabelValues(be.Name(), cfg.Name).Set(1)
	if wasApplied == nil || wasApplied.Name != cfg.Name || wasApplied.Generation != cfg.Generation {
		klog.InfoS("Config revision applied", "revision", cfg.Name, "backend", be.Name(), "services", res.Services,
			"duration", end.Sub(start))
		a.event(corev1.EventTypeNormal, ReasonRevisionApplied, fmt.Sprintf("Revision %s is in the kernel (%s)", cfg.Name, be.Name()))
	}
	if res.Full {
		klog.InfoS("Full sync done", "services", res.Services, "endpoints", res.Endpoints, "changed", res.Changed,
			"rulesWritten", res.Rules, "build", built.Sub(start), "backend", end.Sub(built), "sinceStart", end.Sub(a.started))
	} else {
		klog.V(2).InfoS("Synced", "services", res.Services, "changed", res.Changed, "rulesWritten", res.Rules, "duration", end.Sub(start))
	}
	a.report()
	return nil
}

func (a *Agent) syncFailed(cfg *revisionConfig, start time.Time, err error) error {
	now := time.Now()
	ms := int32(min(now.Sub(start).Milliseconds(), 1<<31-1))
	a.mu.Lock()
	first := a.lastErr == nil
	a.lastErr = err
	a.lastSync = &v1alpha1.SyncStatus{Time: &metav1.Time{Time: now}, DurationMilliseconds: &ms, Type: v1alpha1.SyncFull, Error: err.Error()}
	a.mu.Unlock()
	klog.ErrorS(err, "Sync failed; the rules in the kernel are left as they were", "revision", cfg.Name)
	if first {
		a.event(corev1.EventTypeWarning, ReasonSyncFailed, err.Error())
	}
	a.report()
	return err
}

func (a *Agent) event(typ, reason, msg string) {
	if pn := a.cachedProxyNode(); pn != nil {
		a.opts.Recorder.Event(pn, typ, reason, msg)
	}
}

// backendFor returns the backend a revision needs, building it (and
// keeping the previous one for cleanup) when the kind or its options
// changed.
func (a *Agent) backendFor(ctx context.Context, cfg *revisionConfig) (backend.Backend, error) {
	key := cfg.backendKey()
	a.mu.Lock()
	be, curKey := a.be, a.beKey
	a.mu.Unlock()
	if be != nil && curKey == key {
		return be, nil
	}
	var nb backend.Backend
	err := a.opts.InNetNS(func() error {
		var err error
		nb, err = a.opts.NewBackend(ctx, cfg.Choice.Backend, cfg.Spec, a.caps)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if be != nil && be.Name() != nb.Name() {
		a.oldBackend = be
	}
	a.be, a.beKey = nb, key
	a.mu.Unlock()
	return nb, nil
}

// removeAll removes our rules after our ProxyNode was deleted.
func (a *Agent) removeAll(ctx context.Context) error {
	a.mu.Lock()
	be, old := a.be, a.oldBackend
	a.mu.Unlock()
	var errs []error
	for _, b := range []backend.Backend{be, old} {
		if b == nil {
			continue
		}
		if err := a.opts.InNetNS(func() error { return b.Cleanup(ctx) }); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		klog.ErrorS(err, "Failed to remove the rules after the ProxyNode was deleted")
		return err
	}
	a.hc.Close()
	a.mu.Lock()
	a.be, a.beKey, a.oldBackend, a.applied, a.removeRules = nil, "", nil, nil, false
	a.mu.Unlock()
	msg := "ProxyNode " + a.opts.NodeName + " was deleted (its GatewayConfig no longer selects this node): removed every rule of the agent; idle until a ProxyNode is assigned again"
	klog.InfoS("Removed all rules: ProxyNode deleted", "proxyNode", a.opts.NodeName)
	if n := a.cachedNode(); n != nil {
		ref := &corev1.ObjectReference{Kind: "Node", Name: n.Name, UID: n.UID, APIVersion: "v1"}
		a.opts.Recorder.Event(ref, corev1.EventTypeNormal, ReasonRulesRemoved, msg)
	}
	return nil
}

func (a *Agent) updateNodePorts(st *model.State) {
	want := map[int32]health.NodePortService{}
	local := map[int32]map[string]bool{}
	for _, s := range st.Services {
		if s.HealthCheckNodePort <= 0 || !s.ExternalLocal {
			continue
		}
		p := s.HealthCheckNodePort
		if local[p] == nil {
			local[p] = map[string]bool{}
		}
		for _, e := range s.ExternalEndpoints {
			if e.Local && e.Ready {
				local[p][e.Addr.String()] = true
			}
		}
		want[p] = health.NodePortService{Service: health.ServiceRef{Namespace: s.Namespace, Name: s.Name}, LocalEndpoints: len(local[p])}
	}
	if err := a.hc.Update(want); err != nil {
		klog.ErrorS(err, "Failed to open some health check node ports")
	}
	a.opts.Metrics.HealthCheckNodePorts.Set(float64(a.hc.Ports()))
}

// report hands the status writer the agent's current view.
func (a *Agent) report() {
	if a.writer == nil {
		return
	}
	a.mu.Lock()
	r := status.Report{
		Capabilities:   a.caps.Status(),
		AgentVersion:   a.opts.AgentVersion,
		LastSync:       a.lastSync,
		Counts:         a.counts,
		FailedPolicies: a.failedPolicies,
	}
	if a.applied != nil {
		r.AppliedRevision = a.applied.Name
		r.Backend = a.applied.Choice.Backend
		r.BackendReason = a.applied.Choice.Reason
		r.Generation = a.appliedGeneration
	}
	pn := a.cachedProxyNode()
	upToDate := pn != nil && a.applied != nil && a.applied.Name == pn.Spec.Revision && a.applied.Generation == pn.Generation
	switch {
	case a.revErr != nil:
		r.Degraded = status.Condition{Status: metav1.ConditionTrue, Reason: a.revErrReason, Message: a.revErr.Error()}
		r.Ready = status.Condition{Status: metav1.ConditionFalse, Reason: a.revErrReason, Message: a.revErr.Error()}
		if r.Backend == "" && a.revErrReason == ReasonBackendUnavailable {
			r.BackendReason = a.revErr.Error()
		}
		if a.revErrReason == ReasonRevisionNotFound {
			r.Degraded = status.Condition{Status: metav1.ConditionFalse, Reason: a.revErrReason, Message: a.revErr.Error()}
		}
	case a.lastErr != nil:
		r.Degraded = status.Condition{Status: metav1.ConditionTrue, Reason: ReasonSyncFailed, Message: a.lastErr.Error()}
		r.Ready = status.Condition{Status: metav1.ConditionFalse, Reason: ReasonSyncFailed, Message: a.lastErr.Error()}
	case upToDate:
		r.Degraded = status.Condition{Status: metav1.ConditionFalse, Reason: "AsExpected", Message: "Rules in sync"}
		r.Ready = status.Condition{Status: metav1.ConditionTrue, Reason: ReasonSynced, Message: "Revision " + a.applied.Name + " is in the kernel"}
	default:
		r.Degraded = status.Condition{Status: metav1.ConditionFalse, Reason: "AsExpected", Message: "No failure"}
		r.Ready = status.Condition{Status: metav1.ConditionFalse, Reason: ReasonSyncing, Message: "Waiting for the first sync of the assigned revision"}
	}
	switch {
	case upToDate:
	case a.revErr != nil && pn != nil && a.revErrGeneration == pn.Generation:
		// The agent acted on this generation and failed: say so at this
		// generation, so that the operator stops a rollout at once instead of
		// waiting for its progress deadline. appliedRevision stays the
		// revision still in the kernel.
		r.Generation = a.revErrGeneration
	default:
		r.Generation = 0
	}
	a.mu.Unlock()
	a.writer.Set(r)
}

// reportProblems logs the input the model skipped and posts an Event when
// the set changed.
func (a *Agent) reportProblems(ps []model.Problem) {
	var b strings.Builder
	for i, p := range ps {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(ps)-5)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	digest := fmt.Sprintf("%d:%s", len(ps), b.String())
	a.mu.Lock()
	changed := digest != a.problems
	a.problems = digest
	a.mu.Unlock()
	if !changed || len(ps) == 0 {
		return
	}
	for _, p := range ps {
		klog.InfoS("Skipped invalid input", "object", p.Object, "problem", p.Message)
	}
	a.event(corev1.EventTypeWarning, ReasonInvalidInput, fmt.Sprintf("Skipped %d invalid pieces of input: %s", len(ps), b.String()))
}
