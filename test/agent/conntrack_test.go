package agent

import (
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestConntrackTuningApplied: the conntrack timeouts of a revision reach
// the node namespace's kernel. nf_conntrack_max is read-only outside the
// host's namespace, so asking for it gives a ConntrackTuningFailed Event
// naming it, and the agent still syncs and is Ready.
func TestConntrackTuningApplied(t *testing.T) {
	requireKernel(t)
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"); err != nil {
		t.Skipf("SKIPPING KERNEL TEST: nf_conntrack is not loaded: %v", err)
	}
	spec := baseSpec()
	spec.Conntrack = &v1alpha1.ConntrackConfig{
		MaxPerCore:            ptr(int32(1 << 22)),
		TCPEstablishedTimeout: &metav1.Duration{Duration: 3*time.Hour + 3*time.Second},
		UDPStreamTimeout:      &metav1.Duration{Duration: 117 * time.Second},
	}
	w := startWeb(t, "rev-ct", spec)
	w.startAgent()
	w.waitServing("rev-ct")

	read := func(key string) string {
		var v []byte
		if err := w.node.Do(func() (err error) {
			v, err = os.ReadFile("/proc/sys/net/netfilter/" + key)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(v))
	}
	if got := read("nf_conntrack_tcp_timeout_established"); got != "10803" {
		t.Errorf("node namespace tcp established timeout = %s, want 10803", got)
	}
	if got := read("nf_conntrack_udp_timeout_stream"); got != "117" {
		t.Errorf("node namespace udp stream timeout = %s, want 117", got)
	}
	w.waitEvent("ConntrackTuningFailed event naming nf_conntrack_max", func(e corev1.Event) bool {
		return e.Reason == v1alpha1.ReasonConntrackTuningFailed && e.InvolvedObject.Name == nodeName &&
			strings.Contains(e.Message, "nf_conntrack_max") && strings.Contains(e.Message, "not applied")
	})
}
