package gitops

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Where a state is produced for the checks.
const (
	// ByOperator: the operator suite (controllers), the real operator against
	// a real API server, with simulated agents writing ProxyNode status.
	ByOperator = "operator suite"
	// ByAgent: the agent's real status builder (agent/status.Build).
	ByAgent = "agent status"
)

// State is one state of one kind, and what the tools make of it.
type State struct {
	Kind  string
	Name  string
	Where []string
	// Conditions is Summary of the object in that state.
	Conditions string
	// Kstatus is status.Compute's status; Argo is the Lua check's status.
	Kstatus string
	Argo    string
}

// States is the decision for every state: Failed/Degraded when a human must
// act (the pipeline stops), InProgress/Progressing while the operator or the
// agents are working (the pipeline waits), Current/Healthy in a steady state,
// waiting for an approval included (the approval is itself a commit that the
// pipeline must be free to apply).
var States = []State{
	{"GatewayConfig", "created, not yet reconciled", op, "status not written", "InProgress", "Progressing"},
	{"GatewayConfig", "spec changed, not yet reconciled", op, "observedGeneration behind", "InProgress", "Progressing"},
	{"GatewayConfig", "rolling out", op, "Ready=False RollingOut, Reconciling=True", "InProgress", "Progressing"},
	{"GatewayConfig", "rolled out", op, "Ready=True RolledOut", "Current", "Healthy"},
	{"GatewayConfig", "Manual, no revision approved yet", op, "Ready=True NoApprovedRevision", "Current", "Healthy"},
	{"GatewayConfig", "Manual, a revision awaits approval", op, "Ready=True AwaitingApproval", "Current", "Healthy"},
	{"GatewayConfig", "rollout failed and stopped (no autoRollback)", op, "Ready=False RolloutFailed, Stalled=True", "Failed", "Degraded"},
	{"GatewayConfig", "rollout failed and rolled back", op, "Ready=False RolledBack, Stalled=True", "Failed", "Degraded"},
	{"GatewayConfig", "nodes failing at the current revision", op, "Ready=False NodesFailing, Stalled=True", "Failed", "Degraded"},
	{"GatewayConfig", "node conflict with an older GatewayConfig", op, "Ready=False NodeConflict, Stalled=True", "Failed", "Degraded"},
	{"GatewayConfig", "invalid spec", op, "Ready=False InvalidSpec, Stalled=True", "Failed", "Degraded"},

	{"ProxyPolicy", "created, not yet reconciled", op, "status not written", "InProgress", "Progressing"},
	{"ProxyPolicy", "being programmed on the nodes", op, "Accepted=True Accepted, Programmed=False Pending, Reconciling=True", "InProgress", "Progressing"},
	{"ProxyPolicy", "programmed on every node", op, "Accepted=True Accepted, Programmed=True Programmed", "Current", "Healthy"},
	{"ProxyPolicy", "programmed; its GatewayConfig awaits approval", op, "Accepted=True Accepted, Programmed=True Programmed", "Current", "Healthy"},
	{"ProxyPolicy", "no node runs its targets", op, "Accepted=True Accepted, Programmed=False NoNodes", "Current", "Healthy"},
	{"ProxyPolicy", "nodes failed to program it", op, "Accepted=True Accepted, Programmed=False NodesFailed, Stalled=True", "Failed", "Degraded"},
	{"ProxyPolicy", "a node's backend cannot run it", op, "Accepted=False UnsupportedByBackend, Programmed=False UnsupportedByBackend, Stalled=True", "Failed", "Degraded"},
	{"ProxyPolicy", "conflicted: an older policy has its targets", op, "Accepted=False Conflicted, Programmed=False Conflicted, Stalled=True", "Failed", "Degraded"},
	{"ProxyPolicy", "target Service not found", op, "Accepted=False TargetNotFound, Programmed=False TargetNotFound, Stalled=True", "Failed", "Degraded"},

	{"ProxyNode", "created, agent not yet reported", op, "status not written", "InProgress", "Progressing"},
	{"ProxyNode", "new revision assigned, agent not yet reported", both, "observedGeneration behind", "InProgress", "Progressing"},
	{"ProxyNode", "agent restarted, first sync not done", agent, "Ready=False Syncing", "InProgress", "Progressing"},
	{"ProxyNode", "revision not yet in the agent's cache", agent, "Ready=False RevisionNotFound", "InProgress", "Progressing"},
	{"ProxyNode", "synced", both, "Ready=True Synced", "Current", "Healthy"},
	{"ProxyNode", "synced, some ProxyPolicies failed", both, "Ready=True Synced", "Current", "Healthy"},
	{"ProxyNode", "back at the last good revision after a rollback", op, "Ready=True Synced", "Current", "Healthy"},
	{"ProxyNode", "sync failed", both, "Ready=False SyncFailed, Stalled=True", "Failed", "Degraded"},
	{"ProxyNode", "revision refused by the node", agent, "Ready=False BackendUnavailable, Stalled=True", "Failed", "Degraded"},
}

var (
	op    = []string{ByOperator}
	agent = []string{ByAgent}
	both  = []string{ByOperator, ByAgent}
)

// Lookup returns the state of a kind by name.
func Lookup(kind, name string) (State, error) {
	for _, s := range States {
		if s.Kind == kind && s.Name == name {
			return s, nil
		}
	}
	return State{}, fmt.Errorf("no state %q of %s in gitops.States", name, kind)
}

// Verify checks that u is in state s (its Summary) and that kstatus and the
// Lua check say what s says, each with a message.
func (s State) Verify(u *unstructured.Unstructured) error {
	if u.GetKind() != s.Kind {
		return fmt.Errorf("%s: the object is a %s", s.Name, u.GetKind())
	}
	if got := Summary(u); got != s.Conditions {
		return fmt.Errorf("%s %q: conditions %q, want %q", s.Kind, s.Name, got, s.Conditions)
	}
	ks, kmsg, err := Kstatus(u)
	if err != nil {
		return err
	}
	h, err := ArgoHealth(u)
	if err != nil {
		return fmt.Errorf("%s %q: Lua: %w", s.Kind, s.Name, err)
	}
	if ks != s.Kstatus || h.Status != s.Argo {
		return fmt.Errorf("%s %q: kstatus %s (%s), Argo CD %s (%s); want %s and %s", s.Kind, s.Name, ks, kmsg, h.Status, h.Message, s.Kstatus, s.Argo)
	}
	if kmsg == "" || h.Message == "" {
		return fmt.Errorf("%s %q: empty message: kstatus %q, Argo CD %q", s.Kind, s.Name, kmsg, h.Message)
	}
	return nil
}

// summaryConditions are the conditions Summary shows, per kind: the
// summary ones, with their status and reason, then the abnormal-true ones
// when true (kstatus's pair; a ProxyNode's Stalled mirrors its Degraded, as
// a GatewayConfig's Degraded is always its Stalled).
var summaryConditions = map[string][2][]string{
	"GatewayConfig": {{"Ready"}, {"Reconciling", "Stalled"}},
	"ProxyPolicy":   {{"Accepted", "Programmed"}, {"Reconciling", "Stalled"}},
	"ProxyNode":     {{"Ready"}, {"Stalled"}},
}

// Summary describes the status of u in a few words: whether it was written
// for the current generation, then its main conditions (type, status and
// reason) and the abnormal-true ones.
func Summary(u *unstructured.Unstructured) string {
	observed, found, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	switch {
	case (!found || observed == 0) && len(conds) == 0:
		return "status not written"
	case observed != u.GetGeneration():
		return "observedGeneration behind"
	}
	byType := map[string]map[string]any{}
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok {
			t, _ := m["type"].(string)
			byType[t] = m
		}
	}
	var parts []string
	shown := summaryConditions[u.GetKind()]
	for _, t := range shown[0] {
		if c, ok := byType[t]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s %s", t, c["status"], c["reason"]))
		}
	}
	for _, t := range shown[1] {
		if c, ok := byType[t]; ok && c["status"] == "True" {
			parts = append(parts, t+"=True")
		}
	}
	return strings.Join(parts, ", ")
}

// Table is States as the Markdown table of docs/operator.md.
func Table() string {
	var b strings.Builder
	b.WriteString("| kind | state | conditions | kstatus | Argo CD | checked in |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, s := range States {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.Kind, s.Name, s.Conditions, s.Kstatus, s.Argo, strings.Join(s.Where, ", "))
	}
	return b.String()
}
