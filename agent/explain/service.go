package explain

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// zoneLabel is the Node label of its zone.
const zoneLabel = "topology.kubernetes.io/zone"

func syncOf(snap *daemon.Snapshot) report.Sync {
	s := report.Sync{Node: snap.NodeName, Revision: snap.Revision, Backend: string(snap.Backend), BackendReason: snap.BackendReason,
		LastSync: snap.Time.UTC(), Error: snap.Error}
	for _, f := range snap.FailedPolicies {
		s.FailedPolicies = append(s.FailedPolicies, report.FailedPolicy{Namespace: f.Namespace, Name: f.Name, Reason: f.Reason, Message: f.Message})
	}
	return s
}

// nodeReport lists the service ports of every family.
func nodeReport(snap *daemon.Snapshot) report.Node {
	r := report.Node{Sync: syncOf(snap)}
	for _, f := range snap.Families {
		fs := report.FamilySummary{Family: string(f.Family), Programmed: f.State != nil, Message: f.Status.Message}
		if f.State != nil {
			for _, s := range f.State.Services {
				fs.Services = append(fs.Services, summary(s))
			}
			for _, p := range f.State.Problems {
				fs.Problems = append(fs.Problems, p.String())
			}
		}
		r.Families = append(r.Families, fs)
	}
	return r
}

func summary(s *model.Service) report.ServiceSummary {
	out := report.ServiceSummary{Key: s.Key, Namespace: s.Namespace, Name: s.Name, Port: s.PortName, Protocol: string(s.Protocol),
		Endpoints: len(s.ClusterEndpoints), Policy: s.Policy}
	for _, f := range s.Frontends {
		out.Frontends = append(out.Frontends, f.String())
	}
	return out
}

// portsOf returns the service ports of a Service in a State (sorted by
// key, "namespace/name:port/PROTO").
func portsOf(st *model.State, ns, name string) []*model.Service {
	prefix := ns + "/" + name + ":"
	i := sort.Search(len(st.Services), func(i int) bool { return st.Services[i].Key >= prefix })
	var out []*model.Service
	for ; i < len(st.Services) && strings.HasPrefix(st.Services[i].Key, prefix); i++ {
		out = append(out, st.Services[i])
	}
	return out
}

// serviceReport gathers what the node wants and holds for a Service, and
// says what it means.
func serviceReport(ctx context.Context, snap *daemon.Snapshot, ns, name string) report.Service {
	r := report.Service{Sync: syncOf(snap), Namespace: ns, Name: name}
	var svc *corev1.Service
	if snap.Objects != nil {
		svc = snap.Objects.Service(model.ServiceRef{Namespace: ns, Name: name})
	}
	r.Watched = svc != nil
	zone := ""
	if snap.Node != nil {
		zone = snap.Node.Labels[zoneLabel]
	}
	for _, f := range snap.Families {
		if f.State == nil {
			continue
		}
		ports := portsOf(f.State, ns, name)
		if len(ports) == 0 {
			continue
		}
		v, err := readView(ctx, snap, f.Family)
		for _, s := range ports {
			p := portReport(snap, svc, s, f.Family, zone)
			if err != nil {
				p.Kernel = report.Kernel{Backend: string(snap.Backend), Error: err.Error()}
			} else {
				p.Kernel = v.port(s)
				p.Drift, _ = v.diff(f.State, s.Key)
			}
			r.Ports = append(r.Ports, p)
		}
	}
	r.Policies = policiesFor(snap, svc, r.Ports)
	findings(&r)
	return r
}

// portReport is the desired state of one service port, its endpoints
// classified.
func portReport(snap *daemon.Snapshot, svc *corev1.Service, s *model.Service, fam model.Family, zone string) report.Port {
	p := report.Port{Family: string(fam), Key: s.Key, PortName: s.PortName, Protocol: string(s.Protocol),
		InternalTrafficPolicyLocal: s.InternalLocal, ExternalTrafficPolicyLocal: s.ExternalLocal,
		Algorithm: string(s.Algorithm), Policy: s.Policy}
	if s.Affinity.ClientIP {
		p.Affinity = fmt.Sprintf("ClientIP %s", s.Affinity.Timeout)
	}
	for _, f := range s.Frontends {
		fr := report.Frontend{Kind: string(f.Kind), Address: f.AddrPort().String(), Masquerade: string(f.Masquerade)}
		if f.Localhost {
			fr.Kind += " (localhost)"
		}
		for _, r := range f.SourceRanges {
			fr.SourceRanges = append(fr.SourceRanges, r.String())
		}
		p.Frontends = append(p.Frontends, fr)
	}
	if svc != nil && snap.Objects != nil {
		slices := snap.Objects.EndpointSlices(model.ServiceRef{Namespace: s.Namespace, Name: s.Name})
		p.Endpoints = classify(candidates(slices, s, fam, snap.NodeName), s, zone, snap.NodeName)
	}
	return p
}

// policiesFor lists the ProxyPolicies that target the Service, and
// whether the node applies each.
func policiesFor(snap *daemon.Snapshot, svc *corev1.Service, ports []report.Port) []report.Policy {
	if svc == nil || snap.Objects == nil {
		return nil
	}
	var same []*corev1.Service
	for _, s := range snap.Objects.Services() {
		if s.Namespace == svc.Namespace {
			same = append(same, s)
		}
	}
	applied := map[string]bool{}
	for _, p := range ports {
		applied[p.Policy] = true
	}
	failed := map[string]report.FailedPolicy{}
	for _, f := range snap.FailedPolicies {
		failed[f.Namespace+"/"+f.Name] = report.FailedPolicy{Reason: f.Reason, Message: f.Message}
	}
	var out []report.Policy
	for _, pol := range snap.Objects.Policies() {
		if pol.Namespace != svc.Namespace {
			continue
		}
		t, _ := pol.ResolveTargets(same)
		if !contains(t.Selected, svc.Name) {
			continue
		}
		key := pol.Namespace + "/" + pol.Name
		p := report.Policy{Namespace: pol.Namespace, Name: pol.Name, Applied: applied[key]}
		switch f, ok := failed[key]; {
		case p.Applied:
		case ok:
			p.Reason, p.Message = f.Reason, f.Message
		default:
			p.Reason, p.Message = "NotApplied", "another, older policy applies to the same ports, or its ports name none of the Service's"
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
