package backendtest

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// BenchState builds the benchmarks' workload: n ClusterIP Services with
// eps endpoints each. With variant != 0 the first endpoint of Service n/2
// moves, so that states of different variants differ in one endpoint.
func BenchState(n, eps, variant int) *model.State {
	st := &model.State{Family: model.IPv4, Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/9")}}}
	for i := 0; i < n; i++ {
		s := &model.Service{
			Key: fmt.Sprintf("bench/svc-%05d:http/TCP", i), Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i),
			PortName: "http", Protocol: model.TCP,
			Frontends: []model.Frontend{{Kind: model.KindClusterIP, Protocol: model.TCP, Port: 80,
				Addr: BenchVIP(i), Masquerade: model.MasqueradeOffCluster}},
		}
		for j := 0; j < eps; j++ {
			a := netip.AddrFrom4([4]byte{10, byte(128 + j), byte(i / 250), byte(i%250 + 1)})
			if variant != 0 && i == n/2 && j == 0 {
				a = netip.AddrFrom4([4]byte{10, 250, byte(variant), 1})
			}
			s.InternalEndpoints = append(s.InternalEndpoints, model.Endpoint{Addr: a, Port: 8080, Ready: true})
		}
		s.ExternalEndpoints, s.ClusterEndpoints = s.InternalEndpoints, s.InternalEndpoints
		s.Hash = fmt.Sprintf("%d-%d", i, variant)
		if variant != 0 && i != n/2 {
			s.Hash = fmt.Sprintf("%d-0", i)
		}
		st.Services = append(st.Services, s)
	}
	return st
}

// BenchVIP is the ClusterIP of Service i of BenchState (10.96.0.1 ...):
// 250 per /24, up to 64,000 Services.
func BenchVIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(96 + i/(250*256)), byte(i / 250 % 256), byte(i%250 + 1)})
}

// Heap is what a benchmarked call did to the Go heap.
type Heap struct {
	// Alloc is the bytes it allocated.
	Alloc uint64
	// Retained is by how much the live heap grew, measured after a
	// collection before and after the call: what the backend keeps.
	Retained uint64
	// Peak is by how much the heap (heap objects, garbage not yet
	// collected included, sampled every millisecond) grew at most over
	// the live heap before the call. With the default GOGC the collector
	// lets garbage grow up to the size of the live heap, so this depends
	// on what else the process holds; compare it between backends only
	// within one benchmark.
	Peak uint64
}

// MeasureHeap runs fn and reports its effect on the Go heap.
func MeasureHeap(fn func()) Heap {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	read := func() (live, allocs uint64) {
		metrics.Read(sample)
		return sample[0].Value.Uint64(), sample[1].Value.Uint64()
	}
	base, allocs0 := read()
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		peak := base
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
				if v, _ := read(); v > peak {
					peak = v
				}
			}
		}
	}()
	fn()
	close(stop)
	h := Heap{Peak: <-done - base}
	runtime.GC()
	live, allocs1 := read()
	h.Alloc = allocs1 - allocs0
	if live > base {
		h.Retained = live - base
	}
	return h
}

// Max keeps the largest of each figure.
func (h *Heap) Max(o Heap) {
	h.Alloc, h.Retained, h.Peak = max(h.Alloc, o.Alloc), max(h.Retained, o.Retained), max(h.Peak, o.Peak)
}

// Report adds the figures to a benchmark's metrics, in MiB, named
// <name>-alloc-MiB, <name>-retained-MiB and <name>-peak-MiB.
func (h Heap) Report(b interface{ ReportMetric(float64, string) }, name string) {
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(mib(h.Alloc), name+"-alloc-MiB")
	b.ReportMetric(mib(h.Retained), name+"-retained-MiB")
	b.ReportMetric(mib(h.Peak), name+"-peak-MiB")
}

// MeasureCPU runs fn and returns the CPU time (user and system) that this
// process and the children it waited for used meanwhile: a backend's own
// work and that of the tools it runs (iptables-save). Other goroutines of
// the process count too, so benchmarks run nothing else meanwhile.
func MeasureCPU(fn func()) (time.Duration, error) {
	before, err := cpuTime()
	if err != nil {
		return 0, err
	}
	fn()
	after, err := cpuTime()
	return after - before, err
}

func cpuTime() (time.Duration, error) {
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return 0, err
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err != nil {
		return 0, err
	}
	d := time.Duration(0)
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		d += time.Duration(tv.Nano())
	}
	return d, nil
}

// FirstPacket measures, in the scenario topology, how long a new TCP
// connection from the client takes to the first and to the last of n
// Services (BenchState, whose first and last Service get one real
// endpoint each): a backend that matches frontends one rule after another
// takes longer for the last; one that looks them up in a map does not.
// Connections alternate between the two targets so that the machine's
// load drifts over both alike. It reports the medians in microseconds and
// their ratio.
func FirstPacket(b *testing.B, h Harness, n int) {
	tp := NewTopo(b, h)
	st := BenchState(n, 10, 0)
	real := []model.Endpoint{{Addr: netip.MustParseAddr("10.211.1.2"), Port: 8080, Ready: true}}
	for _, i := range []int{0, n - 1} {
		s := st.Services[i]
		s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints = real, real, real
		s.Hash += "-real"
	}
	tp.SyncState(st, true)
	targets := []string{BenchVIP(0).String() + ":80", BenchVIP(n-1).String() + ":80"}
	times := [2][]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, target := range targets {
			d, err := connectTime(tp.Client, target)
			if err != nil {
				b.Fatalf("connect to %s: %v", target, err)
			}
			times[k] = append(times[k], d)
		}
	}
	b.StopTimer()
	first, last := medianOf(times[0]), medianOf(times[1])
	b.ReportMetric(float64(first.Nanoseconds())/1000, "first-us")
	b.ReportMetric(float64(last.Nanoseconds())/1000, "last-us")
	b.ReportMetric(float64(last)/float64(first), "last/first")
}

// connectTime is how long a TCP handshake from ns to target takes.
func connectTime(ns *netns.NS, target string) (time.Duration, error) {
	var d time.Duration
	err := ns.Do(func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp4", target, 2*time.Second)
		d = time.Since(start)
		if err == nil {
			c.Close()
		}
		return err
	})
	return d, err
}

func medianOf(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
