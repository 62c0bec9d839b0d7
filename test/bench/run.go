package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Pauses between phases.
const (
	// changeGap separates two timed changes: longer than both products'
	// minSyncPeriod (1 s), so that a change alone is never held back by the
	// sync before it.
	changeGap = 1500 * time.Millisecond
	// settle lets a contender finish what follows its first sync (status
	// writes, events) before a phase starts.
	settle = 5 * time.Second
	// probeStep is the pause between two connections of a poll.
	probeStep = 2 * time.Millisecond
)

var errOverCap = errors.New("over the cap")

// run is one contender at one size, one repetition, in its own namespaces.
type run struct {
	h     *Harness
	t     *testing.T
	size  int
	c     Contender
	rep   int
	top   *Topology
	user  string
	kc    string
	dir   string
	procs int
	proc  *Process
	// at is the backend the probe Service points at.
	at string
	// idleFrom and idleTo bound the idle window.
	idleFrom, idleTo time.Time
}

// runOne measures one contender: cold start, first-packet latency,
// network-programming latency alone and under churn, idle cost, restart,
// resources and API requests, on an empty kernel.
func (h *Harness) runOne(t *testing.T, size int, c Contender, rep int) {
	start := time.Now()
	r := &run{h: h, t: t, size: size, c: c, rep: rep, dir: t.TempDir(),
		user: fmt.Sprintf("bench-%s-%s-r%d", SizeLabel(size), c.Name, rep)}
	logf(t, "%s %s rep %d: start", SizeLabel(size), c.Name, rep)
	err := r.setup()
	if err == nil {
		err = r.phases()
	}
	if r.proc != nil && r.proc.Alive() {
		r.proc.Kill()
	}
	r.apiRequests()
	r.logErrors()
	if err != nil && !errors.Is(err, errOverCap) {
		r.add("run", 0, 0, "", StatusFailed, err.Error())
		t.Errorf("%s: %v", c.Name, err)
	}
	r.add("run_duration_s", 0, time.Since(start).Seconds(), "s", "", "")
	logf(t, "%s %s rep %d: done in %s", SizeLabel(size), c.Name, rep, time.Since(start).Round(time.Second))
}

// setup builds the namespaces, gives the contender its identity, and points
// the probe Service at backend A.
func (r *run) setup() error {
	var err error
	if r.top, err = NewTopology(r.t, r.h.apiHost); err != nil {
		return err
	}
	kc, err := r.h.cl.Identity(r.user, "https://"+apiListen)
	if err != nil {
		return err
	}
	r.kc = filepath.Join(r.dir, "kubeconfig")
	if err := os.WriteFile(r.kc, kc, 0o600); err != nil {
		return err
	}
	r.at = backendA
	_, err = r.h.cl.SetEndpoints(context.Background(), probeName, backendA)
	return err
}

// phases runs the measurements in order; a cold start over the cap skips
// the rest.
func (r *run) phases() error {
	if err := r.coldStart(); err != nil {
		if errors.Is(err, errOverCap) {
			r.usage("", "at the cap of the cold start")
			for _, f := range []string{"first_packet_first_us", "latency_alone_s", "latency_churn_s", "idle_cpu_s", "restart_change_s"} {
				r.add(f, 0, 0, "", StatusSkipped, "cold start over the cap")
			}
		}
		return err
	}
	time.Sleep(settle)
	if err := r.firstPacket(); err != nil {
		return err
	}
	for _, churn := range []bool{false, true} {
		if err := r.latency(churn); err != nil && !errors.Is(err, errOverCap) {
			return err
		}
	}
	if err := r.idle(); err != nil {
		return err
	}
	r.usage("", "")
	return r.restart()
}

// start starts a new process of the contender.
func (r *run) start() (*Process, error) {
	r.procs++
	log := filepath.Join(r.h.cfg.Logs, fmt.Sprintf("%s-%s-r%d-%d.log", SizeLabel(r.size), r.c.Name, r.rep, r.procs))
	p, err := r.c.Start(r.h.cl, r.h.bins, r.top.Node, r.kc, r.dir, log)
	if err == nil {
		r.proc = p
	}
	return p, err
}

// add records one figure of this run.
func (r *run) add(figure string, sample int, value float64, unit, status, note string) {
	r.h.rec.Add(Record{Size: r.size, Contender: r.c.Name, Rep: r.rep, Figure: figure, Sample: sample,
		Value: value, Unit: unit, Status: status, Note: note})
}

// usage records the peak memory and CPU time of the current process; prefix
// tells the first process ("") from the restarted one ("restart_").
func (r *run) usage(prefix, note string) {
	u, err := r.proc.Usage()
	if err != nil {
		r.add(prefix+"peak_rss_mib", 0, 0, "", StatusFailed, "process gone: "+err.Error())
		return
	}
	r.add(prefix+"peak_rss_mib", 0, float64(u.PeakRSS)/(1<<20), "MiB", "", note)
	r.add(prefix+"cpu_s", 0, u.CPU.Seconds(), "s", "", note)
}

// withProcess returns a context that ends at the cap or when the current
// process exits, whichever comes first.
func (r *run) withProcess(p *Process) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), r.h.cfg.Cap)
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// capErr tells a wait that ran out of time from a contender that exited.
func (r *run) capErr(p *Process, what string) error {
	if !p.Alive() {
		return fmt.Errorf("%s: the contender exited (%s); see its log in %s", what, p.cmd.ProcessState, r.h.cfg.Logs)
	}
	return errOverCap
}

// logErrors counts the error lines (klog severity E) of the contender's
// logs, and prints the first few, so that a setup problem shows.
func (r *run) logErrors() {
	n := 0
	var first []string
	for i := 1; i <= r.procs; i++ {
		path := filepath.Join(r.h.cfg.Logs, fmt.Sprintf("%s-%s-r%d-%d.log", SizeLabel(r.size), r.c.Name, r.rep, i))
		data, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(data), "\n") {
			if len(l) > 5 && l[0] == 'E' && l[1] >= '0' && l[1] <= '9' {
				n++
				if len(first) < 3 {
					first = append(first, l)
				}
			}
		}
	}
	r.add("log_errors", 0, float64(n), "lines", "", strings.Join(first, " | "))
	for _, l := range first {
		logf(r.t, "  %s log: %s", r.c.Name, l)
	}
}
