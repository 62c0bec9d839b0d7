// Package controllers holds the operator's reconcilers, one per kind:
// GatewayConfig (agent DaemonSet, config revisions, ProxyNode assignments and
// the node-by-node rollout), ProxyPolicy (target resolution, conflicts and the
// Programmed aggregate) and ProxyNode (clean-up of ProxyNodes whose Node or
// GatewayConfig is gone).
package controllers

import (
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

const (
	// FieldOwner is the field manager of every write of the operator. The agent
	// writes ProxyNode status under its own.
	FieldOwner = client.FieldOwner("synterix-operator")

	// Finalizer holds a GatewayConfig until its DaemonSet and ProxyNodes are gone.
	Finalizer = "proxy.synterix.io/finalizer"

	// AssignedAtAnnotation, on a ProxyNode, is when spec.revision was assigned
	// (RFC 3339); the progress deadline counts from it.
	AssignedAtAnnotation = "proxy.synterix.io/assigned-at"

	// RolloutFailedAnnotation, on a ControllerRevision, marks a revision whose
	// rollout failed and was rolled back. The operator does not roll it out
	// again until the annotation is removed or the spec changes.
	RolloutFailedAnnotation = "proxy.synterix.io/rollout-failed"

	// AgentClusterRole is the agent's ClusterRole, shipped in config/agent
	// and bound there to AgentServiceAccount.
	AgentClusterRole = "synterix-agent"

	// MaxNames bounds the node names listed in a status or a message.
	MaxNames = 10
)

// setCondition sets one condition, keeping lastTransitionTime when the status
// does not change.
func setCondition(conds *[]metav1.Condition, typ string, status bool, reason, msg string, gen int64) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: truncate(msg, 1024), ObservedGeneration: gen,
		LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second)),
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// boundedNames returns at most MaxNames of names.
func boundedNames(names []string) []string {
	if len(names) > MaxNames {
		return append([]string(nil), names[:MaxNames]...)
	}
	return names
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

// statusEqual reports whether two statuses are the same, so that an unchanged
// status is never written.
func statusEqual(a, b any) bool { return equality.Semantic.DeepEqual(a, b) }

// NodeHealth is what a ProxyNode's status says of its assigned revision.
type NodeHealth int

const (
	// NodePending: no report yet at the assigned revision and generation.
	NodePending NodeHealth = iota
	// NodeReady: Ready=True at the current generation, and appliedRevision is
	// the assigned revision.
	NodeReady
	// NodeFailed: at the current generation, Degraded=True, or Ready=False with
	// a reason other than the in-progress ones.
	NodeFailed
)

// inProgressReasons are the ProxyNode Ready=False reasons that mean "not
// yet", not "failed": the agent has not synced the assigned revision yet, or
// its cache has not caught up with the ProxyNode or the revision yet.
var inProgressReasons = map[string]bool{
	proxyv1alpha1.ReasonUnknown:          true,
	proxyv1alpha1.ReasonSyncing:          true,
	proxyv1alpha1.ReasonRevisionNotFound: true,
	proxyv1alpha1.ReasonNoProxyNode:      true,
}

// ProxyNodeHealth reads a ProxyNode's status. A report counts only when it is
// about the current spec: status.observedGeneration equals
// metadata.generation, and the condition's own observedGeneration, when set,
// too.
func ProxyNodeHealth(pn *proxyv1alpha1.ProxyNode) NodeHealth {
	gen := pn.Generation
	if pn.Status.ObservedGeneration != gen {
		return NodePending
	}
	current := func(c *metav1.Condition) bool {
		return c != nil && (c.ObservedGeneration == 0 || c.ObservedGeneration == gen)
	}
	if d := meta.FindStatusCondition(pn.Status.Conditions, proxyv1alpha1.ConditionDegraded); current(d) && d.Status == metav1.ConditionTrue {
		return NodeFailed
	}
	r := meta.FindStatusCondition(pn.Status.Conditions, proxyv1alpha1.ConditionReady)
	if !current(r) {
		return NodePending
	}
	switch {
	case r.Status == metav1.ConditionTrue && pn.Status.AppliedRevision == pn.Spec.Revision:
		return NodeReady
	case r.Status == metav1.ConditionFalse && !inProgressReasons[r.Reason]:
		return NodeFailed
	}
	return NodePending
}

// conflictRetry is when a reconcile that lost a write conflict (someone
// else changed the object in between) is retried, from a fresher cache.
const conflictRetry = 200 * time.Millisecond
