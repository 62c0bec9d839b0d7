package agent

import (
	"strings"
	"testing"
	"time"
)

// TestAPIServerDown: the API server stops for 30 s. The rules stay and
// keep serving; once it is back the agent's watches resume and a change
// made afterwards reaches the kernel.
func TestAPIServerDown(t *testing.T) {
	requireKernel(t)
	if testing.Short() {
		t.Skip("SKIPPING: takes more than 30 s (-short)")
	}
	w := startWeb(t, "rev-1", baseSpec())
	p := w.startAgent()
	w.waitServing("rev-1")
	api := w.env.ControlPlane.GetAPIServer()
	port := api.SecureServing.Port
	syncsBefore := p.metric(t, "synterix_sync_full_total") + p.metric(t, "synterix_sync_partial_total")

	if err := api.Stop(); err != nil {
		t.Fatalf("stop kube-apiserver: %v", err)
	}
	t.Logf("kube-apiserver stopped (port %s)", port)
	stopped := time.Now()
	answered, failed := 0, 0
	for time.Since(stopped) < 30*time.Second {
		if w.answers(webVIP) == webBackend {
			answered++
		} else {
			failed++
		}
		time.Sleep(500 * time.Millisecond)
	}
	if save := w.iptablesSave(); !strings.Contains(save, "10.211.1.2:8080") {
		t.Error("rules gone while the API server was down")
	}
	t.Logf("API server down for %s: %d requests answered, %d failed", time.Since(stopped).Round(time.Second), answered, failed)
	if failed > 0 {
		t.Errorf("%d requests failed while the API server was down", failed)
	}
	// The agent kept syncing (periodic full syncs) from its caches.
	if after := p.metric(t, "synterix_sync_full_total") + p.metric(t, "synterix_sync_partial_total"); after <= syncsBefore {
		t.Errorf("no sync while the API server was down (%v before, %v after)", syncsBefore, after)
	}
	if ok, why := p.hs.Healthy(); !ok {
		t.Errorf("unhealthy while the API server was down with nothing pending: %s", why)
	}

	if err := api.Start(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	if api.SecureServing.Port != port {
		t.Fatalf("kube-apiserver came back on port %s, was %s", api.SecureServing.Port, port)
	}
	t.Logf("kube-apiserver restarted on the same port %s", port)
	w.setEndpoints("web", "10.211.2.2")
	w.waitAnswer(webVIP, "10.211.2.2")
	w.service("late", "10.0.0.12", "10.211.1.3")
	w.waitAnswer("10.0.0.12:80", "10.211.1.3")
	w.waitReady("rev-1")
}
