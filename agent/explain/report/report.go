// Package report holds the answers of the agent's explain endpoint
// (/debug/synterix/...), as JSON types that the kubectl plugin decodes. It
// has no dependency beyond the packet tracer's result types, so that the
// plugin does not link the agent.
package report

import (
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// Paths of the endpoint, under the agent's secure metrics server.
const (
	PathPrefix   = "/debug/synterix/"
	PathServices = PathPrefix + "services"
	PathTrace    = PathPrefix + "trace"
	PathDiff     = PathPrefix + "diff"
)

// Audience is the audience of the tokens the endpoint accepts: a token
// requested for it (TokenRequest, "kubectl create token --audience") is
// refused by the API server, so an agent that receives one cannot use it
// against the cluster.
const Audience = "synterix-agent"

// TokenHeader carries the token ("Bearer <token>") of requests relayed by
// the API server's proxy, which consumes their Authorization header.
const TokenHeader = "X-Synterix-Authorization"

// Sync is the node's last sync, as every answer starts.
type Sync struct {
	Node          string    `json:"node"`
	Revision      string    `json:"revision,omitempty"`
	Backend       string    `json:"backend,omitempty"`
	BackendReason string    `json:"backendReason,omitempty"`
	LastSync      time.Time `json:"lastSync,omitempty"`
	// Error is the error of the last sync; the kernel then holds the
	// state of the sync before.
	Error          string         `json:"error,omitempty"`
	FailedPolicies []FailedPolicy `json:"failedPolicies,omitempty"`
}

// FailedPolicy is a ProxyPolicy the node does not program.
type FailedPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
	Message   string `json:"message,omitempty"`
}

// Node answers GET /debug/synterix/services: the service ports the node
// programs, per IP family.
type Node struct {
	Sync
	Families []FamilySummary `json:"families"`
}

// FamilySummary is one IP family of a Node.
type FamilySummary struct {
	Family     string           `json:"family"`
	Programmed bool             `json:"programmed"`
	Message    string           `json:"message,omitempty"`
	Services   []ServiceSummary `json:"services,omitempty"`
	// Problems are the input the model skipped.
	Problems []string `json:"problems,omitempty"`
}

// ServiceSummary is one service port.
type ServiceSummary struct {
	Key       string   `json:"key"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Port      string   `json:"port,omitempty"`
	Protocol  string   `json:"protocol"`
	Frontends []string `json:"frontends"`
	Endpoints int      `json:"endpoints"`
	Policy    string   `json:"policy,omitempty"`
}

// Service answers GET /debug/synterix/services/NAMESPACE/NAME: everything
// the node knows and holds of one Service, and what it means.
type Service struct {
	Sync
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Watched is false when the agent does not see the Service at all (it
	// does not exist, or another proxy handles it).
	Watched bool `json:"watched"`
	// Policies are the ProxyPolicies that target the Service, applied or
	// not.
	Policies []Policy `json:"policies,omitempty"`
	Ports    []Port   `json:"ports,omitempty"`
	// Findings are the facts that matter, in words; Verdict sums them up.
	Findings []string `json:"findings"`
	Verdict  string   `json:"verdict"`
	// OK is false when a finding is a problem.
	OK bool `json:"ok"`
}

// Policy is a ProxyPolicy that targets a Service.
type Policy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Applied is true when the node programs it; otherwise Reason and
	// Message say why (UnsupportedByBackend, Invalid, or another policy
	// that wins).
	Applied bool   `json:"applied"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Port is one service port of one family: what the agent wants, what the
// kernel holds, and how they differ.
type Port struct {
	Family    string     `json:"family"`
	Key       string     `json:"key"`
	PortName  string     `json:"portName,omitempty"`
	Protocol  string     `json:"protocol"`
	Frontends []Frontend `json:"frontends"`
	// Endpoints are every endpoint of the port's EndpointSlices, used or
	// not, with the reason.
	Endpoints []Endpoint `json:"endpoints"`
	// InternalTrafficPolicyLocal and ExternalTrafficPolicyLocal are the
	// traffic policies in effect.
	InternalTrafficPolicyLocal bool   `json:"internalTrafficPolicyLocal,omitempty"`
	ExternalTrafficPolicyLocal bool   `json:"externalTrafficPolicyLocal,omitempty"`
	Algorithm                  string `json:"algorithm,omitempty"`
	Affinity                   string `json:"affinity,omitempty"`
	// Policy is the ProxyPolicy applied to this port.
	Policy string `json:"policy,omitempty"`
	Kernel Kernel `json:"kernel"`
	// Drift lists how the kernel differs from the desired state for this
	// port; empty when they match.
	Drift []Difference `json:"drift,omitempty"`
}

// Frontend is an address where the port is reachable.
type Frontend struct {
	Kind         string   `json:"kind"`
	Address      string   `json:"address"`
	Masquerade   string   `json:"masquerade"`
	SourceRanges []string `json:"sourceRanges,omitempty"`
}

// Endpoint is one endpoint of a port's EndpointSlices.
type Endpoint struct {
	Address string `json:"address"`
	Node    string `json:"node,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Local   bool   `json:"local"`
	// Category is ready, serving-terminating, or not-ready.
	Category string `json:"category"`
	// ClusterIP and External say whether the ClusterIP frontends and the
	// external frontends (NodePort, LoadBalancer, external IPs) send
	// traffic to the endpoint: "used", or why not.
	ClusterIP string `json:"clusterIP"`
	External  string `json:"external"`
}

// Used is the value of Endpoint.ClusterIP and External for an endpoint in
// use.
const Used = "used"

// Kernel is what the kernel holds for a port, read back.
type Kernel struct {
	Backend string `json:"backend"`
	// Rules are the iptables rules by chain ("nat SYNX-SVC-..."), the
	// port's entries of the shared chains included; on nftables, the
	// rules of the port's own chains (svc-…, ext-…, fw-…).
	Rules map[string][]string `json:"rules,omitempty"`
	// VirtualServers are the IPVS services of the port's frontends.
	VirtualServers []trace.VirtualServer `json:"virtualServers,omitempty"`
	// SetEntries are the ipset members naming the port's frontends; on
	// nftables, the port's elements of our maps, by map.
	SetEntries map[string][]string `json:"setEntries,omitempty"`
	// Error says why the kernel could not be read.
	Error string `json:"error,omitempty"`
}

// Difference is one way the kernel differs from the desired state.
type Difference struct {
	// Kind is missing (desired, not in the kernel), extra (in the kernel,
	// not desired) or differs.
	Kind string `json:"kind"`
	// Object names what differs: "chain nat SYNX-SVC-...", "jump nat
	// PREROUTING", "virtual server 10.96.0.10:80/tcp", "ipset X".
	Object string `json:"object"`
	Detail string `json:"detail,omitempty"`
	// Service is the service port key the object belongs to, when known.
	Service string `json:"service,omitempty"`
}

// Diff answers GET /debug/synterix/diff: desired against kernel, per
// family.
type Diff struct {
	Sync
	Families []FamilyDiff `json:"families"`
}

// FamilyDiff is one family of a Diff.
type FamilyDiff struct {
	Family     string `json:"family"`
	Programmed bool   `json:"programmed"`
	Backend    string `json:"backend,omitempty"`
	// InSync is true when the kernel holds exactly the desired state.
	InSync      bool         `json:"inSync"`
	Differences []Difference `json:"differences,omitempty"`
	// Compared counts the objects compared (chains and jumps, or virtual
	// servers, sets and addresses).
	Compared int    `json:"compared"`
	Error    string `json:"error,omitempty"`
}

// Trace answers GET /debug/synterix/trace?src=&dst=&port=&proto=.
type Trace struct {
	Sync
	Family  string        `json:"family"`
	Result  *trace.Result `json:"result"`
	Summary string        `json:"summary"`
}
