package agent

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// BenchmarkEndpointChange measures the agent's end-to-end programming
// latency at scale, with real packets: the real API server holds 10k
// Services x 10 endpoints (SYNX_BENCH_SERVICES changes it), the real
// cmd/agent programs a node namespace, and each change moves a probe
// Service from one real backend to another with one EndpointSlice write.
// The time runs from the write until a connection from the node to the
// Service's ClusterIP is answered by the new backend. It reports the median
// and the largest of SYNX_BENCH_CHANGES changes (default 20).
// SYNX_BENCH_AGENT names a prebuilt agent binary to measure instead of the
// one built from this tree.
//
//	go test ./test/agent -run XXX -bench EndpointChange -benchtime 1x -timeout 60m
func BenchmarkEndpointChange(b *testing.B) {
	netns.Require(b, "iptables", "iptables-save", "iptables-restore")
	n, changes := envInt("SYNX_BENCH_SERVICES", 10000), envInt("SYNX_BENCH_CHANGES", 20)
	w := startAPIBench(b)
	w.topology()
	w.revision("rev-1", baseSpec())
	w.nodeObjects("rev-1")
	start := time.Now()
	createServices(b, w, n, 10)
	const probeIP = "10.96.255.250"
	w.service("probe", probeIP, "10.211.1.2")
	logf(b, "created %d Services and EndpointSlices in %s", n+1, time.Since(start).Round(time.Second))

	kc := w.nodeKubeconfig(b)
	bin := os.Getenv("SYNX_BENCH_AGENT") // a prebuilt agent, to compare versions
	if bin == "" {
		bin = buildAgent(b)
	}
	p := w.runAgent(bin, kc)
	w.waitReadyzTB(b, 10*time.Minute)
	target := probeIP + ":80"
	eventuallyFor(b, 5*time.Minute, "probe Service answers", func() (bool, string) {
		got := w.answers(target)
		return got == "10.211.1.2", got
	})

	var lat []time.Duration
	backends := []string{"10.211.1.3", "10.211.1.2"}
	b.ResetTimer()
	for i := 0; i < changes*b.N; i++ {
		want := backends[i%2]
		t0 := w.setEndpoints("probe", want)
		for w.answersFrom(w.node, target) != want {
			if time.Since(t0) > time.Minute {
				b.Fatalf("change %d: %s never answered by %s", i+1, target, want)
			}
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(200 * time.Millisecond) // let the next change start from a quiet agent
	}
	b.StopTimer()
	logf(b, "endpoint change to traffic over %d changes at %d Services: median %s, max %s", len(lat), n,
		medianOf(lat).Round(time.Millisecond), maxOf(lat).Round(time.Millisecond))
	b.ReportMetric(medianOf(lat).Seconds()*1000, "change-ms/median")
	b.ReportMetric(maxOf(lat).Seconds()*1000, "change-ms/max")
	p.Stop(time.Minute)
}

// answersFrom returns who answers one TCP request from ns to target, with a
// short timeout so that a poll loop samples often.
func (w *world) answersFrom(ns *netns.NS, target string) string {
	return answer(ns, target, 200*time.Millisecond)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func maxOf(v []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range v {
		m = max(m, d)
	}
	return m
}
