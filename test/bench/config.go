// Package bench measures this product's agent and upstream kube-proxy side by
// side, in one run, on one machine, under one load: `make bench-compare`.
//
// One real kube-apiserver holds N Services × 10 endpoints. Each contender
// (kube-proxy in iptables and nftables mode, our agent with each backend this
// kernel can run) runs in turn — A B A B — as a real process inside a fresh
// node network namespace (an empty kernel), against that API server, with its
// own client identity. Every figure about traffic is measured with real
// packets: a client namespace connects through the node to Service addresses,
// and real servers in backend namespaces answer. The raw figures go to a CSV
// with the machine and the commit; package report turns it into plots and a
// table of ratios.
//
// It is a benchmark, not a test: TestCompare runs only with BENCH_COMPARE=1,
// and TestSmoke (one small repetition, so that the harness does not rot) only
// with BENCH_SMOKE=1.
package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is what one run measures. ConfigFromEnv reads it from BENCH_*
// variables; every field has a default.
type Config struct {
	// Sizes are the numbers of Services, run in increasing order (BENCH_SIZES,
	// e.g. "1k,10k,30k").
	Sizes []int
	// Reps is how many times each contender runs at each size, alternating
	// (BENCH_REPS, default 2: A B A B).
	Reps int
	// Changes is the number of endpoint changes timed per latency phase
	// (BENCH_CHANGES, default 20).
	Changes int
	// ChurnRate is the background rate of EndpointSlice writes to other
	// Services, per second, in the churn phase (BENCH_CHURN_RATE, default 10).
	ChurnRate float64
	// Idle is how long the idle cost is measured (BENCH_IDLE, default 10m).
	Idle time.Duration
	// Cap bounds each phase; a contender that has not finished a phase by
	// then is reported "over the cap" (BENCH_CAP, default 10m).
	Cap time.Duration
	// Packets is the number of connections timed to each of the first and the
	// last Service (BENCH_PACKETS, default 100).
	Packets int
	// Out is the folder of the CSV and the plots (BENCH_OUT, default
	// docs/bench of the repository).
	Out string
	// Logs is the folder of the contenders' logs (BENCH_LOGS, default a new
	// folder under the system's temporary folder).
	Logs string
	// Only, when not empty, restricts the contenders to these names
	// (BENCH_CONTENDERS, comma-separated).
	Only []string
}

// ConfigFromEnv returns the configuration of a run from the BENCH_*
// environment variables, with the defaults above.
func ConfigFromEnv() (Config, error) {
	c := Config{Reps: 2, Changes: 20, ChurnRate: 10, Idle: 10 * time.Minute, Cap: 10 * time.Minute, Packets: 100}
	var err error
	if c.Sizes, err = ParseSizes(envOr("BENCH_SIZES", "1k,10k,30k")); err != nil {
		return c, err
	}
	ints := map[string]*int{"BENCH_REPS": &c.Reps, "BENCH_CHANGES": &c.Changes, "BENCH_PACKETS": &c.Packets}
	for name, p := range ints {
		if v := os.Getenv(name); v != "" {
			if *p, err = strconv.Atoi(v); err != nil || *p < 1 {
				return c, fmt.Errorf("%s=%q: want a whole number of at least 1", name, v)
			}
		}
	}
	durs := map[string]*time.Duration{"BENCH_IDLE": &c.Idle, "BENCH_CAP": &c.Cap}
	for name, p := range durs {
		if v := os.Getenv(name); v != "" {
			if *p, err = time.ParseDuration(v); err != nil || *p <= 0 {
				return c, fmt.Errorf("%s=%q: want a positive duration such as 10m or 30s", name, v)
			}
		}
	}
	if v := os.Getenv("BENCH_CHURN_RATE"); v != "" {
		if c.ChurnRate, err = strconv.ParseFloat(v, 64); err != nil || c.ChurnRate <= 0 {
			return c, fmt.Errorf("BENCH_CHURN_RATE=%q: want a positive number of writes per second", v)
		}
	}
	c.Out, c.Logs = os.Getenv("BENCH_OUT"), os.Getenv("BENCH_LOGS")
	if v := os.Getenv("BENCH_CONTENDERS"); v != "" {
		c.Only = strings.Split(v, ",")
	}
	return c, nil
}

// ParseSizes reads a comma-separated list of Service counts, each a number
// with an optional k (thousands): "1k,10k,30k".
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		mult := 1
		if strings.HasSuffix(f, "k") {
			f, mult = strings.TrimSuffix(f, "k"), 1000
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n*mult > 60000 {
			return nil, fmt.Errorf("size %q: want a number of Services from 1 to 60k, such as 500, 1k or 30k", f)
		}
		out = append(out, n*mult)
	}
	for i := 1; i < len(out); i++ {
		if out[i] <= out[i-1] {
			return nil, fmt.Errorf("sizes %q: list them in increasing order, each once", s)
		}
	}
	return out, nil
}

// SizeLabel names a size as the CSV and the plots show it: 1000 is "1k".
func SizeLabel(n int) string {
	if n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
