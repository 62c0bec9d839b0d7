package trace

import (
	"fmt"
	"net/netip"
	"sort"
)

// VirtualServer is one IPVS service as the kernel holds it.
type VirtualServer struct {
	Addr  netip.Addr `json:"addr"`
	Proto string     `json:"proto"`
	Port  uint16     `json:"port"`
	// Scheduler is the IPVS scheduler (rr, wrr, lc, sh, mh, ...).
	Scheduler string `json:"scheduler"`
	// Persistent services send a client back to its destination for
	// Timeout seconds.
	Persistent bool          `json:"persistent,omitempty"`
	Timeout    uint32        `json:"timeout,omitempty"`
	Dests      []Destination `json:"destinations,omitempty"`
}

func (v VirtualServer) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(v.Addr, v.Port), v.Proto)
}

// Destination is one real server of a virtual server.
type Destination struct {
	Addr   netip.Addr `json:"addr"`
	Port   uint16     `json:"port"`
	Weight int        `json:"weight"`
	// Forward is the forwarding method: masq (NAT, what the agent uses),
	// local, tunnel or route.
	Forward string `json:"forward,omitempty"`
}

// IPVS traces packets through an IPVS node: the iptables glue (its nat and
// filter rules, with the ipsets of Env) around the kernel's virtual
// servers, which IPVS consults on the local input path after the filter
// table (and on the local output path for the node's own connections).
type IPVS struct {
	Rules    *Ruleset
	Env      Env
	Services []VirtualServer
}

// Backend implements Tracer.
func (t *IPVS) Backend() string { return "ipvs" }

// Trace implements Tracer.
func (t *IPVS) Trace(p Packet) (*Result, error) {
	byKey := make(map[string]*VirtualServer, len(t.Services))
	for i := range t.Services {
		v := &t.Services[i]
		byKey[v.Proto+"/"+netip.AddrPortFrom(v.Addr.Unmap(), v.Port).String()] = v
	}
	hook := func(w *walker, hook string, f *flow) ([]*flow, []*Path) {
		v := byKey[f.proto+"/"+netip.AddrPortFrom(f.dst, f.dport).String()]
		if v == nil {
			return nil, nil
		}
		return ipvsSchedule(w, v, hook, f)
	}
	return walkPacket(t.Backend(), newWalker(t.Rules, &t.Env), p, hook)
}

// ipvsSchedule sends a flow to the destinations a virtual server may pick
// for a new connection, each with its share of the weights. The
// schedulers' state (round-robin position, connection counts, a source's
// hash or persistence template) is not read: each destination gets its
// weight's share, and the step names the scheduler.
func ipvsSchedule(w *walker, v *VirtualServer, hook string, f *flow) ([]*flow, []*Path) {
	var live []Destination
	total := 0
	for _, d := range v.Dests {
		if d.Weight > 0 {
			live = append(live, d)
			total += d.Weight
		}
	}
	sort.Slice(live, func(i, j int) bool {
		return live[i].Addr.Less(live[j].Addr) || live[i].Addr == live[j].Addr && live[i].Port < live[j].Port
	})
	step := Step{Hook: hook, Table: "ipvs", Chain: v.String()}
	if total == 0 {
		return nil, []*Path{ipvsLeave(f, v, step)}
	}
	how := schedulerWords(v.Scheduler)
	if v.Persistent {
		how += fmt.Sprintf("; persistent: a client returns to its destination within %ds", v.Timeout)
	}
	var out []*flow
	for _, d := range live {
		g := f.fork()
		if len(live) > 1 {
			w.paths++
		}
		g.prob *= float64(d.Weight) / float64(total)
		g.dst, g.dport, g.dnat = d.Addr.Unmap(), d.Port, true
		g.out = w.env.dev(g.dst)
		s := step
		s.Effect = fmt.Sprintf("IPVS to %s (weight %d of %d; %s)", netip.AddrPortFrom(g.dst, d.Port), d.Weight, total, how)
		if d.Forward != "" && d.Forward != "masq" {
			s.Effect += "; forwarding method " + d.Forward + " is not followed"
			w.note("destination %s of %s uses forwarding method %s; the tracer follows masq (NAT) only", d.Addr, v, d.Forward)
		}
		g.steps = append(g.steps, s)
		out = append(out, g)
	}
	return out, nil
}

// ipvsLeave is a new connection IPVS cannot schedule (no destination with
// a weight): the kernel (ip_vs_leave) answers it with ICMP port
// unreachable and drops it, on the input and the output path alike. An
// IPv4 client is refused. Over IPv6 the client does not act on the ICMPv6
// error (a TCP client times out, seen in the VM), so the path is a drop.
func ipvsLeave(f *flow, v *VirtualServer, step Step) *Path {
	g := f.fork()
	if f.dst.Is4() {
		step.Effect = fmt.Sprintf("IPVS virtual server %s has no destination with a weight (%d in all): IPVS answers ICMP port unreachable", v, len(v.Dests))
		g.reject = "icmp-port-unreachable (sent by IPVS)"
		g.steps = append(g.steps, step)
		return g.end(VerdictReject, "")
	}
	step.Effect = fmt.Sprintf("IPVS virtual server %s has no destination with a weight (%d in all): IPVS answers ICMPv6 port unreachable, "+
		"which the client does not act on: dropped", v, len(v.Dests))
	g.steps = append(g.steps, step)
	return g.end(VerdictDrop, "")
}

func schedulerWords(s string) string {
	switch s {
	case "rr", "wrr":
		return "scheduler " + s + ": in turn"
	case "lc", "wlc", "sed", "nq":
		return "scheduler " + s + ": the least loaded"
	case "sh", "dh", "mh":
		return "scheduler " + s + ": by a hash, always the same for the same address"
	}
	return "scheduler " + s
}
