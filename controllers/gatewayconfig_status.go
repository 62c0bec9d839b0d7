package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/rollout"
	"github.com/synterix/synterix-kube-proxy/controllers/selection"
)

// rolloutStatus fills st from one step of the rollout: the revisions, the node
// counts and backends, then the conditions, which read the counts.
func rolloutStatus(gen int64, st *proxyv1alpha1.GatewayConfigStatus, obs *observation, pl *rolloutPlan, assigned map[string]string) {
	if pl.Complete && pl.target != "" {
		st.CurrentRevision = pl.target
	}
	st.UpdatedRevision = pl.target
	st.PendingRevision = pl.pending
	countNodes(st, obs, pl, assigned)
	setRolloutConditions(gen, st, pl, obs.lost)
}

// countNodes fills the node counts and the backends of st.
func countNodes(st *proxyv1alpha1.GatewayConfigStatus, obs *observation, pl *rolloutPlan, assigned map[string]string) {
	st.DesiredNodes = int32(len(obs.won))
	st.UpdatedNodes, st.ReadyNodes = 0, 0
	backends := map[proxyv1alpha1.Backend]int32{}
	for _, n := range obs.won {
		// Updated: assigned the target, with no agent pod left that runs
		// another pod template (as a DaemonSet counts updated pods).
		if assigned[n.Name] == pl.target && pl.target != "" && obs.podsRun(n.Name, pl.target) {
			st.UpdatedNodes++
		}
		if _, changed := pl.Assign[n.Name]; !changed && pl.health[n.Name] == rollout.Ready {
			st.ReadyNodes++
		}
		if pn := obs.own(n.Name); pn != nil && pn.Status.Backend != "" {
			backends[pn.Status.Backend]++
		}
	}
	st.FailedNodes = int32(len(pl.Failed))
	st.FailedNodeNames = boundedNames(pl.Failed)
	st.Backends = nil
	for _, b := range []proxyv1alpha1.Backend{proxyv1alpha1.BackendIPTables, proxyv1alpha1.BackendIPVS, proxyv1alpha1.BackendNFTables} {
		if backends[b] > 0 {
			st.Backends = append(st.Backends, proxyv1alpha1.BackendCount{Backend: b, Nodes: backends[b]})
		}
	}
}

// setRolloutConditions sets Degraded and Stalled (something needs a human),
// Progressing (a rollout is under way), Reconciling (a rollout is under way
// and nothing needs a human: kstatus's InProgress never hides its Failed)
// and Ready (the summary), in that order of precedence. Waiting for approval
// is Ready: the nodes run what the spec, approval included, asks for, and a
// GitOps pipeline must not hang on a human whose approval is itself a commit.
func setRolloutConditions(gen int64, st *proxyv1alpha1.GatewayConfigStatus, pl *rolloutPlan, lost []selection.Lost) {
	degradedReason, degradedMsg := degradation(st, pl, lost)
	degraded := degradedReason != ""
	if degraded {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionDegraded, true, degradedReason, degradedMsg, gen)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionStalled, true, degradedReason, degradedMsg, gen)
	} else {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionDegraded, false, proxyv1alpha1.ReasonAsExpected, "", gen)
		setCondition(&st.Conditions, proxyv1alpha1.ConditionStalled, false, proxyv1alpha1.ReasonAsExpected, "", gen)
	}

	progressing := pl.target != "" && !pl.Complete && !pl.TargetFailed
	var reason, msg string
	switch {
	case progressing:
		reason = proxyv1alpha1.ReasonRollingOut
		msg = fmt.Sprintf("Rolling out revision %s: %d of %d nodes updated, at most %d at a time", pl.target, st.UpdatedNodes, st.DesiredNodes, pl.MaxUnavailable)
	case pl.pending != "":
		reason = proxyv1alpha1.ReasonAwaitingApproval
		msg = fmt.Sprintf("Revision %s waits for approval: set spec.rollout.approvedRevision to %s", pl.pending, pl.pending)
	case degraded && (pl.TargetFailed || pl.failedRev != ""):
		reason, msg = degradedReason, degradedMsg
	default:
		reason = proxyv1alpha1.ReasonRolledOut
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionProgressing, progressing, reason, msg, gen)
	if progressing && degraded {
		// kstatus reads the first of Reconciling and Stalled that is true:
		// only one may be.
		reason, msg = degradedReason, degradedMsg
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionReconciling, progressing && !degraded, reason, msg, gen)

	ready := false
	switch {
	case degraded:
		reason, msg = degradedReason, degradedMsg
	case progressing:
		reason, msg = proxyv1alpha1.ReasonRollingOut, fmt.Sprintf("Rolling out revision %s", pl.target)
	case pl.target == "":
		ready = pl.pending != ""
		reason = proxyv1alpha1.ReasonNoApprovedRevision
		msg = fmt.Sprintf("No revision is approved yet, so no node runs this GatewayConfig: set spec.rollout.approvedRevision to %s", pl.pending)
	case pl.pending != "":
		ready = true
		reason = proxyv1alpha1.ReasonAwaitingApproval
		msg = fmt.Sprintf("Revision %s runs on every node; revision %s waits for approval", pl.target, pl.pending)
	default:
		ready = true
		reason, msg = proxyv1alpha1.ReasonRolledOut, fmt.Sprintf("Revision %s runs on all %d nodes", pl.target, st.DesiredNodes)
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionReady, ready, reason, msg, gen)
}

// degradation returns the reason and message of Degraded, or "" when nothing
// needs a human: a failed or rolled-back rollout, nodes failing at their
// revision, or nodes an older GatewayConfig won.
func degradation(st *proxyv1alpha1.GatewayConfigStatus, pl *rolloutPlan, lost []selection.Lost) (string, string) {
	var reason, msg string
	switch {
	case pl.TargetFailed || pl.failedRev != "":
		rev := pl.target
		reason = proxyv1alpha1.ReasonRolloutFailed
		if pl.failedRev != "" {
			rev = pl.failedRev
			reason = proxyv1alpha1.ReasonRolledBack
		}
		msg = fmt.Sprintf("Revision %s failed", rev)
		if len(pl.Failed) > 0 {
			msg += " on " + nameList(pl.Failed, len(pl.Failed))
		}
		if reason == proxyv1alpha1.ReasonRolledBack {
			msg += fmt.Sprintf("; rolled back to %s. Change the spec, or remove the %s annotation of ControllerRevision %s to retry", st.CurrentRevision, RolloutFailedAnnotation, rev)
		} else {
			msg += "; rollout stopped"
		}
	case len(pl.Failed) > 0:
		reason = proxyv1alpha1.ReasonNodesFailing
		msg = "Nodes report a failure: " + nameList(pl.Failed, len(pl.Failed))
	case len(lost) > 0:
		names := make([]string, 0, len(lost))
		for _, l := range lost {
			names = append(names, l.Node)
		}
		return proxyv1alpha1.ReasonNodeConflict, fmt.Sprintf("Nodes selected by an older GatewayConfig (%s) run that one: %s", lost[0].Winner, nameList(names, len(names)))
	}
	if reason != "" && len(lost) > 0 {
		msg += fmt.Sprintf("; %d selected nodes run an older GatewayConfig", len(lost))
	}
	return reason, msg
}

// invalidSpec sets every condition to say that the spec cannot be acted on,
// and posts a Warning Event the first time for a generation.
func (r *GatewayConfigReconciler) invalidSpec(gc *proxyv1alpha1.GatewayConfig, before, st *proxyv1alpha1.GatewayConfigStatus, err error) {
	gen, msg := gc.Generation, err.Error()
	for _, typ := range []string{proxyv1alpha1.ConditionDegraded, proxyv1alpha1.ConditionStalled} {
		setCondition(&st.Conditions, typ, true, proxyv1alpha1.ReasonInvalidSpec, msg, gen)
	}
	for _, typ := range []string{proxyv1alpha1.ConditionReady, proxyv1alpha1.ConditionProgressing, proxyv1alpha1.ConditionReconciling} {
		setCondition(&st.Conditions, typ, false, proxyv1alpha1.ReasonInvalidSpec, msg, gen)
	}
	if !meta.IsStatusConditionTrue(before.Conditions, proxyv1alpha1.ConditionDegraded) || before.ObservedGeneration != gen {
		r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, proxyv1alpha1.ReasonInvalidSpec, "Reconcile", "%s", msg)
	}
}

// announce posts the Events and logs of a step that changed the state of the
// rollout, judged against the status the step started from (before): a
// stopped rollout, a completed one and a new node conflict. A rollback is
// announced by rollBack, with its mark.
func (r *GatewayConfigReconciler) announce(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, before *proxyv1alpha1.GatewayConfigStatus, obs *observation, pl *rolloutPlan) {
	log := logf.FromContext(ctx)
	wasDegraded := meta.IsStatusConditionTrue(before.Conditions, proxyv1alpha1.ConditionDegraded)
	if pl.TargetFailed && !pl.RolledBack && (before.UpdatedRevision != pl.target || !wasDegraded) {
		r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, proxyv1alpha1.ReasonRolloutFailed, "Rollout",
			"Revision %s failed on %s; rollout stopped", pl.target, nameList(pl.Failed, len(pl.Failed)))
		log.Info("Rollout failed, stopped", "revision", pl.target, "failedNodes", boundedNames(pl.Failed))
	}
	if pl.Complete && pl.target != "" && before.CurrentRevision != pl.target {
		if before.CurrentRevision != "" || len(obs.won) > 0 {
			r.Recorder.Eventf(gc, nil, corev1.EventTypeNormal, proxyv1alpha1.ReasonRolledOut, "Rollout", "Revision %s runs on all %d nodes", pl.target, len(obs.won))
		}
		log.Info("Rollout complete", "revision", pl.target, "nodes", len(obs.won))
	}
	if len(obs.lost) > 0 && !wasDegraded {
		r.Recorder.Eventf(gc, nil, corev1.EventTypeWarning, proxyv1alpha1.ReasonNodeConflict, "SelectNodes",
			"%d selected nodes run an older GatewayConfig, such as %s", len(obs.lost), obs.lost[0].Winner)
	}
}

// recordRolloutMetrics exports the node counts of st.
func recordRolloutMetrics(gcName string, st *proxyv1alpha1.GatewayConfigStatus) {
	for state, v := range map[string]int32{"desired": st.DesiredNodes, "updated": st.UpdatedNodes, "ready": st.ReadyNodes, "failed": st.FailedNodes} {
		rolloutNodes.WithLabelValues(gcName, state).Set(float64(v))
	}
}

// patchStatus writes st as the status of gc's current generation, unless
// nothing changed since orig.
func (r *GatewayConfigReconciler) patchStatus(ctx context.Context, gc, orig *proxyv1alpha1.GatewayConfig, st *proxyv1alpha1.GatewayConfigStatus) error {
	st.ObservedGeneration = gc.Generation
	if statusEqual(orig.Status, *st) {
		return nil
	}
	gc.Status = *st
	return r.Status().Patch(ctx, gc, client.MergeFrom(orig), FieldOwner)
}
