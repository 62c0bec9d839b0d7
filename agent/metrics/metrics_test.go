package metrics

import (
	"bytes"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
)

// TestPromtoolCheckMetrics runs "promtool check metrics" (Debian package
// "prometheus") on the agent's exposition, after every metric has a value.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("SKIPPING: promtool not found; install it with 'apt-get install -y prometheus'")
	}
	m := New()
	m.SyncDuration.WithLabelValues("full", "IPv4").Observe(0.2)
	m.SyncDuration.WithLabelValues("partial", "IPv4").Observe(0.01)
	m.NetworkProgramming.Observe(1.5)
	m.SyncFailures.WithLabelValues("iptables", "IPv4").Inc()
	m.Backend.WithLabelValues("iptables", "rev-1").Set(1)
	for _, fam := range []string{"IPv4", "IPv6"} {
		m.SyncFull.WithLabelValues(fam).Inc()
		m.SyncPartial.WithLabelValues(fam).Inc()
		m.Services.WithLabelValues(fam).Set(3)
	}
	m.StatusWrites.WithLabelValues("ok").Inc()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.Bytes()
	for _, name := range []string{
		"synterix_sync_proxy_rules_duration_seconds_bucket",
		"synterix_network_programming_duration_seconds_count",
		"synterix_sync_proxy_rules_last_timestamp_seconds",
		"synterix_sync_proxy_rules_last_queued_timestamp_seconds",
		"synterix_sync_proxy_rules_endpoint_changes_pending",
		"synterix_sync_proxy_rules_failures_total",
		"synterix_sync_full_total",
		"synterix_sync_partial_total",
		`synterix_programmed_services{ip_family="IPv6"} 3`,
	} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("exposition lacks %s", name)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Fatalf("promtool reported problems:\n%s", s)
	}
}
