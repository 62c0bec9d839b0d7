// Package model turns Kubernetes Services, EndpointSlices, the local Node and
// resolved proxy policies into the backend-neutral desired state of one node.
//
// The model is pure: it performs no I/O, imports no client library and knows
// nothing about iptables or IPVS. Backends consume the State it produces.
package model

import (
	"fmt"
	"net/netip"
	"time"
)

// Protocol is a transport protocol of a frontend.
type Protocol string

// Supported protocols.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Family is an IP family.
type Family string

// IP families.
const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// Algorithm is a load-balancing algorithm. The empty value means "the
// backend's default".
type Algorithm string

// Known algorithms. Backends declare which ones they honour.
const (
	AlgorithmDefault                  Algorithm = ""
	AlgorithmRandom                   Algorithm = "Random"
	AlgorithmRoundRobin               Algorithm = "RoundRobin"
	AlgorithmWeightedRoundRobin       Algorithm = "WeightedRoundRobin"
	AlgorithmLeastConnections         Algorithm = "LeastConnections"
	AlgorithmWeightedLeastConnections Algorithm = "WeightedLeastConnections"
	AlgorithmSourceHashing            Algorithm = "SourceHashing"
	AlgorithmDestinationHashing       Algorithm = "DestinationHashing"
	AlgorithmMaglev                   Algorithm = "Maglev"
	AlgorithmShortestExpectedDelay    Algorithm = "ShortestExpectedDelay"
	AlgorithmNeverQueue               Algorithm = "NeverQueue"
)

// KnownAlgorithms lists every algorithm the model accepts, in a stable order.
var KnownAlgorithms = []Algorithm{
	AlgorithmRandom, AlgorithmRoundRobin, AlgorithmWeightedRoundRobin,
	AlgorithmLeastConnections, AlgorithmWeightedLeastConnections,
	AlgorithmSourceHashing, AlgorithmDestinationHashing, AlgorithmMaglev,
	AlgorithmShortestExpectedDelay, AlgorithmNeverQueue,
}

// FrontendKind says how traffic reaches a frontend.
type FrontendKind string

// Frontend kinds.
const (
	KindClusterIP    FrontendKind = "ClusterIP"
	KindNodePort     FrontendKind = "NodePort"
	KindLoadBalancer FrontendKind = "LoadBalancer"
	KindExternalIP   FrontendKind = "ExternalIP"
)

// External reports whether the frontend is governed by the
// externalTrafficPolicy (everything except ClusterIP).
func (k FrontendKind) External() bool { return k != KindClusterIP }

// Masquerade tells a backend when traffic to a frontend must be SNATed.
type Masquerade string

// Masquerade modes.
const (
	// MasqueradeNever preserves the client address (externalTrafficPolicy
	// Local). Hairpin traffic is still masqueraded by every backend.
	MasqueradeNever Masquerade = "Never"
	// MasqueradeOffCluster masquerades traffic that local traffic
	// detection does not recognise as coming from a pod. Without
	// detection it means Never.
	MasqueradeOffCluster Masquerade = "OffCluster"
	// MasqueradeAlways masquerades every connection.
	MasqueradeAlways Masquerade = "Always"
)

// Affinity is the session affinity of a service port.
type Affinity struct {
	// ClientIP enables client-IP based stickiness.
	ClientIP bool
	// Timeout is how long an idle client stays bound to its endpoint.
	Timeout time.Duration
}

// DefaultAffinityTimeout is the Kubernetes default ClientIP affinity timeout.
const DefaultAffinityTimeout = 10800 * time.Second

// ServiceRef names a Service.
type ServiceRef struct {
	Namespace string
	Name      string
}

func (r ServiceRef) String() string { return r.Namespace + "/" + r.Name }

// PolicyPort selects a service port by name or number. A zero value of both
// fields matches nothing.
type PolicyPort struct {
	Name string
	Port int32
}

// Policy is a resolved, backend-neutral proxy policy. It is filled by the
// agent from whatever API object carries it; the model never sees the CRD.
type Policy struct {
	Namespace string
	Name      string
	// Services are the targets, with any label selector already resolved.
	Services []ServiceRef
	// Ports restricts the policy to some service ports; empty means all.
	Ports []PolicyPort
	// Algorithm overrides the backend default when not empty.
	Algorithm Algorithm
	// Affinity overrides the Service's session affinity when not nil.
	Affinity *Affinity
	// SourceRanges overrides spec.loadBalancerSourceRanges when not nil.
	SourceRanges []string
	// Created orders conflicting policies: the older one wins.
	Created time.Time
}

func (p Policy) String() string { return p.Namespace + "/" + p.Name }

// The nodePortAddresses keywords, as kube-proxy's: each is resolved per
// family, and they combine with each other and with CIDRs.
const (
	// NodePortPrimary selects the node's primary address of the family.
	NodePortPrimary = "primary"
	// NodePortLocalhost selects the loopback CIDRs (127.0.0.0/8, ::1/128):
	// NodePorts on 127.0.0.1 with LocalhostNodePorts; IPv6 has none.
	NodePortLocalhost = "localhost"
	// NodePortAll selects the zero CIDRs: every node address.
	NodePortAll = "all"
)

// Config is the per-node configuration of the model.
type Config struct {
	// NodeName is the name of this node; endpoints with this node name are
	// local.
	NodeName string
	// Family selects which addresses the state contains. Default IPv4.
	Family Family
	// NodeIPs are the node's addresses. Addresses from the Node object's
	// status are added to them. The first one of the family is primary.
	NodeIPs []netip.Addr
	// NodePortAddresses restricts NodePort frontends to node addresses in
	// these CIDRs, or those the keywords primary, localhost and all select.
	// Empty means every node address (all); so does, for one family, a
	// list with no keyword and no CIDR of that family (as kube-proxy).
	NodePortAddresses []string
	// ServiceProxyName is the value of service.kubernetes.io/service-proxy-name
	// this agent answers to. Empty means only unlabelled Services.
	ServiceProxyName string
	// LocalDetection says how traffic from pods is told apart from
	// traffic from outside the cluster.
	LocalDetection LocalDetection
	// SingleStack says the node programs Family only: it has no address
	// of the other family, whose Services it cannot serve.
	SingleStack bool
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// LocalhostNodePorts makes NodePorts reachable on 127.0.0.1 (IPv4 only).
	LocalhostNodePorts bool
	// LocalhostUnsupported, when not empty, says why the node's backend
	// serves no NodePorts on 127.0.0.1: LocalhostNodePorts then adds no
	// such frontend and is reported as a problem, instead of being
	// dropped by the backend without a word.
	LocalhostUnsupported string
}

// Endpoint is one backend address of a service port.
type Endpoint struct {
	Addr        netip.Addr
	Port        int32
	NodeName    string
	Zone        string
	Ready       bool
	Serving     bool
	Terminating bool
	// Local is true when the endpoint runs on this node.
	Local bool
}

// AddrPort returns the endpoint as an address:port pair.
func (e Endpoint) AddrPort() netip.AddrPort {
	return netip.AddrPortFrom(e.Addr, uint16(e.Port))
}

func (e Endpoint) String() string { return e.AddrPort().String() }

// Frontend is one address:port/protocol where a service port is reachable.
type Frontend struct {
	Kind     FrontendKind
	Addr     netip.Addr
	Port     int32
	Protocol Protocol
	// SourceRanges, when not empty, lists the only client networks allowed
	// (LoadBalancer frontends). Other clients are dropped.
	SourceRanges []netip.Prefix
	Masquerade   Masquerade
	// Localhost marks the 127.0.0.1 NodePort frontend, which needs
	// route_localnet and is always masqueraded.
	Localhost bool
}

// AddrPort returns the frontend as an address:port pair.
func (f Frontend) AddrPort() netip.AddrPort {
	return netip.AddrPortFrom(f.Addr, uint16(f.Port))
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s %s/%s", f.Kind, f.AddrPort(), f.Protocol)
}

// Service is the desired state of one service port: all its frontends and
// the endpoints each class of frontend balances to.
type Service struct {
	// Key is stable for the lifetime of the service port:
	// "namespace/name:portName/PROTOCOL".
	Key       string
	Namespace string
	Name      string
	PortName  string
	Protocol  Protocol
	// Hash changes whenever anything a backend renders for this service
	// port changes.
	Hash string

	Frontends []Frontend

	// InternalEndpoints serve ClusterIP frontends, after
	// internalTrafficPolicy, terminating fallback and topology.
	InternalEndpoints []Endpoint
	// ExternalEndpoints serve NodePort, LoadBalancer and external IP
	// frontends, after externalTrafficPolicy and terminating fallback.
	ExternalEndpoints []Endpoint
	// InternalLocal / ExternalLocal record a Local traffic policy. With no
	// endpoints a Local policy means DROP, a Cluster policy REJECT.
	InternalLocal bool
	ExternalLocal bool
	// ClusterEndpoints are the cluster-wide endpoints; with
	// externalTrafficPolicy Local a backend may send in-cluster clients of
	// external frontends to them.
	ClusterEndpoints []Endpoint

	Algorithm           Algorithm
	Affinity            Affinity
	HealthCheckNodePort int32
	// Policy is "namespace/name" of the policy applied, if any.
	Policy string
}

// Endpoints returns the endpoints serving a frontend kind.
func (s *Service) Endpoints(k FrontendKind) []Endpoint {
	if k.External() {
		return s.ExternalEndpoints
	}
	return s.InternalEndpoints
}

// Local reports whether a frontend kind uses a Local traffic policy.
func (s *Service) Local(k FrontendKind) bool {
	if k.External() {
		return s.ExternalLocal
	}
	return s.InternalLocal
}

// DropsWithoutEndpoints reports whether a frontend kind with no endpoints
// to send to drops its traffic (a Local policy) rather than rejecting it
// (a Cluster policy). For ClusterIP frontends it follows kube-proxy: an
// internalTrafficPolicy Local drops only while endpoints exist on other
// nodes, and rejects like Cluster when the Service has none anywhere.
// External frontends with a Local policy always drop.
func (s *Service) DropsWithoutEndpoints(k FrontendKind) bool {
	if k.External() {
		return s.ExternalLocal
	}
	return s.InternalLocal && len(s.ClusterEndpoints) > 0
}

// Problem is a piece of input the model skipped, with the reason.
type Problem struct {
	// Object is "Kind namespace/name".
	Object  string
	Message string
}

func (p Problem) String() string { return p.Object + ": " + p.Message }

// State is the complete desired state of one node, sorted and
// deterministic: the same input always yields an identical State.
type State struct {
	NodeName string
	Family   Family
	// NodeIPs are the node addresses of the family, primary first.
	NodeIPs []netip.Addr
	// Local is the local traffic detection of the family.
	Local              LocalTraffic
	MasqueradeAll      bool
	LocalhostNodePorts bool
	// Services are sorted by Key.
	Services []*Service
	// Problems lists skipped input, sorted.
	Problems []Problem
}

// Service returns the service port with the given key, or nil.
func (s *State) Service(key string) *Service {
	if s == nil {
		return nil
	}
	lo, hi := 0, len(s.Services)
	for lo < hi {
		m := (lo + hi) / 2
		if s.Services[m].Key < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s.Services) && s.Services[lo].Key == key {
		return s.Services[lo]
	}
	return nil
}

// Counts are what a State asks a node to program, counted the same way for
// every backend: service ports, and (service port, endpoint) pairs used by
// any of its frontends.
func (s *State) Counts() (services, endpoints int) {
	if s == nil {
		return 0, 0
	}
	for _, svc := range s.Services {
		endpoints += svc.endpointCount()
	}
	return len(s.Services), endpoints
}

// endpointCount counts the distinct endpoints of the service port's
// cluster, internal and external sets (usually one shared list).
func (s *Service) endpointCount() int {
	lists := [][]Endpoint{s.ClusterEndpoints, s.InternalEndpoints, s.ExternalEndpoints}
	if sameList(lists[0], lists[1]) && sameList(lists[0], lists[2]) {
		return len(lists[0])
	}
	seen := map[netip.AddrPort]bool{}
	for _, l := range lists {
		for _, e := range l {
			seen[e.AddrPort()] = true
		}
	}
	return len(seen)
}

// sameList reports whether two endpoint lists are the same slice.
func sameList(a, b []Endpoint) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
