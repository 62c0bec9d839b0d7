package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/bench/report"
)

// coldStart starts the contender on the empty kernel and times, from the
// process start, the first packet served (the probe Service answers) and the
// full sync in the kernel (the probe, the first and the last bulk Service all
// answer). It also records when the contender itself said it had synced,
// and the CPU it had spent by then.
func (r *run) coldStart() error {
	p, err := r.start()
	if err != nil {
		return err
	}
	ctx, cancel := r.withProcess(p)
	defer cancel()
	targets := []struct {
		figure, target string
		want           func(string) bool
	}{
		{"cold_start_first_packet_s", probeIP + ":80", is(backendA)},
		{"", r.h.first + ":80", inSink},
		{"", r.h.last + ":80", inSink},
	}
	var wg sync.WaitGroup
	at := make([]time.Time, len(targets))
	errs := make([]error, len(targets))
	for i, tg := range targets {
		wg.Go(func() { at[i], errs[i] = waitAnswer(ctx, r.top.Client, tg.target, 20*time.Millisecond, tg.want) })
	}
	type report struct {
		at  time.Time
		cpu time.Duration
	}
	reported := make(chan report, 1)
	go func() {
		for ctx.Err() == nil {
			if r.c.Synced(r.top.Node) {
				u, _ := p.Usage()
				reported <- report{time.Now(), u.CPU}
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	wg.Wait()
	if !p.Alive() || slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		err := r.capErr(p, "cold start")
		logf(r.t, "  cold start: no full sync in the kernel within the cap of %s (%v)", r.h.cfg.Cap, err)
		for _, f := range []string{"cold_start_first_packet_s", "cold_start_full_sync_s"} {
			r.add(f, 0, r.h.cfg.Cap.Seconds(), "s", StatusOverCap, fmt.Sprintf("no full sync in the kernel within the cap of %s", r.h.cfg.Cap))
		}
		return err
	}
	full := slices.MaxFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	r.add("cold_start_first_packet_s", 0, at[0].Sub(p.Started).Seconds(), "s", "", "")
	r.add("cold_start_full_sync_s", 0, full.Sub(p.Started).Seconds(), "s", "", "")
	// The CPU is read when the contender says it has synced: by then it has
	// reaped the iptables-restore or nft that wrote the rules, whose time
	// counts only once reaped.
	rep, cpu := -1.0, -1.0
	select {
	case got := <-reported:
		rep, cpu = got.at.Sub(p.Started).Seconds(), got.cpu.Seconds()
		r.add("cold_start_reported_s", 0, rep, "s", "", "the contender's own signal: readyz, or kube-proxy's last sync timestamp")
		r.add("cold_start_cpu_s", 0, cpu, "s", "", "CPU of the process and its reaped children until it reported the sync")
	case <-time.After(30 * time.Second):
		r.add("cold_start_reported_s", 0, 0, "", StatusFailed, "the contender did not report a sync within 30 s of the full sync in the kernel")
	}
	logf(r.t, "  cold start: first packet %.2fs, full sync %.2fs (reported %.2fs), CPU %.1fs", at[0].Sub(p.Started).Seconds(),
		full.Sub(p.Started).Seconds(), rep, cpu)
	return nil
}

// firstPacket times the handshake of new connections to the first and the
// last bulk Service in the order the kernel tries them (creation order
// where a map or a hash finds them), alternating. The order is read again
// afterwards: kube-proxy may rewrite its Service rules in another order on
// any sync, and a measurement whose ends moved is taken again.
func (r *run) firstPacket() error {
	first, last, note := r.h.first, r.h.last, "creation order (lookup by map or hash)"
	var fs, ls []float64
	for try := 1; try <= 3; try++ {
		if r.c.ServiceChain != "" {
			var err error
			if first, last, err = r.ends(); err != nil {
				first, last, note = r.h.first, r.h.last, "creation order: "+err.Error()
			} else {
				note = "first and last in " + r.c.ServiceChain
			}
		}
		fs, ls = nil, nil
		failed := 0
		for range r.h.cfg.Packets {
			for _, tg := range []struct {
				ip string
				to *[]float64
			}{{first, &fs}, {last, &ls}} {
				d, id, err := dialTime(r.top.Client, tg.ip+":80")
				if err != nil || !inSink(id) {
					failed++
					continue
				}
				*tg.to = append(*tg.to, float64(d.Microseconds()))
				time.Sleep(probeStep)
			}
		}
		if failed > 0 {
			return fmt.Errorf("first-packet latency: %d of %d connections to %s and %s failed", failed, 2*r.h.cfg.Packets, first, last)
		}
		if r.c.ServiceChain == "" {
			break
		}
		if f2, l2, err := r.ends(); err == nil && f2 == first && l2 == last {
			break
		}
		note += fmt.Sprintf("; the order changed during try %d", try)
	}
	for i, v := range fs {
		r.add("first_packet_first_us", i+1, v, "us", "", note)
	}
	for i, v := range ls {
		r.add("first_packet_last_us", i+1, v, "us", "", note)
	}
	logf(r.t, "  first packet: first Service median %.0fµs, last %.0fµs (%s)", report.Quantile(fs, 0.5), report.Quantile(ls, 0.5), note)
	return nil
}

// ends returns the first and the last bulk Service address in the
// contender's Service chain.
func (r *run) ends() (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.h.cfg.Cap)
	defer cancel()
	order, err := r.c.ServiceOrder(ctx, r.top.Node)
	if err != nil {
		return "", "", err
	}
	order = slices.DeleteFunc(order, func(ip string) bool { return ip == probeIP || ip == "10.96.0.1" })
	if len(order) != r.size {
		return "", "", fmt.Errorf("%d bulk Service rules in %s, want %d", len(order), r.c.ServiceChain, r.size)
	}
	return order[0], order[len(order)-1], nil
}

// latency times Changes endpoint changes of the probe Service, each from
// the EndpointSlice write to the first connection answered by the new
// backend, polling every few milliseconds from the client. With churn, a
// steady stream of writes to other Services runs meanwhile.
func (r *run) latency(churn bool) error {
	figure := "latency_alone_s"
	var ch *Churn
	if churn {
		figure = "latency_churn_s"
		ch = r.h.cl.StartChurn(r.size, r.h.cfg.ChurnRate)
		time.Sleep(settle)
	}
	ctx, cancel := r.withProcess(r.proc)
	defer cancel()
	var lat []float64
	var err error
	for i := range r.h.cfg.Changes {
		want := other(r.at)
		var t0, t1 time.Time
		if t0, err = r.h.cl.SetEndpoints(ctx, probeName, want); err == nil {
			r.at = want
			t1, err = waitAnswer(ctx, r.top.Client, probeIP+":80", probeStep, is(want))
		}
		if err != nil {
			if ctx.Err() != nil {
				err = r.capErr(r.proc, figure)
				r.add(figure, 0, r.h.cfg.Cap.Seconds(), "s", StatusOverCap, fmt.Sprintf("%d of %d changes within the cap of %s", i, r.h.cfg.Changes, r.h.cfg.Cap))
			}
			break
		}
		lat = append(lat, t1.Sub(t0).Seconds())
		r.add(figure, i+1, t1.Sub(t0).Seconds(), "s", "", "")
		time.Sleep(changeGap)
	}
	if ch != nil {
		writes, d, werr := ch.Stop()
		r.add("churn_rate_per_s", 0, float64(writes)/d.Seconds(), "writes/s", "", fmt.Sprintf("asked %.0f/s; first write error: %v", r.h.cfg.ChurnRate, werr))
	}
	logf(r.t, "  %s: %d changes, p50 %.3fs, p99 %.3fs, max %.3fs", figure, len(lat), report.Quantile(lat, 0.5), report.Quantile(lat, 0.99), report.Quantile(lat, 1))
	return err
}

func other(backend string) string {
	if backend == backendA {
		return backendB
	}
	return backendA
}

// idle measures the CPU the contender spends over cfg.Idle with no change
// at all, after a pause that lets the last phase's work finish.
func (r *run) idle() error {
	time.Sleep(2 * settle)
	u0, err := r.proc.Usage()
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	r.idleFrom = time.Now()
	select {
	case <-time.After(r.h.cfg.Idle):
	case <-r.proc.done:
		return r.capErr(r.proc, "idle")
	}
	u1, err := r.proc.Usage()
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	r.idleTo = time.Now()
	cpu := (u1.CPU - u0.CPU).Seconds()
	r.add("idle_cpu_s", 0, cpu, "s", "", fmt.Sprintf("over %s", r.h.cfg.Idle))
	r.add("idle_window_s", 0, r.idleTo.Sub(r.idleFrom).Seconds(), "s", "", "")
	logf(r.t, "  idle: %.2f CPU seconds over %s", cpu, r.h.cfg.Idle)
	return nil
}

// restart kills the contender (kill -9), starts it again and writes an
// endpoint change at once, while a probe connects to the probe Service every
// 10 ms: it records how long until the change takes effect, and the probe's
// failed connections (both backends stay up, so any failure is the
// restart's).
func (r *run) restart() error {
	pr := StartProber(r.top.Client, probeIP+":80", 10*time.Millisecond)
	time.Sleep(time.Second)
	r.proc.Kill()
	p, err := r.start()
	if err != nil {
		pr.Stop()
		return err
	}
	want := other(r.at)
	got := pr.Expect(want)
	t0, err := r.h.cl.SetEndpoints(context.Background(), probeName, want)
	if err != nil {
		pr.Stop()
		return err
	}
	r.at = want
	ctx, cancel := r.withProcess(p)
	defer cancel()
	select {
	case <-got:
	case <-ctx.Done():
	}
	time.Sleep(2 * time.Second)
	ok, failed, firstErr, at := pr.Stop()
	status, value := "", 0.0
	if at.IsZero() {
		if err = r.capErr(p, "restart"); err != errOverCap {
			return err
		}
		status, value = StatusOverCap, r.h.cfg.Cap.Seconds()
	} else {
		value = at.Sub(t0).Seconds()
	}
	r.add("restart_change_s", 0, value, "s", status, "")
	r.add("restart_failed_connections", 0, float64(failed), "connections", "", fmt.Sprintf("of %d; first failure: %s", ok+failed, firstErr))
	r.usage("restart_", "")
	logf(r.t, "  restart: change took effect after %.2fs; %d of %d probe connections failed %s", value, failed, ok+failed, firstErr)
	if status == StatusOverCap {
		return errOverCap
	}
	return nil
}
