package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// benchState is the shared workload of the backends' benchmarks.
func benchState(n, eps, variant int) *model.State { return backendtest.BenchState(n, eps, variant) }

// BenchmarkRender measures rendering a state into restore input from
// scratch (no cached fragments, empty kernel).
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		st := benchState(n, 10, 0)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var lines int
			for i := 0; i < b.N; i++ {
				be := &Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}
				rs := be.desired(st)
				lines = 0
				for _, t := range []string{tableNAT, tableFilter} {
					_, n := restorePayload(t, rs[t], nil, false)
					lines += n
				}
			}
			b.ReportMetric(float64(lines), "rules")
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkApply measures, inside a throw-away namespace, a full sync of N
// Services x 10 endpoints onto empty tables, a partial sync that moves one
// endpoint, and a bare iptables-restore --noflush of exactly the payloads
// the backend wrote, so the overhead of the backend shows as a ratio; and a
// restarted backend's first full sync, which reads the kernel and adopts
// the rules without writing.
// Reported metrics are medians over the iterations.
//
//	go test ./agent/iptables -run XXX -bench Apply -benchtime 5x
func BenchmarkApply(b *testing.B) {
	netns.Require(b, "iptables", "iptables-save", "iptables-restore")
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchApply(b, n) })
	}
}

// applyRig runs a backend in a throw-away namespace for BenchmarkApply.
type applyRig struct {
	b      *testing.B
	node   *netns.NS
	ctx    context.Context
	be     *Backend
	states []*model.State
}

// in runs fn in the namespace and fails the benchmark on error.
func (r *applyRig) in(fn func() error) {
	r.b.Helper()
	if err := r.node.Do(fn); err != nil {
		r.b.Fatal(err)
	}
}

// start makes a new backend that keeps its payloads for the bare
// references; on a programmed node it adopts the rules there.
func (r *applyRig) start() {
	r.in(func() (err error) {
		if r.be, err = New(r.ctx, Options{}); err == nil {
			r.be.keepPayload = true
		}
		return err
	})
}

// sync times one sync and returns its result.
func (r *applyRig) sync(st *model.State, full bool) (res backend.SyncResult, d time.Duration) {
	start := time.Now()
	r.in(func() (err error) { res, err = r.be.Sync(r.ctx, st, backend.SyncOptions{Full: full}); return })
	return res, time.Since(start)
}

// bare times a plain iptables-restore --noflush of a payload.
func (r *applyRig) bare(payload []byte) time.Duration {
	start := time.Now()
	r.in(func() error {
		cmd := exec.Command(r.be.bins.Restore, "-w", "--noflush")
		cmd.Stdin = bytes.NewReader(payload)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bare restore: %v: %s", err, out)
		}
		return nil
	})
	return time.Since(start)
}

// applyTimes are the durations of BenchmarkApply, one list per metric.
type applyTimes struct {
	full, fullBare, part, partBare, adopt []time.Duration
	rules                                 int
	// peakFull and peakAdopt are the largest live heaps seen during a
	// full sync and an adoption (backendtest.PeakHeap), as the nftables
	// benchmark measures them.
	heapFull, heapAdopt backendtest.Heap
}

// round runs one iteration: a full sync onto empty tables, three partial
// syncs, a restarted backend's adoption, then the same payloads bare.
func (r *applyRig) round(t *applyTimes) {
	r.in(func() error { return r.be.Cleanup(r.ctx) })
	var res backend.SyncResult
	var d time.Duration
	hf := backendtest.MeasureHeap(func() { res, d = r.sync(r.states[0], true) })
	t.full, t.rules = append(t.full, d), res.Rules
	t.heapFull.Max(hf)
	payload := append(append([]byte(nil), r.be.lastPayload[tableNAT]...), r.be.lastPayload[tableFilter]...)
	// Partial syncs: move one endpoint there and back.
	var partPayloads [][]byte
	for _, st := range []*model.State{r.states[1], r.states[2], r.states[0]} {
		res, d := r.sync(st, false)
		t.part = append(t.part, d)
		if res.Full || res.Changed != 1 {
			r.b.Fatalf("partial sync: %+v", res)
		}
		partPayloads = append(partPayloads, r.be.lastPayload[tableNAT])
	}
	// A restarted agent: full sync that reads the kernel and adopts
	// (writes nothing).
	ha := backendtest.MeasureHeap(func() {
		start := time.Now()
		r.start()
		res, _ = r.sync(r.states[0], true)
		t.adopt = append(t.adopt, time.Since(start))
	})
	t.heapAdopt.Max(ha)
	if res.Rules != 0 {
		r.b.Fatalf("adoption wrote %d rules", res.Rules)
	}
	// The same partial payloads, applied bare (they chain: 0->1->2->0).
	for _, p := range partPayloads {
		t.partBare = append(t.partBare, r.bare(p))
	}
	// The same full payload, applied bare onto empty tables.
	r.in(func() error { return r.be.Cleanup(r.ctx) })
	t.fullBare = append(t.fullBare, r.bare(payload))
	// Re-adopt for the next round.
	r.start()
}

func benchApply(b *testing.B, n int) {
	r := &applyRig{b: b, node: netns.New(b, "bench"), ctx: context.Background(),
		states: []*model.State{benchState(n, 10, 0), benchState(n, 10, 1), benchState(n, 10, 2)}}
	r.start()
	var t applyTimes
	for i := 0; i < b.N; i++ {
		r.round(&t)
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration) {
		b.ReportMetric(float64(median(ds).Microseconds())/1000, name+"-ms")
	}
	report("full", t.full)
	report("full-bare", t.fullBare)
	report("partial", t.part)
	report("partial-bare", t.partBare)
	report("adopt", t.adopt)
	b.ReportMetric(float64(median(t.full))/float64(median(t.fullBare)), "full-ratio")
	b.ReportMetric(float64(median(t.part))/float64(median(t.partBare)), "partial-ratio")
	b.ReportMetric(float64(t.rules), "rules")
	t.heapFull.Report(b, "full")
	t.heapAdopt.Report(b, "adopt")
	r.in(func() error { return r.be.Cleanup(r.ctx) })
}

// BenchmarkPartialRender measures the Go side of a partial sync at 10k
// Services: diffing the states and planning the restore input after one
// endpoint moved.
func BenchmarkPartialRender(b *testing.B) {
	states := []*model.State{benchState(10000, 10, 0), benchState(10000, 10, 1)}
	be := &Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}
	be.desired(states[0])
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		old, cur := states[i%2], states[(i+1)%2]
		plans, ok := be.partialPlans(cur, model.Diff(old, cur))
		if !ok {
			b.Fatal("no partial plan")
		}
		if p, _ := plans[tableNAT].payload(tableNAT, canaryGuard); p == nil {
			b.Fatal("no payload")
		}
	}
}

// BenchmarkFirstPacket: connection setup to the first and the last of N
// Services (backendtest.FirstPacket); the dispatch chain matches them in
// order.
//
//	go test ./agent/iptables -run XXX -bench FirstPacket -benchtime 200x
func BenchmarkFirstPacket(b *testing.B) {
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { backendtest.FirstPacket(b, harness(Options{}), n) })
	}
}

// BenchmarkIdleFullSync measures the periodic full sync of an idle node
// (the state and the kernel unchanged) at N Services × 10 endpoints, nft
// flavour, before and after the nf_tables generation check: "readback" is
// the full sync every period paid before (iptables-save of the whole
// ruleset, compared, nothing written), "verified" the one that finds the
// generation where a read-back verified the kernel and reads nothing.
// Wall time and CPU time (the test process and its children: iptables-save
// runs as one) are medians over the iterations.
//
//	go test ./agent/iptables -run XXX -bench IdleFullSync -benchtime 5x
func BenchmarkIdleFullSync(b *testing.B) {
	netns.Require(b, "iptables-nft", "iptables-nft-save", "iptables-nft-restore")
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchIdle(b, n) })
	}
}

func benchIdle(b *testing.B, n int) {
	r := &applyRig{b: b, node: netns.New(b, "idle"), ctx: context.Background(), states: []*model.State{benchState(n, 10, 0)}}
	r.in(func() (err error) { r.be, err = New(r.ctx, Options{Mode: xtables.ModeNFT}); return })
	gen := r.be.gens.Read
	xt := &countingRunner{Runner: r.be.xt}
	r.be.xt = xt
	st := r.states[0]
	// idle runs one full sync of the unchanged state and checks what it
	// did: read back (one iptables-save) or not; it never writes.
	idle := func(readBack bool) (wall, cpu time.Duration) {
		saves := xt.saves
		var res backend.SyncResult
		cpu, err := backendtest.MeasureCPU(func() { res, wall = r.sync(st, true) })
		if err != nil {
			b.Fatal(err)
		}
		if res.Rules != 0 || (xt.saves-saves == 1) != readBack {
			b.Fatalf("idle full sync: %+v, %d iptables-save runs, want read-back %v", res, xt.saves-saves, readBack)
		}
		return wall, cpu
	}
	r.sync(st, true) // load the ruleset
	var before, beforeCPU, after, afterCPU []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Before: no generation, every full sync reads back.
		r.be.gens.Read = nil
		r.be.gens.Forget()
		w, c := idle(true)
		before, beforeCPU = append(before, w), append(beforeCPU, c)
		// After: one read-back verifies the kernel, the next is free.
		r.be.gens.Read = gen
		idle(true)
		w, c = idle(false)
		after, afterCPU = append(after, w), append(afterCPU, c)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(before)), "readback-ms")
	b.ReportMetric(ms(median(beforeCPU)), "readback-cpu-ms")
	b.ReportMetric(ms(median(after)), "verified-ms")
	b.ReportMetric(ms(median(afterCPU)), "verified-cpu-ms")
	b.ReportMetric(0, "ns/op")
	r.in(func() error { return r.be.Cleanup(r.ctx) })
}
