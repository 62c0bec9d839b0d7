package health

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func TestHealthEndpoints(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewState(time.Minute)
	s.now = func() time.Time { return now }
	h := s.Handler()
	if c, _ := get(t, h, "/readyz"); c != 503 {
		t.Errorf("readyz before the first sync: %d", c)
	}
	if c, _ := get(t, h, "/healthz"); c != 200 {
		t.Errorf("healthz with nothing pending: %d", c)
	}
	s.Queued(now.Add(-2 * time.Minute))
	for _, p := range []string{"/healthz", "/livez"} {
		if c, body := get(t, h, p); c != 503 || !strings.Contains(body, "waited") {
			t.Errorf("%s with a 2m old change: %d %s", p, c, body)
		}
	}
	s.Synced(now.Add(-time.Second), now)
	if c, _ := get(t, h, "/healthz"); c != 200 {
		t.Errorf("healthz after the sync: %d", c)
	}
	if c, _ := get(t, h, "/readyz"); c != 200 {
		t.Errorf("readyz after the sync: %d", c)
	}
	// A change queued during a sync stays pending after it.
	s.Queued(now.Add(time.Second))
	s.Synced(now, now.Add(2*time.Second))
	now = now.Add(5 * time.Minute)
	if c, _ := get(t, h, "/healthz"); c != 503 {
		t.Errorf("healthz with a change queued during the last sync: %d", c)
	}
}

// decode parses a health report body.
func decode(t *testing.T, body string) report {
	t.Helper()
	var r report
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return r
}

// TestDrainingNode: a node being deleted fails /healthz, so that load
// balancers drain it, and not /livez, so that kubelet does not restart the
// agent of a node that still carries traffic (KEP-3836); a lagging agent
// fails both.
func TestDrainingNode(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewState(time.Minute)
	s.now = func() time.Time { return now }
	s.Synced(now, now)
	h := s.Handler()
	s.NodeDeleting("tainted ToBeDeletedByClusterAutoscaler")
	c, body := get(t, h, "/healthz")
	if r := decode(t, body); c != 503 || r.NodeHealthy || r.NodeEligible || !strings.Contains(r.Reason, "ToBeDeleted") {
		t.Errorf("healthz of a node being deleted: %d %s, want 503, nodeHealthy and nodeEligible false, the taint named", c, body)
	}
	c, body = get(t, h, "/livez")
	if r := decode(t, body); c != 200 || !r.NodeHealthy || r.NodeEligible || r.Reason != "" {
		t.Errorf("livez of a node being deleted: %d %s, want 200, nodeHealthy true, nodeEligible false", c, body)
	}
	if c, _ := get(t, h, "/readyz"); c != 200 {
		t.Errorf("readyz of a node being deleted: %d, want 200 (the first sync succeeded)", c)
	}
	if ok, _ := s.Healthy(); ok {
		t.Error("Healthy() of a node being deleted")
	}
	if ok, why := s.Live(); !ok {
		t.Errorf("Live() of a node being deleted: %s", why)
	}
	// Lagging behind still fails /livez on a draining node.
	s.Queued(now.Add(-2 * time.Minute))
	if c, body := get(t, h, "/livez"); c != 503 || !strings.Contains(body, "waited") {
		t.Errorf("livez of a lagging agent on a node being deleted: %d %s", c, body)
	}
	s.Synced(now, now)
	s.NodeDeleting("")
	for _, p := range []string{"/healthz", "/livez", "/readyz"} {
		c, body := get(t, h, p)
		if r := decode(t, body); c != 200 || !r.NodeHealthy || !r.NodeEligible {
			t.Errorf("%s once the taint is gone: %d %s", p, c, body)
		}
	}
}

// nodePortGet fetches a HealthCheckNodePort and decodes its reply.
func nodePortGet(t *testing.T, c *http.Client, url string) (int, nodePortReply, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r nodePortReply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("reply %d %q: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, r, resp.Header
}

// TestNodePorts: a HealthCheckNodePort answers 200 only with local
// endpoints and a healthy agent: a node being deleted, or an agent that
// lags behind, answers 503 even with local endpoints.
func TestNodePorts(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := NewState(time.Minute)
	st.now = func() time.Time { return now }
	n := NewNodePorts(func(network, _ string) (l netListener, err error) {
		return listenLoopback(network)
	}, st)
	defer n.Close()
	web := NodePortService{Service: ServiceRef{"ns", "web"}, LocalEndpoints: 2}
	if err := n.Update(map[int32]NodePortService{30001: web}); err != nil {
		t.Fatal(err)
	}
	url := "http://" + n.addr(30001) + "/"
	c := http.DefaultClient
	code, r, hdr := nodePortGet(t, c, url)
	if code != 200 || r.LocalEndpoints != 2 || r.Service.Name != "web" || r.Service.Namespace != "ns" || !r.ServiceProxyHealthy {
		t.Errorf("healthy, 2 local endpoints: %d %+v", code, r)
	}
	if w := hdr.Get("X-Load-Balancing-Endpoint-Weight"); w != "2" {
		t.Errorf("X-Load-Balancing-Endpoint-Weight %q, want 2", w)
	}
	st.NodeDeleting("deletionTimestamp is set")
	if code, r, _ := nodePortGet(t, c, url); code != 503 || r.LocalEndpoints != 2 || r.ServiceProxyHealthy {
		t.Errorf("node being deleted, 2 local endpoints: %d %+v, want 503 with serviceProxyHealthy false", code, r)
	}
	st.NodeDeleting("")
	st.Queued(now.Add(-2 * time.Minute))
	if code, r, _ := nodePortGet(t, c, url); code != 503 || r.ServiceProxyHealthy {
		t.Errorf("agent lagging behind: %d %+v, want 503 with serviceProxyHealthy false", code, r)
	}
	st.Synced(now, now)
	if code, r, _ := nodePortGet(t, c, url); code != 200 || !r.ServiceProxyHealthy {
		t.Errorf("healthy again: %d %+v", code, r)
	}
	_ = n.Update(map[int32]NodePortService{30001: {Service: ServiceRef{"ns", "web"}, LocalEndpoints: 0}})
	if code, r, _ := nodePortGet(t, c, url); code != 503 || r.LocalEndpoints != 0 || !r.ServiceProxyHealthy {
		t.Errorf("no local endpoints: %d %+v, want 503 with serviceProxyHealthy true", code, r)
	}
	_ = n.Update(nil)
	if n.Ports() != 0 {
		t.Errorf("%d servers after removing every port", n.Ports())
	}
}

// An idle agent (nothing to program) does not turn unhealthy, and is not
// ready either.
func TestIdle(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewState(time.Minute)
	s.now = func() time.Time { return now }
	s.Queued(now.Add(-time.Hour))
	s.Idle(now)
	if ok, why := s.Healthy(); !ok {
		t.Errorf("idle agent unhealthy: %s", why)
	}
	if s.Ready() {
		t.Error("idle agent ready")
	}
}
