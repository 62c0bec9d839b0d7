package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The LoadBalancer Service with externalTrafficPolicy Local that
// TestDrainingNode probes: one endpoint, on this node.
const (
	lbVIP      = "10.0.0.20"
	lbEndpoint = "10.211.1.3"
	lbHCPort   = 30201
)

// TestDrainingNode (KEP-3836): a node tainted ToBeDeletedByClusterAutoscaler,
// or with a deletionTimestamp, fails /healthz so that load balancers drain
// it, keeps /livez at 200 so that kubelet does not restart its agent, and
// its HealthCheckNodePorts answer 503 with serviceProxyHealthy false
// although the Service has a local endpoint. The rules keep serving
// meanwhile. Removing the taint brings every answer back to 200.
func TestDrainingNode(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	w.localLBService()
	p := w.startAgent()
	w.waitServing("rev-1")
	srv := httptest.NewServer(p.hs.Handler()) // what cmd/agent serves on --health-addr
	t.Cleanup(srv.Close)
	w.waitHealth(srv.URL, true, "")

	w.updateNode(func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "ToBeDeletedByClusterAutoscaler", Value: "1767225600",
			Effect: corev1.TaintEffectNoSchedule})
	})
	w.waitHealth(srv.URL, false, "tainted ToBeDeletedByClusterAutoscaler")
	if got := w.answers(webVIP); got != webBackend {
		t.Errorf("while the node drains, %s answered by %q, want %s: the rules must keep serving", webVIP, got, webBackend)
	}
	w.updateNode(func(n *corev1.Node) { n.Spec.Taints = nil })
	w.waitHealth(srv.URL, true, "")

	// A finalizer keeps the deleted Node with its deletionTimestamp.
	const hold = "test.synterix.io/hold"
	w.updateNode(func(n *corev1.Node) { n.Finalizers = append(n.Finalizers, hold) })
	t.Cleanup(func() { w.updateNode(func(n *corev1.Node) { n.Finalizers = nil }) })
	if err := w.c.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}); err != nil {
		t.Fatal(err)
	}
	w.waitHealth(srv.URL, false, "deletionTimestamp is set")
	if got := w.answers(webVIP); got != webBackend {
		t.Errorf("while the node is being deleted, %s answered by %q, want %s", webVIP, got, webBackend)
	}
}

// localLBService creates Service lb: type LoadBalancer, externalTrafficPolicy
// Local, healthCheckNodePort lbHCPort, one endpoint on this node.
func (w *world) localLBService() {
	w.t.Helper()
	w.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "lb"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: lbVIP, ClusterIPs: []string{lbVIP},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, HealthCheckNodePort: lbHCPort,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30081, Protocol: corev1.ProtocolTCP}}},
	})
	es := slice("lb", lbEndpoint)
	local := nodeName
	es.Endpoints[0].NodeName = &local
	w.create(es)
}

// updateNode reads the Node, changes it with f and writes it back, again
// on a conflict.
func (w *world) updateNode(f func(*corev1.Node)) {
	w.t.Helper()
	eventually(w.t, "Node "+nodeName+" updated", func() (bool, string) {
		n := &corev1.Node{}
		if err := w.c.Get(context.Background(), client.ObjectKey{Name: nodeName}, n); err != nil {
			return false, err.Error()
		}
		f(n)
		if err := w.c.Update(context.Background(), n); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// healthBody is what the tests read of /healthz and /livez.
type healthBody struct {
	NodeHealthy  bool   `json:"nodeHealthy"`
	NodeEligible bool   `json:"nodeEligible"`
	Reason       string `json:"reason"`
}

// hcBody is the reply of a HealthCheckNodePort.
type hcBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// waitHealth waits until the agent's health endpoints and lb's
// HealthCheckNodePort (asked from the client namespace, as a cloud load
// balancer asks the node) say the node is eligible for traffic or, when
// eligible is false, draining for the reason given: /healthz 503 with the
// reason, /livez 200, the node port 503 with its local endpoint counted
// and serviceProxyHealthy false.
func (w *world) waitHealth(base string, eligible bool, reason string) {
	w.t.Helper()
	healthz, hc := http.StatusOK, http.StatusOK
	if !eligible {
		healthz, hc = http.StatusServiceUnavailable, http.StatusServiceUnavailable
	}
	eventually(w.t, fmt.Sprintf("health eligible=%t", eligible), func() (bool, string) {
		for _, c := range []struct {
			path string
			code int
		}{{"/healthz", healthz}, {"/livez", http.StatusOK}} {
			code, body, err := getJSON[healthBody](http.DefaultClient, base+c.path)
			if err != nil || code != c.code || body.NodeEligible != eligible ||
				(c.path == "/healthz" && !eligible && body.Reason != "node is being deleted: "+reason) {
				return false, fmt.Sprintf("%s: %d %+v %v, want %d", c.path, code, body, err, c.code)
			}
		}
		code, body, err := getJSON[hcBody](w.client.HTTPClient(5*time.Second), fmt.Sprintf("http://%s:%d/", nodeIP, lbHCPort))
		if err != nil || code != hc || body.LocalEndpoints != 1 || body.ServiceProxyHealthy != eligible ||
			body.Service.Namespace != testNS || body.Service.Name != "lb" {
			return false, fmt.Sprintf("healthCheckNodePort: %d %+v %v, want %d", code, body, err, hc)
		}
		return true, ""
	})
}

// getJSON fetches url and decodes its JSON body.
func getJSON[T any](c *http.Client, url string) (int, T, error) {
	var v T
	resp, err := c.Get(url)
	if err != nil {
		return 0, v, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, v, json.NewDecoder(resp.Body).Decode(&v)
}
