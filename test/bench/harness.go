package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/bench/report"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Harness is one bench-compare run: one API server, every size, every
// contender, every repetition.
type Harness struct {
	cfg     Config
	root    string
	bins    Binaries
	cl      *Cluster
	apiHost string
	rec     *Recorder
	csvPath string
	// sentinels are the ClusterIPs of the first and the last bulk Service of
	// the current size.
	first, last string
}

// Run measures every contender at every size of cfg and writes the CSV,
// the plots and the summary to cfg.Out. Each contender run is a subtest.
func Run(t *testing.T, cfg Config) (*Recorder, error) {
	h := &Harness{cfg: cfg}
	var err error
	if h.root, err = testenv.RepoRoot(); err != nil {
		return nil, err
	}
	if h.cfg.Out == "" {
		h.cfg.Out = filepath.Join(h.root, "docs", "bench")
	}
	if h.cfg.Logs == "" {
		h.cfg.Logs = filepath.Join(os.TempDir(), "synterix-bench-"+time.Now().Format("20060102-150405"))
	}
	for _, d := range []string{h.cfg.Out, h.cfg.Logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	logf(t, "bench-compare: sizes %v, %d repetitions, %d changes per latency phase, churn %.0f writes/s, idle %s, cap %s per phase; logs in %s",
		sizeLabels(cfg.Sizes), cfg.Reps, cfg.Changes, cfg.ChurnRate, cfg.Idle, cfg.Cap, h.cfg.Logs)
	if h.bins, err = h.build(t); err != nil {
		return nil, err
	}
	h.csvPath = filepath.Join(h.cfg.Out, "results.csv")
	h.rec = NewRecorder(DescribeMachine(h.root), h.csvPath)
	contenders := h.contenders(t)
	if h.cl, err = StartCluster(t); err != nil {
		return nil, err
	}
	if h.apiHost, err = h.cl.APIHost(); err != nil {
		return nil, err
	}
	for _, size := range cfg.Sizes {
		if err := h.size(t, size, contenders); err != nil {
			return h.rec, err
		}
	}
	return h.rec, nil
}

// build builds upstream kube-proxy (and the control plane) at the pinned
// version from the Go module proxy, reusing what exists, and our agent.
func (h *Harness) build(t *testing.T) (Binaries, error) {
	start := time.Now()
	cmd := exec.Command(filepath.Join(h.root, "hack", "build-k8s.sh"), "etcd", "kube-apiserver", "kubectl", "kube-proxy")
	version, err := testenv.K8sVersionOf(h.root)
	if err != nil {
		return Binaries{}, err
	}
	cmd.Env = append(os.Environ(), "K8S_VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("hack/build-k8s.sh kube-proxy: %w\n%s", err, out)
	}
	dir, err := testenv.BinaryDir()
	if err != nil {
		return Binaries{}, err
	}
	agent := filepath.Join(h.cfg.Logs, "agent")
	cmd = exec.Command("go", "build", "-o", agent, "./cmd/agent")
	cmd.Dir = h.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build ./cmd/agent: %w\n%s", err, out)
	}
	logf(t, "binaries ready in %s: kube-proxy %s, agent %s", time.Since(start).Round(time.Second),
		filepath.Join(dir, "kube-proxy"), agent)
	return Binaries{KubeProxy: filepath.Join(dir, "kube-proxy"), Agent: agent}, nil
}

// contenders returns the contenders this run measures: those chosen by
// BENCH_CONTENDERS (all by default) that this machine can run. The others
// are printed with the reason.
func (h *Harness) contenders(t *testing.T) []Contender {
	var out []Contender
	for _, c := range Contenders {
		if len(h.cfg.Only) > 0 && !slices.Contains(h.cfg.Only, c.Name) {
			continue
		}
		if c.Requires != nil {
			if err := c.Requires(); err != nil {
				logf(t, "SKIPPING %s: %v", c.Name, err)
				for _, size := range h.cfg.Sizes {
					h.rec.Add(Record{Size: size, Contender: c.Name, Figure: "contender", Status: StatusSkipped, Note: err.Error()})
				}
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// size loads the API server up to n Services and runs every contender
// Reps times, alternating (A B A B), then writes the CSV and the plots.
func (h *Harness) size(t *testing.T, n int, contenders []Contender) error {
	start := time.Now()
	if err := h.cl.Load(n); err != nil {
		return err
	}
	load := time.Since(start)
	h.rec.Add(Record{Size: n, Figure: "load_duration_s", Value: load.Seconds(), Unit: "s"})
	logf(t, "size %s: %d Services × %d endpoints in the API server (loaded in %s)", SizeLabel(n), n, endpointsPerService, load.Round(time.Second))
	var err error
	if h.first, err = h.cl.ClusterIP(bulkName(0)); err != nil {
		return err
	}
	if h.last, err = h.cl.ClusterIP(bulkName(n - 1)); err != nil {
		return err
	}
	for rep := 1; rep <= h.cfg.Reps; rep++ {
		for _, c := range contenders {
			name := fmt.Sprintf("%s/%s/rep%d", SizeLabel(n), c.Name, rep)
			t.Run(name, func(t *testing.T) { h.runOne(t, n, c, rep) })
			if err := h.rec.Flush(); err != nil {
				return err
			}
		}
	}
	d := time.Since(start)
	h.rec.Add(Record{Size: n, Figure: "size_duration_s", Value: d.Seconds(), Unit: "s"})
	logf(t, "size %s took %s", SizeLabel(n), d.Round(time.Second))
	if err := h.rec.Flush(); err != nil {
		return err
	}
	return report.Write(h.csvPath, h.cfg.Out)
}

func sizeLabels(sizes []int) []string {
	var out []string
	for _, s := range sizes {
		out = append(out, SizeLabel(s))
	}
	return out
}

// logf logs and also prints at once, so a long run shows its progress.
func logf(t testing.TB, format string, args ...any) {
	t.Helper()
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	t.Logf(format, args...)
}
