package v1alpha1

// The condition contract of proxy.synterix.io: every condition type, every
// condition reason and every Event reason that the operator and the agent
// write, in one place. Code uses these constants, never the strings.
//
// They are untyped string constants on purpose: metav1.Condition's type and
// reason, FailedPolicy.reason and the Event recorders all take strings, and
// an untyped constant compares equal to the string the API server returns
// (a named type would not, in a reflect.DeepEqual-based test matcher).
//
// Each reason's comment says who writes it and where: on a condition (which
// ones, of which kind), as an Event reason, or both.

// Condition types. They follow the conventions kstatus reads: Ready is the
// summary, Progressing is true while a change is being rolled out, Degraded is
// true when something needs a human; Reconciling and Stalled are kstatus's
// abnormal-true pair, never both true.
//
// What GitOps tools make of them (docs/operator.md, "GitOps health", checked
// by test/gitops and the operator suite with kstatus and Argo CD's Lua):
// Stalled=True is Failed (the pipeline stops: a human must act);
// Reconciling=True, or an observedGeneration behind the generation, is
// InProgress (the pipeline waits: the operator is working); otherwise Ready
// decides: True is Current, False is InProgress. So a steady state that waits
// for a human on purpose (a revision awaiting approval) is Ready=True.
const (
	// ConditionReady is true when what the spec asks for is in effect.
	// GatewayConfig (operator): the target revision (Automatic: the spec's;
	// Manual: the approved one) runs on every node it selects, also while a
	// newer revision waits for approval, and also under Manual before any
	// approval, when the spec asks for nothing yet. ProxyNode (agent): the
	// assigned revision is in the kernel.
	ConditionReady = "Ready"
	// ConditionProgressing is true while a change is being rolled out.
	// GatewayConfig (operator).
	ConditionProgressing = "Progressing"
	// ConditionDegraded is true when the object failed in a way that needs
	// attention. GatewayConfig (operator) and ProxyNode (agent).
	ConditionDegraded = "Degraded"
	// ConditionAccepted is true when a ProxyPolicy is valid and attached to its
	// targets. ProxyPolicy (operator).
	ConditionAccepted = "Accepted"
	// ConditionProgrammed is true when a ProxyPolicy is in the kernel of every
	// node that should run it. ProxyPolicy (operator).
	ConditionProgrammed = "Programmed"
	// ConditionReconciling is kstatus's "in progress": true while a rollout
	// (GatewayConfig) or the programming of a policy (ProxyPolicy) is under way
	// and nothing needs a human. Operator.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is kstatus's "failed": true when the operator cannot go
	// on without a human. GatewayConfig and ProxyPolicy (operator).
	ConditionStalled = "Stalled"
)

// Reasons shared by several kinds.
const (
	// ReasonAsExpected: nothing is wrong. Condition reason of Degraded=False
	// (GatewayConfig, operator; ProxyNode, agent) and Stalled=False
	// (GatewayConfig and ProxyPolicy, operator).
	ReasonAsExpected = "AsExpected"
	// ReasonUnknown: the agent's report gave no reason. Condition reason of a
	// ProxyNode's Ready and Degraded, set by agent/status; the operator counts
	// it as "not yet".
	ReasonUnknown = "Unknown"
)

// Reasons of a GatewayConfig, written by the operator.
const (
	// ReasonRolledOut: the target revision runs on every node. Condition
	// reason (Ready=True, Progressing=False, Reconciling=False) and Event
	// reason (Normal, when the rollout completes).
	ReasonRolledOut = "RolledOut"
	// ReasonRollingOut: a revision is being rolled out. Condition reason
	// (Ready=False, Progressing=True, Reconciling=True).
	ReasonRollingOut = "RollingOut"
	// ReasonAwaitingApproval: under the Manual strategy, a new revision waits
	// for spec.rollout.approvedRevision while the approved one runs on every
	// node. Condition reason (Ready=True, Progressing=False,
	// Reconciling=False): a deliberate steady state, Current for kstatus.
	ReasonAwaitingApproval = "AwaitingApproval"
	// ReasonNoApprovedRevision: under the Manual strategy, no revision was ever
	// approved, so no node runs the GatewayConfig. Condition reason
	// (Ready=True while a revision waits for approval, as for
	// ReasonAwaitingApproval; Ready=False when none can).
	ReasonNoApprovedRevision = "NoApprovedRevision"
	// ReasonRolloutFailed: a node failed at the target revision and the rollout
	// stopped without rolling back. Condition reason (Degraded, Stalled, Ready,
	// Progressing) and Event reason (Warning).
	ReasonRolloutFailed = "RolloutFailed"
	// ReasonRolledBack: the rollout failed and the nodes were given the last
	// good revision back. Condition reason (Degraded, Stalled, Ready,
	// Progressing) and Event reason (Warning).
	ReasonRolledBack = "RolledBack"
	// ReasonNodesFailing: nodes report a failure at a revision that is not
	// being rolled out. Condition reason (Degraded, Stalled, Ready).
	ReasonNodesFailing = "NodesFailing"
	// ReasonNodeConflict: selected nodes run an older GatewayConfig. Condition
	// reason (Degraded, Stalled, Ready) and Event reason (Warning).
	ReasonNodeConflict = "NodeConflict"
	// ReasonInvalidSpec: the spec cannot be acted on (such as a node selector
	// with an unknown operator). Condition reason (every condition) and Event
	// reason (Warning).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonRevisionCreated: a config revision (ControllerRevision) was
	// created. Event reason (Normal).
	ReasonRevisionCreated = "RevisionCreated"
	// ReasonDeleting: the finalizer removed the agent DaemonSet and the
	// ProxyNodes. Event reason (Normal).
	ReasonDeleting = "Deleting"
	// ReasonAgentPodsReplaced: the rollout reached nodes whose agent pod
	// runs another pod template than the target revision's, and the
	// operator deleted those pods for the DaemonSet controller to replace.
	// Event reason (Normal).
	ReasonAgentPodsReplaced = "AgentPodsReplaced"
	// ReasonPodTemplateAdopted: after an upgrade of the operator, a revision
	// written by an earlier release was given the agent pod template its
	// agents run. Event reason (Normal).
	ReasonPodTemplateAdopted = "PodTemplateAdopted"
)

// Reasons of a ProxyPolicy, written by the operator. The Accepted reason is
// also posted as an Event reason when it changes (Normal for ReasonAccepted,
// Warning otherwise).
const (
	// ReasonAccepted: the policy is valid and attached. Condition reason
	// (Accepted=True) and Event reason.
	ReasonAccepted = "Accepted"
	// ReasonInvalidTarget: no target is usable: the targetRefs do not name
	// core Services of the policy's namespace, or the selector is invalid.
	// Condition reason (Accepted, Programmed, Stalled) and Event reason.
	ReasonInvalidTarget = "InvalidTarget"
	// ReasonTargetNotFound: no target Service exists. Condition reason
	// (Accepted, Programmed, Stalled) and Event reason; also the reason of an
	// unresolved targetRef in PolicyTargets.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonConflicted: an older policy already targets every target Service.
	// Condition reason (Accepted, Programmed, Stalled) and Event reason.
	ReasonConflicted = "Conflicted"
	// ReasonUnsupportedByBackend: a node's backend cannot honour the policy.
	// Written by the agent as a FailedPolicy reason in ProxyNode status; the
	// operator turns it into a condition reason (Accepted, Programmed,
	// Stalled) and an Event reason.
	ReasonUnsupportedByBackend = "UnsupportedByBackend"
	// ReasonProgrammed: every node that should run the policy runs it.
	// Condition reason (Programmed=True).
	ReasonProgrammed = "Programmed"
	// ReasonPending: some nodes have not yet reported the policy. Condition
	// reason (Programmed=False, Reconciling=True).
	ReasonPending = "Pending"
	// ReasonNodesFailed: some nodes failed to program the policy, for a reason
	// other than ReasonUnsupportedByBackend. Condition reason (Programmed,
	// Stalled).
	ReasonNodesFailed = "NodesFailed"
	// ReasonNoNodes: no GatewayConfig handles the target Services, so no node
	// runs the policy. Condition reason (Programmed=False).
	ReasonNoNodes = "NoNodes"
)

// Reasons of a ProxyNode, written by the node's agent. The operator counts a
// node with Ready=False as failed unless the reason is one of "not yet":
// ReasonSyncing, ReasonRevisionNotFound, ReasonNoProxyNode or ReasonUnknown.
const (
	// ReasonSynced: the assigned revision is in the kernel and the rules are in
	// sync. Condition reason (Ready=True) and Event reason (Normal, when syncs
	// recover after a failure).
	ReasonSynced = "Synced"
	// ReasonSyncing: the agent has not yet synced the assigned revision.
	// Condition reason (Ready=False; "not yet").
	ReasonSyncing = "Syncing"
	// ReasonSyncFailed: the last sync failed. Condition reason (Ready=False,
	// Degraded=True) and Event reason (Warning, on the first failure of a run).
	ReasonSyncFailed = "SyncFailed"
	// ReasonRevisionInvalid: the assigned revision's data is not a
	// GatewayConfig spec. Condition reason (Ready=False, Degraded=True) and
	// Event reason (Warning).
	ReasonRevisionInvalid = "RevisionInvalid"
	// ReasonBackendUnavailable: the revision asks for a backend the node's
	// kernel cannot run. Condition reason (Ready=False, Degraded=True) and
	// Event reason (Warning).
	ReasonBackendUnavailable = "BackendUnavailable"
	// ReasonSettingUnsupported: the revision sets something the backend the
	// node chose cannot honour (spec.iptables.masqueradeBit other than its
	// default on IPVS, whose mark is its own; BridgeInterface or
	// InterfaceNamePrefix local traffic detection on IPVS). The node keeps
	// its current rules. Condition reason (Ready=False, Degraded=True) and
	// Event reason (Warning).
	ReasonSettingUnsupported = "SettingUnsupported"
	// ReasonSettingNotApplied: the accepted revision sets something the
	// backend mode Auto chose does not use (spec.ipvs on a node without
	// IPVS); status.backendReason says so too. Event reason (Warning).
	ReasonSettingNotApplied = "SettingNotApplied"
	// ReasonRevisionNotFound: the agent's cache has no ControllerRevision of
	// that name yet. Condition reason (Ready=False, Degraded=False; "not yet")
	// and Event reason (Warning).
	ReasonRevisionNotFound = "RevisionNotFound"
	// ReasonNoProxyNode: the agent's cache has no ProxyNode for its node yet.
	// Condition reason (Ready=False, Degraded=True; "not yet").
	ReasonNoProxyNode = "NoProxyNode"
	// ReasonRevisionApplied: a revision reached the kernel. Event reason
	// (Normal).
	ReasonRevisionApplied = "RevisionApplied"
	// ReasonBackendSwitched: the agent switched backends for a new revision.
	// Event reason (Normal).
	ReasonBackendSwitched = "BackendSwitched"
	// ReasonInvalidInput: the model skipped Services or EndpointSlices it could
	// not use. Event reason (Warning).
	ReasonInvalidInput = "InvalidInput"
	// ReasonConntrackTuningFailed: a conntrack setting of the revision could
	// not be applied; syncing goes on. Event reason (Warning).
	ReasonConntrackTuningFailed = "ConntrackTuningFailed"
	// ReasonRulesRemoved: the agent removed its rules from the node (its
	// ProxyNode went). Event reason (Normal), on the Node.
	ReasonRulesRemoved = "RulesRemoved"
	// ReasonInvalid: the agent could not translate a ProxyPolicy (its selector
	// is invalid) and left it out. FailedPolicy reason in ProxyNode status.
	ReasonInvalid = "Invalid"
)
