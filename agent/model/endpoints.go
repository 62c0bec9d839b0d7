package model

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// endpoints collects the deduplicated endpoints of one service port from all
// EndpointSlices of the Service, skipping malformed entries.
func (b *builder) endpoints(ref ServiceRef, sp corev1.ServicePort, proto Protocol) []Endpoint {
	if b.hints == nil {
		b.hints = map[Endpoint]*discoveryv1.EndpointHints{}
		b.index = map[Endpoint]int{}
	}
	clear(b.hints)
	clear(b.index)
	index := b.index // key: Addr+Port only
	slices := b.slicesOf(ref)
	// Size the result once: the State keeps it (see usable).
	n := 0
	for _, es := range slices {
		n += len(es.Endpoints)
	}
	var out []Endpoint
	if n > 0 {
		out = make([]Endpoint, 0, n)
	}
	for _, es := range slices {
		obj := sliceObject(es)
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			pp := TCP
			if p.Protocol != nil {
				var ok bool
				if pp, ok = protocol(*p.Protocol); !ok {
					continue
				}
			}
			if name != sp.Name || pp != proto {
				continue
			}
			if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
				port := "<nil>"
				if p.Port != nil {
					port = strconv.Itoa(int(*p.Port))
				}
				b.problem(obj, "port %q number %s out of range, skipped", name, port)
				continue
			}
			bad, firstBad := 0, ""
			for _, e := range es.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				a, ok := parseIP(e.Addresses[0])
				if !ok || !b.familyOf(a) {
					if bad == 0 {
						firstBad = e.Addresses[0]
					}
					bad++
					continue
				}
				ep := Endpoint{Addr: a, Port: *p.Port}
				ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
				ep.Serving = ep.Ready
				if e.Conditions.Serving != nil {
					ep.Serving = *e.Conditions.Serving
				}
				ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
				if e.NodeName != nil {
					ep.NodeName = *e.NodeName
				}
				if e.Zone != nil {
					ep.Zone = *e.Zone
				}
				ep.Local = ep.NodeName != "" && ep.NodeName == b.cfg.NodeName
				k := Endpoint{Addr: a, Port: *p.Port}
				if i, dup := index[k]; dup {
					// The same address can briefly sit in two slices; the
					// ready copy wins.
					if !out[i].Ready && ep.Ready {
						out[i] = ep
						b.hints[k] = e.Hints
					}
					continue
				}
				index[k] = len(out)
				out = append(out, ep)
				b.hints[k] = e.Hints
			}
			if bad > 0 {
				b.problem(obj, "skipped %d endpoint(s) with an invalid address (first %q)", bad, firstBad)
			}
		}
	}
	sortEndpoints(out)
	return out
}

// usable picks ready endpoints, or when there are none the endpoints that are
// still serving while terminating, so connections drain instead of failing.
// When every endpoint is kept and ready, eps itself is returned: at 10k
// Services the copies were a fifth of the agent's live heap.
func usable(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	nReady := 0
	for _, e := range eps {
		if keep(e) && e.Ready {
			nReady++
		}
	}
	if nReady == len(eps) && nReady > 0 {
		return eps
	}
	var ready, draining []Endpoint
	if nReady > 0 {
		ready = make([]Endpoint, 0, nReady)
	}
	for _, e := range eps {
		if !keep(e) {
			continue
		}
		switch {
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			draining = append(draining, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return draining
}

// categorize applies traffic policies, terminating fallback and topology.
func (b *builder) categorize(s *Service, svc *corev1.Service, eps []Endpoint) {
	all := func(Endpoint) bool { return true }
	local := func(e Endpoint) bool { return e.Local }

	cluster := b.topology(svc, usable(eps, all))
	var localEps []Endpoint
	if s.InternalLocal || s.ExternalLocal {
		localEps = usable(eps, local)
	}
	s.ClusterEndpoints = cluster
	s.InternalEndpoints = cluster
	if s.InternalLocal {
		s.InternalEndpoints = localEps
	}
	s.ExternalEndpoints = cluster
	if s.ExternalLocal {
		s.ExternalEndpoints = localEps
	}
}

// topology narrows cluster-wide endpoints to this node or zone when the
// EndpointSlice controller published hints for every endpoint and at least
// one hint names us. Otherwise the endpoints are returned unchanged.
func (b *builder) topology(svc *corev1.Service, eps []Endpoint) []Endpoint {
	if len(eps) == 0 {
		return eps
	}
	hintsOf := func(e Endpoint) *discoveryv1.EndpointHints {
		return b.hints[Endpoint{Addr: e.Addr, Port: e.Port}]
	}
	if td := svc.Spec.TrafficDistribution; td != nil && *td == corev1.ServiceTrafficDistributionPreferSameNode && b.cfg.NodeName != "" {
		if out := filterHints(eps, hintsOf, func(h *discoveryv1.EndpointHints) ([]string, bool) {
			if len(h.ForNodes) == 0 {
				return nil, false
			}
			names := make([]string, len(h.ForNodes))
			for i, n := range h.ForNodes {
				names[i] = n.Name
			}
			return names, true
		}, b.cfg.NodeName); out != nil {
			return out
		}
	}
	if b.zone == "" {
		return eps
	}
	if out := filterHints(eps, hintsOf, func(h *discoveryv1.EndpointHints) ([]string, bool) {
		if len(h.ForZones) == 0 {
			return nil, false
		}
		names := make([]string, len(h.ForZones))
		for i, z := range h.ForZones {
			names[i] = z.Name
		}
		return names, true
	}, b.zone); out != nil {
		return out
	}
	return eps
}

// filterHints returns the endpoints whose hint list contains want, or nil
// when some endpoint has no such hints or none matches.
func filterHints(eps []Endpoint, hintsOf func(Endpoint) *discoveryv1.EndpointHints,
	names func(*discoveryv1.EndpointHints) ([]string, bool), want string) []Endpoint {
	var out []Endpoint
	for _, e := range eps {
		h := hintsOf(e)
		if h == nil {
			return nil
		}
		ns, ok := names(h)
		if !ok {
			return nil
		}
		for _, n := range ns {
			if n == want {
				out = append(out, e)
				break
			}
		}
	}
	return out
}
