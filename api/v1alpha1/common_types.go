package v1alpha1

// CIDR is an IPv4 or IPv6 network in CIDR notation, such as 10.0.0.0/8 or fd00::/64.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.0.0.0/8 or fd00::/64"
type CIDR string

// Well-known labels and annotations.
const (
	// ServiceProxyNameLabel is the Service label that hands a Service to one proxy.
	// Services that carry it are ignored by kube-proxy and by every proxy whose
	// name differs.
	ServiceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
)

// BackendMode is the data-plane backend an agent programs.
// +kubebuilder:validation:Enum=Auto;IPTables;IPVS;NFTables
type BackendMode string

const (
	// BackendModeAuto picks IPVS where the kernel has it, else iptables. Its
	// choice never changes with an agent upgrade; nftables is chosen
	// explicitly with BackendModeNFTables, which reaches nodes through a new
	// config revision and its rollout.
	BackendModeAuto BackendMode = "Auto"
	// BackendModeIPTables always uses iptables.
	BackendModeIPTables BackendMode = "IPTables"
	// BackendModeIPVS always uses IPVS; a node whose kernel lacks it reports Degraded.
	BackendModeIPVS BackendMode = "IPVS"
	// BackendModeNFTables always uses nftables (a table of its own per address
	// family, programmed over netlink; no iptables userspace needed); a node
	// whose kernel lacks nf_tables reports Degraded.
	BackendModeNFTables BackendMode = "NFTables"
)

// Backend is the backend an agent actually runs.
// +kubebuilder:validation:Enum=IPTables;IPVS;NFTables
type Backend string

const (
	// BackendIPTables is the iptables backend.
	BackendIPTables Backend = "IPTables"
	// BackendIPVS is the IPVS backend.
	BackendIPVS Backend = "IPVS"
	// BackendNFTables is the nftables backend.
	BackendNFTables Backend = "NFTables"
)
