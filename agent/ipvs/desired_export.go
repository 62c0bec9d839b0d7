package ipvs

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Desired is what the backend keeps in the kernel for a state: the virtual
// servers with their destinations, the members of its ipsets, the glue
// chains and the VIPs on the dummy interface. It is what Sync writes, for
// those who compare the kernel with what the agent meant (the agent's drift
// report, the packet tracer's tests).
type Desired struct {
	Servers []DesiredServer
	// Sets maps every ipset of the backend to its type and members, as
	// "ipset save" prints them, sorted; the set of owned virtual servers
	// is not included (it records history, not the state).
	Sets map[string]DesiredSet
	// Glue is the iptables-restore input of the glue chains (nat and
	// filter), and Jumps the rules leading into them.
	Glue  string
	Jumps []xtables.Jump
	// Chains are the glue chains by table.
	Chains map[string][]string
	VIPs   []netip.Addr
	// Dummy is the interface that holds the VIPs.
	Dummy string
}

// DesiredServer is one virtual server.
type DesiredServer struct {
	Addr       netip.Addr
	Proto      string
	Port       uint16
	Scheduler  string
	Persistent bool
	Timeout    uint32
	Dests      []netip.AddrPort
	// Source is the model service key.
	Source string
}

// DesiredSet is one ipset.
type DesiredSet struct {
	Type    string
	Members []string
}

// DesiredFor renders what the backend with configuration cfg keeps in the
// kernel for st.
func DesiredFor(st *model.State, cfg Config) (Desired, error) {
	if err := cfg.defaults(); err != nil {
		return Desired{}, err
	}
	prefix := "SYNXIPVS-"
	if cfg.Family == model.IPv6 {
		prefix = "SYNXIPVS6-"
	}
	names := newSetNames(prefix)
	d := buildDesired(st, cfg.Scheduler)
	rc := glueConfig(prefix, names, cfg.MasqueradeMark, cfg.Family == model.IPv6, st)
	out := Desired{Sets: map[string]DesiredSet{}, Glue: rc.render(), Jumps: rc.jumps(), Chains: rc.chains(), Dummy: cfg.DummyInterface}
	for _, k := range sortedKeys(d.Servers) {
		vs := d.Servers[k]
		ds := DesiredServer{Addr: k.Addr, Proto: protoName(k.Proto), Port: k.Port, Scheduler: vs.Scheduler,
			Persistent: vs.Persistent, Timeout: vs.Timeout, Source: vs.Source}
		for rs := range vs.Dests {
			ds.Dests = append(ds.Dests, netip.AddrPortFrom(rs.Addr, rs.Port))
		}
		sort.Slice(ds.Dests, func(i, j int) bool { return ds.Dests[i].Compare(ds.Dests[j]) < 0 })
		out.Servers = append(out.Servers, ds)
	}
	for name, members := range buildSets(names, st, d) {
		typ := ""
		for _, s := range names.all() {
			if s.Name == name {
				typ = s.Type
			}
		}
		var ms []string
		for _, e := range sortedEntries(members) {
			ms = append(ms, e.String())
		}
		out.Sets[name] = DesiredSet{Type: typ, Members: ms}
	}
	for a := range d.VIPs {
		out.VIPs = append(out.VIPs, a)
	}
	sort.Slice(out.VIPs, func(i, j int) bool { return out.VIPs[i].Less(out.VIPs[j]) })
	return out, nil
}

// OwnedSet is the name of the ipset that records the virtual servers the
// backend of a family created.
func OwnedSet(fam model.Family) string {
	if fam == model.IPv6 {
		return newSetNames("SYNXIPVS6-").Owned.Name
	}
	return newSetNames("SYNXIPVS-").Owned.Name
}

// SaveText renders the glue as iptables-save prints it with the jumps in
// the built-in chains: the tables of a node holding nothing else.
func (d Desired) SaveText() string {
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		b.WriteString("*" + table + "\n")
		builtins := map[string]bool{}
		for _, j := range d.Jumps {
			if j.Table == table && !builtins[j.Chain] {
				builtins[j.Chain] = true
				b.WriteString(":" + j.Chain + " ACCEPT [0:0]\n")
			}
		}
		for _, c := range d.Chains[table] {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, j := range d.Jumps {
			if j.Table == table {
				b.WriteString("-A " + j.Chain + " " + j.Saved() + "\n")
			}
		}
		in := false
		for _, l := range strings.Split(d.Glue, "\n") {
			switch {
			case strings.HasPrefix(l, "*"):
				in = l == "*"+table
			case in && strings.HasPrefix(l, "-A "):
				b.WriteString(l + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}
