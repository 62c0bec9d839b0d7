package nftables

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkApply measures, inside a throw-away namespace, a full sync of N
// Services x 10 endpoints onto an empty kernel, a partial sync that moves
// one endpoint, and a restarted backend's first full sync, which reads
// the table and adopts it without writing. Reported metrics are medians
// over the iterations; heap figures are the largest of the run.
//
//	go test ./agent/nftables -run XXX -bench Apply -benchtime 5x
func BenchmarkApply(b *testing.B) {
	netns.Require(b)
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchApply(b, n) })
	}
}

type applyRig struct {
	b      *testing.B
	node   *netns.NS
	be     *Backend
	states []*model.State
}

func (r *applyRig) in(fn func() error) {
	r.b.Helper()
	if err := r.node.Do(fn); err != nil {
		r.b.Fatal(err)
	}
}

func (r *applyRig) sync(st *model.State, full bool) (res backend.SyncResult, d time.Duration) {
	start := time.Now()
	r.in(func() (err error) {
		res, err = r.be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return
	})
	return res, time.Since(start)
}

func (r *applyRig) start() {
	var err error
	if r.be, err = New(Options{}); err != nil {
		r.b.Fatal(err)
	}
}

type applyTimes struct {
	full, part, adopt   []time.Duration
	heapFull, heapAdopt backendtest.Heap
	written, owned      int
}

// round runs one iteration: a full sync onto an empty kernel, three
// partial syncs, and a restarted backend's adoption.
func (r *applyRig) round(t *applyTimes) {
	r.in(func() error { return r.be.Cleanup(context.Background()) })
	var res backend.SyncResult
	var d time.Duration
	hf := backendtest.MeasureHeap(func() { res, d = r.sync(r.states[0], true) })
	t.full, t.written, t.owned = append(t.full, d), res.Rules, res.Owned
	t.heapFull.Max(hf)
	for _, st := range []*model.State{r.states[1], r.states[2], r.states[0]} {
		res, d := r.sync(st, false)
		t.part = append(t.part, d)
		if res.Full || res.Changed != 1 {
			r.b.Fatalf("partial sync: %+v", res)
		}
	}
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
}

func benchApply(b *testing.B, n int) {
	r := &applyRig{b: b, node: netns.New(b, "bench"),
		states: []*model.State{backendtest.BenchState(n, 10, 0), backendtest.BenchState(n, 10, 1), backendtest.BenchState(n, 10, 2)}}
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
	report("partial", t.part)
	report("adopt", t.adopt)
	t.heapFull.Report(b, "full")
	t.heapAdopt.Report(b, "adopt")
	b.ReportMetric(float64(t.written), "written")
	b.ReportMetric(float64(t.owned), "owned")
	r.in(func() error { return r.be.Cleanup(context.Background()) })
}

// BenchmarkFirstPacket: connection setup to the first and the last of N
// Services (backendtest.FirstPacket).
//
//	go test ./agent/nftables -run XXX -bench FirstPacket -benchtime 200x
func BenchmarkFirstPacket(b *testing.B) {
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { backendtest.FirstPacket(b, harness(Options{}), n) })
	}
}

// BenchmarkIdleFullSync measures the periodic full sync of an idle node
// (the state and the kernel unchanged) at N Services × 10 endpoints, before
// and after the nf_tables generation check: "readback" lists our table's
// shared chains and small maps and checks the endpoints digest, as every
// period did before; "verified" finds the generation where a read-back
// verified the table and reads nothing. Medians of wall and CPU time
// (backendtest.MeasureCPU).
//
//	go test ./agent/nftables -run XXX -bench IdleFullSync -benchtime 5x
func BenchmarkIdleFullSync(b *testing.B) {
	netns.Require(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchIdle(b, n) })
	}
}

func benchIdle(b *testing.B, n int) {
	r := &applyRig{b: b, node: netns.New(b, "idle"), states: []*model.State{backendtest.BenchState(n, 10, 0)}}
	r.start()
	gen, st := r.be.gens.Read, r.states[0]
	// idle runs one full sync of the unchanged state and checks what it
	// did: read the table back or not; it never writes.
	idle := func(readBack bool) (wall, cpu time.Duration) {
		reads := r.be.readBacks
		var res backend.SyncResult
		cpu, err := backendtest.MeasureCPU(func() { res, wall = r.sync(st, true) })
		if err != nil {
			b.Fatal(err)
		}
		if res.Rules != 0 || (r.be.readBacks-reads == 1) != readBack {
			b.Fatalf("idle full sync: %+v, %d read-backs, want read-back %v", res, r.be.readBacks-reads, readBack)
		}
		return wall, cpu
	}
	r.sync(st, true) // load the table
	var before, beforeCPU, after, afterCPU []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.be.gens.Read = nil
		r.be.gens.Forget() // before: every full sync reads back
		w, c := idle(true)
		before, beforeCPU = append(before, w), append(beforeCPU, c)
		r.be.gens.Read = gen // after: one read-back verifies, the next is free
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
	r.in(func() error { return r.be.Cleanup(context.Background()) })
}
