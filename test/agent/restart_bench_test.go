package agent

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// BenchmarkAgentRestart measures what a node sees when its agent restarts
// at scale: the real API server holds 10k Services x 10 endpoints (set
// SYNX_BENCH_SERVICES to change), the real cmd/agent runs in a node
// namespace, and each iteration kill -9s it and starts it again, timing
// until /readyz answers 200 (the first sync of the restarted agent is in
// the kernel). It reports the median restart time, the median over restarts
// of the agent's peak resident memory (VmHWM), that of the first start on
// an empty kernel, and the largest over all runs.
//
// The setup is expensive, so one benchmark iteration does
// SYNX_BENCH_RESTARTS restarts (default 3); run it with -benchtime 1x:
//
//	go test ./test/agent -run XXX -bench AgentRestart -benchtime 1x -timeout 60m
func BenchmarkAgentRestart(b *testing.B) {
	restarts := 3
	if v := os.Getenv("SYNX_BENCH_RESTARTS"); v != "" {
		restarts, _ = strconv.Atoi(v)
	}
	netns.Require(b, "iptables", "iptables-save", "iptables-restore")
	n := 10000
	if v := os.Getenv("SYNX_BENCH_SERVICES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	w := startAPIBench(b)
	w.node = netns.New(b, "node")
	w.revision("rev-1", baseSpec())
	w.nodeObjects("rev-1")
	start := time.Now()
	createServices(b, w, n, 10)
	logf(b, "created %d Services and EndpointSlices in %s", n, time.Since(start).Round(time.Second))

	// SYNX_BENCH_AGENTS names prebuilt agent binaries (comma-separated) to
	// compare on the same objects: restarts alternate between them, and
	// each gets its own figures. The first one programs the empty kernel.
	bins := []string{}
	if v := os.Getenv("SYNX_BENCH_AGENTS"); v != "" {
		bins = strings.Split(v, ",")
	} else {
		bins = append(bins, buildAgent(b))
	}
	kc := w.nodeKubeconfig(b)

	// SYNX_BENCH_PROFILE_DIR saves a heap profile of each restarted agent
	// there (the agents must support --profiling).
	var extra []string
	dir := os.Getenv("SYNX_BENCH_PROFILE_DIR")
	if dir != "" {
		extra = []string{"--profiling"}
	}
	start = time.Now()
	p := w.runAgent(bins[0], kc, extra...)
	w.waitReadyzTB(b, 10*time.Minute)
	first := vmHWM(p.Pid())
	logf(b, "first start on an empty kernel: Ready after %s, peak RSS %d MiB", time.Since(start).Round(time.Millisecond), first/1024)
	peak := first

	times := make([][]time.Duration, len(bins))
	peaks := make([][]int64, len(bins)) // KiB
	b.ResetTimer()
	for i := 0; i < restarts*len(bins)*b.N; i++ {
		k := i % len(bins)
		_ = p.Kill()
		start := time.Now()
		p = w.runAgent(bins[k], kc, extra...)
		w.waitReadyzTB(b, 10*time.Minute)
		d := time.Since(start)
		if dir != "" {
			// The live heap after the first sync, and everything allocated
			// since the start (sample_index=alloc_space).
			path := fmt.Sprintf("%s/heap-restart-%d.pb.gz", dir, i+1)
			w.node.MustExec("curl", "-sf", "-o", path, "http://127.0.0.1:10249/debug/pprof/heap?gc=1")
		}
		times[k] = append(times[k], d)
		m := vmHWM(p.Pid())
		peaks[k] = append(peaks[k], m)
		if m > peak {
			peak = m
		}
		logf(b, "restart %d (%s): Ready after %s, peak RSS %d MiB", i+1, bins[k], d.Round(time.Millisecond), m/1024)
		for _, l := range strings.Split(p.logText(), "\n") {
			if strings.Contains(l, "Watches synced") || strings.Contains(l, "Full sync done") {
				logf(b, "  %s", l)
			}
		}
	}
	b.StopTimer()
	for k := range bins {
		suffix := ""
		if k > 0 {
			suffix = strconv.Itoa(k)
		}
		if len(bins) > 1 {
			logf(b, "%s: restart median %s, restart peak RSS median %d MiB", bins[k],
				medianOf(times[k]).Round(time.Millisecond), medianOf(peaks[k])/1024)
		}
		b.ReportMetric(medianOf(times[k]).Seconds(), "restart-s/median"+suffix)
		b.ReportMetric(float64(medianOf(peaks[k]))/1024, "restart-peak-RSS-MiB/median"+suffix)
	}
	b.ReportMetric(float64(first)/1024, "first-start-peak-RSS-MiB")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
	p.Stop(time.Minute)
	b.Logf("rules in the node namespace: %s lines of iptables-save", strings.TrimSpace(w.node.MustExec("sh", "-c", "iptables-save | grep -c .")))
}

// medianOf returns the median of v (the upper one for an even count).
func medianOf[T cmp.Ordered](v []T) T {
	return slices.Sorted(slices.Values(v))[len(v)/2]
}

// vmHWM is the peak resident set of a process in KiB (the agent itself,
// as "ip netns exec" execs it in place).
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func createServices(tb testing.TB, w *world, n, eps int) {
	ctx := context.Background()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("svc-%05d", i)
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
				es := slice(name)
				for j := 0; j < eps; j++ {
					ready := true
					node := "node-b"
					es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
						Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+j, i/250, i%250+1)},
						NodeName:   &node,
						Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
				}
				var err error
				for try := 0; try < 5; try++ {
					if err = w.c.Create(ctx, svc); err == nil || strings.Contains(err.Error(), "already exists") {
						err = nil
						break
					}
					time.Sleep(time.Second)
				}
				if err == nil {
					for try := 0; try < 5; try++ {
						if err = w.c.Create(ctx, es); err == nil || strings.Contains(err.Error(), "already exists") {
							err = nil
							break
						}
						time.Sleep(time.Second)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		tb.Fatalf("create services: %v", firstErr)
	}
}

// logf logs and also prints at once, so a long benchmark shows progress.
func logf(b *testing.B, format string, args ...any) {
	b.Helper()
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	b.Logf(format, args...)
}
