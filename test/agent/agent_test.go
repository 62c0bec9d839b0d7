package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// inProcess runs the agent's core loop in the test process, with every
// kernel operation executed in the node namespace.
type inProcess struct {
	agent  *daemon.Agent
	m      *metrics.Metrics
	hs     *health.State
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (w *world) startAgent() *inProcess { return w.startAgentAs(w.cfg) }

func (w *world) startAgentAs(cfg *rest.Config) *inProcess {
	w.t.Helper()
	clients, err := informers.NewClients(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec, stopRec := daemon.NewEventRecorder(ctx, clients.Core, nodeName)
	p := &inProcess{m: metrics.New(), hs: health.NewState(time.Minute), cancel: cancel, done: make(chan struct{})}
	p.agent = daemon.New(daemon.Options{NodeName: nodeName, OperatorNamespace: operatorNS, Clients: clients,
		Recorder: rec, Metrics: p.m, Health: p.hs, InNetNS: w.node.Do, AgentVersion: "test"})
	go func() { p.err = p.agent.Run(ctx); close(p.done) }()
	w.t.Cleanup(func() {
		cancel()
		<-p.done
		stopRec()
	})
	return p
}

func (p *inProcess) stop() {
	p.cancel()
	<-p.done
}

// metric returns the value of a counter or gauge, or the sample count of a
// histogram, summed over label sets.
func (p *inProcess) metric(t *testing.T, name string) float64 {
	t.Helper()
	return p.sum(t, name, func(m *dto.Metric) float64 {
		return m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	})
}

// histogramSum returns the sum of a histogram's samples over label sets.
func (p *inProcess) histogramSum(t *testing.T, name string) float64 {
	t.Helper()
	return p.sum(t, name, func(m *dto.Metric) float64 { return m.GetHistogram().GetSampleSum() })
}

// sum adds value over the label sets of the metric called name.
func (p *inProcess) sum(t *testing.T, name string, value func(*dto.Metric) float64) float64 {
	t.Helper()
	mfs, err := p.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += value(m)
			}
		}
	}
	return v
}

func baseSpec() v1alpha1.GatewayConfigSpec {
	return v1alpha1.GatewayConfigSpec{
		Mode:          v1alpha1.BackendModeIPTables,
		MinSyncPeriod: &metav1.Duration{Duration: 100 * time.Millisecond},
		SyncPeriod:    &metav1.Duration{Duration: 3 * time.Second},
	}
}

func (w *world) iptablesSave() string {
	return w.node.MustExec("iptables-save")
}

// TestAgentProgramsNamespace: the agent, against the real API server,
// programs a real namespace; an EndpointSlice change reaches the kernel and
// its latency is reported; status, events and health follow.
func TestAgentProgramsNamespace(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	p := w.startAgent()
	pn := w.waitServing("rev-1")
	if pn.Status.Backend != v1alpha1.BackendIPTables || pn.Status.BackendReason == "" {
		t.Errorf("backend %q reason %q, want IPTables with a reason", pn.Status.Backend, pn.Status.BackendReason)
	}
	if pn.Status.Capabilities == nil || pn.Status.Capabilities.KernelVersion == "" {
		t.Errorf("capabilities not reported: %+v", pn.Status.Capabilities)
	}
	if pn.Status.ObservedGeneration != pn.Generation {
		t.Errorf("observedGeneration %d, generation %d", pn.Status.ObservedGeneration, pn.Generation)
	}
	// default/kubernetes and test/web.
	if pn.Status.Counts.Services != 2 {
		t.Errorf("counts %+v, want 2 service ports", pn.Status.Counts)
	}
	// The node has an IPv4 address only: it programs IPv4 alone and says so.
	fams := map[corev1.IPFamily]v1alpha1.FamilyStatus{}
	for _, f := range pn.Status.Families {
		fams[f.Family] = f
	}
	if v4, v6 := fams[corev1.IPv4Protocol], fams[corev1.IPv6Protocol]; !v4.Programmed || v4.Counts.Services != 2 ||
		v6.Programmed || !strings.Contains(v6.Message, "no IPv6 address") {
		t.Errorf("families %+v: want IPv4 programmed with 2 service ports, IPv6 not, saying why", pn.Status.Families)
	}
	if !p.hs.Ready() {
		t.Error("not ready after the first sync")
	}
	if ok, why := p.hs.Healthy(); !ok {
		t.Errorf("unhealthy: %s", why)
	}
	t.Logf("status after first sync: backend=%s reason=%q caps=%+v lastSync=%+v", pn.Status.Backend,
		pn.Status.BackendReason, *pn.Status.Capabilities, *pn.Status.LastSync)

	// An EndpointSlice change reaches the kernel, with its latency.
	before := p.metric(t, "synterix_network_programming_duration_seconds")
	w.setEndpoints("web", "10.211.2.2")
	w.waitAnswer(webVIP, "10.211.2.2")
	if save := w.iptablesSave(); !strings.Contains(save, "10.211.2.2:8080") || strings.Contains(save, "10.211.1.2:8080") {
		t.Errorf("iptables-save in the node namespace does not show the new endpoint only:\n%s", save)
	}
	eventually(t, "network programming latency observed", func() (bool, string) {
		n := p.metric(t, "synterix_network_programming_duration_seconds")
		return n > before, fmt.Sprintf("samples %v", n)
	})
	t.Logf("network programming latency: %d samples, %.3f s in all (EndpointSlice trigger time to rules in the kernel)",
		int(p.metric(t, "synterix_network_programming_duration_seconds")), p.histogramSum(t, "synterix_network_programming_duration_seconds"))
	if p.metric(t, "synterix_sync_partial_total") == 0 {
		t.Error("no partial sync counted")
	}
	if p.metric(t, "synterix_sync_full_total") == 0 {
		t.Error("no full sync counted")
	}

	// A new Service is added by a sync without a restart.
	w.service("api", "10.0.0.11", "10.211.1.3")
	w.waitAnswer("10.0.0.11:80", "10.211.1.3")

	// Events were posted on the ProxyNode.
	w.waitEvent("RevisionApplied event", func(e corev1.Event) bool {
		return e.Reason == v1alpha1.ReasonRevisionApplied && e.InvolvedObject.Name == nodeName
	})

	// SIGTERM-like stop leaves the rules in place.
	p.stop()
	if save := w.iptablesSave(); !strings.Contains(save, "SYNX-") {
		t.Error("rules removed when the agent stopped")
	}
	if got := w.answers(webVIP); got != "10.211.2.2" {
		t.Errorf("after the agent stopped, service answered by %q", got)
	}
}

// TestExplicitIPVSWithoutIPVS: a revision that asks for IPVS on a kernel
// without it is refused with Degraded and the reason, and the rules of the
// current revision stay.
func TestExplicitIPVSWithoutIPVS(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	ipvsSpec := baseSpec()
	ipvsSpec.Mode = v1alpha1.BackendModeIPVS
	w.revision("rev-ipvs", ipvsSpec)
	w.revisionRaw("rev-garbage", []byte(`{"spec": 42}`))
	p := w.startAgent()
	w.waitReady("rev-1")
	if p.agentCapsIPVS(w) {
		t.Skip("SKIPPING: this kernel has IPVS; the test needs one without")
	}

	for _, tc := range []struct{ rev, reason, want string }{
		{"rev-ipvs", v1alpha1.ReasonBackendUnavailable, "no IPVS"},
		{"rev-garbage", v1alpha1.ReasonRevisionInvalid, "not a GatewayConfig spec"},
	} {
		w.assign(tc.rev)
		eventually(t, tc.rev+" refused", func() (bool, string) {
			pn := w.getProxyNode()
			if pn == nil {
				return false, "no ProxyNode"
			}
			d := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionDegraded)
			r := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionReady)
			if d == nil || r == nil {
				return false, "no conditions"
			}
			// The failure is reported at the generation that asked for it, so
			// that the operator stops its rollout at once.
			return d.Status == metav1.ConditionTrue && d.Reason == tc.reason && strings.Contains(d.Message, tc.want) &&
					r.Status == metav1.ConditionFalse && pn.Status.AppliedRevision == "rev-1" &&
					pn.Status.ObservedGeneration == pn.Generation && d.ObservedGeneration == pn.Generation,
				fmt.Sprintf("Degraded=%s %s %q Ready=%s applied=%s observedGeneration=%d/%d generation=%d", d.Status, d.Reason, d.Message,
					r.Status, pn.Status.AppliedRevision, pn.Status.ObservedGeneration, d.ObservedGeneration, pn.Generation)
		})
		pn := w.getProxyNode()
		d := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionDegraded)
		t.Logf("%s: Degraded %s: %s", tc.rev, d.Reason, d.Message)
		if got := w.answers(webVIP); got != webBackend {
			t.Errorf("rules of rev-1 not kept: service answered by %q", got)
		}
	}
	// Back to a good revision: Ready again.
	w.assign("rev-1")
	w.waitReady("rev-1")
	if p.metric(t, "synterix_revision_errors_total") < 2 {
		t.Error("revision errors not counted")
	}
}

func (p *inProcess) agentCapsIPVS(w *world) bool {
	pn := w.getProxyNode()
	return pn != nil && pn.Status.Capabilities != nil && pn.Status.Capabilities.IPVS
}

// TestHostileInput: broken and hostile objects never crash the agent or
// leave a half-programmed node, and they are reported.
func TestHostileInput(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	p := w.startAgent()
	w.waitServing("rev-1")
	ctx := context.Background()

	// EndpointSlices with addresses the model cannot use. The API server
	// refuses plainly invalid IPs; what it lets through is what we test.
	bad := slice("web", "10.211.1.3")
	bad.Name = "web-bad"
	bad.Endpoints = append(bad.Endpoints,
		discoveryv1.Endpoint{Addresses: []string{"fd00::1"}},
		discoveryv1.Endpoint{Addresses: []string{"0.0.0.0"}},
		discoveryv1.Endpoint{Addresses: []string{"not-an-ip"}})
	if err := w.c.Create(ctx, bad); err != nil {
		t.Logf("API server refused the slice with invalid addresses (%v); creating one with only the first endpoint", err)
		bad.Endpoints = bad.Endpoints[:1]
		ipv6 := slice("web", "fd00::1")
		ipv6.Name = "web-v6-in-v4"
		if err := w.c.Create(ctx, ipv6); err != nil {
			t.Logf("API server also refused an IPv6 address in an IPv4 slice: %v", err)
		}
		w.create(bad)
	}
	// A Service with thousands of ports.
	many := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "many"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.20", ClusterIPs: []string{"10.0.0.20"}}}
	for i := 0; i < 3000; i++ {
		many.Spec.Ports = append(many.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(1000 + i), Protocol: corev1.ProtocolTCP})
	}
	if err := w.c.Create(ctx, many); err != nil {
		t.Logf("API server refused a Service with 3000 ports: %v", err)
	}
	// A policy that targets nothing, and one the backend cannot run.
	w.create(&v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "nothing"},
		Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "does-not-exist"}},
			LoadBalancing: &v1alpha1.LoadBalancingSpec{Algorithm: v1alpha1.AlgorithmRandom}}})
	w.create(&v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "maglev"},
		Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingSpec{Algorithm: v1alpha1.AlgorithmMaglev}}})

	// The good endpoint of the bad slice is programmed; the node stays whole.
	w.waitAnswer(webVIP, "10.211.1.3")
	eventually(t, "failed policy reported", func() (bool, string) {
		pn := w.getProxyNode()
		if pn == nil {
			return false, "no ProxyNode"
		}
		return pn.Status.FailedPolicyCount == 1 && len(pn.Status.FailedPolicies) == 1 &&
				pn.Status.FailedPolicies[0].Name == "maglev" && pn.Status.FailedPolicies[0].Reason == v1alpha1.ReasonUnsupportedByBackend,
			fmt.Sprintf("%+v", pn.Status.FailedPolicies)
	})
	eventually(t, "skipped input reported", func() (bool, string) {
		n := p.metric(t, "synterix_skipped_objects")
		return n > 0, fmt.Sprintf("skipped_objects %v", n)
	})
	w.waitEvent("InvalidInput event", func(e corev1.Event) bool { return e.Reason == v1alpha1.ReasonInvalidInput })
	pn := w.getProxyNode()
	t.Logf("status: counts %+v failedPolicies %+v", pn.Status.Counts, pn.Status.FailedPolicies)

	// Someone flushes our chains: the agent notices and repairs them.
	w.node.MustExec("iptables", "-t", "nat", "-F")
	if got := w.answers(webVIP); strings.HasPrefix(got, "10.211.") {
		t.Logf("flush left service answering (%s)", got)
	}
	full := p.metric(t, "synterix_sync_full_total")
	// A change triggers a partial sync whose canary check finds the flush,
	// or the periodic full sync repairs it.
	w.setEndpoints("web", webBackend)
	w.waitAnswer(webVIP, webBackend)
	eventually(t, "full sync after the flush", func() (bool, string) {
		n := p.metric(t, "synterix_sync_full_total")
		return n > full, fmt.Sprintf("full syncs %v (was %v)", n, full)
	})
	if ok, why := p.hs.Healthy(); !ok {
		t.Errorf("unhealthy after hostile input: %s", why)
	}
	pn = w.getProxyNode()
	if c := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("not Ready after hostile input: %+v", c)
	}
}
