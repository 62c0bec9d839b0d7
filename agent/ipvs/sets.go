package ipvs

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Set types (ipset type names).
const (
	typeIPPort    = "hash:ip,port"
	typeIPPortIP  = "hash:ip,port,ip"
	typeIPPortNet = "hash:ip,port,net"
	typeNet       = "hash:net"
)

// setEntry is one member of an ipset, comparable so that sets can be
// diffed with map lookups. Unused fields stay zero.
type setEntry struct {
	IP    netip.Addr
	Proto uint16 // 0 for hash:net
	Port  uint16
	IP2   netip.Addr // hash:ip,port,ip and hash:ip,port,net
	CIDR  uint8      // prefix length of IP (hash:net) or IP2 (hash:ip,port,net)
}

func (e setEntry) String() string {
	switch {
	case e.Proto == 0:
		return netip.PrefixFrom(e.IP, int(e.CIDR)).String()
	case !e.IP2.IsValid():
		return fmt.Sprintf("%s,%s:%d", e.IP, protoName(e.Proto), e.Port)
	case e.CIDR != 0:
		return fmt.Sprintf("%s,%s:%d,%s", e.IP, protoName(e.Proto), e.Port, netip.PrefixFrom(e.IP2, int(e.CIDR)))
	default:
		return fmt.Sprintf("%s,%s:%d,%s", e.IP, protoName(e.Proto), e.Port, e.IP2)
	}
}

// setSpec names an ipset and its type.
type setSpec struct {
	Name string
	Type string
	// Comment says what the set is for (documentation only).
	Comment string
}

// setNames are the ipsets of one backend instance; Prefix keeps the IPv4
// and IPv6 instances apart.
type setNames struct {
	Owned, Masq, MasqOffCluster, ClusterCIDRs, Hairpin, LBFirewall, LBSource, NoEPDrop, NoEPReject setSpec
}

func newSetNames(prefix string) setNames {
	s := func(suffix, typ, comment string) setSpec {
		return setSpec{Name: prefix + suffix, Type: typ, Comment: comment}
	}
	return setNames{
		Owned:          s("OWNED", typeIPPort, "virtual servers this backend created"),
		Masq:           s("MASQ", typeIPPort, "frontends whose traffic is always masqueraded"),
		MasqOffCluster: s("MASQ-OFFCL", typeIPPort, "frontends masqueraded for off-cluster sources"),
		ClusterCIDRs:   s("CLUSTER-CIDR", typeNet, "cluster CIDRs (in-cluster sources)"),
		Hairpin:        s("HAIRPIN", typeIPPortIP, "endpoint,port,endpoint: hairpin connections to masquerade"),
		LBFirewall:     s("LB-FW", typeIPPort, "load balancer frontends with source ranges"),
		LBSource:       s("LB-SRC", typeIPPortNet, "load balancer frontend,port,allowed source range"),
		NoEPDrop:       s("NOEP-DROP", typeIPPort, "frontends without endpoints, Local policy: drop"),
		NoEPReject:     s("NOEP-REJECT", typeIPPort, "frontends without endpoints, Cluster policy: reject"),
	}
}

func (n setNames) all() []setSpec {
	return []setSpec{n.Owned, n.Masq, n.MasqOffCluster, n.ClusterCIDRs, n.Hairpin, n.LBFirewall, n.LBSource, n.NoEPDrop, n.NoEPReject}
}

// buildSets computes the members of every set except Owned (which Sync
// maintains around the IPVS reconcile). It is pure.
func buildSets(n setNames, st *model.State, d desiredState) map[string]map[setEntry]bool {
	out := map[string]map[setEntry]bool{}
	for _, s := range n.all() {
		out[s.Name] = map[setEntry]bool{}
	}
	if st != nil {
		for _, p := range st.Local.CIDRs {
			p = p.Masked()
			out[n.ClusterCIDRs.Name][setEntry{IP: p.Addr(), CIDR: uint8(p.Bits())}] = true
		}
	}
	// Off-cluster masquerade needs a way to tell pods: their CIDRs
	// (CLUSTER-CIDR) or their input interface (in the glue).
	detects := st != nil && st.Local.Detects()
	for _, k := range sortedKeys(d.Servers) {
		vs := d.Servers[k]
		fe := setEntry{IP: k.Addr, Proto: k.Proto, Port: k.Port}
		switch vs.Frontend.Masquerade {
		case model.MasqueradeAlways:
			out[n.Masq.Name][fe] = true
		case model.MasqueradeOffCluster:
			if detects {
				out[n.MasqOffCluster.Name][fe] = true
			}
		}
		if len(vs.Dests) == 0 {
			if vs.Local {
				out[n.NoEPDrop.Name][fe] = true
			} else {
				out[n.NoEPReject.Name][fe] = true
			}
		}
		for rs := range vs.Dests {
			out[n.Hairpin.Name][setEntry{IP: rs.Addr, Proto: k.Proto, Port: rs.Port, IP2: rs.Addr}] = true
		}
		if len(vs.Frontend.SourceRanges) > 0 {
			out[n.LBFirewall.Name][fe] = true
			for _, r := range vs.Frontend.SourceRanges {
				r = r.Masked()
				if r.Addr().Is4() != k.Addr.Is4() {
					continue
				}
				out[n.LBSource.Name][setEntry{IP: k.Addr, Proto: k.Proto, Port: k.Port, IP2: r.Addr(), CIDR: uint8(r.Bits())}] = true
			}
		}
	}
	return out
}

// ownedEntry is the Owned-set member recording a virtual server.
func ownedEntry(k vsKey) setEntry { return setEntry{IP: k.Addr, Proto: k.Proto, Port: k.Port} }

func sortedEntries(m map[setEntry]bool) []setEntry {
	out := make([]setEntry, 0, len(m))
	for e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// rulesConfig parameterizes the iptables glue.
type rulesConfig struct {
	Prefix       string // chain prefix, e.g. SYNXIPVS-
	Sets         setNames
	MasqMark     uint32
	ClusterCIDRs bool
	// LocalIface is the input interface of pod traffic (a trailing "+"
	// matches a name prefix), when local traffic is detected by interface.
	LocalIface string
	// V6: the glue is ip6tables'.
	V6 bool
}

// chain names
func (c rulesConfig) chServices() string    { return c.Prefix + "SERVICES" }
func (c rulesConfig) chPostrouting() string { return c.Prefix + "POSTROUTING" }
func (c rulesConfig) chMarkMasq() string    { return c.Prefix + "MARK-MASQ" }
func (c rulesConfig) chFirewall() string    { return c.Prefix + "FIREWALL" }

// jumps are the rules in built-in chains that send traffic to ours.
func (c rulesConfig) jumps() []xtables.Jump {
	cm := func(what string) []string { return []string{"-m", "comment", "--comment", "synterix ipvs " + what} }
	return []xtables.Jump{
		{Table: "nat", Chain: "PREROUTING", Args: append(cm("services"), "-j", c.chServices())},
		{Table: "nat", Chain: "OUTPUT", Args: append(cm("services"), "-j", c.chServices())},
		{Table: "nat", Chain: "POSTROUTING", Args: append(cm("masquerade"), "-j", c.chPostrouting())},
		{Table: "filter", Chain: "INPUT", Args: append(cm("firewall"), "-j", c.chFirewall())},
	}
}

// chains lists our chains per table.
func (c rulesConfig) chains() map[string][]string {
	return map[string][]string{
		"nat":    {c.chServices(), c.chPostrouting(), c.chMarkMasq()},
		"filter": {c.chFirewall()},
	}
}

// render returns iptables-restore input (for --noflush) that rewrites the
// content of our chains and nothing else. It is pure.
func (c rulesConfig) render() string {
	var b strings.Builder
	mark := fmt.Sprintf("0x%x/0x%x", c.MasqMark, c.MasqMark)
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("*nat")
	for _, ch := range c.chains()["nat"] {
		w(":%s - [0:0]", ch)
	}
	w("-A %s -j MARK --set-xmark %s", c.chMarkMasq(), mark)
	w("-A %s -m set --match-set %s dst,dst -j %s", c.chServices(), c.Sets.Masq.Name, c.chMarkMasq())
	switch {
	case c.ClusterCIDRs:
		w("-A %s -m set --match-set %s dst,dst -m set ! --match-set %s src -j %s",
			c.chServices(), c.Sets.MasqOffCluster.Name, c.Sets.ClusterCIDRs.Name, c.chMarkMasq())
	case c.LocalIface != "":
		w("-A %s -m set --match-set %s dst,dst ! -i %s -j %s",
			c.chServices(), c.Sets.MasqOffCluster.Name, c.LocalIface, c.chMarkMasq())
	}
	w("-A %s -m set --match-set %s dst,dst,src -j MASQUERADE", c.chPostrouting(), c.Sets.Hairpin.Name)
	w("-A %s -m mark ! --mark %s -j RETURN", c.chPostrouting(), mark)
	w("-A %s -j MARK --xor-mark 0x%x", c.chPostrouting(), c.MasqMark)
	w("-A %s -j MASQUERADE", c.chPostrouting())
	w("COMMIT")
	w("*filter")
	for _, ch := range c.chains()["filter"] {
		w(":%s - [0:0]", ch)
	}
	w("-A %s -m set --match-set %s dst,dst -j DROP", c.chFirewall(), c.Sets.NoEPDrop.Name)
	if c.V6 {
		// A Linux TCP client over IPv6 does not give up its SYN on an
		// ICMPv6 port unreachable (it sees a timeout, not a refusal): TCP
		// gets a reset, as in the iptables and nftables backends.
		w("-A %s -p tcp -m set --match-set %s dst,dst -j REJECT --reject-with tcp-reset", c.chFirewall(), c.Sets.NoEPReject.Name)
	}
	w("-A %s -m set --match-set %s dst,dst -j REJECT", c.chFirewall(), c.Sets.NoEPReject.Name)
	w("-A %s -m set --match-set %s dst,dst -m set ! --match-set %s dst,dst,src -j DROP",
		c.chFirewall(), c.Sets.LBFirewall.Name, c.Sets.LBSource.Name)
	w("COMMIT")
	return b.String()
}
