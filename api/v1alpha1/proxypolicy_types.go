package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LoadBalancingAlgorithm is how a Service's traffic is spread over its endpoints.
// Not every backend can honour every algorithm; a policy whose algorithm a node's
// backend cannot run reports UnsupportedByBackend.
// +kubebuilder:validation:Enum=Random;RoundRobin;WeightedRoundRobin;LeastConnections;WeightedLeastConnections;SourceHash;DestinationHash;Maglev;ShortestExpectedDelay;NeverQueue
type LoadBalancingAlgorithm string

// The load-balancing algorithms.
const (
	AlgorithmRandom                   LoadBalancingAlgorithm = "Random"
	AlgorithmRoundRobin               LoadBalancingAlgorithm = "RoundRobin"
	AlgorithmWeightedRoundRobin       LoadBalancingAlgorithm = "WeightedRoundRobin"
	AlgorithmLeastConnections         LoadBalancingAlgorithm = "LeastConnections"
	AlgorithmWeightedLeastConnections LoadBalancingAlgorithm = "WeightedLeastConnections"
	AlgorithmSourceHash               LoadBalancingAlgorithm = "SourceHash"
	AlgorithmDestinationHash          LoadBalancingAlgorithm = "DestinationHash"
	AlgorithmMaglev                   LoadBalancingAlgorithm = "Maglev"
	AlgorithmShortestExpectedDelay    LoadBalancingAlgorithm = "ShortestExpectedDelay"
	AlgorithmNeverQueue               LoadBalancingAlgorithm = "NeverQueue"
)

// ProxyPolicySpec is traffic policy for Services in the policy's namespace.
//
// +kubebuilder:validation:XValidation:rule="has(self.targetRefs) != has(self.selector)",message="spec needs exactly one of targetRefs or selector"
// +kubebuilder:validation:XValidation:rule="has(self.loadBalancing) || has(self.sessionAffinity) || has(self.sourceRanges)",message="spec must set at least one of loadBalancing, sessionAffinity or sourceRanges"
type ProxyPolicySpec struct {
	// targetRefs names the Services this policy attaches to, in the shape of
	// Gateway API policy attachment. Services must be in the policy's namespace.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(r, self.exists_one(o, o.name == r.name))",message="spec.targetRefs must not name the same Service twice"
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`

	// selector selects the Services of the policy's namespace this policy
	// attaches to, by label.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// ports restricts the policy to these ports of the target Services. Empty
	// means every port.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Ports []PolicyPort `json:"ports,omitempty"`

	// loadBalancing chooses how traffic is spread over the endpoints.
	// +optional
	LoadBalancing *LoadBalancingSpec `json:"loadBalancing,omitempty"`

	// sessionAffinity overrides the Services' session affinity.
	// +optional
	SessionAffinity *SessionAffinitySpec `json:"sessionAffinity,omitempty"`

	// sourceRanges lets only clients from these networks reach the target
	// Services' LoadBalancer addresses; others are dropped. It replaces the
	// Services' spec.loadBalancerSourceRanges. ClusterIP, NodePort and external
	// IP frontends are not restricted.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	SourceRanges []CIDR `json:"sourceRanges,omitempty"`
}

// PolicyTargetReference names a Service in the policy's namespace.
//
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && self.kind == 'Service'",message="targetRefs may only name core Services: set group to \"\" and kind to Service"
// +kubebuilder:validation:XValidation:rule="!has(self.__namespace__)",message="targetRefs must not set namespace: a ProxyPolicy attaches only to Services in its own namespace, so create it there"
type PolicyTargetReference struct {
	// group is the target's API group; only "" (core) is supported.
	// +optional
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group"`

	// kind is the target's kind; only Service is supported.
	// +optional
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// name is the target Service's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// namespace is not supported and must be omitted; it exists only so that a
	// cross-namespace reference is refused with a clear message.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// PolicyPort selects one port of the target Services, by name or by number.
//
// +kubebuilder:validation:XValidation:rule="has(self.name) != has(self.port)",message="each item of spec.ports needs exactly one of name or port"
type PolicyPort struct {
	// name is the Service port's name.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`

	// port is the Service port's number.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// LoadBalancingSpec chooses how traffic is spread.
type LoadBalancingSpec struct {
	// algorithm is the load-balancing algorithm.
	// +required
	Algorithm LoadBalancingAlgorithm `json:"algorithm"`
}

// SessionAffinityType is the kind of session affinity.
// +kubebuilder:validation:Enum=None;ClientIP
type SessionAffinityType string

// The session affinity types.
const (
	// SessionAffinityNone keeps no client on an endpoint.
	SessionAffinityNone SessionAffinityType = "None"
	// SessionAffinityClientIP keeps each client address on one endpoint.
	SessionAffinityClientIP SessionAffinityType = "ClientIP"
)

// SessionAffinitySpec keeps a client on one endpoint.
//
// +kubebuilder:validation:XValidation:rule="self.type == 'ClientIP' || !has(self.timeoutSeconds)",message="spec.sessionAffinity.timeoutSeconds is only allowed when type is ClientIP"
type SessionAffinitySpec struct {
	// type is None or ClientIP.
	// +required
	Type SessionAffinityType `json:"type"`

	// timeoutSeconds is how long a client stays on its endpoint after its last
	// packet, from 1 to 86400 (one day). Defaults to 10800 (three hours) for
	// ClientIP, as for Services.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
}

// ResolvedTarget is one Service a policy attaches to.
type ResolvedTarget struct {
	// name is the Service's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// accepted is false when another policy wins this Service.
	// +required
	Accepted bool `json:"accepted"`

	// reason says why the target is not accepted.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`
}

// PolicyNodeCounts counts the nodes by the state of a policy on them.
type PolicyNodeCounts struct {
	// total is how many nodes should run the policy.
	// +optional
	Total int32 `json:"total,omitempty"`
	// programmed is how many nodes run it.
	// +optional
	Programmed int32 `json:"programmed,omitempty"`
	// failed is how many nodes report it failed.
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// failedNodeNames names up to 10 of the failed nodes.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	FailedNodeNames []string `json:"failedNodeNames,omitempty"`
}

// ProxyPolicyStatus is what the operator observed of a policy.
type ProxyPolicyStatus struct {
	// observedGeneration is the generation the operator last reconciled
	// successfully.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Accepted and Programmed, and kstatus's Reconciling and
	// Stalled (docs/operator.md, "GitOps health").
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// targets are the Services the policy resolved to, at most 64.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Targets []ResolvedTarget `json:"targets,omitempty"`

	// nodes counts the nodes by the state of the policy on them.
	// +optional
	Nodes PolicyNodeCounts `json:"nodes,omitempty"`
}

// ProxyPolicy attaches traffic policy to Services: load-balancing algorithm,
// session affinity and allowed source ranges.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=pxp,categories=synterix
// +kubebuilder:printcolumn:name="Algorithm",type=string,JSONPath=`.spec.loadBalancing.algorithm`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodes.programmed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ProxyPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the policy.
	// +required
	Spec ProxyPolicySpec `json:"spec"`

	// status is what the operator observed.
	// The API server defaults it to {observedGeneration: 0} until the operator
	// first writes it, so that GitOps tools (kstatus) read a new object as
	// in progress rather than current.
	// +optional
	// +kubebuilder:default={}
	Status ProxyPolicyStatus `json:"status,omitempty"`
}

// ProxyPolicyList is a list of ProxyPolicies.
//
// +kubebuilder:object:root=true
type ProxyPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ProxyPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ProxyPolicy{}, &ProxyPolicyList{})
}
