package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestCompare is `make bench-compare`: the whole benchmark, configured by
// the BENCH_* variables (see Config). It runs only with BENCH_COMPARE=1.
func TestCompare(t *testing.T) {
	if os.Getenv("BENCH_COMPARE") != "1" {
		t.Skip("a benchmark, not a test: run it with make bench-compare (BENCH_COMPARE=1)")
	}
	netns.Require(t, "iptables", "iptables-save", "iptables-restore", "nft")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(t, cfg); err != nil {
		t.Fatal(err)
	}
}

// TestSmoke runs the harness small — 1k Services, one repetition, three
// changes per latency phase, a 10 s idle window — so that it does not rot,
// and checks that every contender this machine can run produced every
// figure. It asserts nothing about speed. It takes a few minutes and runs
// only with BENCH_SMOKE=1.
func TestSmoke(t *testing.T) {
	if os.Getenv("BENCH_SMOKE") != "1" {
		t.Skip("takes minutes: run it with BENCH_SMOKE=1 go test ./test/bench -run TestSmoke")
	}
	netns.Require(t, "iptables", "iptables-save", "iptables-restore", "nft")
	cfg := Config{Sizes: []int{1000}, Reps: 1, Changes: 3, ChurnRate: 10, Idle: 10 * time.Second,
		Cap: 5 * time.Minute, Packets: 20, Out: t.TempDir(), Logs: t.TempDir()}
	rec, err := Run(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cold_start_full_sync_s", "cold_start_first_packet_s", "first_packet_first_us", "first_packet_last_us",
		"latency_alone_s", "latency_churn_s", "idle_cpu_s", "restart_change_s", "restart_failed_connections",
		"peak_rss_mib", "restart_peak_rss_mib", "api_requests_total"}
	ran := 0
	for _, c := range Contenders {
		if c.Requires != nil && c.Requires() != nil {
			continue
		}
		ran++
		for _, f := range want {
			if n := countOK(rec.Records(), c.Name, f); n == 0 {
				t.Errorf("%s: no %s measured", c.Name, f)
			}
		}
		if n := countOK(rec.Records(), c.Name, "latency_alone_s"); n != cfg.Changes {
			t.Errorf("%s: %d latency samples, want %d", c.Name, n, cfg.Changes)
		}
	}
	if ran < 3 {
		t.Errorf("only %d contenders ran, want at least kube-proxy iptables, nftables and ours", ran)
	}
	for _, f := range []string{"results.csv", "summary.md", "latency_alone_p50.png", "cold_start_full_sync.png"} {
		if st, err := os.Stat(filepath.Join(cfg.Out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

func countOK(recs []Record, contender, figure string) int {
	n := 0
	for _, r := range recs {
		if r.Contender == contender && r.Figure == figure && r.Status == StatusOK {
			n++
		}
	}
	return n
}
