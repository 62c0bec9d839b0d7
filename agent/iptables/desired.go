package iptables

import (
	"fmt"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Desired is what the backend keeps in the kernel for a state: the rules
// of each of its chains, and its jumps from the built-in chains. It is
// exactly what Sync writes, for those who compare the kernel with what the
// agent meant (the agent's drift report, the packet tracer's tests).
type Desired struct {
	// Chains holds, per table, every SYNX- chain with its rules (the text
	// after "-A CHAIN ", as iptables-save prints it).
	Chains map[string]map[string][]string
	// Jumps are the rules in built-in chains that lead into ours.
	Jumps []xtables.Jump
}

// DesiredFor renders the rules of a state with the backend's options (the
// masquerade bit), and randomFully when the iptables in use has
// MASQUERADE --random-fully (xtables.HasRandomFully).
func DesiredFor(st *model.State, opts Options, randomFully bool) (Desired, error) {
	bit := opts.MasqueradeBit
	if bit == 0 {
		bit = 17
	}
	if bit < 0 || bit > 31 {
		return Desired{}, fmt.Errorf("masquerade bit %d out of range 0-31", bit)
	}
	if st == nil {
		st = &model.State{}
	}
	m := uint32(1) << bit
	b := &Backend{masqMark: fmt.Sprintf("%#x/%#x", m, m), randomFully: randomFully, frags: map[string]*fragment{}}
	return Desired{Chains: b.desired(st), Jumps: append([]xtables.Jump(nil), hooks...)}, nil
}

// ServiceChains returns the names of the chains a service port (by its
// model key) may own: balancing for ClusterIPs, external frontends, and
// the load balancer source ranges. Its entries in the shared dispatch and
// filter chains carry a comment that starts with the key.
func ServiceChains(key string) []string {
	return []string{chainHash(prefixSvc, key), chainHash(prefixExt, key), chainHash(prefixFw, key)}
}

// SharedChains are the chains every service port has entries in: dispatch
// (nat) and filter (filter).
func SharedChains() map[string]string {
	return map[string]string{chainServices: tableNAT, chainFilter: tableFilter}
}

// SaveText renders Desired the way iptables-save prints it, with the
// built-in chains of both tables holding only our jumps: a ruleset as a
// node with nothing but this backend holds it.
func (d Desired) SaveText() string {
	var out []byte
	for _, table := range tables {
		out = fmt.Appendf(out, "*%s\n", table)
		builtins := map[string][]string{}
		for _, j := range d.Jumps {
			if j.Table == table {
				builtins[j.Chain] = append(builtins[j.Chain], j.Saved())
			}
		}
		names := sortedKeys(builtins)
		for _, c := range names {
			out = fmt.Appendf(out, ":%s ACCEPT [0:0]\n", c)
		}
		chains := sortedKeys(d.Chains[table])
		for _, c := range chains {
			out = fmt.Appendf(out, ":%s - [0:0]\n", c)
		}
		for _, c := range names {
			for _, r := range builtins[c] {
				out = fmt.Appendf(out, "-A %s %s\n", c, r)
			}
		}
		for _, c := range chains {
			for _, r := range d.Chains[table][c] {
				out = fmt.Appendf(out, "-A %s %s\n", c, r)
			}
		}
		out = append(out, "COMMIT\n"...)
	}
	return string(out)
}
