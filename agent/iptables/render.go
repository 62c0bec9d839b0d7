package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Chain names. Everything this backend owns starts with ChainPrefix, so it
// never collides with kube-proxy's KUBE-* chains or anyone else's.
const (
	ChainPrefix = "SYNX-"

	chainServices    = "SYNX-SERVICES"    // nat: frontend dispatch, from PREROUTING and OUTPUT
	chainPostrouting = "SYNX-POSTROUTING" // nat: masquerade marked traffic
	chainMarkMasq    = "SYNX-MARK-MASQ"   // nat: set the masquerade mark
	chainOffCluster  = "SYNX-MASQ-OFFCLUS"
	chainFilter      = "SYNX-FILTER"       // filter: REJECT/DROP, from INPUT, FORWARD, OUTPUT
	chainCanary      = xtables.CanaryChain // nat and filter: flush detector

	prefixSvc = "SYNX-SVC-" // balancing for ClusterIP frontends
	prefixExt = "SYNX-EXT-" // external frontends: policy + balancing
	prefixFw  = "SYNX-FW-"  // LoadBalancer source ranges
	// affinity lists ("recent" match names), one per service port and
	// endpoint; not chains.
	prefixAffinity = "SYNX-AFF-"

	chainHairpin = "SYNX-HAIRPIN" // nat: masquerade local endpoints reaching themselves
)

// Tables this backend writes.
const (
	tableNAT    = "nat"
	tableFilter = "filter"
)

// listChains are edited rule by rule on partial syncs.
var listChains = map[string]bool{chainServices: true, chainFilter: true}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func chainHash(prefix string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + b32.EncodeToString(h[:])[:16]
}

func svcChain(s *model.Service) string { return chainHash(prefixSvc, s.Key) }
func extChain(s *model.Service) string { return chainHash(prefixExt, s.Key) }
func fwChain(s *model.Service) string  { return chainHash(prefixFw, s.Key) }
func affinityList(s *model.Service, e model.Endpoint) string {
	return chainHash(prefixAffinity, s.Key, e.AddrPort().String())
}

// probability renders p the way iptables-save prints it back: the kernel
// keeps it as a 31-bit fraction and userspace prints 11 decimals.
func probability(p float64) string {
	return fmt.Sprintf("%.11f", math.Round(p*(1<<31))/(1<<31))
}

func protoMatch(p model.Protocol) string {
	l := strings.ToLower(string(p))
	return "-p " + l + " -m " + l
}

func hostCIDR(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// fragment is what one service port contributes to the ruleset.
type fragment struct {
	hash string
	// chains owned by this service: name -> rules (text after "-A NAME ").
	nat map[string][]string
	// entries of the shared list chains.
	services []string
	filter   []string
}

// renderOptions are the per-node settings that shape rules.
type renderOptions struct {
	masqMark string // e.g. "0x20000/0x20000"
	family   model.Family
	local    model.LocalTraffic
}

// localMatches are the matches that recognise traffic from pods, one rule
// each: a source CIDR (ClusterCIDR, NodeCIDR) or the input interface
// (BridgeInterface; "name+" for InterfaceNamePrefix). None without
// detection. "-i" is allowed in our chains although OUTPUT reaches them:
// a packet the node sends has no input interface and never matches.
func (o renderOptions) localMatches() []string {
	l := o.local
	if l.Interface != "" {
		name := l.Interface
		if l.InterfacePrefix {
			name += "+"
		}
		return []string{"-i " + name}
	}
	out := make([]string, 0, len(l.CIDRs))
	for _, p := range l.CIDRs {
		out = append(out, "-s "+p.String())
	}
	return out
}

// reject is the target that refuses a connection to a frontend without
// endpoints: ICMP port unreachable, as kube-proxy; over IPv6 a TCP reset
// for TCP, because a Linux TCP client over IPv6 does not give up its SYN on
// an ICMPv6 port unreachable: it retries and sees a timeout instead of a
// refusal. The nftables backend does the same.
func (o renderOptions) reject(p model.Protocol) string {
	switch {
	case o.family != model.IPv6:
		return "-j REJECT --reject-with icmp-port-unreachable"
	case p == model.TCP:
		return "-j REJECT --reject-with tcp-reset"
	}
	return "-j REJECT --reject-with icmp6-port-unreachable"
}

// hostMask is the "recent" mask of one client address of the family.
func (o renderOptions) hostMask() string {
	if o.family == model.IPv6 {
		return "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	return "255.255.255.255"
}

// renderService renders one service port: its balancing chains (internal
// and external), its firewall chain, and its entries in the shared dispatch
// and filter chains. It is pure and deterministic.
func renderService(s *model.Service, o renderOptions) *fragment {
	f := &fragment{hash: s.Hash, nat: map[string][]string{}}
	hasInternal := len(s.InternalEndpoints) > 0
	if hasInternal {
		f.nat[svcChain(s)] = internalChain(s, o)
	}
	hasExternalFrontend := false
	for _, fe := range s.Frontends {
		hasExternalFrontend = hasExternalFrontend || fe.Kind.External()
	}
	// The external chain exists when something can be DNATed through it.
	extUsable := len(s.ExternalEndpoints) > 0 || (s.ExternalLocal && !s.InternalLocal && hasInternal)
	if hasExternalFrontend && extUsable {
		f.nat[extChain(s)] = externalChain(s, o)
	}
	for _, fe := range s.Frontends {
		renderFrontend(f, s, fe, extUsable, o)
	}
	return f
}

// internalChain renders the balancing chain of ClusterIP frontends: the
// masquerade request, if any, then the endpoints.
func internalChain(s *model.Service, o renderOptions) []string {
	var rules []string
	masq := model.MasqueradeNever
	for _, fe := range s.Frontends {
		if fe.Kind == model.KindClusterIP && fe.Masquerade != model.MasqueradeNever {
			masq = fe.Masquerade
		}
	}
	switch {
	case masq == model.MasqueradeAlways:
		rules = append(rules, "-j "+chainMarkMasq)
	case masq == model.MasqueradeOffCluster && o.local.Detects():
		rules = append(rules, "-j "+chainOffCluster)
	}
	return append(rules, balance(s, s.InternalEndpoints, o)...)
}

// externalChain renders the chain of external frontends (NodePort,
// LoadBalancer, external IPs): traffic policy and masquerade, then the
// endpoints or the internal chain when they are the same set.
func externalChain(s *model.Service, o renderOptions) []string {
	var rules []string
	svc := svcChain(s)
	hasInternal := len(s.InternalEndpoints) > 0
	if !s.ExternalLocal {
		rules = append(rules, "-j "+chainMarkMasq)
	} else if !s.InternalLocal && hasInternal {
		// Pods and the node itself are not "external" clients: send
		// them to every endpoint; the node's own traffic needs SNAT.
		for _, m := range o.localMatches() {
			rules = append(rules, m+" -j "+svc)
		}
		rules = append(rules,
			"-m addrtype --src-type LOCAL -j "+chainMarkMasq,
			"-m addrtype --src-type LOCAL -j "+svc)
	}
	if !s.ExternalLocal && !s.InternalLocal && hasInternal {
		return append(rules, "-j "+svc) // same endpoint set
	}
	return append(rules, balance(s, s.ExternalEndpoints, o)...)
}

// renderFrontend adds one frontend's dispatch entry, or its REJECT/DROP
// filter entry when it has nowhere to go, and its firewall chain when it
// is a LoadBalancer with source ranges.
func renderFrontend(f *fragment, s *model.Service, fe model.Frontend, extUsable bool, o renderOptions) {
	dst := "-d " + hostCIDR(fe.Addr) + " " + protoMatch(s.Protocol) + fmt.Sprintf(" --dport %d ", fe.Port)
	comment := func(what string) string { return `-m comment --comment "` + s.Key + " " + what + `"` }
	reject := dst + comment("has no endpoints") + " " + o.reject(s.Protocol)
	what := strings.ToLower(string(fe.Kind))
	if fe.Localhost {
		what = "localhost nodeport"
	}
	if !fe.Kind.External() {
		switch {
		case len(s.InternalEndpoints) > 0:
			f.services = append(f.services, dst+comment(what)+" -j "+svcChain(s))
		case s.DropsWithoutEndpoints(fe.Kind):
			f.filter = append(f.filter, dst+comment("has no local endpoints")+" -j DROP")
		default:
			f.filter = append(f.filter, reject)
		}
		return
	}
	if !extUsable {
		if s.DropsWithoutEndpoints(fe.Kind) {
			f.filter = append(f.filter, dst+comment("has no local endpoints")+" -j DROP")
		} else {
			f.filter = append(f.filter, reject)
		}
		return
	}
	target := extChain(s)
	if fe.Kind == model.KindLoadBalancer && len(fe.SourceRanges) > 0 {
		fw := fwChain(s)
		var rules []string
		for _, r := range fe.SourceRanges {
			rules = append(rules, "-s "+r.String()+" -j "+target)
		}
		f.nat[fw] = rules
		target = fw
		// Whatever was not DNATed above is still addressed to the
		// load balancer IP: a client outside the ranges.
		f.filter = append(f.filter, dst+comment("source not allowed")+" -j DROP")
	}
	f.services = append(f.services, dst+comment(what)+" -j "+target)
	if len(s.Endpoints(fe.Kind)) == 0 && s.ExternalLocal {
		// Only pods and the node are sent anywhere; others are dropped.
		f.filter = append(f.filter, dst+comment("has no local endpoints")+" -j DROP")
	}
}

// balance renders the DNAT rules that spread new connections over eps.
//
// Endpoints are DNAT rules right in the balancing chain, not chains of
// their own: iptables-nft slows down sharply (and iptables-nft-save
// crashes) with ~100k chains, which one chain per endpoint reaches at 10k
// Services. Matches run in order and stop at the first miss, so
// "statistic, then recent --set" records only the endpoint picked.
func balance(s *model.Service, eps []model.Endpoint, o renderOptions) []string {
	proto := "-p " + strings.ToLower(string(s.Protocol)) + " "
	dnat := func(e model.Endpoint) string { return "-j DNAT --to-destination " + e.AddrPort().String() }
	recent := func(e model.Endpoint) string {
		return "--name " + affinityList(s, e) + " --mask " + o.hostMask() + " --rsource "
	}
	rules := make([]string, 0, 2*len(eps))
	if s.Affinity.ClientIP {
		secs := strconv.FormatInt(int64(s.Affinity.Timeout.Seconds()), 10)
		for _, e := range eps {
			// --update refreshes the client's timestamp like --set.
			rules = append(rules, proto+"-m recent --update --seconds "+secs+" --reap "+recent(e)+dnat(e))
		}
	}
	for i, e := range eps {
		left := len(eps) - i
		pick := ""
		switch {
		case left == 1:
		case s.Algorithm == model.AlgorithmRoundRobin:
			// Each rule counts the new connections reaching it and takes
			// the first of every "left": a strict rotation.
			pick = "-m statistic --mode nth --every " + strconv.Itoa(left) + " --packet 0 "
		default:
			pick = "-m statistic --mode random --probability " + probability(1/float64(left)) + " "
		}
		set := ""
		if s.Affinity.ClientIP {
			set = "-m recent --set " + recent(e)
		}
		rules = append(rules, proto+pick+set+dnat(e))
	}
	return rules
}

// ruleset is the complete content of the chains this backend owns.
type ruleset map[string]map[string][]string // table -> chain -> rules

func (r ruleset) chain(table, chain string) []string { return r[table][chain] }

// globalChains renders the chains shared by all services.
func globalChains(st *model.State, o renderOptions, randomFully bool, localhost bool) ruleset {
	mark := o.masqMark
	value := strings.SplitN(mark, "/", 2)[1]
	masq := "-j MASQUERADE"
	if randomFully {
		masq += " --random-fully"
	}
	nat := map[string][]string{
		chainServices: nil,
		chainMarkMasq: {"-j MARK --set-xmark " + mark},
		chainPostrouting: {
			"-j " + chainHairpin,
			"-m mark ! --mark " + mark + " -j RETURN",
			"-j MARK --set-xmark 0x0/" + value,
			masq,
		},
		chainCanary: {"-j RETURN"},
	}
	// Hairpin: a local endpoint DNATed to itself would get its own packet
	// back with its own source address; masquerade those. Only endpoints
	// on this node can hairpin here, so the chain stays small.
	seen := map[netip.Addr]bool{}
	var local []netip.Addr
	for _, s := range st.Services {
		for _, eps := range [][]model.Endpoint{s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints} {
			for _, e := range eps {
				if e.Local && !seen[e.Addr] {
					seen[e.Addr] = true
					local = append(local, e.Addr)
				}
			}
		}
	}
	sort.Slice(local, func(i, j int) bool { return local[i].Less(local[j]) })
	hairpin := make([]string, 0, len(local))
	for _, a := range local {
		h := hostCIDR(a)
		hairpin = append(hairpin, "-s "+h+" -d "+h+" -j "+chainMarkMasq)
	}
	nat[chainHairpin] = hairpin
	var off []string
	for _, m := range o.localMatches() {
		off = append(off, m+" -j RETURN")
	}
	nat[chainOffCluster] = append(off, "-j "+chainMarkMasq)
	filter := map[string][]string{
		chainFilter: nil,
		chainCanary: {"-j RETURN"},
	}
	if localhost {
		filter[chainFilter] = append(filter[chainFilter],
			`! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block martian localhost nodeport traffic" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`)
	}
	return ruleset{tableNAT: nat, tableFilter: filter}
}
