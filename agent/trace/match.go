package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

func negText(neg bool) string {
	if neg {
		return "! "
	}
	return ""
}

// addrCond matches -s or -d against an address or prefix.
func (p *ruleParser) addrCond(flag, val string, neg bool, get func(*flow) netip.Addr) error {
	pfx, err := parsePrefix(val)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, val, err)
	}
	p.r.conds = append(p.r.conds, cond{text: negText(neg) + flag + " " + val, eval: func(_ *walker, f *flow) []alt {
		return yes(pfx.Contains(get(f)) != neg)
	}})
	return nil
}

// parsePrefix reads "a.b.c.d", "a.b.c.d/n" or "a.b.c.d/m.m.m.m".
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, m, hasMask := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !hasMask {
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	mask, err := netip.ParseAddr(m)
	if err != nil {
		return netip.Prefix{}, err
	}
	bits := 0
	for _, b := range mask.AsSlice() {
		for i := 7; i >= 0 && b&(1<<i) != 0; i-- {
			bits++
		}
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

func protoCond(val string, neg bool) cond {
	want := strings.ToLower(val)
	switch want {
	case "6":
		want = "tcp"
	case "17":
		want = "udp"
	case "132":
		want = "sctp"
	}
	return cond{text: negText(neg) + "-p " + val, eval: func(_ *walker, f *flow) []alt {
		return yes((want == "all" || want == f.proto) != neg)
	}}
}

// ifaceCond matches -i or -o; "+" at the end is a wildcard. An interface
// the walk does not know is a condition.
func ifaceCond(flag, val string, neg bool, get func(*flow) string) cond {
	text := negText(neg) + flag + " " + val
	return cond{text: text, eval: func(_ *walker, f *flow) []alt {
		got := get(f)
		if got == "" {
			if flag == "-i" && f.hook != "PREROUTING" && f.hook != "INPUT" && f.hook != "FORWARD" {
				return yes(neg) // no input interface on the output path
			}
			return unknownAlts(text)
		}
		ok := got == val
		if strings.HasSuffix(val, "+") {
			ok = strings.HasPrefix(got, strings.TrimSuffix(val, "+"))
		}
		return yes(ok != neg)
	}}
}

func unknownAlts(text string) []alt {
	return []alt{{matched: true, prob: 1, cond: "if " + text + " matches"},
		{matched: false, prob: 1, cond: "if " + text + " does not match"}}
}

// unknownCond is a match the tracer cannot decide: both outcomes are
// followed, each under its condition.
func unknownCond(text string) cond {
	return cond{text: text, eval: func(w *walker, _ *flow) []alt {
		w.note("match %q is not decided by the tracer: both outcomes are shown", text)
		return unknownAlts(text)
	}}
}

// moduleConds turns the options of one -m module into conditions.
func moduleConds(module string, opts []opt, r *Rule) ([]cond, error) {
	switch module {
	case "comment":
		return nil, nil
	case "tcp", "udp", "sctp", "multiport":
		return portConds(opts)
	case "addrtype":
		return addrtypeConds(opts)
	case "statistic":
		c, err := statisticCond(opts)
		return []cond{c}, err
	case "recent":
		c, err := recentCond(opts)
		return []cond{c}, err
	case "mark":
		return markConds(opts)
	case "conntrack", "state":
		return ctstateConds(module, opts)
	case "set":
		return setConds(opts)
	}
	var b strings.Builder
	b.WriteString("-m " + module)
	for _, o := range opts {
		b.WriteString(" " + negText(o.neg) + "--" + o.name + " " + strings.Join(o.vals, " "))
	}
	return []cond{unknownCond(strings.TrimSpace(b.String()))}, nil
}

// portConds matches --dport, --sport (and multiport's --dports, --sports,
// --ports), and the TCP flags of a first packet (SYN).
func portConds(opts []opt) ([]cond, error) {
	var out []cond
	for _, o := range opts {
		text := negText(o.neg) + "--" + o.name + " " + strings.Join(o.vals, " ")
		switch o.name {
		case "dport", "destination-port", "dports", "destination-ports", "sport", "source-port", "sports", "source-ports", "ports":
			ranges, err := parsePorts(strings.Join(o.vals, ","))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", text, err)
			}
			name, neg := o.name, o.neg
			out = append(out, cond{text: text, eval: func(_ *walker, f *flow) []alt {
				return portMatch(name, ranges, neg, f)
			}})
		case "syn":
			out = append(out, cond{text: text, eval: func(*walker, *flow) []alt { return yes(!o.neg) }})
		case "tcp-flags":
			if len(o.vals) != 2 {
				return nil, fmt.Errorf("%s: want a mask and the flags set", text)
			}
			// A first packet carries SYN only.
			ok := flagsMatch(o.vals[0], o.vals[1])
			out = append(out, cond{text: text, eval: func(*walker, *flow) []alt { return yes(ok != o.neg) }})
		default:
			out = append(out, unknownCond(text))
		}
	}
	return out, nil
}

func flagsMatch(mask, set string) bool {
	has := func(list, f string) bool {
		for _, x := range strings.Split(list, ",") {
			if x == f || x == "ALL" {
				return true
			}
		}
		return false
	}
	for _, fl := range []string{"SYN", "ACK", "FIN", "RST", "URG", "PSH"} {
		if has(mask, fl) && has(set, fl) != (fl == "SYN") {
			return false
		}
	}
	return true
}

type portRange struct{ lo, hi uint16 }

func parsePorts(s string) ([]portRange, error) {
	var out []portRange
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return nil, err
			}
		}
		out = append(out, portRange{uint16(a), uint16(b)})
	}
	return out, nil
}

func portMatch(name string, ranges []portRange, neg bool, f *flow) []alt {
	in := func(p uint16) bool {
		for _, r := range ranges {
			if p >= r.lo && p <= r.hi {
				return true
			}
		}
		return false
	}
	src := strings.HasPrefix(name, "s")
	switch {
	case name == "ports":
		return yes((in(f.dport) || (f.sport != 0 && in(f.sport))) != neg)
	case src && f.sport == 0:
		return unknownAlts("the source port is in " + fmt.Sprint(ranges))
	case src:
		return yes(in(f.sport) != neg)
	}
	return yes(in(f.dport) != neg)
}

// addrtypeConds matches --src-type and --dst-type; LOCAL is an address of
// the node.
func addrtypeConds(opts []opt) ([]cond, error) {
	var out []cond
	for _, o := range opts {
		if o.name == "limit-iface-in" || o.name == "limit-iface-out" {
			continue
		}
		if o.name != "src-type" && o.name != "dst-type" || len(o.vals) != 1 {
			return nil, fmt.Errorf("--%s not understood", o.name)
		}
		text := negText(o.neg) + "--" + o.name + " " + o.vals[0]
		types, src, neg := strings.Split(o.vals[0], ","), o.name == "src-type", o.neg
		out = append(out, cond{text: text, eval: func(w *walker, f *flow) []alt {
			a := f.dst
			if src {
				a = f.src
			}
			ok := false
			for _, t := range types {
				ok = ok || addrType(w.env, a, t)
			}
			return yes(ok != neg)
		}})
	}
	return out, nil
}

func addrType(env *Env, a netip.Addr, t string) bool {
	switch t {
	case "LOCAL":
		return env.local(a)
	case "MULTICAST":
		return a.IsMulticast()
	case "BROADCAST":
		return a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	case "UNICAST":
		return !a.IsMulticast() && !env.local(a)
	}
	return false
}

// markConds matches --mark value[/mask].
func markConds(opts []opt) ([]cond, error) {
	var out []cond
	for _, o := range opts {
		if o.name != "mark" || len(o.vals) != 1 {
			return nil, fmt.Errorf("--%s not understood", o.name)
		}
		val, mask, err := parseMark(o.vals[0])
		if err != nil {
			return nil, err
		}
		neg := o.neg
		out = append(out, cond{text: negText(neg) + "--mark " + o.vals[0], eval: func(_ *walker, f *flow) []alt {
			return yes((f.mark&mask == val) != neg)
		}})
	}
	return out, nil
}

// ctstateConds matches --ctstate / --state: a first packet is NEW, and
// DNAT once a nat rule rewrote its destination.
func ctstateConds(module string, opts []opt) ([]cond, error) {
	var out []cond
	for _, o := range opts {
		if (o.name != "ctstate" && o.name != "state") || len(o.vals) != 1 {
			out = append(out, unknownCond("-m "+module+" "+negText(o.neg)+"--"+o.name+" "+strings.Join(o.vals, " ")))
			continue
		}
		states, neg := strings.Split(o.vals[0], ","), o.neg
		out = append(out, cond{text: negText(neg) + "--" + o.name + " " + o.vals[0], eval: func(_ *walker, f *flow) []alt {
			ok := false
			for _, s := range states {
				ok = ok || s == "NEW" || (s == "DNAT" && f.ctdnat)
			}
			return yes(ok != neg)
		}})
	}
	return out, nil
}
