package agent

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
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

// TestUnansweredSYNBeforeTheService: a client sends a SYN to a ClusterIP
// before its Service exists (a pod that starts with its Service, or polls
// it). The SYN leaves untranslated and gets no answer, and conntrack keeps
// its entry for 120 s. Once the agent programs the Service it must delete
// that entry: a new connection given the same source port would otherwise
// join it and leave untranslated again (the ENETUNREACH of the upgrade
// test, docs/testing.md). The metric counts the deletion.
func TestUnansweredSYNBeforeTheService(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-syn", baseSpec())
	p := w.startAgent()
	w.waitServing("rev-syn")
	const vip = "10.0.0.20:80"
	opts := netns.RequestOptions{Local: clientIP + ":40111", Timeout: time.Second}
	if _, err := w.client.Request("tcp", vip, opts); netns.Outcome(err) != "timeout" {
		t.Fatalf("before the Service exists: outcome %s (%v), want timeout", netns.Outcome(err), err)
	}
	before := p.metric(t, "synterix_conntrack_deleted_entries_total")
	w.service("late", "10.0.0.20", "10.211.2.2")
	eventually(t, "the agent deletes the unanswered entry", func() (bool, string) {
		n := p.metric(t, "synterix_conntrack_deleted_entries_total")
		return n > before, fmt.Sprintf("synterix_conntrack_deleted_entries_total %v (before %v)", n, before)
	})
	r, err := w.client.Request("tcp", vip, opts)
	if err != nil || r.Server != "10.211.2.2" {
		t.Errorf("from the SYN's source port after the Service was programmed: %+v %v (outcome %s), want an answer from 10.211.2.2",
			r, err, netns.Outcome(err))
	}
}
