package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Names of the shared sets and chains. Everything in the table is ours;
// the table's name is the only thing shared with other programs.
const (
	setServices   = "service-ips"          // vmap: frontend -> goto the service port's chain
	setNoEndpoint = "no-endpoint-services" // vmap: frontend -> drop | goto reject
	setHairpin    = "hairpin"              // set: local endpoint . itself
	setAffinity   = "affinity"             // dynamic set: client . anchor frontend . endpoint
	setEndpoints  = "endpoints"            // map: frontend . index -> endpoint
	setDigest     = "endpoints-digest"     // set: one element, the digest of endpoints

	chainServices   = "services"
	chainFilter     = "filter-services"
	chainMarkMasq   = "mark-masq"
	chainOffCluster = "masq-offcluster"
	chainReject     = "reject-chain"
	chainCanary     = "canary"

	// Per service port chains: "<prefix><digest>-<namespace>/<name>/<protocol>/<port name>".
	prefixSvc = "svc-" // ClusterIP frontends: masquerade, affinity, endpoints
	prefixExt = "ext-" // external frontends: traffic policy, endpoints
	prefixFw  = "fw-"  // load balancer source ranges
	// Shared chains that pick one of n endpoints: "pick-<n>[-<masquerade>]".
	prefixPick = "pick-"
)

// affinitySize bounds the affinity set: a client bound through a full set
// is balanced without a binding (see balance).
const affinitySize = 1 << 20

// renderer turns service ports into chains and elements. It is pure.
type renderer struct {
	f     *family
	mark  uint32
	local model.LocalTraffic // local traffic detection of the family
}

// localMatches are the matches that recognise traffic from pods, one rule
// each: a source CIDR (ClusterCIDR, NodeCIDR) or the input interface
// (BridgeInterface, InterfaceNamePrefix). None without detection. A
// packet the node sends has no input interface and never matches.
func (r *renderer) localMatches() [][]expr.Any {
	if l := r.local; l.Interface != "" {
		return [][]expr.Any{iifname(l.Interface, l.InterfacePrefix)}
	}
	out := make([][]expr.Any, 0, len(r.local.CIDRs))
	for _, p := range r.local.CIDRs {
		out = append(out, r.f.prefix(r.f.saddr, p, false))
	}
	return out
}

// fragment is what one service port contributes, as kept between syncs:
// names and elements, not rule bytes.
type fragment struct {
	hash string
	// chains are the service port's own chains, created in this order and
	// deleted in the reverse one (fw goes to ext, ext to svc).
	chains []string
	// picks are the shared pick chains it sends frontends to.
	picks    []pickSpec
	rules    int
	dispatch []elem // service-ips
	noEps    []elem // no-endpoint-services
	eps      []elem // endpoints: frontend . index -> endpoint
	// sum is the digest of eps (see epsSum).
	sum epsSum
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// chainName names a service port's chain by its kind, a digest of its
// service port key and rules, and a readable label. The same content
// always gets the same name, so a full sync compares names, never rules.
func chainName(prefix string, s *model.Service, rules []rule) string {
	h := sha256.New()
	h.Write([]byte(prefix + s.Key + "\x00"))
	for _, r := range rules {
		h.Write(r.exprs)
	}
	return prefix + b32.EncodeToString(h.Sum(nil))[:12] + "-" + chainLabel(s)
}

// chainLabel is the readable end of a service port's chain names.
func chainLabel(s *model.Service) string {
	label := strings.ToLower(s.Namespace + "/" + s.Name + "/" + string(s.Protocol) + "/" + s.PortName)
	label = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./", r) {
			return r
		}
		return '_'
	}, label)
	if len(label) > 200 {
		label = label[:200]
	}
	return label
}

// ServiceChain reports whether a chain of our table is one of a service
// port's own chains (svc-, ext- or fw-, ending with the port's label).
func ServiceChain(name string, s *model.Service) bool {
	for _, p := range []string{prefixSvc, prefixExt, prefixFw} {
		if strings.HasPrefix(name, p) && strings.HasSuffix(name, "-"+chainLabel(s)) && len(name) == len(p)+12+1+len(chainLabel(s)) {
			return true
		}
	}
	return false
}

// OwnChain reports whether a chain of our table belongs to a service
// port (svc-, ext-, fw-), not to the shared layout.
func OwnChain(name string) bool {
	return strings.HasPrefix(name, prefixSvc) || strings.HasPrefix(name, prefixExt) || strings.HasPrefix(name, prefixFw)
}

// service renders one service port: its chains (with rules), the shared
// pick chains it uses, and its entries in the maps.
//
// A frontend whose traffic is "maybe masquerade, then a uniform random
// endpoint of a list" (the default algorithm without affinity, and no
// Local external traffic policy) gets no chain of its own: its dispatch
// entry goes to the shared chain pick-<n>[-<masquerade>], which looks the
// endpoint up in the endpoints map by frontend and a random index. An
// endpoint change is then a change of map elements, not of rules, and
// the kernel does not validate the whole table again. Other service ports
// get chains of their own with a rule per endpoint.
func (r *renderer) service(s *model.Service) (*fragment, []*chain) {
	frag := &fragment{hash: s.Hash}
	var chains []*chain
	add := func(prefix string, rules []rule) string {
		c := &chain{name: chainName(prefix, s, rules), rules: rules}
		chains = append(chains, c)
		frag.chains = append(frag.chains, c.name)
		frag.rules += len(rules)
		return c.name
	}
	special := s.Affinity.ClientIP || s.Algorithm == model.AlgorithmRoundRobin || s.Algorithm == model.AlgorithmSourceHashing
	hasInternal := len(s.InternalEndpoints) > 0
	svc := ""
	switch {
	case hasInternal && special:
		svc = add(prefixSvc, r.internalRules(s))
	case hasInternal:
		svc = frag.pick(pickSpec{mode: r.internalMode(s), n: len(s.InternalEndpoints)})
	}
	external := false
	for _, fe := range s.Frontends {
		external = external || fe.Kind.External()
	}
	// The external chain exists when something can be DNATed through it.
	extUsable := len(s.ExternalEndpoints) > 0 || (s.ExternalLocal && !s.InternalLocal && hasInternal)
	ext := ""
	var extList []model.Endpoint // what external frontends' map entries hold
	switch {
	case !external || !extUsable:
	case !special && !s.ExternalLocal:
		extList = s.ExternalEndpoints
		if !s.InternalLocal && hasInternal {
			extList = s.InternalEndpoints
		}
		ext = frag.pick(pickSpec{mode: masqAlways, n: len(extList)})
	default:
		ext = add(prefixExt, r.externalRules(s, svc))
		if !special && s.ExternalLocal && !s.InternalLocal && hasInternal {
			extList = s.InternalEndpoints // pods and the node go through svc's pick chain
		}
	}
	fw := ""
	for _, fe := range s.Frontends {
		if fe.Kind == model.KindLoadBalancer && len(fe.SourceRanges) > 0 && ext != "" && fw == "" {
			fw = add(prefixFw, r.firewallRules(fe, ext))
		}
	}
	for _, fe := range s.Frontends {
		list := extList
		if !fe.Kind.External() && !special {
			list = s.InternalEndpoints
		} else if !fe.Kind.External() {
			list = nil
		}
		r.frontend(frag, s, fe, svc, ext, fw, list)
	}
	return frag, chains
}

// frontend adds one frontend's dispatch entry, or its no-endpoint entry
// when it has nowhere to go (REJECT for a Cluster traffic policy, DROP for
// a Local one), and the endpoints map entries of its list.
func (r *renderer) frontend(frag *fragment, s *model.Service, fe model.Frontend, svc, ext, fw string, list []model.Endpoint) {
	a, err := r.f.addr(fe.Addr)
	if err != nil {
		klog.ErrorS(err, "Skipping a frontend of another family", "service", s.Key, "frontend", fe.String())
		return
	}
	key := r.f.frontendElemKey(a, s.Protocol, uint16(fe.Port))
	target := svc
	local := s.DropsWithoutEndpoints(fe.Kind)
	if fe.Kind.External() {
		target = ext
		if fe.Kind == model.KindLoadBalancer && len(fe.SourceRanges) > 0 && fw != "" {
			target = fw
		}
	}
	switch {
	case target != "":
		frag.dispatch = append(frag.dispatch, elem{key: key, isVerdict: true, verdict: unix.NFT_GOTO, chain: target})
		r.endpointElems(frag, s, key, list)
	case local:
		frag.noEps = append(frag.noEps, elem{key: key, isVerdict: true, verdict: nfDrop})
	default:
		frag.noEps = append(frag.noEps, elem{key: key, isVerdict: true, verdict: unix.NFT_GOTO, chain: chainReject})
	}
}

// internalMode is the masquerade of the ClusterIP frontends: the last one
// that asks for some wins, as in the iptables backend; OffCluster without
// cluster CIDRs means none.
func (r *renderer) internalMode(s *model.Service) masqMode {
	masq := model.MasqueradeNever
	for _, fe := range s.Frontends {
		if fe.Kind == model.KindClusterIP && fe.Masquerade != model.MasqueradeNever {
			masq = fe.Masquerade
		}
	}
	switch {
	case masq == model.MasqueradeAlways:
		return masqAlways
	case masq == model.MasqueradeOffCluster && r.local.Detects():
		return masqOffCluster
	}
	return masqNone
}

// internalRules is the chain of ClusterIP frontends of a service port
// with its own chains: the masquerade request, if any, then the
// endpoints.
func (r *renderer) internalRules(s *model.Service) []rule {
	var rules []rule
	if m := r.masqRule(r.internalMode(s)); m != nil {
		rules = append(rules, *m)
	}
	return append(rules, r.balance(s, s.InternalEndpoints)...)
}

// masqRule is the rule requesting a masquerade mode, or nil.
func (r *renderer) masqRule(m masqMode) *rule {
	var out rule
	switch m {
	case masqAlways:
		out = encode(r.f.proto, false, jump(chainMarkMasq))
	case masqOffCluster:
		out = encode(r.f.proto, false, jump(chainOffCluster))
	default:
		return nil
	}
	return &out
}

// externalRules is the chain of external frontends (NodePort, load
// balancer, external IPs): traffic policy and masquerade, then the
// endpoints, or the internal chain when they are the same set.
func (r *renderer) externalRules(s *model.Service, svc string) []rule {
	var rules []rule
	fam := r.f.proto
	hasInternal := svc != ""
	if !s.ExternalLocal {
		rules = append(rules, encode(fam, false, jump(chainMarkMasq)))
	} else if !s.InternalLocal && hasInternal {
		// Pods and the node itself are not "external" clients: send
		// them to every endpoint; the node's own traffic needs SNAT.
		for _, m := range r.localMatches() {
			rules = append(rules, encode(fam, false, append(m, goTo(svc))...))
		}
		rules = append(rules,
			encode(fam, false, append(srcLocal(), jump(chainMarkMasq))...),
			encode(fam, false, append(srcLocal(), goTo(svc))...))
	}
	if !s.ExternalLocal && !s.InternalLocal && hasInternal {
		return append(rules, encode(fam, false, goTo(svc))) // same endpoint set
	}
	rules = append(rules, r.balance(s, s.ExternalEndpoints)...)
	if len(s.ExternalEndpoints) == 0 {
		// Local policy without local endpoints: only pods and the node
		// were sent on above; everyone else is dropped.
		rules = append(rules, encode(fam, false, verdict(expr.VerdictDrop)))
	}
	return rules
}

// firewallRules admits the load balancer's source ranges to the external
// chain and drops every other client.
func (r *renderer) firewallRules(fe model.Frontend, ext string) []rule {
	var rules []rule
	for _, p := range fe.SourceRanges {
		if p.Addr().Is4() != (r.f.addrLen == 4) {
			continue
		}
		rules = append(rules, encode(r.f.proto, false, append(r.f.prefix(r.f.saddr, p, false), goTo(ext))...))
	}
	return append(rules, encode(r.f.proto, false, verdict(expr.VerdictDrop)))
}

// anchor is the frontend that names a service port in affinity keys: its
// first ClusterIP, else its first frontend. It does not change while the
// Service exists, so bindings survive endpoint changes.
func anchor(s *model.Service) model.Frontend {
	for _, fe := range s.Frontends {
		if fe.Kind == model.KindClusterIP {
			return fe
		}
	}
	if len(s.Frontends) > 0 {
		return s.Frontends[0]
	}
	return model.Frontend{}
}

// affinityTimeout is the service port's ClientIP timeout, at least 1 s.
func affinityTimeout(s *model.Service) time.Duration {
	t := s.Affinity.Timeout
	if t <= 0 {
		t = model.DefaultAffinityTimeout
	}
	return max(t.Truncate(time.Second), time.Second)
}
