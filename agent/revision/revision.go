// Package revision decides which configuration the node agent runs. It
// follows the node's ProxyNode and the config revision (a ControllerRevision
// written by the operator) that it names, and either accepts the revision
// or refuses it with a reason: a revision is accepted when it decodes, the
// node can run the backend it asks for, and that backend can honour every
// setting it makes. A refused revision leaves the rules in the kernel as
// they are.
package revision

import (
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/agent/syncer"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Config is an accepted revision.
type Config struct {
	Name       string
	Generation int64 // of the ProxyNode that assigned it
	Spec       *v1alpha1.GatewayConfigSpec
	Choice     probe.Choice
	// NotApplied names what the revision sets that the chosen backend
	// does not use, in words; Choice.Reason ends with it too.
	NotApplied string
}

// Same reports whether two configs are the same assignment.
func (c *Config) Same(o *Config) bool {
	return c != nil && o != nil && c.Name == o.Name && c.Generation == o.Generation
}

// Periods returns minSyncPeriod and syncPeriod of the revision.
func (c *Config) Periods() (time.Duration, time.Duration) {
	minP, p := syncer.DefaultMinSyncPeriod, syncer.DefaultSyncPeriod
	if c != nil && c.Spec.MinSyncPeriod != nil {
		minP = c.Spec.MinSyncPeriod.Duration
	}
	if c != nil && c.Spec.SyncPeriod != nil && c.Spec.SyncPeriod.Duration > 0 {
		p = c.Spec.SyncPeriod.Duration
	}
	return minP, p
}

// Decision is what the agent should run.
type Decision struct {
	// Accepted is the revision to run; nil when there is none.
	Accepted *Config
	// Removed is set once the ProxyNode was deleted: the node is no longer
	// selected, and the agent removes its rules.
	Removed bool
}

// Options configure an Acceptor.
type Options struct {
	NodeName          string
	Clients           *informers.Clients
	OperatorNamespace string
	Caps              probe.Capabilities
	// ProxyNode returns the node's ProxyNode from the agent's cache, or nil.
	ProxyNode func() *v1alpha1.ProxyNode
	// Facts receives every change of the refusal, in order.
	Facts func(status.RevisionFacts)
	// Event posts an Event on the ProxyNode.
	Event func(pn *v1alpha1.ProxyNode, typ, reason, msg string)
	// Changed is called, outside the Acceptor's lock, after the decision
	// changed.
	Changed func()
	// Refused counts refusals (a metric).
	Refused func()
}

// revisionCache is the part of the revision informer the Acceptor reads.
type revisionCache interface {
	GetStore() cache.Store
	HasSynced() bool
}

// Acceptor holds the decision and the watch on the revisions of the
// GatewayConfig the ProxyNode names.
type Acceptor struct {
	opts Options

	mu       sync.Mutex
	gcName   string
	revInf   revisionCache
	revStop  chan struct{}
	decision Decision
	refusal  status.RevisionFacts
	hadNode  bool
}

// New returns an Acceptor; call Evaluate when the ProxyNode changes.
func New(opts Options) *Acceptor { return &Acceptor{opts: opts} }

// Decision returns the current decision.
func (a *Acceptor) Decision() Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.decision
}

// Evaluate reads the ProxyNode and the revision it names and decides again.
// Informer handlers call it from several goroutines: the decision and the
// facts handed on change under the Acceptor's lock, so they stay in order.
func (a *Acceptor) Evaluate() {
	changed := a.evaluate()
	if changed && a.opts.Changed != nil {
		a.opts.Changed()
	}
}

func (a *Acceptor) evaluate() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Read under the lock: whichever call decides last has read the newest
	// ProxyNode, so the decision and the facts end up at the newest.
	pn := a.opts.ProxyNode()
	if pn == nil {
		if !a.hadNode {
			a.refuseLocked(nil, v1alpha1.ReasonNoProxyNode, fmt.Errorf("no ProxyNode %q yet", a.opts.NodeName))
		}
		return false
	}
	a.hadNode = true
	// A ProxyNode again: keep the rules until its revision is accepted.
	a.decision.Removed = false
	if pn.Spec.GatewayConfig != a.gcName {
		a.watchLocked(pn.Spec.GatewayConfig)
		return false // the new watch calls Evaluate once synced
	}
	if a.revInf == nil || !a.revInf.HasSynced() {
		return false
	}
	cfg, reason, err := a.decide(pn)
	if err != nil {
		a.refuseLocked(pn, reason, err)
		return false
	}
	prev := a.decision
	a.decision = Decision{Accepted: cfg}
	if a.refusal.Refused() {
		a.refusal = status.RevisionFacts{}
		a.opts.Facts(a.refusal)
	}
	if !cfg.Same(prev.Accepted) {
		klog.InfoS("Config revision accepted", "revision", cfg.Name, "backend", cfg.Choice.Backend, "reason", cfg.Choice.Reason)
		if cfg.NotApplied != "" {
			a.opts.Event(pn, corev1.EventTypeWarning, v1alpha1.ReasonSettingNotApplied,
				fmt.Sprintf("Revision %s on backend %s: %s", cfg.Name, cfg.Choice.Backend, cfg.NotApplied))
		}
		return true
	}
	return false
}

// decide accepts the revision pn names, or says why not.
func (a *Acceptor) decide(pn *v1alpha1.ProxyNode) (*Config, string, error) {
	key := a.opts.OperatorNamespace + "/" + pn.Spec.Revision
	obj, ok, _ := a.revInf.GetStore().GetByKey(key)
	if !ok {
		return nil, v1alpha1.ReasonRevisionNotFound, fmt.Errorf("ControllerRevision %s not found (label %s=%s)", key,
			v1alpha1.RevisionGatewayConfigLabel, pn.Spec.GatewayConfig)
	}
	spec, err := v1alpha1.DecodeRevision(obj.(*appsv1.ControllerRevision).Data.Raw)
	if err != nil {
		return nil, v1alpha1.ReasonRevisionInvalid, fmt.Errorf("revision %s: %w", pn.Spec.Revision, err)
	}
	choice, err := probe.Choose(spec.Mode, a.opts.Caps)
	if err != nil {
		return nil, v1alpha1.ReasonBackendUnavailable, fmt.Errorf("revision %s: %w", pn.Spec.Revision, err)
	}
	if err := unsupportedSetting(spec, choice.Backend); err != nil {
		return nil, v1alpha1.ReasonSettingUnsupported, fmt.Errorf("revision %s on backend %s: %w", pn.Spec.Revision, choice.Backend, err)
	}
	notApplied := settingNotApplied(spec, choice.Backend)
	if notApplied != "" {
		choice.Reason += "; " + notApplied
	}
	return &Config{Name: pn.Spec.Revision, Generation: pn.Generation, Spec: spec, Choice: choice, NotApplied: notApplied}, "", nil
}

// refuseLocked records a refusal, logs it and posts an Event when it is new.
func (a *Acceptor) refuseLocked(pn *v1alpha1.ProxyNode, reason string, err error) {
	f := status.RevisionFacts{Reason: reason, Message: err.Error()}
	if pn != nil {
		f.Generation = pn.Generation
	}
	if f == a.refusal {
		return
	}
	isNew := a.refusal.Message != f.Message
	a.refusal = f
	a.opts.Facts(f)
	if !isNew || pn == nil {
		return
	}
	if a.opts.Refused != nil {
		a.opts.Refused()
	}
	klog.ErrorS(err, "Config revision not applied; keeping the current rules", "reason", reason)
	a.opts.Event(pn, corev1.EventTypeWarning, reason, err.Error())
}

// watchLocked starts watching the revisions of another GatewayConfig.
func (a *Acceptor) watchLocked(gc string) {
	a.stopLocked()
	a.gcName = gc
	a.revStop = make(chan struct{})
	inf := informers.Revisions(a.opts.Clients, a.opts.OperatorNamespace, gc)
	a.revInf = inf
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.Evaluate() },
		UpdateFunc: func(any, any) { a.Evaluate() },
		DeleteFunc: func(any) { a.Evaluate() },
	})
	stop := a.revStop
	go inf.Run(stop)
	go func() {
		if informers.WaitForSync(stop, inf) {
			a.Evaluate()
		}
	}()
}

func (a *Acceptor) stopLocked() {
	if a.revStop != nil {
		close(a.revStop)
	}
	a.revStop, a.revInf, a.gcName = nil, nil, ""
}

// Forget handles the deletion of the ProxyNode: the node is no longer
// selected by any GatewayConfig, so the agent must remove its rules.
func (a *Acceptor) Forget() {
	a.mu.Lock()
	a.stopLocked()
	a.decision = Decision{Removed: true}
	a.mu.Unlock()
	klog.InfoS("ProxyNode deleted: its GatewayConfig no longer selects this node")
	if a.opts.Changed != nil {
		a.opts.Changed()
	}
}

// Stop ends the revision watch.
func (a *Acceptor) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopLocked()
}
