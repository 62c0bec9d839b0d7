package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProxyNodeSpec is written by the operator: the configuration assigned to the node.
type ProxyNodeSpec struct {
	// gatewayConfig is the name of the GatewayConfig that selects this node.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	GatewayConfig string `json:"gatewayConfig"`

	// revision is the name of the ControllerRevision, in the operator's
	// namespace, that holds the configuration this node must run.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Revision string `json:"revision"`
}

// IPTablesMode is the flavour of iptables userspace a node uses.
// +kubebuilder:validation:Enum=Legacy;NFT
type IPTablesMode string

// The iptables flavours.
const (
	IPTablesModeLegacy IPTablesMode = "Legacy"
	IPTablesModeNFT    IPTablesMode = "NFT"
)

// KernelCapabilities is what the agent probed of the node's kernel.
type KernelCapabilities struct {
	// ipvs is true when the kernel has IPVS.
	// +optional
	IPVS bool `json:"ipvs,omitempty"`

	// nftables is true when the kernel has nf_tables.
	// +optional
	NFTables bool `json:"nftables,omitempty"`

	// iptablesMode is the iptables flavour the node's rules use.
	// +optional
	IPTablesMode IPTablesMode `json:"iptablesMode,omitempty"`

	// kernelVersion is the kernel release.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	KernelVersion string `json:"kernelVersion,omitempty"`

	// missing says what a backend would need and the kernel lacks, in words.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Missing string `json:"missing,omitempty"`
}

// SyncType is a full or a partial sync.
// +kubebuilder:validation:Enum=Full;Partial
type SyncType string

// The sync types.
const (
	SyncFull    SyncType = "Full"
	SyncPartial SyncType = "Partial"
)

// SyncStatus describes the last sync of the kernel rules.
type SyncStatus struct {
	// time is when the sync finished.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`

	// durationMilliseconds is how long the sync took.
	// +optional
	// +kubebuilder:validation:Minimum=0
	DurationMilliseconds *int32 `json:"durationMilliseconds,omitempty"`

	// type is Full or Partial.
	// +optional
	Type SyncType `json:"type,omitempty"`

	// error is the error of the sync, if it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Error string `json:"error,omitempty"`
}

// RuleCounts counts what the agent programmed.
type RuleCounts struct {
	// services is how many Service ports are programmed.
	// +optional
	Services int32 `json:"services,omitempty"`
	// endpoints is how many (Service port, endpoint) pairs are programmed,
	// counted the same way on every backend: an endpoint that serves any of a
	// Service port's frontends counts once.
	// +optional
	Endpoints int32 `json:"endpoints,omitempty"`
	// rules is how many kernel rules (iptables rules, or IPVS virtual servers and
	// destinations) the agent owns after its last sync; it depends on the backend.
	// +optional
	Rules int32 `json:"rules,omitempty"`
}

// FailedPolicy is a ProxyPolicy the agent could not program.
type FailedPolicy struct {
	// namespace is the policy's namespace.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// name is the policy's name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// reason is a CamelCase reason: UnsupportedByBackend when the node's
	// backend cannot honour the policy, Invalid when the agent cannot
	// translate it.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// message says what failed.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message,omitempty"`
}

// FamilyStatus is what the agent programmed for one IP family. Each family
// is built and synced on its own: one family's failure leaves the other's
// rules in place.
type FamilyStatus struct {
	// family is IPv4 or IPv6.
	// +required
	// +kubebuilder:validation:Enum=IPv4;IPv6
	Family corev1.IPFamily `json:"family"`
	// programmed is true when the agent programs this family on the node. A
	// node with no address of a family does not program it; message says
	// why.
	// +required
	Programmed bool `json:"programmed"`
	// message says why the family is not programmed, or what failed in its
	// last sync.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// counts counts what the agent programmed for this family.
	// +optional
	Counts RuleCounts `json:"counts,omitempty"`
	// lastSync describes this family's last sync.
	// +optional
	LastSync *SyncStatus `json:"lastSync,omitempty"`
}

// MaxFailedPolicies bounds status.failedPolicies, so that a node's status stays
// small whatever the number of policies.
const MaxFailedPolicies = 20

// ProxyNodeStatus is written by the node's agent.
type ProxyNodeStatus struct {
	// observedGeneration is the generation of the spec this status reports on:
	// the agent acted on it, and either applied it (Ready) or could not
	// (Degraded, with appliedRevision still naming what is in the kernel).
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// backend is the backend the agent runs.
	// +optional
	Backend Backend `json:"backend,omitempty"`

	// backendReason says why the agent chose that backend.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	BackendReason string `json:"backendReason,omitempty"`

	// capabilities is what the agent probed of the kernel.
	// +optional
	Capabilities *KernelCapabilities `json:"capabilities,omitempty"`

	// agentVersion is the agent's version.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	AgentVersion string `json:"agentVersion,omitempty"`

	// podTemplateHash is the hash of the agent pod template the agent that
	// wrote this status runs (label proxy.synterix.io/pod-template-hash of
	// its pod, given to it in POD_TEMPLATE_HASH). The operator counts the
	// node updated to a revision only when it equals the revision's, so
	// that a new agent image or pod setting reaches the node before the
	// rollout moves on. Empty for agents older than this field.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	PodTemplateHash string `json:"podTemplateHash,omitempty"`

	// appliedRevision is the revision whose configuration is in the kernel.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	AppliedRevision string `json:"appliedRevision,omitempty"`

	// lastSync describes the last sync.
	// +optional
	LastSync *SyncStatus `json:"lastSync,omitempty"`

	// counts counts what the agent programmed, over every family.
	// +optional
	Counts RuleCounts `json:"counts,omitempty"`

	// families says, per IP family, whether the node programs it, what, and
	// how its last sync went.
	// +optional
	// +listType=map
	// +listMapKey=family
	// +kubebuilder:validation:MaxItems=2
	Families []FamilyStatus `json:"families,omitempty"`

	// failedPolicies lists up to 20 policies the agent could not program.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	FailedPolicies []FailedPolicy `json:"failedPolicies,omitempty"`

	// failedPolicyCount is how many policies failed in all, which may be more
	// than failedPolicies lists.
	// +optional
	FailedPolicyCount int32 `json:"failedPolicyCount,omitempty"`

	// conditions are Ready and Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ProxyNode is one node's proxy: the operator writes the configuration revision
// assigned to it, and the node's agent reports what it programmed.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=pxn,categories=synterix
// +kubebuilder:printcolumn:name="Backend",type=string,JSONPath=`.status.backend`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.spec.revision`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.appliedRevision`
// +kubebuilder:printcolumn:name="Services",type=integer,JSONPath=`.status.counts.services`
// +kubebuilder:printcolumn:name="Config",type=string,JSONPath=`.spec.gatewayConfig`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.backendReason`,priority=1
// +kubebuilder:printcolumn:name="Pod-Template",type=string,JSONPath=`.status.podTemplateHash`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ProxyNode struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is written by the operator.
	// +required
	Spec ProxyNodeSpec `json:"spec"`

	// status is written by the node's agent.
	// The API server defaults it to {observedGeneration: 0} until the agent
	// first writes it, so that GitOps tools (kstatus) read a new object as
	// in progress rather than current.
	// +optional
	// +kubebuilder:default={}
	Status ProxyNodeStatus `json:"status,omitempty"`
}

// ProxyNodeList is a list of ProxyNodes.
//
// +kubebuilder:object:root=true
type ProxyNodeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ProxyNode `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ProxyNode{}, &ProxyNodeList{})
}
