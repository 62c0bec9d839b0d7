package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// statisticCond matches -m statistic: random with a probability, or every
// n-th connection (the counter's position is not visible, so each of n
// rules in a row takes 1/n of the connections).
func statisticCond(opts []opt) (cond, error) {
	v := map[string]string{}
	neg := false
	for _, o := range opts {
		v[o.name] = strings.Join(o.vals, " ")
		neg = neg || o.neg
	}
	switch v["mode"] {
	case "random":
		p, err := strconv.ParseFloat(v["probability"], 64)
		if err != nil || p < 0 || p > 1 {
			return cond{}, fmt.Errorf("probability %q", v["probability"])
		}
		if neg {
			p = 1 - p
		}
		text := "random " + Percent(p)
		return cond{text: text, eval: func(*walker, *flow) []alt { return chance(p) }}, nil
	case "nth":
		n, err := strconv.Atoi(v["every"])
		if err != nil || n < 1 {
			return cond{}, fmt.Errorf("every %q", v["every"])
		}
		p := 1 / float64(n)
		if neg {
			p = 1 - p
		}
		text := fmt.Sprintf("every %d-th new connection", n)
		return cond{text: text, eval: func(*walker, *flow) []alt { return chance(p) }}, nil
	}
	return cond{}, fmt.Errorf("mode %q", v["mode"])
}

// chance is a random decision taken with probability p.
func chance(p float64) []alt {
	switch {
	case p >= 1:
		return yes(true)
	case p <= 0:
		return yes(false)
	}
	return []alt{{matched: true, prob: p}, {matched: false, prob: 1 - p}}
}

// recentCond matches -m recent, ClientIP session affinity: --set always
// matches (it records the client); --rcheck and --update match a client in
// the list, within --seconds of its last connection. The entry's age is not
// read, so a client in the list is followed both ways.
func recentCond(opts []opt) (cond, error) {
	name, op, seconds, mask, dest := "DEFAULT", "", "", "", false
	for _, o := range opts {
		val := strings.Join(o.vals, " ")
		switch o.name {
		case "name":
			name = val
		case "set", "rcheck", "update", "remove":
			op = o.name
		case "seconds":
			seconds = val
		case "mask":
			mask = val
		case "rdest":
			dest = true
		case "rsource", "reap", "rttl", "hitcount":
		default:
			return cond{}, fmt.Errorf("--%s not understood", o.name)
		}
	}
	if op == "" {
		return cond{}, fmt.Errorf("no --set, --rcheck, --update or --remove")
	}
	pfxBits := -1
	if mask != "" {
		p, err := parsePrefix("0.0.0.0/" + mask)
		if strings.Contains(mask, ":") {
			p, err = parsePrefix("::/" + mask)
		}
		if err != nil {
			return cond{}, fmt.Errorf("mask %q", mask)
		}
		pfxBits = p.Bits()
	}
	text := "--" + op + " --name " + name
	return cond{text: text, eval: func(w *walker, f *flow) []alt {
		if op == "set" {
			return yes(true)
		}
		a := f.src
		if dest {
			a = f.dst
		}
		if !inRecent(w.env.Recent[name], a, pfxBits) {
			return yes(false)
		}
		if op == "remove" || seconds == "" {
			return yes(true)
		}
		who := a.String()
		return []alt{
			{matched: true, prob: 1, cond: fmt.Sprintf("%s connected less than %ss ago and is held by affinity list %s", who, seconds, name)},
			{matched: false, prob: 1, cond: fmt.Sprintf("%s's entry in affinity list %s is older than %ss", who, name, seconds)},
		}
	}}, nil
}

func inRecent(list []netip.Addr, a netip.Addr, bits int) bool {
	for _, e := range list {
		if bits < 0 || bits >= a.BitLen() {
			if e == a {
				return true
			}
			continue
		}
		if p, err := a.Prefix(bits); err == nil && p.Contains(e) {
			return true
		}
	}
	return false
}

// setConds matches -m set --match-set NAME FLAGS against the ipsets of the
// walk's Env.
func setConds(opts []opt) ([]cond, error) {
	var out []cond
	for _, o := range opts {
		switch o.name {
		case "match-set":
			if len(o.vals) != 2 {
				return nil, fmt.Errorf("--match-set wants a set name and flags")
			}
			name, flags, neg := o.vals[0], strings.Split(o.vals[1], ","), o.neg
			text := negText(neg) + "--match-set " + name + " " + o.vals[1]
			out = append(out, cond{text: text, eval: func(w *walker, f *flow) []alt {
				s := w.env.Sets[name]
				if s == nil {
					w.note("ipset %s was not read: its matches are shown both ways", name)
					return unknownAlts(text)
				}
				ok, err := s.Contains(flags, f.proto, f.src, f.dst, f.sport, f.dport)
				if err != nil {
					w.note("ipset %s: %v", name, err)
					return unknownAlts(text)
				}
				return yes(ok != neg)
			}})
		case "return-nomatch", "update-counters", "update-subcounters", "packets-eq", "packets-lt", "packets-gt",
			"bytes-eq", "bytes-lt", "bytes-gt":
		default:
			return nil, fmt.Errorf("--%s not understood", o.name)
		}
	}
	return out, nil
}
