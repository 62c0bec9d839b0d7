package model

import (
	"reflect"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Builder builds States incrementally, as kube-proxy's change trackers do:
// it keeps the service ports built for each Service and, when told which
// Services changed, rebuilds only those, so that a change to one Service
// costs in proportion to that Service and not to the whole cluster. A
// change to the node-wide input (config, node, policies other than whom
// they target) rebuilds everything. Not safe for concurrent use.
type Builder struct {
	last    *State
	globals *globalsKey
	perSvc  map[ServiceRef]svcResult
	// withProblems holds the Services whose build reported problems, so
	// that collecting them does not walk every Service.
	withProblems map[ServiceRef][]Problem
}

// svcResult is what one Service built into.
type svcResult struct {
	ports    []*Service
	problems []Problem
}

// globalsKey is the node-wide input a build depended on, as normalised by
// the builder, to tell whether the next build may reuse Services.
type globalsKey struct {
	cfg       Config
	zone      string
	nodeIPs   []string
	npAddrs   []string
	localhost bool
	local     LocalTraffic
	policies  []Policy // with Services cleared: who they target is per Service
	targets   map[ServiceRef][]string
	problems  []Problem
}

// Build returns the State of g and src. changed names the Services that
// may differ since the previous Build of this Builder; nil means unknown,
// and rebuilds every Service. The returned State shares unchanged Services
// with the previous one: callers must treat Services as read-only.
func (m *Builder) Build(g Globals, src Source, changed []ServiceRef) *State {
	b := newBuilder(g, src)
	key := b.globalsKey()
	b.problems = nil
	reuse := m.last != nil && changed != nil && m.globals != nil && m.globals.sameExceptTargets(key)
	if reuse {
		changed = append(changed, m.globals.retargeted(key)...)
		m.rebuild(b, changed)
	} else {
		m.rebuildAll(b)
	}
	m.globals = key
	st := &State{
		NodeName:           b.cfg.NodeName,
		Family:             b.family,
		NodeIPs:            b.nodeIPs,
		Local:              b.local,
		MasqueradeAll:      b.cfg.MasqueradeAll,
		LocalhostNodePorts: b.localhost,
		Services:           m.services(reuse, changed),
		Problems:           m.problems(key.problems),
	}
	m.last = st
	return st
}

// rebuildAll builds every Service of the source.
func (m *Builder) rebuildAll(b *builder) {
	m.perSvc = map[ServiceRef]svcResult{}
	m.withProblems = map[ServiceRef][]Problem{}
	for _, svc := range b.src.Services() {
		if svc == nil {
			continue
		}
		ref := ServiceRef{Namespace: svc.Namespace, Name: svc.Name}
		r := b.serviceResult(svc)
		if first, dup := m.perSvc[ref]; dup {
			// A list may hold a Service twice (an informer cache cannot):
			// the first copy wins.
			for _, s := range r.ports {
				first.problems = append(first.problems, Problem{Object: svcObject(svc),
					Message: "duplicate service port \"" + s.Key + "\" skipped"})
			}
			r = first
		}
		m.store(ref, r)
	}
}

// rebuild builds the changed Services again, dropping the ones that are
// gone.
func (m *Builder) rebuild(b *builder, changed []ServiceRef) {
	for _, ref := range changed {
		svc := b.src.Service(ref)
		if svc == nil {
			delete(m.perSvc, ref)
			delete(m.withProblems, ref)
			continue
		}
		m.store(ref, b.serviceResult(svc))
	}
}

func (m *Builder) store(ref ServiceRef, r svcResult) {
	m.perSvc[ref] = r
	if len(r.problems) > 0 {
		m.withProblems[ref] = r.problems
	} else {
		delete(m.withProblems, ref)
	}
}

// services returns every service port sorted by key. After an incremental
// build it starts from the previous list, replaces the changed Services'
// ports and re-sorts only when a key was added.
func (m *Builder) services(reuse bool, changed []ServiceRef) []*Service {
	if !reuse {
		var out []*Service
		for _, r := range m.perSvc {
			out = append(out, r.ports...)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		return out
	}
	dirty := make(map[ServiceRef]bool, len(changed))
	for _, ref := range changed {
		dirty[ref] = true
	}
	out := make([]*Service, 0, len(m.last.Services)+len(changed))
	for _, s := range m.last.Services {
		if !dirty[ServiceRef{Namespace: s.Namespace, Name: s.Name}] {
			out = append(out, s)
		}
	}
	added := false
	for ref := range dirty {
		for _, s := range m.perSvc[ref].ports {
			out = append(out, s)
			added = true
		}
	}
	if added {
		slices.SortFunc(out, func(a, b *Service) int { return strings.Compare(a.Key, b.Key) })
	}
	return out
}

// problems returns the global and per-Service problems, sorted.
func (m *Builder) problems(global []Problem) []Problem {
	out := append([]Problem(nil), global...)
	for _, ps := range m.withProblems {
		out = append(out, ps...)
	}
	return sortProblems(out)
}

// globalsKey captures the normalised node-wide input of this build.
func (b *builder) globalsKey() *globalsKey {
	k := &globalsKey{cfg: b.cfg, zone: b.zone, localhost: b.localhost, local: b.local, targets: map[ServiceRef][]string{},
		problems: b.problems}
	for _, a := range b.nodeIPs {
		k.nodeIPs = append(k.nodeIPs, a.String())
	}
	for _, a := range b.npAddrs {
		k.npAddrs = append(k.npAddrs, a.String())
	}
	for _, p := range b.policies {
		for _, ref := range p.Services {
			k.targets[ref] = append(k.targets[ref], p.String())
		}
		p.Services = nil
		k.policies = append(k.policies, p)
	}
	return k
}

// sameExceptTargets reports whether two builds share their node-wide input,
// except for which Services the policies target.
func (k *globalsKey) sameExceptTargets(o *globalsKey) bool {
	return reflect.DeepEqual(k.cfg, o.cfg) && k.zone == o.zone && k.localhost == o.localhost && k.local.Equal(o.local) &&
		slices.Equal(k.nodeIPs, o.nodeIPs) && slices.Equal(k.npAddrs, o.npAddrs) &&
		reflect.DeepEqual(k.policies, o.policies) && reflect.DeepEqual(k.problems, o.problems)
}

// retargeted lists the Services whose set of targeting policies differs.
func (k *globalsKey) retargeted(o *globalsKey) []ServiceRef {
	var out []ServiceRef
	for ref, ps := range k.targets {
		if !slices.Equal(ps, o.targets[ref]) {
			out = append(out, ref)
		}
	}
	for ref := range o.targets {
		if _, ok := k.targets[ref]; !ok {
			out = append(out, ref)
		}
	}
	return out
}

// listSource is a Source over plain lists, for Build.
type listSource struct {
	services []*corev1.Service
	byRef    map[ServiceRef]*corev1.Service
	slices   map[ServiceRef][]*discoveryv1.EndpointSlice
}

func newListSource(in Input) *listSource {
	s := &listSource{services: in.Services, byRef: map[ServiceRef]*corev1.Service{},
		slices: map[ServiceRef][]*discoveryv1.EndpointSlice{}}
	for _, svc := range in.Services {
		if svc != nil {
			s.byRef[ServiceRef{Namespace: svc.Namespace, Name: svc.Name}] = svc
		}
	}
	for _, es := range in.EndpointSlices {
		if es == nil || es.Labels[discoveryv1.LabelServiceName] == "" {
			continue
		}
		ref := ServiceRef{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]}
		s.slices[ref] = append(s.slices[ref], es)
	}
	return s
}

func (s *listSource) Services() []*corev1.Service            { return s.services }
func (s *listSource) Service(ref ServiceRef) *corev1.Service { return s.byRef[ref] }
func (s *listSource) EndpointSlices(ref ServiceRef) []*discoveryv1.EndpointSlice {
	return s.slices[ref]
}
