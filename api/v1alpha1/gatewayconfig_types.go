package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GatewayConfigSpec describes how the proxy runs on a set of nodes.
//
// +kubebuilder:validation:XValidation:rule="has(oldSelf.serviceProxyName) == has(self.serviceProxyName) && (!has(self.serviceProxyName) || oldSelf.serviceProxyName == self.serviceProxyName)",message="spec.serviceProxyName is immutable: create a new GatewayConfig to serve another proxy name"
// +kubebuilder:validation:XValidation:rule="!has(self.ipvs) || !(self.mode in ['IPTables', 'NFTables'])",message="spec.ipvs applies only when spec.mode is Auto or IPVS: remove spec.ipvs or change spec.mode"
// +kubebuilder:validation:XValidation:rule="!(has(self.mode) && self.mode == 'IPVS' && has(self.iptables) && has(self.iptables.masqueradeBit) && self.iptables.masqueradeBit != 14)",message="spec.iptables.masqueradeBit is not supported when spec.mode is IPVS: the IPVS backend marks packets with a bit of its own (0x1000); set it back to 14, its default, or change spec.mode"
// +kubebuilder:validation:XValidation:rule="!has(self.minSyncPeriod) || !has(self.syncPeriod) || duration(self.minSyncPeriod) <= duration(self.syncPeriod)",message="spec.minSyncPeriod must not be longer than spec.syncPeriod"
type GatewayConfigSpec struct {
	// nodeSelector selects the nodes this configuration runs on. An empty or
	// absent selector selects every node. When two GatewayConfigs select one node,
	// the older one wins and the other reports Degraded.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// mode is the backend the agents program: Auto picks IPVS where the kernel has
	// it and iptables elsewhere; IPTables, IPVS and NFTables force one, and a node
	// whose kernel cannot run it reports Degraded instead of falling back. Auto's
	// choice does not change when the agent is upgraded: to move nodes to
	// nftables, set NFTables, which rolls out like any other config change.
	// +optional
	// +kubebuilder:default=Auto
	Mode BackendMode `json:"mode,omitempty"`

	// serviceProxyName is the value of the service.kubernetes.io/service-proxy-name
	// label of the Services these agents handle. When empty, the agents handle the
	// Services without that label, as kube-proxy does; when set, they handle only
	// Services labelled with it, so that kube-proxy and this proxy can share a
	// cluster. Immutable.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServiceProxyName string `json:"serviceProxyName,omitempty"`

	// ipvs tunes the IPVS backend.
	// +optional
	IPVS *IPVSConfig `json:"ipvs,omitempty"`

	// iptables tunes the iptables backend, and the iptables rules the IPVS
	// backend installs alongside its virtual servers.
	// +optional
	// +kubebuilder:default={}
	IPTables *IPTablesConfig `json:"iptables,omitempty"`

	// minSyncPeriod is the shortest time between two syncs of the kernel rules.
	// Changes that arrive within it are batched into one sync.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	MinSyncPeriod *metav1.Duration `json:"minSyncPeriod,omitempty"`

	// syncPeriod is the longest time between two full syncs, which repair any
	// drift in the kernel rules.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="spec.syncPeriod must be at least 1s"
	SyncPeriod *metav1.Duration `json:"syncPeriod,omitempty"`

	// localTrafficDetection says how the agents tell traffic from local pods
	// apart from traffic from outside the cluster. Absent means no detection:
	// only traffic from outside the node is masqueraded where policy asks for it.
	// +optional
	LocalTrafficDetection *LocalTrafficDetection `json:"localTrafficDetection,omitempty"`

	// nodePortAddresses restricts the node addresses NodePort Services answer on.
	// Each item is a CIDR, or "primary" for the node's primary addresses. Empty
	// means every local address.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="self == 'primary' || isCIDR(self)",message="each item must be a CIDR such as 10.0.0.0/8, or the word primary"
	NodePortAddresses []string `json:"nodePortAddresses,omitempty"`

	// conntrack tunes the node's connection tracking table.
	// +optional
	Conntrack *ConntrackConfig `json:"conntrack,omitempty"`

	// agent says how the agent DaemonSet runs.
	// +optional
	// +kubebuilder:default={}
	Agent *AgentSpec `json:"agent,omitempty"`

	// rollout says how a change of this spec reaches the nodes.
	// +optional
	// +kubebuilder:default={}
	Rollout *RolloutSpec `json:"rollout,omitempty"`
}

// IPVSScheduler is an IPVS scheduling algorithm.
// The locality-based schedulers (lblc, lblcr) are not offered: the IPVS backend
// does not run them (agent/ipvs.Schedulers).
// +kubebuilder:validation:Enum=rr;wrr;lc;wlc;dh;sh;sed;nq;mh
type IPVSScheduler string

// The IPVS schedulers, by their kernel names.
const (
	IPVSSchedulerRoundRobin              IPVSScheduler = "rr"
	IPVSSchedulerWeightedRoundRobin      IPVSScheduler = "wrr"
	IPVSSchedulerLeastConnection         IPVSScheduler = "lc"
	IPVSSchedulerWeightedLeastConnection IPVSScheduler = "wlc"
	IPVSSchedulerDestinationHashing      IPVSScheduler = "dh"
	IPVSSchedulerSourceHashing           IPVSScheduler = "sh"
	IPVSSchedulerShortestExpectedDelay   IPVSScheduler = "sed"
	IPVSSchedulerNeverQueue              IPVSScheduler = "nq"
	IPVSSchedulerMaglevHashing           IPVSScheduler = "mh"
)

// IPVSConfig tunes the IPVS backend.
type IPVSConfig struct {
	// scheduler is the default IPVS scheduler of every virtual server; a
	// ProxyPolicy can override it per Service.
	// +optional
	// +kubebuilder:default=rr
	Scheduler IPVSScheduler `json:"scheduler,omitempty"`

	// strictARP makes the node answer ARP only for addresses on the interface the
	// request arrived on, which LoadBalancer implementations such as MetalLB need.
	// +optional
	StrictARP *bool `json:"strictARP,omitempty"`

	// tcpTimeout is the IPVS idle timeout of established TCP sessions. 0 keeps the
	// kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	TCPTimeout *metav1.Duration `json:"tcpTimeout,omitempty"`

	// tcpFinTimeout is the IPVS timeout of TCP sessions after a FIN. 0 keeps the
	// kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	TCPFinTimeout *metav1.Duration `json:"tcpFinTimeout,omitempty"`

	// udpTimeout is the IPVS timeout of UDP sessions. 0 keeps the kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	UDPTimeout *metav1.Duration `json:"udpTimeout,omitempty"`

	// excludeCIDRs are networks whose IPVS virtual servers the agent never
	// deletes, so that other software can keep its own there.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	ExcludeCIDRs []CIDR `json:"excludeCIDRs,omitempty"`
}

// IPTablesConfig tunes the iptables rules.
type IPTablesConfig struct {
	// masqueradeBit is the bit of the packet mark that flags packets to be
	// masqueraded, by the iptables and the nftables backends. It must not collide
	// with the bits other software uses. The IPVS backend marks with a bit of its
	// own (0x1000) and refuses any other value than the default: by this API
	// with mode IPVS, and on the node (ProxyNode reason SettingUnsupported)
	// where mode Auto picks IPVS.
	// +optional
	// +kubebuilder:default=14
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31
	MasqueradeBit *int32 `json:"masqueradeBit,omitempty"`

	// masqueradeAll masquerades all traffic sent to Service addresses.
	// +optional
	MasqueradeAll *bool `json:"masqueradeAll,omitempty"`

	// localhostNodePorts lets NodePort Services answer on 127.0.0.1, as
	// kube-proxy does by default. IPv4 only.
	// +optional
	// +kubebuilder:default=true
	LocalhostNodePorts *bool `json:"localhostNodePorts,omitempty"`
}

// LocalTrafficDetectionMode says how traffic from local pods is recognised.
// +kubebuilder:validation:Enum=ClusterCIDR;NodeCIDR;BridgeInterface;InterfaceNamePrefix
type LocalTrafficDetectionMode string

// The local traffic detection modes.
const (
	// LocalTrafficDetectionClusterCIDR: the source is in clusterCIDRs.
	LocalTrafficDetectionClusterCIDR LocalTrafficDetectionMode = "ClusterCIDR"
	// LocalTrafficDetectionNodeCIDR: the source is in the node's podCIDRs.
	LocalTrafficDetectionNodeCIDR LocalTrafficDetectionMode = "NodeCIDR"
	// LocalTrafficDetectionBridgeInterface: the packet arrived on bridgeInterface.
	LocalTrafficDetectionBridgeInterface LocalTrafficDetectionMode = "BridgeInterface"
	// LocalTrafficDetectionInterfaceNamePrefix: the packet arrived on an
	// interface whose name starts with interfaceNamePrefix.
	LocalTrafficDetectionInterfaceNamePrefix LocalTrafficDetectionMode = "InterfaceNamePrefix"
)

// LocalTrafficDetection says how traffic from local pods is recognised.
//
// +kubebuilder:validation:XValidation:rule="self.mode != 'ClusterCIDR' || (has(self.clusterCIDRs) && size(self.clusterCIDRs) > 0)",message="spec.localTrafficDetection.clusterCIDRs is required when mode is ClusterCIDR"
// +kubebuilder:validation:XValidation:rule="self.mode != 'BridgeInterface' || has(self.bridgeInterface)",message="spec.localTrafficDetection.bridgeInterface is required when mode is BridgeInterface"
// +kubebuilder:validation:XValidation:rule="self.mode != 'InterfaceNamePrefix' || has(self.interfaceNamePrefix)",message="spec.localTrafficDetection.interfaceNamePrefix is required when mode is InterfaceNamePrefix"
type LocalTrafficDetection struct {
	// mode is how local traffic is recognised: by source in clusterCIDRs, by
	// source in the node's podCIDRs, by arrival on bridgeInterface, or by arrival
	// on an interface whose name starts with interfaceNamePrefix.
	// +required
	Mode LocalTrafficDetectionMode `json:"mode"`

	// clusterCIDRs are the pod networks of the cluster, for mode ClusterCIDR.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	ClusterCIDRs []CIDR `json:"clusterCIDRs,omitempty"`

	// bridgeInterface is the bridge local pods are attached to, for mode
	// BridgeInterface.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	BridgeInterface string `json:"bridgeInterface,omitempty"`

	// interfaceNamePrefix is the name prefix of local pods' interfaces, for mode
	// InterfaceNamePrefix.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	InterfaceNamePrefix string `json:"interfaceNamePrefix,omitempty"`
}

// ConntrackConfig tunes the node's connection tracking table.
type ConntrackConfig struct {
	// maxPerCore is the number of conntrack entries per CPU core; 0 keeps the
	// kernel's limit.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxPerCore *int32 `json:"maxPerCore,omitempty"`

	// min is the least size of the conntrack table, whatever maxPerCore gives.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Min *int32 `json:"min,omitempty"`

	// tcpEstablishedTimeout is how long an idle established TCP connection stays
	// tracked; 0 keeps the kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	TCPEstablishedTimeout *metav1.Duration `json:"tcpEstablishedTimeout,omitempty"`

	// tcpCloseWaitTimeout is how long a TCP connection in CLOSE_WAIT stays
	// tracked; 0 keeps the kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	TCPCloseWaitTimeout *metav1.Duration `json:"tcpCloseWaitTimeout,omitempty"`

	// udpTimeout is how long a UDP flow that saw traffic one way stays tracked; 0
	// keeps the kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	UDPTimeout *metav1.Duration `json:"udpTimeout,omitempty"`

	// udpStreamTimeout is how long a UDP flow that saw traffic both ways stays
	// tracked; 0 keeps the kernel's value.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	UDPStreamTimeout *metav1.Duration `json:"udpStreamTimeout,omitempty"`
}

// AgentSpec says how the agent DaemonSet runs.
type AgentSpec struct {
	// image is the agent's container image. Absent means the image the operator
	// was released with.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// imagePullPolicy is the pull policy of image.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// resources are the agent container's requests and limits.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// tolerations let the agent run on tainted nodes. Absent means the agent
	// tolerates every taint, as a node-level network component must.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// priorityClassName is the agent pods' priority class.
	// +optional
	// +kubebuilder:default=system-node-critical
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// logVerbosity is the agent's klog verbosity, 0 to 10.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	LogVerbosity *int32 `json:"logVerbosity,omitempty"`
}

// RolloutStrategy says whether a new revision rolls out on its own or waits for
// approval.
// +kubebuilder:validation:Enum=Automatic;Manual
type RolloutStrategy string

const (
	// RolloutAutomatic rolls every new revision out as soon as it exists.
	RolloutAutomatic RolloutStrategy = "Automatic"
	// RolloutManual holds every new revision as pendingRevision until
	// spec.rollout.approvedRevision names it.
	RolloutManual RolloutStrategy = "Manual"
)

// RolloutSpec says how a change reaches the nodes.
//
// +kubebuilder:validation:XValidation:rule="!has(self.approvedRevision) || self.strategy == 'Manual'",message="spec.rollout.approvedRevision is only allowed when spec.rollout.strategy is Manual: remove it or set strategy to Manual"
type RolloutSpec struct {
	// strategy is Automatic, to roll every change out as soon as it is made, or
	// Manual, to hold it until approvedRevision names it.
	// +optional
	// +kubebuilder:default=Automatic
	Strategy RolloutStrategy `json:"strategy,omitempty"`

	// approvedRevision, under the Manual strategy, is the revision (as
	// status.pendingRevision shows it) that may roll out.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ApprovedRevision string `json:"approvedRevision,omitempty"`

	// maxUnavailable is how many nodes, or what percentage of them, may be
	// updating at once after the canary. At least 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="spec.rollout.maxUnavailable must be an integer of at least 1, or a percentage from 1% to 100%"
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// canary chooses the nodes that take a new revision first. The rollout goes
	// on to the other nodes only once every canary is Ready at it. Absent means
	// one node.
	// +optional
	Canary *CanarySpec `json:"canary,omitempty"`

	// autoRollback reassigns the last good revision to every node when the
	// rollout fails.
	// +optional
	// +kubebuilder:default=true
	AutoRollback *bool `json:"autoRollback,omitempty"`

	// progressDeadlineSeconds is how long a batch of nodes may take to report
	// Ready at a new revision before the rollout is declared failed.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=86400
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`
}

// CanarySpec chooses canary nodes, either by label or by count.
//
// +kubebuilder:validation:XValidation:rule="has(self.nodeSelector) != has(self.count)",message="spec.rollout.canary needs exactly one of nodeSelector or count"
type CanarySpec struct {
	// nodeSelector selects the canary nodes among the selected nodes.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// count is how many nodes, the first by name, are canaries.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Count *int32 `json:"count,omitempty"`
}

// GatewayConfigStatus is what the operator observed of the rollout.
type GatewayConfigStatus struct {
	// observedGeneration is the generation of the spec the operator last
	// reconciled successfully.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Ready, Progressing and Degraded, and kstatus's
	// Reconciling and Stalled (docs/operator.md, "GitOps health").
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// currentRevision is the revision every node runs once the rollout is done:
	// the last one that reached every node.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	CurrentRevision string `json:"currentRevision,omitempty"`

	// updatedRevision is the revision being rolled out.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	UpdatedRevision string `json:"updatedRevision,omitempty"`

	// pendingRevision, under the Manual strategy, is the revision waiting for
	// approval through spec.rollout.approvedRevision.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PendingRevision string `json:"pendingRevision,omitempty"`

	// desiredNodes is how many nodes this configuration selects.
	// +optional
	DesiredNodes int32 `json:"desiredNodes,omitempty"`

	// updatedNodes is how many nodes are assigned updatedRevision and have
	// no agent pod left that runs another pod template than its own. A
	// node counts Ready at it (readyNodes) only once its agent reports that
	// pod template (ProxyNode status.podTemplateHash).
	// +optional
	UpdatedNodes int32 `json:"updatedNodes,omitempty"`

	// readyNodes is how many nodes report Ready at their assigned revision.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`

	// failedNodes is how many nodes report a failure at their assigned revision.
	// +optional
	FailedNodes int32 `json:"failedNodes,omitempty"`

	// failedNodeNames names up to 10 of the failed nodes, for a first look.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	FailedNodeNames []string `json:"failedNodeNames,omitempty"`

	// backends counts the nodes per backend they chose.
	// +optional
	// +listType=map
	// +listMapKey=backend
	// +kubebuilder:validation:MaxItems=4
	Backends []BackendCount `json:"backends,omitempty"`
}

// BackendCount is how many nodes run one backend.
type BackendCount struct {
	// backend is the backend.
	// +required
	Backend Backend `json:"backend"`

	// nodes is how many nodes run it.
	// +required
	Nodes int32 `json:"nodes"`
}

// GatewayConfig describes how the proxy runs on a set of nodes, and how a change
// of it is rolled out and approved.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=gwc,categories=synterix
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredNodes`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updatedNodes`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.currentRevision`
// +kubebuilder:printcolumn:name="Pending",type=string,JSONPath=`.status.pendingRevision`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GatewayConfig struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the desired configuration.
	// +required
	Spec GatewayConfigSpec `json:"spec"`

	// status is what the operator observed.
	// The API server defaults it to {observedGeneration: 0} until the operator
	// first writes it, so that GitOps tools (kstatus) read a new object as
	// in progress rather than current.
	// +optional
	// +kubebuilder:default={}
	Status GatewayConfigStatus `json:"status,omitempty"`
}

// GatewayConfigList is a list of GatewayConfigs.
//
// +kubebuilder:object:root=true
type GatewayConfigList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GatewayConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&GatewayConfig{}, &GatewayConfigList{})
}
