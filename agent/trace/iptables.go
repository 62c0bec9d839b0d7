package trace

import "sort"

// IPTables traces packets through an iptables ruleset: the nat and filter
// tables at the hooks a packet meets (mangle and raw are not followed; the
// agent writes neither).
type IPTables struct {
	Rules *Ruleset
	Env   Env
}

// Backend implements Tracer.
func (t *IPTables) Backend() string { return "iptables" }

// Trace implements Tracer.
func (t *IPTables) Trace(p Packet) (*Result, error) {
	return walkPacket(t.Backend(), newWalker(t.Rules, &t.Env), p, nil)
}

// localHook is a kernel table consulted on the local input path after the
// filter, and on the output path after nat (IPVS): it returns the flows it
// redirected and the paths it ended, or nothing when it leaves the packet
// alone.
type localHook func(w *walker, hook string, f *flow) ([]*flow, []*Path)

// walkPacket follows a packet through the hooks it meets: for one that
// arrives, nat PREROUTING, routing, then filter INPUT (delivered to the
// node) or FORWARD and nat POSTROUTING (routed out); for one the node
// sends, nat and filter OUTPUT, nat POSTROUTING, and filter INPUT when it
// stays on the node.
func walkPacket(backend string, w *walker, p Packet, hook localHook) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	env := w.env
	f := &flow{prob: 1, proto: p.Proto, src: p.Src, dst: p.Dst, sport: p.SrcPort, dport: p.DstPort}
	var paths []*Path
	if p.FromNode {
		paths = w.fromNode(f, hook)
	} else {
		f.in = env.dev(p.Src)
		paths = w.arriving(f, hook)
	}
	if w.err != nil {
		return nil, w.err
	}
	sortPaths(paths)
	return &Result{Backend: backend, Packet: p, Paths: paths, Notes: w.sortedNotes()}, nil
}

// stage runs one built-in chain for every flow; flows it drops or rejects
// become paths, the others go on.
func (w *walker) stage(hook, table string, flows []*flow, paths *[]*Path) []*flow {
	var next []*flow
	for _, f := range flows {
		for _, e := range w.hookChains(hook, table, f) {
			switch e.kind {
			case exitDrop:
				*paths = append(*paths, e.f.end(VerdictDrop, ""))
			case exitReject:
				*paths = append(*paths, e.f.end(VerdictReject, ""))
			default:
				next = append(next, e.f)
			}
		}
	}
	return next
}

func (w *walker) arriving(f *flow, hook localHook) []*Path {
	var paths []*Path
	flows := w.stage("PREROUTING", "nat", []*flow{f}, &paths)
	var local, fwd []*flow
	for _, f := range flows {
		if w.env.local(f.dst) {
			local = append(local, f)
		} else {
			f.out = w.env.dev(f.dst)
			fwd = append(fwd, f)
		}
	}
	local = w.stage("INPUT", "filter", local, &paths)
	for _, f := range local {
		var redirected []*flow
		var ended []*Path
		if hook != nil {
			redirected, ended = hook(w, "INPUT", f)
			paths = append(paths, ended...)
		}
		if redirected == nil {
			if ended == nil {
				paths = append(paths, f.end(VerdictNoRule, "local"))
			}
			continue
		}
		// IPVS sends what it redirected out on the local output path.
		out := w.stage("OUTPUT", "filter", redirected, &paths)
		for _, r := range w.stage("POSTROUTING", "nat", out, &paths) {
			paths = append(paths, r.end(VerdictDNAT, "forward"))
		}
	}
	fwd = w.stage("FORWARD", "filter", fwd, &paths)
	for _, f := range w.stage("POSTROUTING", "nat", fwd, &paths) {
		paths = append(paths, f.end(natVerdict(f), w.forward(f)))
	}
	return paths
}

// forward is the delivery of a routed packet: "unroutable" when the routes
// are known and none leads to its destination (the sender gets an ICMP
// unreachable).
func (w *walker) forward(f *flow) string {
	if len(w.env.Routes) > 0 && f.out == "" {
		return "unroutable"
	}
	return "forward"
}

func (w *walker) fromNode(f *flow, hook localHook) []*Path {
	var paths []*Path
	flows := w.stage("OUTPUT", "nat", []*flow{f}, &paths)
	if hook != nil {
		var next []*flow
		for _, f := range flows {
			r, ended := hook(w, "OUTPUT", f)
			paths = append(paths, ended...)
			switch {
			case r != nil:
				next = append(next, r...)
			case ended == nil:
				next = append(next, f)
			}
		}
		flows = next
	}
	for _, f := range flows {
		f.out = w.env.dev(f.dst)
	}
	flows = w.stage("OUTPUT", "filter", flows, &paths)
	flows = w.stage("POSTROUTING", "nat", flows, &paths)
	var local []*flow
	for _, f := range flows {
		if w.env.local(f.dst) {
			f.in = "lo"
			local = append(local, f)
		} else {
			paths = append(paths, f.end(natVerdict(f), w.forward(f)))
		}
	}
	for _, f := range w.stage("INPUT", "filter", local, &paths) {
		paths = append(paths, f.end(natVerdict(f), "local"))
	}
	return paths
}

func natVerdict(f *flow) Verdict {
	if f.dnat {
		return VerdictDNAT
	}
	return VerdictNoRule
}

// end turns a flow into a path.
func (f *flow) end(v Verdict, delivery string) *Path {
	p := &Path{Probability: f.prob, Conditions: f.conds, Verdict: v, Masquerade: f.masq, Steps: f.steps}
	switch v {
	case VerdictDNAT:
		p.Endpoint = addrPort(f)
		p.Delivery = delivery
	case VerdictNoRule:
		p.Delivery = delivery
	case VerdictReject:
		p.Reject = f.reject
		p.Masquerade = false
	case VerdictDrop:
		p.Masquerade = false
	}
	return p
}

// sortPaths orders paths: unconditional first, then by verdict and
// endpoint, so that the same rules always print the same way.
func sortPaths(ps []*Path) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if (len(a.Conditions) == 0) != (len(b.Conditions) == 0) {
			return len(a.Conditions) == 0
		}
		if a.Verdict != b.Verdict {
			return a.Verdict < b.Verdict
		}
		return a.Endpoint < b.Endpoint
	})
}
