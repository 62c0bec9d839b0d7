package status

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Static is what never changes while the agent runs.
type Static struct {
	Capabilities *v1alpha1.KernelCapabilities
	AgentVersion string
	// PodTemplateHash is the hash of the agent pod template this agent
	// runs (POD_TEMPLATE_HASH); empty outside a pod the operator made.
	PodTemplateHash string
}

// RevisionFacts is what the revision acceptor knows: why the assigned
// revision is not accepted, if it is not.
type RevisionFacts struct {
	// Reason and Message are empty while the assigned revision is accepted.
	Reason  string
	Message string
	// Generation is the ProxyNode generation the refusal is about.
	Generation int64
}

// Refused reports whether the facts hold a refusal.
func (r RevisionFacts) Refused() bool { return r.Reason != "" }

// Applied is the revision in the kernel.
type Applied struct {
	Revision      string
	Generation    int64 // of the ProxyNode that assigned it
	Backend       v1alpha1.Backend
	BackendReason string
}

// SyncFacts is what the sync loop knows.
type SyncFacts struct {
	// Applied is nil until a revision reached the kernel.
	Applied        *Applied
	LastSync       *v1alpha1.SyncStatus
	Counts         v1alpha1.RuleCounts
	Families       []v1alpha1.FamilyStatus
	FailedPolicies []v1alpha1.FailedPolicy
	// Error is the last sync's failure; empty after a good sync.
	Error string
}

// Assemble turns the latest facts into a report about pn, the ProxyNode as
// it stands. It is pure: the writer calls it when it writes, so a report
// always reflects the newest facts of every owner.
func Assemble(st Static, rev RevisionFacts, sy SyncFacts, pn *v1alpha1.ProxyNode) Report {
	r := Report{
		Capabilities: st.Capabilities, AgentVersion: st.AgentVersion, PodTemplateHash: st.PodTemplateHash,
		LastSync: sy.LastSync, Counts: sy.Counts, Families: sy.Families, FailedPolicies: sy.FailedPolicies,
	}
	if a := sy.Applied; a != nil {
		r.AppliedRevision, r.Backend, r.BackendReason, r.Generation = a.Revision, a.Backend, a.BackendReason, a.Generation
	}
	upToDate := pn != nil && sy.Applied != nil && sy.Applied.Revision == pn.Spec.Revision &&
		sy.Applied.Generation == pn.Generation
	r.Ready, r.Degraded = conditions(rev, sy, upToDate)
	if rev.Refused() && r.Backend == "" && rev.Reason == v1alpha1.ReasonBackendUnavailable {
		r.BackendReason = rev.Message
	}
	switch {
	case upToDate:
	case rev.Refused() && pn != nil && rev.Generation == pn.Generation:
		// The agent acted on this generation and refused it: say so at this
		// generation, so that the operator stops a rollout at once instead
		// of waiting for its progress deadline. appliedRevision stays the
		// revision still in the kernel.
		r.Generation = rev.Generation
	default:
		r.Generation = 0
	}
	return r
}

// conditions are Ready and Degraded: a refusal first, then a failed sync,
// then whether the assigned revision is in the kernel.
func conditions(rev RevisionFacts, sy SyncFacts, upToDate bool) (ready, degraded Condition) {
	switch {
	case rev.Refused():
		ready = Condition{Status: metav1.ConditionFalse, Reason: rev.Reason, Message: rev.Message}
		degraded = Condition{Status: metav1.ConditionTrue, Reason: rev.Reason, Message: rev.Message}
		if rev.Reason == v1alpha1.ReasonRevisionNotFound {
			degraded.Status = metav1.ConditionFalse
		}
	case sy.Error != "":
		ready = Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonSyncFailed, Message: sy.Error}
		degraded = Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSyncFailed, Message: sy.Error}
	case upToDate:
		ready = Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSynced,
			Message: "Revision " + sy.Applied.Revision + " is in the kernel"}
		degraded = Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonAsExpected, Message: "Rules in sync"}
	default:
		ready = Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonSyncing,
			Message: "Waiting for the first sync of the assigned revision"}
		degraded = Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonAsExpected, Message: "No failure"}
	}
	return ready, degraded
}
