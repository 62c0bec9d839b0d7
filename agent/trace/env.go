package trace

import (
	"net/netip"
	"sort"
)

// Env is the node's state beyond the rules that decides a walk: its
// addresses and routes, the ipsets and the affinity ("recent") lists.
type Env struct {
	// LocalAddrs are the node's own addresses, on every interface.
	LocalAddrs []netip.Addr `json:"localAddrs,omitempty"`
	// Routes are the main routing table; the longest prefix wins.
	Routes []Route `json:"routes,omitempty"`
	// Sets are the ipsets, by name.
	Sets map[string]*Set `json:"sets,omitempty"`
	// Recent are the xt_recent lists by name, with the sources each
	// holds. A list that is absent holds nobody.
	Recent map[string][]netip.Addr `json:"recent,omitempty"`
}

// Route is one route: packets to Dst leave through Dev.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	Dev string       `json:"dev"`
}

// local reports whether a is one of the node's addresses.
func (e *Env) local(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	for _, l := range e.LocalAddrs {
		if l == a {
			return true
		}
	}
	return false
}

// dev returns the interface a packet to a leaves through: "lo" for the
// node's own addresses, the longest matching route's device otherwise,
// "" when no route matches (or none is known).
func (e *Env) dev(a netip.Addr) string {
	if e.local(a) {
		return "lo"
	}
	best, dev := -1, ""
	for _, r := range e.Routes {
		if r.Dst.Contains(a) && r.Dst.Bits() > best {
			best, dev = r.Dst.Bits(), r.Dev
		}
	}
	return dev
}

// SortRoutes orders routes by prefix, for stable output.
func SortRoutes(rs []Route) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Dst.Addr() != rs[j].Dst.Addr() {
			return rs[i].Dst.Addr().Less(rs[j].Dst.Addr())
		}
		return rs[i].Dst.Bits() < rs[j].Dst.Bits()
	})
}
