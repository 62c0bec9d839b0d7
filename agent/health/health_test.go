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
	s.Synced(now, now)
	s.NodeDeleting("tainted ToBeDeletedByClusterAutoscaler")
	if c, body := get(t, h, "/livez"); c != 503 || !strings.Contains(body, "ToBeDeleted") {
		t.Errorf("livez of a deleted node: %d %s", c, body)
	}
}

func TestNodePorts(t *testing.T) {
	n := NewNodePorts(func(network, _ string) (l netListener, err error) {
		return listenLoopback(network)
	})
	defer n.Close()
	if err := n.Update(map[int32]NodePortService{30001: {Service: ServiceRef{"ns", "web"}, LocalEndpoints: 2}}); err != nil {
		t.Fatal(err)
	}
	addr := n.addr(30001)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r struct {
		Service        ServiceRef `json:"service"`
		LocalEndpoints int        `json:"localEndpoints"`
	}
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 || r.LocalEndpoints != 2 || r.Service.Name != "web" {
		t.Errorf("reply %d %s (%v)", resp.StatusCode, body, err)
	}
	_ = n.Update(map[int32]NodePortService{30001: {Service: ServiceRef{"ns", "web"}, LocalEndpoints: 0}})
	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("no local endpoints: %d, want 503", resp.StatusCode)
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
