package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/selection"
)

// MaxTargets bounds status.targets.
const MaxTargets = 64

// pendingRecheck is how often a policy not yet programmed everywhere is looked
// at again (from the cache: it costs no API request). Nodes' syncs are not
// watched one by one, so that 1,000 nodes syncing do not wake every policy.
const pendingRecheck = 2 * time.Second

// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch

// ProxyPolicyReconciler resolves a ProxyPolicy's targets, decides conflicts and
// aggregates what the nodes report into Accepted and Programmed.
type ProxyPolicyReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Now returns the current time; time.Now when nil.
	Now func() time.Time

	// seen remembers when each policy generation was first seen: a node
	// counts a policy as programmed only after a sync that finished later.
	seen sync.Map // types.UID -> seenGeneration
}

type seenGeneration struct {
	generation int64
	at         time.Time
}

func (r *ProxyPolicyReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// since returns the time from which a node's sync counts for this generation of
// the policy: its creation for generation 1, else when the operator first saw
// the generation (after an operator restart: the restart, which only makes the
// rule stricter).
func (r *ProxyPolicyReconciler) since(p *proxyv1alpha1.ProxyPolicy) time.Time {
	if v, ok := r.seen.Load(p.UID); ok && v.(seenGeneration).generation == p.Generation {
		return v.(seenGeneration).at
	}
	at := r.now()
	if p.Generation <= 1 {
		at = p.CreationTimestamp.Time
	}
	r.seen.Store(p.UID, seenGeneration{generation: p.Generation, at: at})
	return at
}

// Reconcile computes one ProxyPolicy's status, in phases: observe the
// Services, policies, GatewayConfigs and ProxyNodes; attach the policy to its
// targets (deciding conflicts); tally what the nodes report; compute the
// status. It writes the status once, only when it changed, and only after
// every phase succeeded, with observedGeneration.
func (r *ProxyPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &proxyv1alpha1.ProxyPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		r.seen.Delete(p.UID)
		return ctrl.Result{}, nil
	}
	view, err := r.observe(ctx, p)
	if err != nil {
		return ctrl.Result{}, err
	}
	att := attach(p, view)
	tally := tallyNodes(p, view, att.accepted, r.since(p))
	st, requeue := policyStatus(p, att, tally)
	logf.FromContext(ctx).V(1).Info("Computed policy status", "accepted", conditionReason(st, proxyv1alpha1.ConditionAccepted),
		"programmed", tally.counts.Programmed, "failed", tally.counts.Failed, "total", tally.counts.Total)
	if err := r.writeStatus(ctx, p, st); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if requeue {
		return ctrl.Result{RequeueAfter: pendingRecheck}, nil
	}
	return ctrl.Result{}, nil
}

// policyView is what one reconcile of a ProxyPolicy reads, all from the cache.
type policyView struct {
	// services are the Services of the policy's namespace; byName indexes them.
	services []*corev1.Service
	byName   map[string]*corev1.Service
	// policies are the ProxyPolicies of the namespace, the policy included.
	policies []proxyv1alpha1.ProxyPolicy
	configs  []proxyv1alpha1.GatewayConfig
	// nodes are every ProxyNode, read-only: not copied for every policy.
	nodes []proxyv1alpha1.ProxyNode
}

// observe reads what the policy's status depends on.
func (r *ProxyPolicyReconciler) observe(ctx context.Context, p *proxyv1alpha1.ProxyPolicy) (*policyView, error) {
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.InNamespace(p.Namespace)); err != nil {
		return nil, err
	}
	v := &policyView{byName: make(map[string]*corev1.Service, len(svcs.Items))}
	for i := range svcs.Items {
		v.services = append(v.services, &svcs.Items[i])
		v.byName[svcs.Items[i].Name] = &svcs.Items[i]
	}
	var policies proxyv1alpha1.ProxyPolicyList
	if err := r.List(ctx, &policies, client.InNamespace(p.Namespace)); err != nil {
		return nil, err
	}
	var gcs proxyv1alpha1.GatewayConfigList
	if err := r.List(ctx, &gcs); err != nil {
		return nil, err
	}
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	v.policies, v.configs, v.nodes = policies.Items, gcs.Items, pns.Items
	return v, nil
}

// attachment is what a policy's targets resolve to once conflicts are decided.
type attachment struct {
	// targets is the resolution of targetRefs and selector (shared with the
	// agent); selectorErr reports an invalid selector.
	targets     proxyv1alpha1.PolicyTargets
	selectorErr error
	// accepted are the selected Services the policy wins, sorted.
	accepted []string
	// conflictWith names an older policy that won one of the targets.
	conflictWith string
	// status is status.targets: one entry per target, sorted, bounded.
	status []proxyv1alpha1.ResolvedTarget
}

// attach resolves the policy's targets and decides conflicts: the oldest
// policy (creationTimestamp, then name) that selects a Service wins it.
func attach(p *proxyv1alpha1.ProxyPolicy, v *policyView) attachment {
	winner := map[string]*proxyv1alpha1.ProxyPolicy{}
	for i := range v.policies {
		q := &v.policies[i]
		if !q.DeletionTimestamp.IsZero() {
			continue
		}
		t, _ := q.ResolveTargets(v.services)
		for _, s := range t.Selected {
			w := winner[s]
			if w == nil || selection.Older(q.CreationTimestamp.Time, q.Name, w.CreationTimestamp.Time, w.Name) {
				winner[s] = q
			}
		}
	}
	var a attachment
	a.targets, a.selectorErr = p.ResolveTargets(v.services)
	for _, s := range a.targets.Selected {
		t := proxyv1alpha1.ResolvedTarget{Name: s, Accepted: true}
		if w := winner[s]; w != nil && w.UID != p.UID {
			t.Accepted = false
			t.Reason = fmt.Sprintf("ProxyPolicy %s, which is older, targets this Service", w.Name)
			a.conflictWith = w.Name
		} else {
			a.accepted = append(a.accepted, s)
		}
		a.status = append(a.status, t)
	}
	for _, u := range a.targets.Unresolved {
		a.status = append(a.status, proxyv1alpha1.ResolvedTarget{Name: u.Name, Reason: u.Message})
	}
	a.status = boundedTargets(a.status)
	return a
}

// boundedTargets sorts status.targets by name, keeps one entry per name (it is
// a map list) and at most MaxTargets.
func boundedTargets(ts []proxyv1alpha1.ResolvedTarget) []proxyv1alpha1.ResolvedTarget {
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	out := ts[:0]
	for i, t := range ts {
		if i > 0 && t.Name == ts[i-1].Name {
			continue
		}
		out = append(out, t)
	}
	if len(out) > MaxTargets {
		out = out[:MaxTargets]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// nodeTally is what the nodes that should run a policy report of it.
type nodeTally struct {
	counts proxyv1alpha1.PolicyNodeCounts
	// failedNames are every failed node, sorted.
	failedNames []string
	// unsupported counts the nodes whose backend cannot run the policy.
	unsupported int
	// failReason is the reason and message of one failed node.
	failReason string
}

// tallyNodes counts the nodes that should run the policy (those of the
// GatewayConfigs whose serviceProxyName labels an accepted target) by what
// they report: failed when they list the policy in failedPolicies,
// programmed when they do not and are Ready after a sync that finished no
// earlier than since.
func tallyNodes(p *proxyv1alpha1.ProxyPolicy, v *policyView, accepted []string, since time.Time) nodeTally {
	proxyNames := map[string]bool{}
	for _, s := range accepted {
		proxyNames[v.byName[s].Labels[proxyv1alpha1.ServiceProxyNameLabel]] = true
	}
	configs := map[string]bool{}
	for _, g := range v.configs {
		if proxyNames[g.Spec.ServiceProxyName] {
			configs[g.Name] = true
		}
	}
	var t nodeTally
	for i := range v.nodes {
		pn := &v.nodes[i]
		if !configs[pn.Spec.GatewayConfig] {
			continue
		}
		t.counts.Total++
		failed := false
		for _, f := range pn.Status.FailedPolicies {
			if f.Namespace == p.Namespace && f.Name == p.Name {
				failed = true
				if f.Reason == proxyv1alpha1.ReasonUnsupportedByBackend {
					t.unsupported++
				}
				if t.failReason == "" {
					t.failReason = f.Reason + ": " + f.Message
				}
			}
		}
		// A node that failed more policies than it lists cannot say whether
		// this one is among them: it counts neither way.
		unknown := !failed && int(pn.Status.FailedPolicyCount) > len(pn.Status.FailedPolicies)
		switch {
		case failed:
			t.counts.Failed++
			t.failedNames = append(t.failedNames, pn.Name)
		case unknown:
		case ProxyNodeHealth(pn) == NodeReady && pn.Status.LastSync != nil && pn.Status.LastSync.Time != nil &&
			!pn.Status.LastSync.Time.Time.Before(since.Truncate(time.Second)):
			t.counts.Programmed++
		}
	}
	sort.Strings(t.failedNames)
	if len(t.failedNames) > 0 {
		t.counts.FailedNodeNames = boundedNames(t.failedNames)
	}
	return t
}

// SetupWithManager registers the reconciler and its watches.
func (r *ProxyPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	policiesIn := func(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
		var list proxyv1alpha1.ProxyPolicyList
		if err := mgr.GetClient().List(ctx, &list, opts...); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, q := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: q.Namespace, Name: q.Name}})
		}
		return out
	}
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return policiesIn(ctx, client.InNamespace(o.GetNamespace()))
	})
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return policiesIn(ctx)
	})
	labelsChanged := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
	}}
	// A node's report matters to policies when its health or its failed
	// policies change; other syncs are caught by the pending recheck.
	nodeReportChanged := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*proxyv1alpha1.ProxyNode)
		n, ok2 := e.ObjectNew.(*proxyv1alpha1.ProxyNode)
		if !ok1 || !ok2 {
			return true
		}
		return ProxyNodeHealth(o) != ProxyNodeHealth(n) || o.Spec.GatewayConfig != n.Spec.GatewayConfig ||
			o.Status.FailedPolicyCount != n.Status.FailedPolicyCount ||
			!equality.Semantic.DeepEqual(o.Status.FailedPolicies, n.Status.FailedPolicies)
	}}
	return ctrl.NewControllerManagedBy(mgr).
		For(&proxyv1alpha1.ProxyPolicy{}).
		Watches(&corev1.Service{}, byNamespace, builder.WithPredicates(labelsChanged)).
		Watches(&proxyv1alpha1.ProxyPolicy{}, byNamespace, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&proxyv1alpha1.ProxyNode{}, all, builder.WithPredicates(nodeReportChanged)).
		Watches(&proxyv1alpha1.GatewayConfig{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("proxypolicy").
		Complete(r)
}
