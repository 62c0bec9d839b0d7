package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// policyStatus computes a policy's status from its attachment and its node
// tally: targets, node counts, Accepted, Programmed, and kstatus's
// Reconciling and Stalled. requeue says that some nodes have not reported the
// policy yet, so it is looked at again soon whatever the conditions say.
func policyStatus(p *proxyv1alpha1.ProxyPolicy, a attachment, t nodeTally) (st *proxyv1alpha1.ProxyPolicyStatus, requeue bool) {
	st = p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	st.Targets = a.status
	st.Nodes = t.counts
	gen := p.Generation

	acceptedOK, aReason, aMsg := acceptance(a, t)
	setCondition(&st.Conditions, proxyv1alpha1.ConditionAccepted, acceptedOK, aReason, aMsg, gen)
	attached := acceptedOK || aReason == proxyv1alpha1.ReasonUnsupportedByBackend

	c := t.counts
	programmed, stalled, reconciling := false, false, false
	var reason, msg string
	switch {
	case !attached:
		reason, msg, stalled = aReason, "Not accepted: "+aMsg, true
	case c.Failed > 0:
		reason = proxyv1alpha1.ReasonNodesFailed
		if t.unsupported > 0 {
			reason = proxyv1alpha1.ReasonUnsupportedByBackend
		}
		msg = fmt.Sprintf("%d of %d nodes failed to program it (%s): %s", c.Failed, c.Total, truncate(t.failReason, 200), nameList(t.failedNames, len(t.failedNames)))
		stalled = true
	case c.Total == 0:
		reason, msg = proxyv1alpha1.ReasonNoNodes, "No node runs the target Services: no GatewayConfig handles their service-proxy-name"
	case c.Programmed == c.Total:
		programmed = true
		reason, msg = proxyv1alpha1.ReasonProgrammed, fmt.Sprintf("Programmed on all %d nodes", c.Total)
	default:
		reason, msg = proxyv1alpha1.ReasonPending, fmt.Sprintf("Programmed on %d of %d nodes", c.Programmed, c.Total)
		reconciling = true
	}
	setCondition(&st.Conditions, proxyv1alpha1.ConditionProgrammed, programmed, reason, msg, gen)
	if reconciling {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReconciling, true, reason, msg, gen)
	} else {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionReconciling, false, reason, "", gen)
	}
	if stalled {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionStalled, true, reason, msg, gen)
	} else {
		setCondition(&st.Conditions, proxyv1alpha1.ConditionStalled, false, proxyv1alpha1.ReasonAsExpected, "", gen)
	}
	requeue = reconciling || (attached && c.Programmed+c.Failed < c.Total)
	return st, requeue
}

// acceptance decides Accepted: whether the policy has a usable target that
// it wins and that every node's backend can run.
func acceptance(a attachment, t nodeTally) (ok bool, reason, msg string) {
	var missing []string
	var invalid []proxyv1alpha1.UnresolvedTarget
	for _, u := range a.targets.Unresolved {
		if u.Reason == proxyv1alpha1.ReasonTargetNotFound {
			missing = append(missing, u.Name)
		} else {
			invalid = append(invalid, u)
		}
	}
	selected := len(a.targets.Selected)
	switch {
	case selected == 0 && a.selectorErr != nil:
		return false, proxyv1alpha1.ReasonInvalidTarget, "No usable target: " + a.selectorErr.Error()
	case selected == 0 && len(invalid) > 0 && len(missing) == 0:
		return false, proxyv1alpha1.ReasonInvalidTarget, "No usable target: " + invalid[0].Message
	case selected == 0:
		msg = "No target Service exists"
		if len(missing) > 0 {
			msg += ": " + nameList(missing, len(missing))
		}
		return false, proxyv1alpha1.ReasonTargetNotFound, msg
	case len(a.accepted) == 0:
		return false, proxyv1alpha1.ReasonConflicted, fmt.Sprintf("Every target Service is taken by an older ProxyPolicy, such as %s", a.conflictWith)
	case t.unsupported > 0:
		return false, proxyv1alpha1.ReasonUnsupportedByBackend, fmt.Sprintf("%d nodes' backends cannot run this policy, such as %s", t.unsupported, nameList(t.failedNames, len(t.failedNames)))
	}
	return true, proxyv1alpha1.ReasonAccepted, fmt.Sprintf("Attached to %d of %d target Services", len(a.accepted), selected+len(a.targets.Unresolved))
}

// writeStatus patches the policy's status to st when it changed, and posts
// the Accepted reason as an Event when that changed.
func (r *ProxyPolicyReconciler) writeStatus(ctx context.Context, p *proxyv1alpha1.ProxyPolicy, st *proxyv1alpha1.ProxyPolicyStatus) error {
	if statusEqual(p.Status, *st) {
		return nil
	}
	orig := p.DeepCopy()
	p.Status = *st
	if err := r.Status().Patch(ctx, p, client.MergeFrom(orig), FieldOwner); err != nil {
		return err
	}
	before := meta.FindStatusCondition(orig.Status.Conditions, proxyv1alpha1.ConditionAccepted)
	after := meta.FindStatusCondition(st.Conditions, proxyv1alpha1.ConditionAccepted)
	if r.Recorder == nil || after == nil || (before != nil && before.Reason == after.Reason) {
		return nil
	}
	typ := corev1.EventTypeNormal
	if after.Reason != proxyv1alpha1.ReasonAccepted {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(p, nil, typ, after.Reason, "Resolve", "%s", after.Message)
	return nil
}

// conditionReason returns the reason of a condition of st, or "".
func conditionReason(st *proxyv1alpha1.ProxyPolicyStatus, typ string) string {
	if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
		return c.Reason
	}
	return ""
}
