// Package tracing checks, with a real OTLP receiver in the test process,
// that one trace follows a GatewayConfig change from the operator's
// reconcile to the sync that put it in each node's kernel.
package tracing

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/internal/telemetry"
	"github.com/synterix/synterix-kube-proxy/internal/traceparent"
	"github.com/synterix/synterix-kube-proxy/test/inproc"
	"github.com/synterix/synterix-kube-proxy/test/otlp"
)

// provider is what the program's main builds from the environment, with
// the program's own resource; stop flushes it to the receiver.
func provider(t *testing.T, service string, attrs map[string]string) (trace.TracerProvider, func()) {
	tp, stop, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: service, Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	return tp, func() {
		if err := stop(context.Background()); err != nil {
			t.Errorf("flush %s's spans: %v", service, err)
		}
	}
}

// TestConfigChangeTracedToTwoNodes: the operator (in-process, traced as
// synterix-operator) rolls a new GatewayConfig out to two nodes whose
// agents (in-process, each programming its own network namespace, each
// traced as synterix-agent of its node) put it in their kernels; every
// component exports over OTLP, configured by OTEL_* as in production, to
// a receiver in the test. One trace holds the reconcile that created the
// revision, the rollout batches that assigned it (canary, then the rest)
// and each agent's first sync of it, parented in that order, with the
// model build, backend apply and conntrack cleanup under each family.
func TestConfigChangeTracedToTwoNodes(t *testing.T) {
	rcv := otlp.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	w := inproc.Start(t)
	opTP, stopOp := provider(t, "synterix-operator", nil)
	w.Operator(opTP)
	var stops []func()
	var nodes []*inproc.Node
	for i, name := range []string{"node-a", "node-b"} {
		n := w.AddNode(name, i+1, map[string]string{"proxy.test/selected": "true"})
		tp, stop := provider(t, "synterix-agent", map[string]string{"k8s.node.name": name})
		w.StartAgent(n, tp)
		nodes, stops = append(nodes, n), append(stops, stop)
	}
	webService(w, nodes[0])
	w.Create(&v1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.GatewayConfigSpec{
		NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"proxy.test/selected": "true"}},
		Mode:          v1alpha1.BackendModeIPTables,
		MinSyncPeriod: &metav1.Duration{Duration: 100 * time.Millisecond},
	}})
	rev := waitApplied(t, w, "node-a", "node-b")
	for _, stop := range append(stops, stopOp) {
		stop()
	}
	cr := w.Revision(rev)
	tid := traceparent.SpanContext(cr.Annotations[v1alpha1.TraceParentAnnotation]).TraceID().String()
	if tid == "00000000000000000000000000000000" {
		t.Fatalf("revision %s has no trace context: %v", rev, cr.Annotations)
	}
	spans := rcv.Trace(tid)
	t.Logf("trace %s:\n%s", tid, otlp.Tree(spans, "synterix.revision", "synterix.node_names", "synterix.node", "synterix.ip_family",
		"synterix.services", "synterix.rules.written", "synterix.conntrack.deleted"))
	checkTrace(t, spans, rev)
}

// checkTrace checks the parentage: reconcile > (apply >) batch > sync >
// family > build, apply, conntrack, for both nodes.
func checkTrace(t *testing.T, spans []otlp.Span, rev string) {
	byID := map[string]otlp.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	parent := func(s otlp.Span) otlp.Span { return byID[s.ParentID] }
	batched := map[string]bool{}
	for _, s := range spans {
		if s.Name != "rollout batch" {
			continue
		}
		// In the reconcile that created the revision, under its apply
		// phase; in a later one, under the creating reconcile itself.
		p := parent(s)
		if p.Name == "apply" {
			p = parent(p)
		}
		if s.Service != "synterix-operator" || s.Attrs["synterix.revision"] != rev || p.Name != "reconcile GatewayConfig" || p.ParentID != "" {
			t.Errorf("batch %+v: want an operator span of revision %s under the reconcile that created it", s, rev)
		}
		for _, n := range strings.Split(s.Attrs["synterix.node_names"], ",") {
			batched[n] = true
		}
	}
	for _, node := range []string{"node-a", "node-b"} {
		if !batched[node] {
			t.Errorf("no rollout batch of %s in the trace", node)
		}
		var syncs []otlp.Span
		for _, s := range spans {
			if s.Name == "sync" && s.Resource["k8s.node.name"] == node {
				syncs = append(syncs, s)
			}
		}
		if len(syncs) == 0 {
			t.Errorf("no sync of %s in the trace", node)
			continue
		}
		for _, s := range syncs {
			b := parent(s)
			if s.Service != "synterix-agent" || b.Name != "rollout batch" || !strings.Contains(b.Attrs["synterix.node_names"], node) ||
				s.Attrs["synterix.revision"] != rev || s.Attrs["synterix.revision.first_sync"] != "true" {
				t.Errorf("sync of %s %+v: want the first sync of %s under the batch that assigned it (%+v)", node, s, rev, b)
			}
		}
		checkFamily(t, spans, syncs[len(syncs)-1], node)
	}
}

// checkFamily checks a sync's family span and its three children.
func checkFamily(t *testing.T, spans []otlp.Span, sync otlp.Span, node string) {
	var fam *otlp.Span
	for i, s := range spans {
		if s.ParentID == sync.SpanID && s.Name == "sync family" && s.Attrs["synterix.ip_family"] == "IPv4" {
			fam = &spans[i]
		}
	}
	if fam == nil {
		t.Errorf("%s: no IPv4 family span under its sync", node)
		return
	}
	if fam.Attrs["synterix.backend"] != "iptables" || fam.Attrs["synterix.services"] == "0" || fam.Attrs["synterix.rules.owned"] == "0" {
		t.Errorf("%s: family span attributes %v", node, fam.Attrs)
	}
	children := map[string]otlp.Span{}
	for _, s := range spans {
		if s.ParentID == fam.SpanID {
			children[s.Name] = s
		}
	}
	for _, name := range []string{"model build", "backend apply", "conntrack cleanup"} {
		if _, ok := children[name]; !ok {
			t.Errorf("%s: no %q span under the family span (children %v)", node, name, children)
		}
	}
	if c := children["backend apply"]; c.Attrs["synterix.rules.written"] == "" || c.Attrs["synterix.rules.written"] == "0" {
		t.Errorf("%s: backend apply wrote %q rules", node, c.Attrs["synterix.rules.written"])
	}
}

// waitApplied waits until every node is Ready at its assigned revision,
// the same for all, and returns it.
func waitApplied(t *testing.T, w *inproc.World, nodes ...string) string {
	rev := ""
	inproc.Eventually(t, "every node Ready at the new revision", func() (bool, string) {
		var revs []string
		for _, n := range nodes {
			pn := &v1alpha1.ProxyNode{}
			if err := w.C.Get(context.Background(), client.ObjectKey{Name: n}, pn); err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionTrue || pn.Status.AppliedRevision != pn.Spec.Revision {
				return false, fmt.Sprintf("%s: assigned %q applied %q ready %v", n, pn.Spec.Revision, pn.Status.AppliedRevision, c)
			}
			revs = append(revs, pn.Status.AppliedRevision)
		}
		rev = revs[0]
		return revs[0] == revs[len(revs)-1], fmt.Sprint(revs)
	})
	return rev
}

// webService is a ClusterIP Service with two endpoints, pods of node n.
func webService(w *inproc.World, n *inproc.Node) {
	w.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.10", ClusterIPs: []string{"10.0.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
	port, name, proto, ready := int32(8080), "http", corev1.ProtocolTCP, true
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: "web-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}}
	for j := 0; j < 2; j++ {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{n.PodIP(j)}, NodeName: &n.Name,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	w.Create(es)
}
