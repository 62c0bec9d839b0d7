package model

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Well-known labels.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelZone             = "topology.kubernetes.io/zone"
)

// MaxPortsPerService caps how many ports of one Service the model renders.
// The API does not bound the list; a runaway object must not blow up every
// node's rule set.
const MaxPortsPerService = 1000

// Input is everything the model needs for one node.
type Input struct {
	Config         Config
	Node           *corev1.Node
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Policies       []Policy
}

// Source gives a build the Services and EndpointSlices, by Service: the
// agent's informer caches implement it, so that an incremental build looks
// up only the Services that changed.
type Source interface {
	// Services lists every Service (a full build walks them all).
	Services() []*corev1.Service
	// Service returns one Service, or nil when it does not exist.
	Service(ref ServiceRef) *corev1.Service
	// EndpointSlices returns the slices labelled with the Service's name,
	// of any address family, in any order.
	EndpointSlices(ref ServiceRef) []*discoveryv1.EndpointSlice
}

// Globals is the node-wide input of a build: a change here rebuilds every
// Service.
type Globals struct {
	Config   Config
	Node     *corev1.Node
	Policies []Policy
}

// builder carries per-build scratch state.
type builder struct {
	cfg       Config
	family    Family
	zone      string
	nodeIPs   []netip.Addr
	npAddrs   []netip.Addr // NodePort addresses
	localhost bool         // add a 127.0.0.1 NodePort frontend
	local     LocalTraffic // local traffic detection of the family
	problems  []Problem
	src       Source
	policies  []Policy // valid, sorted oldest first
	// hints of the endpoints of the service port being built
	hints map[Endpoint]*discoveryv1.EndpointHints
	index map[Endpoint]int // scratch for endpoint deduplication
}

// Build computes the desired State of one node from scratch. It never
// panics on malformed input: the offending piece is skipped and reported in
// State.Problems. The agent uses Builder, which reuses unchanged Services.
func Build(in Input) *State {
	var b Builder
	return b.Build(Globals{Config: in.Config, Node: in.Node, Policies: in.Policies}, newListSource(in), nil)
}

// newBuilder prepares the node-wide part of a build; its problems are the
// global ones.
func newBuilder(g Globals, src Source) *builder {
	b := &builder{cfg: g.Config, family: g.Config.Family, src: src}
	if b.family == "" {
		b.family = IPv4
	}
	b.initNode(g.Node)
	b.initLocal(g.Node)
	b.initNodePorts()
	b.initPolicies(g.Policies)
	return b
}

// serviceResult builds the service ports of one Service, each with its
// hash, and the problems found on the way.
func (b *builder) serviceResult(svc *corev1.Service) svcResult {
	b.problems = nil
	var out []*Service
	seen := map[string]bool{}
	for _, s := range b.service(svc) {
		if seen[s.Key] {
			b.problem(svcObject(svc), "duplicate service port %q skipped", s.Key)
			continue
		}
		seen[s.Key] = true
		s.Hash = hashService(s)
		out = append(out, s)
	}
	r := svcResult{ports: out, problems: b.problems}
	b.problems = nil
	return r
}

// sortProblems sorts and deduplicates problems.
func sortProblems(ps []Problem) []Problem {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Object != ps[j].Object {
			return ps[i].Object < ps[j].Object
		}
		return ps[i].Message < ps[j].Message
	})
	return dedupProblems(ps)
}

func dedupProblems(ps []Problem) []Problem {
	out := ps[:0]
	for i, p := range ps {
		if i > 0 && p == ps[i-1] {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (b *builder) problem(object, format string, args ...any) {
	b.problems = append(b.problems, Problem{Object: object, Message: fmt.Sprintf(format, args...)})
}

func (b *builder) familyOf(a netip.Addr) bool {
	if b.family == IPv6 {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4() || a.Is4In6()
}

// parseIP parses an address of any family and normalises IPv4-in-IPv6.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func svcObject(s *corev1.Service) string { return "Service " + s.Namespace + "/" + s.Name }

func sliceObject(s *discoveryv1.EndpointSlice) string {
	return "EndpointSlice " + s.Namespace + "/" + s.Name
}

func (b *builder) initNode(node *corev1.Node) {
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if a.IsValid() && b.familyOf(a) && !seen[a] {
			seen[a] = true
			b.nodeIPs = append(b.nodeIPs, a.Unmap())
		}
	}
	for _, a := range b.cfg.NodeIPs {
		add(a.Unmap())
	}
	if node == nil {
		return
	}
	b.zone = node.Labels[LabelZone]
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, na := range node.Status.Addresses {
			if na.Type != t {
				continue
			}
			a, ok := parseIP(na.Address)
			if !ok {
				b.problem("Node "+node.Name, "invalid %s %q skipped", t, na.Address)
				continue
			}
			add(a)
		}
	}
}

// initNodePorts resolves nodePortAddresses for the builder's family: the
// node addresses inside its CIDRs and keywords ("primary": the family's
// primary address; "localhost": the loopback CIDRs; "all": the zero
// CIDRs), and whether NodePorts answer on 127.0.0.1. Empty, or nothing of
// the family, means every node address of the family, as "all". Loopback NodePorts need route_localnet, which only
// IPv4 has: an IPv6 family asked for ::1 explicitly says so in a problem.
func (b *builder) initNodePorts() {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	if b.family == IPv6 {
		loopback = netip.MustParsePrefix("::1/128")
	}
	entries := b.cfg.NodePortAddresses
	if !b.npAddrsOfFamily() {
		// As kube-proxy: a family none of the entries speaks of (no
		// keyword, no CIDR of the family) answers on every address.
		entries = []string{NodePortAll}
	}
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if !seen[a] {
			seen[a] = true
			b.npAddrs = append(b.npAddrs, a)
		}
	}
	wantLoopback, explicitLoopback := false, false
	for _, s := range entries {
		var ps []netip.Prefix
		switch s {
		case NodePortPrimary:
			if len(b.nodeIPs) > 0 {
				add(b.nodeIPs[0])
			}
			continue
		case NodePortLocalhost:
			ps, explicitLoopback = []netip.Prefix{loopback}, true
		case NodePortAll:
			ps = []netip.Prefix{netip.PrefixFrom(loopback.Addr(), 0).Masked()}
		default:
			p, err := netip.ParsePrefix(s)
			if err != nil {
				b.problem("Config", "invalid nodePortAddresses entry %q skipped", s)
				continue
			}
			if !b.familyOf(p.Addr()) {
				continue
			}
			ps = []netip.Prefix{p.Masked()}
			explicitLoopback = explicitLoopback || (p.Bits() > 0 && p.Overlaps(loopback))
		}
		for _, p := range ps {
			wantLoopback = wantLoopback || p.Overlaps(loopback)
			for _, a := range b.nodeIPs {
				if p.Contains(a) {
					add(a)
				}
			}
		}
	}
	b.initLocalhost(wantLoopback, explicitLoopback)
	sort.Slice(b.npAddrs, func(i, j int) bool { return b.npAddrs[i].Less(b.npAddrs[j]) })
}

// npAddrsOfFamily reports whether nodePortAddresses says anything about
// the builder's family: a keyword, or a CIDR of the family. Entries that
// do not parse count, so that they are reported.
func (b *builder) npAddrsOfFamily() bool {
	for _, s := range b.cfg.NodePortAddresses {
		p, err := netip.ParsePrefix(s)
		if err != nil || b.familyOf(p.Addr()) {
			return true
		}
	}
	return false
}

// initLocalhost decides whether NodePorts answer on 127.0.0.1: when the
// loopback is among the NodePort addresses and localhostNodePorts allows
// it, on IPv4 only, and the backend serves them. A loopback named
// explicitly (the keyword localhost, or a loopback CIDR) that cannot be
// served is a problem, and so is localhostNodePorts on a backend that
// serves none.
func (b *builder) initLocalhost(want, explicit bool) {
	switch {
	case !want:
	case b.family == IPv6:
		if explicit {
			b.problem("Config", "nodePortAddresses includes the IPv6 loopback ::1, where NodePorts cannot answer "+
				"(IPv6 has no route_localnet; kube-proxy does not serve it either): IPv6 NodePorts answer on the node's other addresses only")
		}
	case !b.cfg.LocalhostNodePorts:
		if explicit {
			b.problem("Config", "nodePortAddresses includes the loopback 127.0.0.0/8, but iptables.localhostNodePorts is false: "+
				"NodePorts do not answer on 127.0.0.1")
		}
	case b.cfg.LocalhostUnsupported != "":
		b.problem("Config", "iptables.localhostNodePorts is true, but %s: NodePorts do not answer on 127.0.0.1", b.cfg.LocalhostUnsupported)
	default:
		b.localhost = true
	}
}

// slicesOf returns the Service's EndpointSlices of the builder's family,
// sorted by name so that the result does not depend on cache order.
func (b *builder) slicesOf(ref ServiceRef) []*discoveryv1.EndpointSlice {
	want := discoveryv1.AddressTypeIPv4
	if b.family == IPv6 {
		want = discoveryv1.AddressTypeIPv6
	}
	var out []*discoveryv1.EndpointSlice
	for _, es := range b.src.EndpointSlices(ref) {
		if es != nil && es.AddressType == want && es.Labels[discoveryv1.LabelServiceName] == ref.Name {
			out = append(out, es)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (b *builder) initPolicies(ps []Policy) {
	for _, p := range ps {
		obj := "Policy " + p.String()
		if p.Algorithm != AlgorithmDefault && !knownAlgorithm(p.Algorithm) {
			b.problem(obj, "unknown algorithm %q ignored", p.Algorithm)
			p.Algorithm = AlgorithmDefault
		}
		if p.Affinity != nil {
			a := *p.Affinity
			if a.ClientIP && a.Timeout <= 0 {
				a.Timeout = DefaultAffinityTimeout
			}
			if a.Timeout > 24*time.Hour {
				b.problem(obj, "affinity timeout %s capped at 24h", a.Timeout)
				a.Timeout = 24 * time.Hour
			}
			p.Affinity = &a
		}
		b.policies = append(b.policies, p)
	}
	sort.SliceStable(b.policies, func(i, j int) bool {
		pi, pj := b.policies[i], b.policies[j]
		if !pi.Created.Equal(pj.Created) {
			return pi.Created.Before(pj.Created)
		}
		return pi.String() < pj.String()
	})
}

func knownAlgorithm(a Algorithm) bool {
	for _, k := range KnownAlgorithms {
		if k == a {
			return true
		}
	}
	return false
}

// policyFor returns the oldest policy targeting the service port, and
// records a problem for every younger one that loses the conflict.
func (b *builder) policyFor(ref ServiceRef, sp corev1.ServicePort) *Policy {
	var win *Policy
	for i := range b.policies {
		p := &b.policies[i]
		if !policyTargets(p, ref, sp) {
			continue
		}
		if win == nil {
			win = p
			continue
		}
		b.problem("Policy "+p.String(), "ignored for %s port %q: older policy %s takes precedence", ref, portLabel(sp), win)
	}
	return win
}

func portLabel(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return fmt.Sprint(sp.Port)
}

func policyTargets(p *Policy, ref ServiceRef, sp corev1.ServicePort) bool {
	hit := false
	for _, r := range p.Services {
		if r == ref {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	if len(p.Ports) == 0 {
		return true
	}
	for _, pp := range p.Ports {
		if (pp.Name != "" && pp.Name == sp.Name) || (pp.Port != 0 && pp.Port == sp.Port) {
			return true
		}
	}
	return false
}

// handled reports whether this agent is responsible for the Service.
func (b *builder) handled(svc *corev1.Service) bool {
	v, ok := svc.Labels[LabelServiceProxyName]
	if !ok {
		return true
	}
	return b.cfg.ServiceProxyName != "" && v == b.cfg.ServiceProxyName
}

// svcShape is what every port of one Service shares: its addresses of the
// builder's family, traffic policies, affinity and source ranges.
type svcShape struct {
	svc                *corev1.Service
	ref                ServiceRef
	obj                string
	vips, ext, lb      []netip.Addr
	ranges             []netip.Prefix
	isLB, nodePorts    bool
	etpLocal, itpLocal bool
	affinity           Affinity
}

// service builds the service ports of one Service: nothing for a Service
// this agent does not handle, an ExternalName, a headless Service or one
// with no ClusterIP of the family yet.
func (b *builder) service(svc *corev1.Service) []*Service {
	if svc == nil || !b.handled(svc) || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	sh, ok := b.shape(svc)
	if !ok {
		return nil
	}
	var out []*Service
	for i, sp := range svc.Spec.Ports {
		if i >= MaxPortsPerService {
			b.problem(sh.obj, "has %d ports, only the first %d are proxied", len(svc.Spec.Ports), MaxPortsPerService)
			break
		}
		if s := b.servicePort(sh, sp); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// shape reads what the ports of a Service share; ok is false when the
// Service has no ClusterIP of the builder's family (headless, not allocated
// yet, or single-stack of the other family).
func (b *builder) shape(svc *corev1.Service) (*svcShape, bool) {
	sh := &svcShape{svc: svc, ref: ServiceRef{Namespace: svc.Namespace, Name: svc.Name}, obj: svcObject(svc),
		isLB: svc.Spec.Type == corev1.ServiceTypeLoadBalancer}
	clusterIPs := svc.Spec.ClusterIPs
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs = []string{svc.Spec.ClusterIP}
	}
	for _, s := range clusterIPs {
		if s == corev1.ClusterIPNone {
			return nil, false
		}
	}
	b.familyProblems(svc, clusterIPs)
	sh.vips = b.addrs(sh.obj, "clusterIP", clusterIPs)
	if len(sh.vips) == 0 {
		return nil, false
	}
	sh.ext = b.addrs(sh.obj, "externalIP", svc.Spec.ExternalIPs)
	if sh.isLB {
		sh.lb = b.addrs(sh.obj, "load balancer ingress IP", b.ingressIPs(svc))
	}
	sh.ranges = b.prefixes(sh.obj, "loadBalancerSourceRanges", svc.Spec.LoadBalancerSourceRanges)
	sh.nodePorts = sh.isLB || svc.Spec.Type == corev1.ServiceTypeNodePort
	sh.etpLocal = (sh.nodePorts || len(sh.ext) > 0) &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	sh.itpLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	sh.affinity = b.affinity(sh.obj, svc)
	return sh, true
}

// addrs parses addresses, reporting invalid ones, and keeps those of the
// builder's family.
func (b *builder) addrs(obj, field string, in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		a, ok := parseIP(s)
		if !ok {
			b.problem(obj, "invalid %s %q skipped", field, s)
			continue
		}
		if b.familyOf(a) {
			out = append(out, a)
		}
	}
	return out
}

// ingressIPs lists the load balancer's IPs the node captures: not the
// hostname-only ones, nor those of a load balancer that proxies (ipMode
// Proxy), whose traffic must reach the load balancer itself.
func (b *builder) ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
			continue
		}
		out = append(out, ing.IP)
	}
	return out
}

// affinity is the Service's session affinity, with its timeout checked.
func (b *builder) affinity(obj string, svc *corev1.Service) Affinity {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return Affinity{}
	}
	a := Affinity{ClientIP: true, Timeout: DefaultAffinityTimeout}
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		t := *c.ClientIP.TimeoutSeconds
		if t > 0 && t <= 86400 {
			a.Timeout = time.Duration(t) * time.Second
		} else {
			b.problem(obj, "session affinity timeout %d out of range 1-86400, using default", t)
		}
	}
	return a
}

// servicePort builds one service port, or nil when the port is invalid.
func (b *builder) servicePort(sh *svcShape, sp corev1.ServicePort) *Service {
	proto, ok := protocol(sp.Protocol)
	switch {
	case !ok:
		b.problem(sh.obj, "port %q has unsupported protocol %q, skipped", portLabel(sp), sp.Protocol)
		return nil
	case sp.Port < 1 || sp.Port > 65535:
		b.problem(sh.obj, "port %q number %d out of range, skipped", portLabel(sp), sp.Port)
		return nil
	case sp.NodePort < 0 || sp.NodePort > 65535:
		b.problem(sh.obj, "port %q nodePort %d out of range, skipped", portLabel(sp), sp.NodePort)
		return nil
	}
	s := &Service{
		Key:       fmt.Sprintf("%s/%s:%s/%s", sh.svc.Namespace, sh.svc.Name, sp.Name, proto),
		Namespace: sh.svc.Namespace, Name: sh.svc.Name, PortName: sp.Name, Protocol: proto,
		InternalLocal: sh.itpLocal, ExternalLocal: sh.etpLocal, Affinity: sh.affinity,
	}
	if sh.isLB && sh.etpLocal {
		s.HealthCheckNodePort = sh.svc.Spec.HealthCheckNodePort
	}
	srcRanges := sh.ranges
	if p := b.policyFor(sh.ref, sp); p != nil {
		s.Policy, s.Algorithm = p.String(), p.Algorithm
		if p.Affinity != nil {
			s.Affinity = *p.Affinity
		}
		if p.SourceRanges != nil {
			srcRanges = b.prefixes("Policy "+p.String(), "sourceRanges", p.SourceRanges)
		}
	}
	if !s.Affinity.ClientIP {
		s.Affinity.Timeout = 0
	}
	s.Frontends = b.frontends(sh, sp, proto, srcRanges)
	b.categorize(s, sh.svc, b.endpoints(sh.ref, sp, proto))
	return s
}

// frontends lists where a service port is reachable on this node, each
// with its masquerade rule: off-cluster (or all) for ClusterIPs, always for
// external frontends unless externalTrafficPolicy is Local, which keeps
// the client's address.
func (b *builder) frontends(sh *svcShape, sp corev1.ServicePort, proto Protocol, srcRanges []netip.Prefix) []Frontend {
	clusterMasq, extMasq := MasqueradeOffCluster, MasqueradeAlways
	if b.cfg.MasqueradeAll {
		clusterMasq = MasqueradeAlways
	}
	if sh.etpLocal {
		extMasq = MasqueradeNever
	}
	fe := func(k FrontendKind, a netip.Addr, port int32, m Masquerade) Frontend {
		return Frontend{Kind: k, Addr: a, Port: port, Protocol: proto, Masquerade: m}
	}
	var out []Frontend
	for _, a := range sh.vips {
		out = append(out, fe(KindClusterIP, a, sp.Port, clusterMasq))
	}
	if sp.NodePort != 0 && sh.nodePorts {
		for _, a := range b.npAddrs {
			out = append(out, fe(KindNodePort, a, sp.NodePort, extMasq))
		}
		if b.localhost {
			f := fe(KindNodePort, netip.MustParseAddr("127.0.0.1"), sp.NodePort, MasqueradeAlways)
			f.Localhost = true
			out = append(out, f)
		}
	}
	for _, a := range sh.lb {
		f := fe(KindLoadBalancer, a, sp.Port, extMasq)
		f.SourceRanges = srcRanges
		out = append(out, f)
	}
	for _, a := range sh.ext {
		out = append(out, fe(KindExternalIP, a, sp.Port, extMasq))
	}
	sortFrontends(out)
	return out
}

func protocol(p corev1.Protocol) (Protocol, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return TCP, true
	case corev1.ProtocolUDP:
		return UDP, true
	case corev1.ProtocolSCTP:
		return SCTP, true
	}
	return "", false
}

func (b *builder) prefixes(obj, field string, in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			// A bare address is a /32 or /128.
			if a, ok := parseIP(s); ok {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				b.problem(obj, "invalid %s entry %q skipped", field, s)
				continue
			}
		}
		if b.familyOf(p.Addr()) {
			out = append(out, p.Masked())
		}
	}
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i], out[j]) })
	return out
}

func prefixLess(a, b netip.Prefix) bool {
	if a.Addr() != b.Addr() {
		return a.Addr().Less(b.Addr())
	}
	return a.Bits() < b.Bits()
}

var kindOrder = map[FrontendKind]int{KindClusterIP: 0, KindNodePort: 1, KindLoadBalancer: 2, KindExternalIP: 3}

func sortFrontends(fs []Frontend) {
	sort.Slice(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Kind != b.Kind {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		if a.Addr != b.Addr {
			return a.Addr.Less(b.Addr)
		}
		return a.Port < b.Port
	})
}

func sortEndpoints(es []Endpoint) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Addr != es[j].Addr {
			return es[i].Addr.Less(es[j].Addr)
		}
		return es[i].Port < es[j].Port
	})
}
