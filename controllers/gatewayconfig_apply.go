package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/internal/traceparent"
)

// apply writes a plan: it marks a rolled-back revision failed, assigns
// revisions to the ProxyNodes of the won nodes, deletes the ProxyNodes of
// nodes no longer won, updates the agent DaemonSet to the target revision's
// pod template, replaces the agent pods of the nodes assigned it that run
// another, and prunes the revision history. It returns the revision each
// won node is assigned afterwards.
func (r *GatewayConfigReconciler) apply(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation, pl *rolloutPlan, now time.Time) (map[string]string, error) {
	// The pod template of the target revision, checked before anything is
	// written: a revision whose image is not (or no longer) allowed is not
	// rolled out at all.
	var tmpl *podTemplate
	if pl.target != "" {
		var err error
		if tmpl, err = r.targetTemplate(gc, obs, pl.target); err != nil {
			return nil, reconcile.TerminalError(fmt.Errorf("revision %s: %w", pl.target, err))
		}
	}
	if pl.RolledBack {
		if err := r.rollBack(ctx, gc, obs, pl, now); err != nil {
			return nil, err
		}
	}
	assigned, err := r.assignNodes(ctx, gc, obs, pl, now)
	if err != nil {
		return nil, err
	}
	if err := r.deleteUnwon(ctx, obs); err != nil {
		return nil, err
	}
	// The agent DaemonSet runs the pod template of the target revision; the
	// pods of the nodes assigned it are replaced in the rollout's order.
	if tmpl != nil {
		lostNames := make([]string, 0, len(obs.lost))
		for _, l := range obs.lost {
			lostNames = append(lostNames, l.Node)
		}
		if err := r.ensureDaemonSet(ctx, gc, tmpl, lostNames); err != nil {
			return nil, err
		}
		if err := r.replaceAgentPods(ctx, gc, obs, pl, assigned); err != nil {
			return nil, err
		}
	}
	return assigned, r.pruneRevisions(ctx, obs, pl, assigned)
}

// targetTemplate returns the agent pod template of the target revision,
// refusing one with an image that is not allowed. A revision an earlier
// release wrote, with no template of its own and none adopted, and no
// DaemonSet to adopt one from, runs the template this operator builds for
// its agent settings.
func (r *GatewayConfigReconciler) targetTemplate(gc *proxyv1alpha1.GatewayConfig, obs *observation, target string) (*podTemplate, error) {
	data, err := proxyv1alpha1.DecodeRevisionData(obs.revs[target].Data.Raw)
	if err != nil {
		return nil, err
	}
	t := obs.templates[target]
	if t == nil {
		if t, err = newPodTemplate(agentPodTemplate(gc.Name, data.Spec.Agent, r.Agent), true); err != nil {
			return nil, err
		}
		obs.templates[target] = t
	}
	if err := r.Agent.checkTemplateImages(&t.Template); err != nil {
		return nil, err
	}
	return t, nil
}

// rollBack marks the failed target revision, so that it is not rolled out
// again until the spec changes or a human clears the mark, and announces the
// rollback: the Event goes with the mark, which no later step repeats.
func (r *GatewayConfigReconciler) rollBack(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation, pl *rolloutPlan, now time.Time) error {
	if err := r.markFailed(ctx, obs.revs[pl.target], pl.Failed, now); err != nil {
		return err
	}
	rollbacks.WithLabelValues(gc.Name).Inc()
	r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, proxyv1alpha1.ReasonRolledBack, "Rollback",
		"Revision %s failed on %s; rolling back to %s", pl.target, nameList(pl.Failed, len(pl.Failed)), pl.lastGood)
	logf.FromContext(ctx).Info("Rollout failed, rolling back", "revision", pl.target, "lastGood", pl.lastGood, "failedNodes", boundedNames(pl.Failed))
	return nil
}

// assignNodes writes the plan's assignments to the ProxyNodes of the won
// nodes, and returns the revision every won node is assigned afterwards.
func (r *GatewayConfigReconciler) assignNodes(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation, pl *rolloutPlan, now time.Time) (map[string]string, error) {
	assigned := map[string]string{}
	batches := map[string][]string{}
	for _, n := range obs.won {
		rev, changed := pl.Assign[n.Name]
		if !changed {
			if pn := obs.own(n.Name); pn != nil {
				assigned[n.Name] = pn.Spec.Revision
			}
			continue
		}
		assigned[n.Name] = rev
		batches[rev] = append(batches[rev], n.Name)
	}
	revs := make([]string, 0, len(batches))
	for rev := range batches {
		revs = append(revs, rev)
	}
	sort.Strings(revs)
	for _, rev := range revs {
		if err := r.assignBatch(ctx, gc, obs, rev, batches[rev], now); err != nil {
			return nil, err
		}
	}
	if len(pl.Assign) > 0 {
		logf.FromContext(ctx).V(1).Info("Assigned revisions", "nodes", len(pl.Assign), "target", pl.target)
	}
	return assigned, nil
}

// assignBatch assigns revision rev to the ProxyNodes of nodes, in the
// span of the rollout batch, whose trace context each ProxyNode carries
// for its agent.
func (r *GatewayConfigReconciler) assignBatch(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation, rev string, nodes []string, now time.Time) (err error) {
	ctx, span := r.startBatch(ctx, obs, rev, nodes)
	defer func() { endSpan(span, err) }()
	byName := make(map[string]*corev1.Node, len(obs.won))
	for _, n := range obs.won {
		byName[n.Name] = n
	}
	for _, name := range nodes {
		if err := r.assign(ctx, gc, byName[name], obs.byName[name], rev, now); err != nil {
			return err
		}
	}
	return nil
}

// traceAnnotation is the traceparent annotation of the span in ctx, or nil
// when tracing is off.
func traceAnnotation(ctx context.Context) map[string]string {
	if tp := traceparent.Of(ctx); tp != "" {
		return map[string]string{proxyv1alpha1.TraceParentAnnotation: tp}
	}
	return nil
}

// deleteUnwon deletes this GatewayConfig's ProxyNodes of nodes it no longer
// wins; their agents remove their rules.
func (r *GatewayConfigReconciler) deleteUnwon(ctx context.Context, obs *observation) error {
	won := make(map[string]bool, len(obs.won))
	for _, n := range obs.won {
		won[n.Name] = true
	}
	for i := range obs.proxyNodes {
		pn := &obs.proxyNodes[i]
		if pn.Spec.GatewayConfig != obs.gcName || won[pn.Name] {
			continue
		}
		if err := r.Delete(ctx, pn, client.Preconditions{UID: &pn.UID, ResourceVersion: &pn.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return err
		}
		proxyNodeWrites.WithLabelValues("delete").Inc()
	}
	return nil
}

// pruneRevisions deletes the oldest revisions beyond the history limit,
// keeping every revision in use.
func (r *GatewayConfigReconciler) pruneRevisions(ctx context.Context, obs *observation, pl *rolloutPlan, assigned map[string]string) error {
	keep := map[string]bool{pl.lastGood: true, pl.target: true, pl.desired: true, pl.pending: true, pl.approved: true, pl.failedRev: true}
	for _, rev := range assigned {
		keep[rev] = true
	}
	list := make([]appsv1.ControllerRevision, 0, len(obs.revs))
	for _, rev := range obs.revs {
		list = append(list, *rev)
	}
	for _, rev := range revisionsToPrune(list, keep, RevisionHistoryLimit) {
		if err := r.Delete(ctx, &rev); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
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
		for k, v := range traceAnnotation(ctx) {
			pn.Annotations[k] = v
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
	delete(pn.Annotations, proxyv1alpha1.TraceParentAnnotation)
	for k, v := range traceAnnotation(ctx) {
		pn.Annotations[k] = v
	}
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

// ensureDaemonSet creates the agent DaemonSet of gc, or puts back what the
// operator wants of it: when that changed (the spec-hash annotation), and
// when anyone else changed its spec since the operator's last write (it no
// longer hashes to the live-spec-hash annotation). The write replaces the
// whole spec, so what a manual edit added goes too.
func (r *GatewayConfigReconciler) ensureDaemonSet(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, tmpl *podTemplate, lost []string) error {
	want := agentDaemonSet(gc, tmpl, lost, r.Agent)
	wantHash, err := hashOf(struct {
		Labels map[string]string
		Spec   appsv1.DaemonSetSpec
	}{want.Labels, want.Spec})
	if err != nil {
		return err
	}
	if err := controllerutil.SetControllerReference(gc, want, r.Scheme); err != nil {
		return err
	}
	cur := &appsv1.DaemonSet{}
	err = r.Get(ctx, client.ObjectKeyFromObject(want), cur)
	if apierrors.IsNotFound(err) {
		want.Annotations = map[string]string{specHashAnnotation: wantHash}
		return r.writeDaemonSet(ctx, want, true)
	}
	if err != nil {
		return err
	}
	live, err := hashOf(cur.Spec)
	if err != nil {
		return err
	}
	if cur.Annotations[specHashAnnotation] == wantHash && cur.Annotations[liveSpecHashAnnotation] == live {
		return nil
	}
	if cur.Annotations[specHashAnnotation] == wantHash {
		logf.FromContext(ctx).Info("Agent DaemonSet changed by someone else; reverting", "daemonSet", klogRef(cur))
	}
	next := cur.DeepCopy()
	next.Labels = want.Labels
	next.OwnerReferences = want.OwnerReferences
	next.Spec = want.Spec
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[specHashAnnotation] = wantHash
	return r.writeDaemonSet(ctx, next, false)
}

// writeDaemonSet creates or updates ds with the hash of its spec as the API
// server stores it (defaults included), learnt by a dry run of the same
// write, in the live-spec-hash annotation. Should the stored spec still
// differ (a mutating webhook that is not deterministic), the annotation is
// corrected so that the next reconcile does not write again.
func (r *GatewayConfigReconciler) writeDaemonSet(ctx context.Context, ds *appsv1.DaemonSet, create bool) error {
	write := func(obj *appsv1.DaemonSet, dryRun bool) error {
		var dr []string
		if dryRun {
			dr = []string{metav1.DryRunAll}
		}
		if create {
			return r.Create(ctx, obj, FieldOwner, &client.CreateOptions{DryRun: dr})
		}
		return r.Update(ctx, obj, FieldOwner, &client.UpdateOptions{DryRun: dr})
	}
	dry := ds.DeepCopy()
	if err := write(dry, true); err != nil {
		return client.IgnoreAlreadyExists(err)
	}
	stored, err := hashOf(dry.Spec)
	if err != nil {
		return err
	}
	ds.Annotations[liveSpecHashAnnotation] = stored
	if err := write(ds, false); err != nil {
		return client.IgnoreAlreadyExists(err)
	}
	if got, err := hashOf(ds.Spec); err != nil || got == stored {
		return err
	}
	patch := client.MergeFrom(ds.DeepCopy())
	ds.Annotations[liveSpecHashAnnotation], _ = hashOf(ds.Spec)
	return r.Patch(ctx, ds, patch, FieldOwner)
}

// hashOf is a short hash of v's JSON.
func hashOf(v any) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8]), nil
}

func klogRef(o client.Object) string { return o.GetNamespace() + "/" + o.GetName() }
