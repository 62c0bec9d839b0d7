package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/rollout"
	"github.com/synterix/synterix-kube-proxy/controllers/selection"
)

// specHashAnnotation, on an object the operator builds whole, is the hash of
// what the operator wants of it, so that it is written only when that changes.
const specHashAnnotation = "proxy.synterix.io/spec-hash"

// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs/finalizers,verbs=update
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxynodes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,namespace=synterix-system,resources=controllerrevisions,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups=apps,namespace=synterix-system,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=synterix-system,resources=serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=synterix-agent
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// GatewayConfigReconciler runs a GatewayConfig: its agent DaemonSet, its config
// revisions, the ProxyNodes of the nodes it wins and the node-by-node rollout.
type GatewayConfigReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder recorder.EventRecorder
	Agent    AgentOptions
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

func (r *GatewayConfigReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile brings one GatewayConfig one step closer to its spec.
func (r *GatewayConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, rerr error) {
	log := logf.FromContext(ctx)
	gc := &proxyv1alpha1.GatewayConfig{}
	if err := r.Get(ctx, req.NamespacedName, gc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !gc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, gc)
	}
	if !controllerutil.ContainsFinalizer(gc, Finalizer) {
		patch := client.MergeFrom(gc.DeepCopy())
		controllerutil.AddFinalizer(gc, Finalizer)
		return ctrl.Result{}, r.Patch(ctx, gc, patch, FieldOwner)
	}

	orig := gc.DeepCopy()
	st := gc.Status.DeepCopy()
	computed, invalid := false, false
	defer func() {
		if !computed {
			return
		}
		if rerr != nil && !invalid {
			st.ObservedGeneration = orig.Status.ObservedGeneration
		} else {
			st.ObservedGeneration = gc.Generation
		}
		if statusEqual(orig.Status, *st) {
			return
		}
		gc.Status = *st
		if err := r.Status().Patch(ctx, gc, client.MergeFrom(orig), FieldOwner); err != nil && rerr == nil {
			rerr = err
		}
	}()

	res, err := r.reconcileRollout(ctx, gc, st)
	computed = err == nil
	if errors.Is(err, reconcile.TerminalError(nil)) {
		// The spec cannot be acted on: say so, for this generation, and wait
		// for a new one.
		computed, invalid = true, true
		gen := gc.Generation
		msg := err.Error()
		setCondition(&st.Conditions, proxyv1alpha1.ConditionDegraded, true, ReasonInvalidSpec, msg, gen)
		setCondition(&st.Conditions, ConditionStalled, true, ReasonInvalidSpec, msg, gen)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, false, ReasonInvalidSpec, msg, gen)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, false, ReasonInvalidSpec, msg, gen)
		setCondition(&st.Conditions, ConditionReconciling, false, ReasonInvalidSpec, msg, gen)
		if !isTrue(orig.Status.Conditions, proxyv1alpha1.ConditionDegraded) || orig.Status.ObservedGeneration != gen {
			r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, ReasonInvalidSpec, "Reconcile", "%s", msg)
		}
		return ctrl.Result{}, err
	}
	if err != nil {
		if apierrors.IsConflict(err) {
			log.V(1).Info("Conflict, requeueing", "error", err.Error())
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}
	return res, nil
}

// reconcileRollout does the work and fills st.
func (r *GatewayConfigReconciler) reconcileRollout(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, st *proxyv1alpha1.GatewayConfigStatus) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	now := r.now()

	// Node selection: which nodes this GatewayConfig wins.
	won, lost, err := r.selectNodes(ctx, gc)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Config revisions.
	desired, revs, err := r.ensureRevision(ctx, gc)
	if err != nil {
		return ctrl.Result{}, err
	}
	blocked := func(name string) bool {
		rev, ok := revs[name]
		return ok && rev.Annotations[RolloutFailedAnnotation] != ""
	}
	lastGood := st.CurrentRevision
	if _, ok := revs[lastGood]; !ok {
		lastGood = ""
	}
	ro := gc.Spec.Rollout
	if ro == nil {
		ro = &proxyv1alpha1.RolloutSpec{}
	}
	manual := ro.Strategy == proxyv1alpha1.RolloutManual
	var target, pending, failedRev string
	if manual {
		target = lastGood
		if _, ok := revs[ro.ApprovedRevision]; ok {
			if blocked(ro.ApprovedRevision) {
				failedRev = ro.ApprovedRevision
			} else {
				target = ro.ApprovedRevision
			}
		}
		if desired != target && !blocked(desired) {
			pending = desired
		}
	} else {
		target = desired
		if blocked(desired) {
			failedRev, target = desired, lastGood
		}
	}

	// The ProxyNodes of the won nodes, as they are.
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns); err != nil {
		return ctrl.Result{}, err
	}
	byName := make(map[string]*proxyv1alpha1.ProxyNode, len(pns.Items))
	for i := range pns.Items {
		byName[pns.Items[i].Name] = &pns.Items[i]
	}
	in := rollout.Input{
		Target: target, LastGood: lastGood, Now: now,
		MaxUnavailable: ro.MaxUnavailable, AutoRollback: ro.AutoRollback == nil || *ro.AutoRollback,
		ProgressDeadline: 600 * time.Second,
	}
	if ro.ProgressDeadlineSeconds != nil {
		in.ProgressDeadline = time.Duration(*ro.ProgressDeadlineSeconds) * time.Second
	}
	if c := ro.Canary; c != nil {
		if c.NodeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(c.NodeSelector)
			if err != nil {
				return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("invalid canary node selector: %w", err))
			}
			in.CanarySelector = sel
		}
		if c.Count != nil {
			in.CanaryCount = int(*c.Count)
		}
	}
	health := map[string]rollout.Health{}
	for _, n := range won {
		pn := byName[n.Name]
		rn := rollout.Node{Name: n.Name, Labels: n.Labels}
		if pn != nil && pn.Spec.GatewayConfig == gc.Name {
			rn.Assigned = pn.Spec.Revision
			if t, err := time.Parse(time.RFC3339, pn.Annotations[AssignedAtAnnotation]); err == nil {
				rn.AssignedAt = t
			}
			switch ProxyNodeHealth(pn) {
			case NodeReady:
				rn.Health = rollout.Ready
			case NodeFailed:
				rn.Health = rollout.Failed
			}
		}
		health[n.Name] = rn.Health
		in.Nodes = append(in.Nodes, rn)
	}
	plan := rollout.Compute(in)

	if plan.TargetFailed {
		if plan.RolledBack {
			// Remember that this revision failed, so that it is not rolled out
			// again until the spec changes or a human clears the mark.
			if err := r.markFailed(ctx, revs[target], plan.Failed, now); err != nil {
				return ctrl.Result{}, err
			}
			failedRev = target
			rollbacks.WithLabelValues(gc.Name).Inc()
			r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, ReasonRolledBack, "Rollback",
				"Revision %s failed on %s; rolling back to %s", target, nameList(plan.Failed, len(plan.Failed)), lastGood)
			log.Info("Rollout failed, rolling back", "revision", target, "lastGood", lastGood, "failedNodes", boundedNames(plan.Failed))
		} else if st.UpdatedRevision != target || !isTrue(st.Conditions, proxyv1alpha1.ConditionDegraded) {
			r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, ReasonRolloutFailed, "Rollout",
				"Revision %s failed on %s; rollout stopped", target, nameList(plan.Failed, len(plan.Failed)))
			log.Info("Rollout failed, stopped", "revision", target, "failedNodes", boundedNames(plan.Failed))
		}
	}

	// Write the assignments, and drop the ProxyNodes of nodes no longer won.
	assigned := map[string]string{}
	wonSet := map[string]bool{}
	for _, n := range won {
		wonSet[n.Name] = true
		rev, changed := plan.Assign[n.Name]
		pn := byName[n.Name]
		if !changed {
			if pn != nil && pn.Spec.GatewayConfig == gc.Name {
				assigned[n.Name] = pn.Spec.Revision
			}
			continue
		}
		assigned[n.Name] = rev
		if err := r.assign(ctx, gc, n, pn, rev, now); err != nil {
			return ctrl.Result{}, err
		}
	}
	if len(plan.Assign) > 0 {
		log.V(1).Info("Assigned revisions", "nodes", len(plan.Assign), "target", target)
	}
	for i := range pns.Items {
		pn := &pns.Items[i]
		if pn.Spec.GatewayConfig != gc.Name || wonSet[pn.Name] {
			continue
		}
		if err := r.Delete(ctx, pn, client.Preconditions{UID: &pn.UID, ResourceVersion: &pn.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		proxyNodeWrites.WithLabelValues("delete").Inc()
	}

	// The agent DaemonSet runs the agent settings of the target revision.
	if target != "" {
		spec, err := proxyv1alpha1.DecodeRevision(revs[target].Data.Raw)
		if err != nil {
			return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("revision %s: %w", target, err))
		}
		lostNames := make([]string, 0, len(lost))
		for _, l := range lost {
			lostNames = append(lostNames, l.Node)
		}
		if err := r.ensureAgent(ctx, gc, spec.Agent, lostNames); err != nil {
			return ctrl.Result{}, err
		}
	}

	// History: keep what is in use.
	keep := map[string]bool{lastGood: true, target: true, desired: true, pending: true, ro.ApprovedRevision: true, failedRev: true}
	for _, rev := range assigned {
		keep[rev] = true
	}
	if plan.Complete && target != "" {
		keep[target] = true
	}
	list := make([]appsv1.ControllerRevision, 0, len(revs))
	for _, rev := range revs {
		list = append(list, *rev)
	}
	for _, rev := range revisionsToPrune(list, keep, RevisionHistoryLimit) {
		if err := r.Delete(ctx, &rev); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}

	// Status.
	if plan.Complete && target != "" && st.CurrentRevision != target {
		if st.CurrentRevision != "" || len(won) > 0 {
			r.Recorder.Eventf(gc, nil, corev1.EventTypeNormal, ReasonRolledOut, "Rollout", "Revision %s runs on all %d nodes", target, len(won))
		}
		log.Info("Rollout complete", "revision", target, "nodes", len(won))
		st.CurrentRevision = target
	}
	st.UpdatedRevision = target
	st.PendingRevision = pending
	st.DesiredNodes = int32(len(won))
	st.UpdatedNodes, st.ReadyNodes = 0, 0
	backends := map[proxyv1alpha1.Backend]int32{}
	for _, n := range won {
		if assigned[n.Name] == target && target != "" {
			st.UpdatedNodes++
		}
		if _, changed := plan.Assign[n.Name]; !changed && health[n.Name] == rollout.Ready {
			st.ReadyNodes++
		}
		if pn := byName[n.Name]; pn != nil && pn.Spec.GatewayConfig == gc.Name && pn.Status.Backend != "" {
			backends[pn.Status.Backend]++
		}
	}
	st.FailedNodes = int32(len(plan.Failed))
	st.FailedNodeNames = boundedNames(plan.Failed)
	st.Backends = nil
	for _, b := range []proxyv1alpha1.Backend{proxyv1alpha1.BackendIPTables, proxyv1alpha1.BackendIPVS} {
		if backends[b] > 0 {
			st.Backends = append(st.Backends, proxyv1alpha1.BackendCount{Backend: b, Nodes: backends[b]})
		}
	}
	for state, v := range map[string]int32{"desired": st.DesiredNodes, "updated": st.UpdatedNodes, "ready": st.ReadyNodes, "failed": st.FailedNodes} {
		rolloutNodes.WithLabelValues(gc.Name, state).Set(float64(v))
	}
	r.setConditions(gc, st, plan, target, pending, failedRev, lost)
	if len(lost) > 0 && !isTrue(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded) {
		r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, ReasonNodeConflict, "SelectNodes",
			"%d selected nodes run an older GatewayConfig, such as %s", len(lost), lost[0].Winner)
	}

	if plan.RequeueAfter > 0 {
		return ctrl.Result{RequeueAfter: plan.RequeueAfter}, nil
	}
	return ctrl.Result{}, nil
}

// setConditions sets Ready, Progressing, Degraded, and kstatus's Reconciling and
// Stalled.
func (r *GatewayConfigReconciler) setConditions(gc *proxyv1alpha1.GatewayConfig, st *proxyv1alpha1.GatewayConfigStatus, plan rollout.Plan, target, pending, failedRev string, lost []selection.Lost) {
	gen := gc.Generation
	var degradedReason, degradedMsg string
	switch {
	case plan.TargetFailed || failedRev != "":
		rev := target
		degradedReason = ReasonRolloutFailed
		if failedRev != "" {
			rev = failedRev
			degradedReason = ReasonRolledBack
		}
		degradedMsg = fmt.Sprintf("Revision %s failed", rev)
		if len(plan.Failed) > 0 {
			degradedMsg += " on " + nameList(plan.Failed, len(plan.Failed))
		}
		if degradedReason == ReasonRolledBack {
			degradedMsg += fmt.Sprintf("; rolled back to %s. Change the spec, or remove the %s annotation of ControllerRevision %s to retry", st.CurrentRevision, RolloutFailedAnnotation, rev)
		} else {
			degradedMsg += "; rollout stopped"
		}
	case len(plan.Failed) > 0:
		degradedReason = ReasonNodesFailing
		degradedMsg = "Nodes report a failure: " + nameList(plan.Failed, len(plan.Failed))
	case len(lost) > 0:
		degradedReason = ReasonNodeConflict
		names := make([]string, 0, len(lost))
		for _, l := range lost {
			names = append(names, l.Node)
		}
		degradedMsg = fmt.Sprintf("Nodes selected by an older GatewayConfig (%s) run that one: %s", lost[0].Winner, nameList(names, len(names)))
	}
	if degradedReason != "" && len(lost) > 0 && degradedReason != ReasonNodeConflict {
		degradedMsg += fmt.Sprintf("; %d selected nodes run an older GatewayConfig", len(lost))
	}
	degraded := degradedReason != ""
	if degraded {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionDegraded, true, degradedReason, degradedMsg, gen)
		setCondition(&st.Conditions, ConditionStalled, true, degradedReason, degradedMsg, gen)
	} else {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionDegraded, false, ReasonAsExpected, "", gen)
		setCondition(&st.Conditions, ConditionStalled, false, ReasonAsExpected, "", gen)
	}

	progressing := target != "" && !plan.Complete && !plan.TargetFailed
	switch {
	case progressing:
		msg := fmt.Sprintf("Rolling out revision %s: %d of %d nodes updated, at most %d at a time", target, st.UpdatedNodes, st.DesiredNodes, plan.MaxUnavailable)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, true, ReasonRollingOut, msg, gen)
		setCondition(&st.Conditions, ConditionReconciling, true, ReasonRollingOut, msg, gen)
	case pending != "":
		msg := fmt.Sprintf("Revision %s waits for approval: set spec.rollout.approvedRevision to %s", pending, pending)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, false, ReasonAwaitingApproval, msg, gen)
		setCondition(&st.Conditions, ConditionReconciling, false, ReasonAwaitingApproval, msg, gen)
	case degraded && (plan.TargetFailed || failedRev != ""):
		setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, false, degradedReason, degradedMsg, gen)
		setCondition(&st.Conditions, ConditionReconciling, false, degradedReason, degradedMsg, gen)
	default:
		setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, false, ReasonRolledOut, "", gen)
		setCondition(&st.Conditions, ConditionReconciling, false, ReasonRolledOut, "", gen)
	}

	switch {
	case degraded:
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, false, degradedReason, degradedMsg, gen)
	case progressing:
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, false, ReasonRollingOut, fmt.Sprintf("Rolling out revision %s", target), gen)
	case target == "":
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, false, ReasonNoApprovedRevision,
			fmt.Sprintf("No revision is approved yet: set spec.rollout.approvedRevision to %s", pending), gen)
	case pending != "":
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, false, ReasonAwaitingApproval,
			fmt.Sprintf("Revision %s runs on every node; revision %s waits for approval", target, pending), gen)
	default:
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, true, ReasonRolledOut,
			fmt.Sprintf("Revision %s runs on all %d nodes", target, st.DesiredNodes), gen)
	}
}

// selectNodes returns the nodes this GatewayConfig wins, sorted by name, and
// the nodes it selects but an older GatewayConfig won.
func (r *GatewayConfigReconciler) selectNodes(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) ([]*corev1.Node, []selection.Lost, error) {
	var gcs proxyv1alpha1.GatewayConfigList
	if err := r.List(ctx, &gcs); err != nil {
		return nil, nil, err
	}
	// Read-only: no copy of every Node on every reconcile.
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, err
	}
	configs := make([]selection.Config, 0, len(gcs.Items))
	for i := range gcs.Items {
		g := &gcs.Items[i]
		sel, err := selection.Selector(g.Spec.NodeSelector)
		if err != nil {
			if g.Name == gc.Name {
				return nil, nil, reconcile.TerminalError(err)
			}
			continue
		}
		configs = append(configs, selection.Config{Name: g.Name, Created: g.CreationTimestamp.Time, Selector: sel, Deleting: !g.DeletionTimestamp.IsZero()})
	}
	sn := make([]selection.Node, 0, len(nodes.Items))
	byName := make(map[string]*corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !n.DeletionTimestamp.IsZero() {
			continue
		}
		sn = append(sn, selection.Node{Name: n.Name, Labels: n.Labels})
		byName[n.Name] = n
	}
	res := selection.Assign(configs, sn)[gc.Name]
	if res == nil {
		return nil, nil, nil
	}
	won := make([]*corev1.Node, 0, len(res.Won))
	for _, name := range res.Won {
		won = append(won, byName[name])
	}
	return won, res.Lost, nil
}

// ensureRevision makes sure the revision of the current spec exists, and
// returns its name and every revision of the GatewayConfig by name.
func (r *GatewayConfigReconciler) ensureRevision(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) (string, map[string]*appsv1.ControllerRevision, error) {
	data, hash, name, err := RevisionFor(gc.Name, &gc.Spec)
	if err != nil {
		return "", nil, reconcile.TerminalError(err)
	}
	var list appsv1.ControllerRevisionList
	if err := r.List(ctx, &list, client.InNamespace(r.Agent.Namespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return "", nil, err
	}
	revs := make(map[string]*appsv1.ControllerRevision, len(list.Items)+1)
	var maxRev int64
	for i := range list.Items {
		rev := &list.Items[i]
		if !metav1.IsControlledBy(rev, gc) {
			continue
		}
		revs[rev.Name] = rev
		if rev.Revision > maxRev {
			maxRev = rev.Revision
		}
	}
	if _, ok := revs[name]; ok {
		return name, revs, nil
	}
	rev := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: r.Agent.Namespace,
			Labels: map[string]string{
				proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name),
				proxyv1alpha1.RevisionHashLabel:          hash,
			},
		},
		Data:     runtime.RawExtension{Raw: data},
		Revision: maxRev + 1,
	}
	if err := controllerutil.SetControllerReference(gc, rev, r.Scheme); err != nil {
		return "", nil, err
	}
	if err := r.Create(ctx, rev, FieldOwner); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return "", nil, err
		}
		// Created by an earlier reconcile that the cache has not seen yet.
		if err := r.Get(ctx, client.ObjectKeyFromObject(rev), rev); err != nil {
			return "", nil, err
		}
		if string(rev.Data.Raw) != string(data) && !jsonEqual(rev.Data.Raw, data) {
			return "", nil, reconcile.TerminalError(fmt.Errorf("ControllerRevision %s/%s exists with other data", rev.Namespace, rev.Name))
		}
	} else {
		revisionsCreated.WithLabelValues(gc.Name).Inc()
		r.Recorder.Eventf(gc, rev, corev1.EventTypeNormal, "RevisionCreated", "CreateRevision", "Created config revision %s", name)
		logf.FromContext(ctx).Info("Created config revision", "revision", name)
	}
	revs[name] = rev
	return name, revs, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// markFailed annotates a revision whose rollout failed.
func (r *GatewayConfigReconciler) markFailed(ctx context.Context, rev *appsv1.ControllerRevision, failed []string, now time.Time) error {
	if rev == nil || rev.Annotations[RolloutFailedAnnotation] != "" {
		return nil
	}
	patch := client.MergeFrom(rev.DeepCopy())
	if rev.Annotations == nil {
		rev.Annotations = map[string]string{}
	}
	rev.Annotations[RolloutFailedAnnotation] = now.UTC().Format(time.RFC3339) + " on " + nameList(failed, len(failed))
	return r.Patch(ctx, rev, patch, FieldOwner)
}

// assign creates or updates the ProxyNode of node n to run revision rev.
func (r *GatewayConfigReconciler) assign(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, n *corev1.Node, pn *proxyv1alpha1.ProxyNode, rev string, now time.Time) error {
	at := now.UTC().Format(time.RFC3339)
	if pn == nil {
		pn = &proxyv1alpha1.ProxyNode{
			ObjectMeta: metav1.ObjectMeta{
				Name:        n.Name,
				Labels:      map[string]string{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)},
				Annotations: map[string]string{AssignedAtAnnotation: at},
				// Owned by the Node, so that the garbage collector removes it
				// with the Node.
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}},
			},
			Spec: proxyv1alpha1.ProxyNodeSpec{GatewayConfig: gc.Name, Revision: rev},
		}
		if err := r.Create(ctx, pn, FieldOwner); err != nil {
			return err
		}
		proxyNodeWrites.WithLabelValues("create").Inc()
		return nil
	}
	// Taking a ProxyNode over from another GatewayConfig must not race with
	// that one; reassigning our own must not conflict with the agent's
	// status writes, so it needs no lock (the patch carries only our fields).
	patch := client.MergeFrom(pn.DeepCopy())
	if pn.Spec.GatewayConfig != gc.Name {
		patch = client.MergeFromWithOptions(pn.DeepCopy(), client.MergeFromWithOptimisticLock{})
	}
	if pn.Labels == nil {
		pn.Labels = map[string]string{}
	}
	if pn.Annotations == nil {
		pn.Annotations = map[string]string{}
	}
	pn.Labels[proxyv1alpha1.RevisionGatewayConfigLabel] = labelValue(gc.Name)
	pn.Annotations[AssignedAtAnnotation] = at
	pn.Spec.GatewayConfig = gc.Name
	pn.Spec.Revision = rev
	if len(pn.OwnerReferences) == 0 {
		pn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
	}
	if err := r.Patch(ctx, pn, patch, FieldOwner); err != nil {
		return err
	}
	proxyNodeWrites.WithLabelValues("update").Inc()
	return nil
}

// ensureAgent creates or updates the agent's ServiceAccount, ClusterRoleBinding
// and DaemonSet. Each is written only when what the operator wants of it
// changed.
func (r *GatewayConfigReconciler) ensureAgent(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, agent *proxyv1alpha1.AgentSpec, lost []string) error {
	sa := agentServiceAccount(gc, r.Agent)
	if err := r.ensure(ctx, gc, sa, &corev1.ServiceAccount{}, nil); err != nil {
		return err
	}
	crb := agentClusterRoleBinding(gc, r.Agent)
	if err := r.ensure(ctx, gc, crb, &rbacv1.ClusterRoleBinding{}, func(cur, want client.Object) {
		cur.(*rbacv1.ClusterRoleBinding).Subjects = want.(*rbacv1.ClusterRoleBinding).Subjects
	}); err != nil {
		return err
	}
	ds := agentDaemonSet(gc, agent, lost, r.Agent)
	return r.ensure(ctx, gc, ds, &appsv1.DaemonSet{}, func(cur, want client.Object) {
		cur.(*appsv1.DaemonSet).Spec = want.(*appsv1.DaemonSet).Spec
	})
}

// ensure creates want, owned by gc, or, when it exists with another spec hash,
// copies want's labels and (through update) its spec onto it.
func (r *GatewayConfigReconciler) ensure(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, want, cur client.Object, update func(cur, want client.Object)) error {
	raw, err := json.Marshal(want)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:8])
	ann := want.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[specHashAnnotation] = hash
	want.SetAnnotations(ann)
	if err := controllerutil.SetControllerReference(gc, want, r.Scheme); err != nil {
		return err
	}
	err = r.Get(ctx, client.ObjectKeyFromObject(want), cur)
	if apierrors.IsNotFound(err) {
		if err := r.Create(ctx, want, FieldOwner); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if cur.GetAnnotations()[specHashAnnotation] == hash || update == nil {
		return nil
	}
	before := cur.DeepCopyObject().(client.Object)
	curAnn := cur.GetAnnotations()
	if curAnn == nil {
		curAnn = map[string]string{}
	}
	curAnn[specHashAnnotation] = hash
	cur.SetAnnotations(curAnn)
	cur.SetLabels(want.GetLabels())
	update(cur, want)
	return r.Patch(ctx, cur, client.MergeFrom(before), FieldOwner)
}

// finalize removes what the GatewayConfig created, then its finalizer. The
// agents remove their rules when their ProxyNode goes.
func (r *GatewayConfigReconciler) finalize(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) error {
	if !controllerutil.ContainsFinalizer(gc, Finalizer) {
		return nil
	}
	log := logf.FromContext(ctx)
	name := agentObjectName(gc.Name)
	for _, obj := range []client.Object{
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Agent.Namespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Agent.Namespace}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}},
	} {
		if err := r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns, client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return err
	}
	deleted := 0
	for i := range pns.Items {
		pn := &pns.Items[i]
		if pn.Spec.GatewayConfig != gc.Name {
			continue
		}
		if err := r.Delete(ctx, pn, client.Preconditions{UID: &pn.UID, ResourceVersion: &pn.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return err
		}
		deleted++
		proxyNodeWrites.WithLabelValues("delete").Inc()
	}
	if err := r.DeleteAllOf(ctx, &appsv1.ControllerRevision{}, client.InNamespace(r.Agent.Namespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return err
	}
	for _, state := range []string{"desired", "updated", "ready", "failed"} {
		rolloutNodes.DeleteLabelValues(gc.Name, state)
	}
	r.Recorder.Eventf(gc, nil, corev1.EventTypeNormal, ReasonDeleting, "Delete", "Removed the agent DaemonSet and %d ProxyNodes", deleted)
	log.Info("Removed the agent DaemonSet and ProxyNodes", "proxyNodes", deleted)
	patch := client.MergeFrom(gc.DeepCopy())
	controllerutil.RemoveFinalizer(gc, Finalizer)
	return client.IgnoreNotFound(r.Patch(ctx, gc, patch, FieldOwner))
}

func isTrue(conds []metav1.Condition, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// nameList writes at most MaxNames names and how many more there are.
func nameList(names []string, total int) string {
	shown := boundedNames(names)
	s := strings.Join(shown, ", ")
	if total > len(shown) {
		s += " and " + strconv.Itoa(total-len(shown)) + " more"
	}
	return s
}

// SetupWithManager registers the reconciler and its watches.
func (r *GatewayConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	allConfigs := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var gcs proxyv1alpha1.GatewayConfigList
		if err := mgr.GetClient().List(ctx, &gcs); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(gcs.Items))
		for _, g := range gcs.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
		}
		return out
	})
	nodeChanged := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
	configMembership := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
	byProxyNode := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		pn, ok := o.(*proxyv1alpha1.ProxyNode)
		if !ok || pn.Spec.GatewayConfig == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pn.Spec.GatewayConfig}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&proxyv1alpha1.GatewayConfig{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&appsv1.ControllerRevision{}).
		Watches(&proxyv1alpha1.GatewayConfig{}, allConfigs, builder.WithPredicates(configMembership)).
		Watches(&corev1.Node{}, allConfigs, builder.WithPredicates(nodeChanged)).
		Watches(&proxyv1alpha1.ProxyNode{}, byProxyNode).
		Named("gatewayconfig").
		Complete(r)
}
