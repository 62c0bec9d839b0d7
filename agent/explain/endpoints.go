package explain

import (
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// candidate is one endpoint of a port's EndpointSlices as published, with
// its topology hints.
type candidate struct {
	ep    model.Endpoint
	hints *discoveryv1.EndpointHints
}

// candidates reads every endpoint of a service port of one family from
// its EndpointSlices: the model keeps only those it uses; the explanation
// needs the others too.
func candidates(slices []*discoveryv1.EndpointSlice, s *model.Service, fam model.Family, node string) []candidate {
	seen := map[netip.AddrPort]int{}
	var out []candidate
	for _, es := range slices {
		port, ok := slicePort(es, s)
		if !ok {
			continue
		}
		for _, e := range es.Endpoints {
			c, ok := candidateOf(e, port, fam, node)
			if !ok {
				continue
			}
			k := c.ep.AddrPort()
			if i, dup := seen[k]; dup {
				if !out[i].ep.Ready && c.ep.Ready {
					out[i] = c
				}
				continue
			}
			seen[k] = len(out)
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ep.AddrPort().Compare(out[j].ep.AddrPort()) < 0 })
	return out
}

// slicePort is the slice's port number for the service port (same name
// and protocol).
func slicePort(es *discoveryv1.EndpointSlice, s *model.Service) (int32, bool) {
	for _, p := range es.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == s.PortName && string(proto) == string(s.Protocol) && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

func candidateOf(e discoveryv1.Endpoint, port int32, fam model.Family, node string) (candidate, bool) {
	if len(e.Addresses) == 0 {
		return candidate{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(e.Addresses[0]))
	if err != nil || a.Unmap().Is4() != (fam != model.IPv6) {
		return candidate{}, false
	}
	ep := model.EndpointOf(a.Unmap(), port, e, node)
	return candidate{ep: ep, hints: e.Hints}, true
}

// classify says, for every candidate, whether the ClusterIP and the
// external frontends use it, and why not: the model's lists say who is
// used; the conditions, placement and hints say why the others are not.
func classify(cands []candidate, s *model.Service, zone, node string) []report.Endpoint {
	in := func(list []model.Endpoint, e model.Endpoint) bool {
		for _, x := range list {
			if x.AddrPort() == e.AddrPort() {
				return true
			}
		}
		return false
	}
	anyReady := false
	for _, c := range cands {
		anyReady = anyReady || c.ep.Ready
	}
	var out []report.Endpoint
	for _, c := range cands {
		e := c.ep
		r := report.Endpoint{Address: e.AddrPort().String(), Node: e.NodeName, Zone: e.Zone, Local: e.Local, Category: category(e)}
		why := whyNot(c, anyReady, in(s.ClusterEndpoints, e), zone, node)
		r.ClusterIP, r.External = report.Used, report.Used
		if !in(s.InternalEndpoints, e) {
			r.ClusterIP = orLocal(why, s.InternalLocal, e.Local, "internalTrafficPolicy Local")
		}
		if !in(s.ExternalEndpoints, e) {
			r.External = orLocal(why, s.ExternalLocal, e.Local, "externalTrafficPolicy Local")
		}
		out = append(out, r)
	}
	return out
}

func category(e model.Endpoint) string {
	switch {
	case e.Ready:
		return "ready"
	case e.Serving && e.Terminating:
		return "serving-terminating"
	}
	return "not-ready"
}

// whyNot is why a candidate is not among the cluster-wide endpoints, or ""
// when it is.
func whyNot(c candidate, anyReady, inCluster bool, zone, node string) string {
	e := c.ep
	switch {
	case inCluster:
		return ""
	case !e.Ready && !e.Serving:
		return "not ready"
	case !e.Ready && !e.Terminating:
		return "not ready (serving but not terminating)"
	case !e.Ready && anyReady:
		return "terminating: not used while ready endpoints exist"
	}
	if c.hints != nil {
		var to []string
		for _, z := range c.hints.ForZones {
			to = append(to, "zone "+z.Name)
		}
		for _, n := range c.hints.ForNodes {
			to = append(to, "node "+n.Name)
		}
		if len(to) > 0 {
			where := "node " + node
			if zone != "" {
				where += " in zone " + zone
			}
			return "topology: hinted for " + strings.Join(to, ", ") + ", not for " + where
		}
	}
	return "not used"
}

// orLocal is why a candidate is not used by a class of frontends: its own
// reason, or the Local traffic policy for a remote endpoint.
func orLocal(why string, local, isLocal bool, policy string) string {
	if why != "" {
		return why
	}
	if local && !isLocal {
		return "on another node: " + policy + " uses this node's endpoints only"
	}
	return "not used"
}
