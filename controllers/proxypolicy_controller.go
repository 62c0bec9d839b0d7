package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// Reasons of the ProxyPolicy conditions beyond those of the API.
const (
	ReasonInvalidTarget = "InvalidTarget"
	ReasonNodesFailed   = "NodesFailed"
	ReasonNoNodes       = "NoNodes"
)

// pendingRecheck is how often a policy not yet programmed everywhere is looked
// at again (from the cache: it costs no API request). Nodes' syncs are not
// watched one by one, so that 1,000 nodes syncing do not wake every policy.
const pendingRecheck = 2 * time.Second

// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxypolicies/status,verbs=get;update;patch
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

// Reconcile computes one ProxyPolicy's status.
func (r *ProxyPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &proxyv1alpha1.ProxyPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		r.seen.Delete(p.UID)
		return ctrl.Result{}, nil
	}
	st, requeue, err := r.compute(ctx, p)
	if err != nil {
		return ctrl.Result{}, err
	}
	st.ObservedGeneration = p.Generation
	if !equality.Semantic.DeepEqual(p.Status, *st) {
		orig := p.DeepCopy()
		before := conditionReason(p.Status.Conditions, proxyv1alpha1.ConditionAccepted)
		p.Status = *st
		if err := r.Status().Patch(ctx, p, client.MergeFrom(orig), FieldOwner); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if after := conditionReason(st.Conditions, proxyv1alpha1.ConditionAccepted); after != before && r.Recorder != nil {
			typ := corev1.EventTypeNormal
			if after != proxyv1alpha1.ReasonAccepted {
				typ = corev1.EventTypeWarning
			}
			r.Recorder.Eventf(p, nil, typ, after, "Resolve", "%s", conditionMessage(st.Conditions, proxyv1alpha1.ConditionAccepted))
		}
	}
	if requeue {
		return ctrl.Result{RequeueAfter: pendingRecheck}, nil
	}
	return ctrl.Result{}, nil
}

// resolved is what one policy's targets resolve to.
type resolved struct {
	existing []string          // Services that exist, sorted
	missing  []string          // targetRefs naming no Service, sorted
	invalid  map[string]string // targetRefs the policy cannot use, with why
}

func resolve(p *proxyv1alpha1.ProxyPolicy, svcs map[string]*corev1.Service) resolved {
	res := resolved{invalid: map[string]string{}}
	seen := map[string]bool{}
	for _, ref := range p.Spec.TargetRefs {
		switch {
		case ref.Group != "" || (ref.Kind != "" && ref.Kind != "Service"):
			res.invalid[ref.Name] = fmt.Sprintf("only Services (group \"\", kind Service) can be targets, not %s/%s", ref.Group, ref.Kind)
			continue
		case ref.Namespace != "" && ref.Namespace != p.Namespace:
			res.invalid[ref.Name] = fmt.Sprintf("targets must be in the policy's namespace %s, not %s", p.Namespace, ref.Namespace)
			continue
		}
		if seen[ref.Name] {
			continue
		}
		seen[ref.Name] = true
		if _, ok := svcs[ref.Name]; ok {
			res.existing = append(res.existing, ref.Name)
		} else {
			res.missing = append(res.missing, ref.Name)
		}
	}
	if p.Spec.Selector != nil {
		if sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err == nil {
			for name, s := range svcs {
				if !seen[name] && sel.Matches(labels.Set(s.Labels)) {
					seen[name] = true
					res.existing = append(res.existing, name)
				}
			}
		}
	}
	sort.Strings(res.existing)
	sort.Strings(res.missing)
	return res
}

func (r *ProxyPolicyReconciler) compute(ctx context.Context, p *proxyv1alpha1.ProxyPolicy) (*proxyv1alpha1.ProxyPolicyStatus, bool, error) {
	var svcList corev1.ServiceList
	if err := r.List(ctx, &svcList, client.InNamespace(p.Namespace)); err != nil {
		return nil, false, err
	}
	svcs := make(map[string]*corev1.Service, len(svcList.Items))
	for i := range svcList.Items {
		svcs[svcList.Items[i].Name] = &svcList.Items[i]
	}
	var policies proxyv1alpha1.ProxyPolicyList
	if err := r.List(ctx, &policies, client.InNamespace(p.Namespace)); err != nil {
		return nil, false, err
	}

	// Conflicts: the oldest policy that targets a Service wins it.
	winner := map[string]*proxyv1alpha1.ProxyPolicy{}
	for i := range policies.Items {
		q := &policies.Items[i]
		if !q.DeletionTimestamp.IsZero() {
			continue
		}
		for _, s := range resolve(q, svcs).existing {
			w := winner[s]
			if w == nil || selection.Older(q.CreationTimestamp.Time, q.Name, w.CreationTimestamp.Time, w.Name) {
				winner[s] = q
			}
		}
	}
	res := resolve(p, svcs)
	st := p.Status.DeepCopy()
	st.Targets = nil
	var accepted []string
	conflictWith := ""
	for _, s := range res.existing {
		t := proxyv1alpha1.ResolvedTarget{Name: s, Accepted: true}
		if w := winner[s]; w != nil && w.UID != p.UID {
			t.Accepted = false
			t.Reason = fmt.Sprintf("ProxyPolicy %s, which is older, targets this Service", w.Name)
			conflictWith = w.Name
		} else {
			accepted = append(accepted, s)
		}
		st.Targets = append(st.Targets, t)
	}
	for _, s := range res.missing {
		st.Targets = append(st.Targets, proxyv1alpha1.ResolvedTarget{Name: s, Reason: "Service not found"})
	}
	invalidNames := make([]string, 0, len(res.invalid))
	for s := range res.invalid {
		invalidNames = append(invalidNames, s)
	}
	sort.Strings(invalidNames)
	for _, s := range invalidNames {
		st.Targets = append(st.Targets, proxyv1alpha1.ResolvedTarget{Name: s, Reason: res.invalid[s]})
	}
	sort.Slice(st.Targets, func(i, j int) bool { return st.Targets[i].Name < st.Targets[j].Name })
	// targets is a map list keyed by name: keep one entry per name.
	dedup := st.Targets[:0]
	for i, t := range st.Targets {
		if i > 0 && t.Name == st.Targets[i-1].Name {
			continue
		}
		dedup = append(dedup, t)
	}
	st.Targets = dedup
	if len(st.Targets) > MaxTargets {
		st.Targets = st.Targets[:MaxTargets]
	}
	if len(st.Targets) == 0 {
		st.Targets = nil
	}

	// The nodes that should run it: those of the GatewayConfigs that handle
	// the accepted target Services (by service-proxy-name).
	proxyNames := map[string]bool{}
	for _, s := range accepted {
		proxyNames[svcs[s].Labels[proxyv1alpha1.ServiceProxyNameLabel]] = true
	}
	var gcs proxyv1alpha1.GatewayConfigList
	if err := r.List(ctx, &gcs); err != nil {
		return nil, false, err
	}
	configs := map[string]bool{}
	for _, g := range gcs.Items {
		if proxyNames[g.Spec.ServiceProxyName] {
			configs[g.Name] = true
		}
	}
	// Read-only: no copy of every ProxyNode for every policy.
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, err
	}
	since := r.since(p)
	counts := proxyv1alpha1.PolicyNodeCounts{}
	var failedNames []string
	unsupported := 0
	failReason := ""
	for i := range pns.Items {
		pn := &pns.Items[i]
		if !configs[pn.Spec.GatewayConfig] {
			continue
		}
		counts.Total++
		failed := false
		for _, f := range pn.Status.FailedPolicies {
			if f.Namespace == p.Namespace && f.Name == p.Name {
				failed = true
				if f.Reason == proxyv1alpha1.ReasonUnsupportedByBackend {
					unsupported++
				}
				if failReason == "" {
					failReason = f.Reason + ": " + f.Message
				}
			}
		}
		// A node that failed more policies than it lists cannot say whether
		// this one is among them: it counts neither way.
		unknown := !failed && int(pn.Status.FailedPolicyCount) > len(pn.Status.FailedPolicies)
		switch {
		case failed:
			counts.Failed++
			failedNames = append(failedNames, pn.Name)
		case unknown:
		case ProxyNodeHealth(pn) == NodeReady && pn.Status.LastSync != nil && pn.Status.LastSync.Time != nil &&
			!pn.Status.LastSync.Time.Time.Before(since.Truncate(time.Second)):
			counts.Programmed++
		}
	}
	sort.Strings(failedNames)
	counts.FailedNodeNames = boundedNames(failedNames)
	if len(counts.FailedNodeNames) == 0 {
		counts.FailedNodeNames = nil
	}
	st.Nodes = counts

	gen := p.Generation
	var acceptedOK bool
	var aReason, aMsg string
	switch {
	case len(res.existing) == 0 && len(res.invalid) > 0 && len(res.missing) == 0:
		aReason, aMsg = ReasonInvalidTarget, "No usable target: "+res.invalid[invalidNames[0]]
	case len(res.existing) == 0:
		aReason, aMsg = proxyv1alpha1.ReasonTargetNotFound, "No target Service exists"
		if len(res.missing) > 0 {
			aMsg += ": " + nameList(res.missing, len(res.missing))
		}
	case len(accepted) == 0:
		aReason, aMsg = proxyv1alpha1.ReasonConflicted, fmt.Sprintf("Every target Service is taken by an older ProxyPolicy, such as %s", conflictWith)
	case unsupported > 0:
		aReason, aMsg = proxyv1alpha1.ReasonUnsupportedByBackend, fmt.Sprintf("%d nodes' backends cannot run this policy, such as %s", unsupported, nameList(failedNames, len(failedNames)))
	default:
		acceptedOK = true
		aReason, aMsg = proxyv1alpha1.ReasonAccepted, fmt.Sprintf("Attached to %d of %d target Services", len(accepted), len(res.existing)+len(res.missing)+len(res.invalid))
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionAccepted, acceptedOK, aReason, aMsg, gen)

	requeue := false
	stalled, reconciling := false, false
	var pReason, pMsg string
	programmed := false
	switch {
	case !acceptedOK && aReason != proxyv1alpha1.ReasonUnsupportedByBackend:
		pReason, pMsg = aReason, "Not accepted: "+aMsg
		stalled = true
	case counts.Failed > 0:
		pReason = ReasonNodesFailed
		if unsupported > 0 {
			pReason = proxyv1alpha1.ReasonUnsupportedByBackend
		}
		pMsg = fmt.Sprintf("%d of %d nodes failed to program it (%s): %s", counts.Failed, counts.Total, truncate(failReason, 200), nameList(failedNames, len(failedNames)))
		stalled = true
	case counts.Total == 0:
		pReason, pMsg = ReasonNoNodes, "No node runs the target Services: no GatewayConfig handles their service-proxy-name"
	case counts.Programmed == counts.Total:
		programmed = true
		pReason, pMsg = proxyv1alpha1.ReasonProgrammed, fmt.Sprintf("Programmed on all %d nodes", counts.Total)
	default:
		pReason, pMsg = proxyv1alpha1.ReasonPending, fmt.Sprintf("Programmed on %d of %d nodes", counts.Programmed, counts.Total)
		reconciling, requeue = true, true
	}
	// Nodes that have not reported the policy yet are looked at again soon,
	// whatever the conditions say.
	if acceptedOK || aReason == proxyv1alpha1.ReasonUnsupportedByBackend {
		requeue = requeue || counts.Programmed+counts.Failed < counts.Total
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionProgrammed, programmed, pReason, pMsg, gen)
	if reconciling {
		setCondition(&st.Conditions, ConditionReconciling, true, pReason, pMsg, gen)
	} else {
		setCondition(&st.Conditions, ConditionReconciling, false, pReason, "", gen)
	}
	if stalled {
		setCondition(&st.Conditions, ConditionStalled, true, pReason, pMsg, gen)
	} else {
		setCondition(&st.Conditions, ConditionStalled, false, ReasonAsExpected, "", gen)
	}
	logf.FromContext(ctx).V(1).Info("Computed policy status", "accepted", aReason, "programmed", counts.Programmed, "failed", counts.Failed, "total", counts.Total)
	return st, requeue, nil
}

func conditionReason(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return c.Reason
		}
	}
	return ""
}

func conditionMessage(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
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
