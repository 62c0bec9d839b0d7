package explain

import (
	"fmt"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
)

// finding is one fact of an explanation; problem marks what breaks
// traffic or makes the node differ from what it was asked.
type finding struct {
	text    string
	problem bool
}

// findings says, in words, what a Service's report means, and ends with a
// verdict: the first problem, or that all is well.
func findings(r *report.Service) {
	var fs []finding
	add := func(problem bool, format string, args ...any) {
		fs = append(fs, finding{text: fmt.Sprintf(format, args...), problem: problem})
	}
	if r.Error != "" {
		add(true, "the last sync on %s failed (%s); the kernel holds the rules of the sync before", r.Node, r.Error)
	}
	switch {
	case !r.Watched:
		add(true, "%s does not see Service %s/%s: it does not exist, it is headless, or its service.kubernetes.io/service-proxy-name label gives it to another proxy",
			r.Node, r.Namespace, r.Name)
	case len(r.Ports) == 0:
		add(true, "Service %s/%s has no port %s programs (no cluster IP, or every port was skipped as invalid)", r.Namespace, r.Name, r.Node)
	}
	for _, p := range r.Policies {
		if p.Applied {
			add(false, "the policy %s is applied", p.Name)
			continue
		}
		add(true, "the policy %s is not programmed on %s: %s (%s)", p.Name, r.Node, p.Reason, p.Message)
	}
	for _, p := range r.Ports {
		fs = append(fs, portFindings(r, p)...)
	}
	r.Findings, r.OK = nil, true
	for _, f := range fs {
		r.Findings = append(r.Findings, f.text)
		if f.problem && r.OK {
			r.OK, r.Verdict = false, "PROBLEM: "+f.text
		}
	}
	if r.OK {
		r.Verdict = "OK: " + okVerdict(r)
	}
}

// portFindings explains one port: its endpoints, its traffic policies,
// and whether the kernel holds it.
func portFindings(r *report.Service, p report.Port) []finding {
	var fs []finding
	name := portName(r, p)
	add := func(problem bool, format string, args ...any) {
		fs = append(fs, finding{text: name + ": " + fmt.Sprintf(format, args...), problem: problem})
	}
	clusterIPs, externals := frontendsOf(p)
	ready, term, internalUsed, externalUsed, topo := counts(p)
	switch {
	case len(p.Endpoints) == 0 && p.ExternalTrafficPolicyLocal && len(externals) > 0:
		add(true, "no endpoints: connections to %s are rejected, to %s dropped", orNone(clusterIPs), strings.Join(externals, ", "))
	case len(p.Endpoints) == 0:
		add(true, "no endpoints: connections to %s are rejected", orNone(append(clusterIPs, externals...)))
	case ready == 0 && term > 0 && internalUsed+externalUsed > 0:
		add(false, "no ready endpoints; %s used as a fallback", plural(term, "terminating endpoint is", "terminating endpoints are"))
	case ready == 0:
		add(true, "no ready endpoints (%d not ready): connections to %s are rejected", len(p.Endpoints), orNone(clusterIPs))
	default:
		add(false, "%s of %d", plural(ready, "ready endpoint", "ready endpoints"), len(p.Endpoints))
	}
	if topo > 0 {
		add(false, "topology hints keep %s for other zones or nodes", plural(topo, "endpoint", "endpoints"))
	}
	// Without a usable endpoint anywhere the ClusterIP rejects (said above).
	if p.InternalTrafficPolicyLocal && internalUsed == 0 && len(clusterIPs) > 0 && ready+term > 0 {
		add(true, "internalTrafficPolicy Local and no local endpoint: ClusterIP traffic from this node is dropped")
	}
	if p.ExternalTrafficPolicyLocal && len(externals) > 0 && externalUsed == 0 && len(p.Endpoints) > 0 {
		add(true, "externalTrafficPolicy Local and no local endpoint: external traffic to this node (%s) is dropped; pods and the node itself still reach the other nodes' endpoints",
			strings.Join(externals, ", "))
	}
	if p.Policy != "" {
		add(false, "policy %s (algorithm %s%s)", p.Policy, orDefault(p.Algorithm), affinityWords(p.Affinity))
	}
	switch {
	case p.Kernel.Error != "":
		add(true, "the kernel could not be read: %s", p.Kernel.Error)
	case len(p.Drift) > 0:
		d := p.Drift[0]
		add(true, "the kernel differs from what the agent programmed (%s; first: %s %s %s)", plural(len(p.Drift), "difference", "differences"), d.Kind, d.Object, d.Detail)
	default:
		add(false, "the kernel holds exactly the %s rules the agent programmed", p.Kernel.Backend)
	}
	return fs
}

func portName(r *report.Service, p report.Port) string {
	n := p.PortName
	if n == "" {
		n = r.Name
	}
	n += "/" + p.Protocol
	if len(r.Ports) > 0 && r.Ports[0].Family != r.Ports[len(r.Ports)-1].Family {
		n += " (" + p.Family + ")"
	}
	return n
}

func frontendsOf(p report.Port) (clusterIPs, externals []string) {
	for _, f := range p.Frontends {
		what := f.Kind + " " + f.Address
		if f.Kind == "ClusterIP" {
			clusterIPs = append(clusterIPs, what)
		} else {
			externals = append(externals, what)
		}
	}
	return clusterIPs, externals
}

// counts returns the ready and serving-terminating endpoints, those the
// ClusterIP and the external frontends use, and those topology hints keep
// away.
func counts(p report.Port) (ready, term, internalUsed, externalUsed, topo int) {
	for _, e := range p.Endpoints {
		switch e.Category {
		case "ready":
			ready++
		case "serving-terminating":
			term++
		}
		if e.ClusterIP == report.Used {
			internalUsed++
		}
		if e.External == report.Used {
			externalUsed++
		}
		if strings.HasPrefix(e.ClusterIP, "topology") {
			topo++
		}
	}
	return
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "its frontends"
	}
	return strings.Join(s, ", ")
}

func orDefault(a string) string {
	if a == "" {
		return "the backend's default"
	}
	return a
}

func affinityWords(a string) string {
	if a == "" {
		return ""
	}
	return ", affinity " + a
}

// okVerdict sums up a healthy Service: its endpoints per port.
func okVerdict(r *report.Service) string {
	var parts []string
	for _, p := range r.Ports {
		ready, _, used, _, _ := counts(p)
		c, _ := frontendsOf(p)
		parts = append(parts, fmt.Sprintf("%s: %d of %d endpoints in use (%d ready) behind %s", portName(r, p), used, len(p.Endpoints), ready, orNone(c)))
	}
	return strings.Join(parts, "; ")
}

// plural is "1 thing" or "N things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
