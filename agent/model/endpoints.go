package model

import (
	"net/netip"
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
		for _, p := range es.Ports {
			if port, ok := b.slicePort(es, p, sp.Name, proto); ok {
				out = b.addEndpoints(out, es, port)
			}
		}
	}
	sortEndpoints(out)
	return out
}

// slicePort returns the port number of a slice's port entry when it is the
// service port's (same name and protocol), reporting an invalid number.
func (b *builder) slicePort(es *discoveryv1.EndpointSlice, p discoveryv1.EndpointPort, name string, proto Protocol) (int32, bool) {
	pname := ""
	if p.Name != nil {
		pname = *p.Name
	}
	pp := TCP
	if p.Protocol != nil {
		var ok bool
		if pp, ok = protocol(*p.Protocol); !ok {
			return 0, false
		}
	}
	if pname != name || pp != proto {
		return 0, false
	}
	if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
		port := "<nil>"
		if p.Port != nil {
			port = strconv.Itoa(int(*p.Port))
		}
		b.problem(sliceObject(es), "port %q number %s out of range, skipped", pname, port)
		return 0, false
	}
	return *p.Port, true
}

// addEndpoints appends the slice's endpoints at port to out. An address
// already there (the same endpoint can briefly sit in two slices) is kept
// once, the ready copy winning.
func (b *builder) addEndpoints(out []Endpoint, es *discoveryv1.EndpointSlice, port int32) []Endpoint {
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
		ep := b.endpoint(a, port, e)
		k := Endpoint{Addr: a, Port: port}
		if i, dup := b.index[k]; dup {
			if !out[i].Ready && ep.Ready {
				out[i] = ep
				b.hints[k] = e.Hints
			}
			continue
		}
		b.index[k] = len(out)
		out = append(out, ep)
		b.hints[k] = e.Hints
	}
	if bad > 0 {
		b.problem(sliceObject(es), "skipped %d endpoint(s) with an invalid address (first %q)", bad, firstBad)
	}
	return out
}

// endpoint reads one endpoint's conditions and placement.
func (b *builder) endpoint(a netip.Addr, port int32, e discoveryv1.Endpoint) Endpoint {
	return EndpointOf(a, port, e, b.cfg.NodeName)
}

// EndpointOf reads one endpoint of an EndpointSlice at address a: its
// conditions (ready when unset, serving as ready when unset), its node and
// zone, and whether it is on node. The explain view reads endpoints with it
// too, so that it can never judge them otherwise than the model does.
func EndpointOf(a netip.Addr, port int32, e discoveryv1.Endpoint, node string) Endpoint {
	ep := Endpoint{Addr: a, Port: port}
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
	ep.Local = ep.NodeName != "" && ep.NodeName == node
	return ep
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
