package controllers_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// BenchmarkRollout measures, on a real kube-apiserver with simulated agents
// (test/fakeagent) on BENCH_NODES nodes (1,000 by default), the time for a
// config change to reach every node under maxUnavailable=10% (canary first),
// and the operator's API requests per rollout, counted by a RoundTripper
// wrapped around the operator's rest.Config. Each op is one rollout; run it
// with -benchtime=3x for three. It runs only under -bench.
//
//	go test ./controllers/ -run '^$' -bench BenchmarkRollout -benchtime=3x -timeout 30m
func BenchmarkRollout(b *testing.B) {
	nodes := 1000
	if v := os.Getenv("BENCH_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_NODES=%q is not a positive number", v)
		}
		nodes = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.New()
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	fast := rest.CopyConfig(cfg)
	fast.QPS, fast.Burst = 2000, 4000
	c, err := client.New(fast, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < nodes; i++ {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%04d", i), Labels: map[string]string{"bench": "true"}}}
		if err := c.Create(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	var reqs requestCounter
	opErr := make(chan error, 1)
	if err := startOperator(ctx, cfg, &reqs, func(err error) { opErr <- err }); err != nil {
		b.Fatal(err)
	}
	agents := fakeagent.New(c, fakeagent.Always(fakeagent.Ready))
	agents.Namespace = operatorNamespace
	if err := agents.Start(ctx, fast, 16); err != nil {
		b.Fatal(err)
	}

	gc := &proxyv1alpha1.GatewayConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: proxyv1alpha1.GatewayConfigSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"bench": "true"}},
			Rollout: &proxyv1alpha1.RolloutSpec{
				MaxUnavailable: intOrStr(intstr.FromString("10%")),
				Canary:         &proxyv1alpha1.CanarySpec{Count: i32(1)},
			},
		},
	}
	// waitRolledOut waits until the revision of the stored spec runs on every node.
	waitRolledOut := func() string {
		deadline := time.Now().Add(20 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case err := <-opErr:
				b.Fatal(err)
			default:
			}
			cur := &proxyv1alpha1.GatewayConfig{}
			if err := c.Get(ctx, client.ObjectKey{Name: "bench"}, cur); err != nil {
				b.Fatal(err)
			}
			want, err := controllers.RevisionFor(cur.Name, &cur.Spec, defaultAgent)
			if err != nil {
				b.Fatal(err)
			}
			rev := want.Name
			if cur.Status.CurrentRevision == rev && cur.Status.ReadyNodes == int32(nodes) && cur.Status.ObservedGeneration == cur.Generation {
				return rev
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.Fatal("the rollout did not finish in 20 minutes")
		return ""
	}
	start := time.Now()
	r0, w0 := reqs.all.Load(), reqs.writes.Load()
	if err := c.Create(ctx, gc); err != nil {
		b.Fatal(err)
	}
	waitRolledOut()
	b.Logf("first rollout to %d nodes: %v, %d operator requests (%d writes)", nodes, time.Since(start).Round(time.Millisecond), reqs.all.Load()-r0, reqs.writes.Load()-w0)

	var durations []time.Duration
	var requests, writes []int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r0, w0 := reqs.all.Load(), reqs.writes.Load()
		start := time.Now()
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := c.Get(ctx, client.ObjectKey{Name: "bench"}, cur); err != nil {
			b.Fatal(err)
		}
		cur.Spec.SyncPeriod = &metav1.Duration{Duration: time.Duration(31+i) * time.Second}
		if err := c.Update(ctx, cur); err != nil {
			b.Fatal(err)
		}
		waitRolledOut()
		durations = append(durations, time.Since(start))
		requests = append(requests, reqs.all.Load()-r0)
		writes = append(writes, reqs.writes.Load()-w0)
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	sort.Slice(requests, func(i, j int) bool { return requests[i] < requests[j] })
	sort.Slice(writes, func(i, j int) bool { return writes[i] < writes[j] })
	mid := len(durations) / 2
	b.ReportMetric(float64(requests[mid]), "requests/rollout")
	b.ReportMetric(float64(writes[mid]), "writes/rollout")
	b.ReportMetric(durations[mid].Seconds(), "s/rollout")
	b.Logf("rollouts of a change to %d nodes (maxUnavailable 10%%, canary 1): durations %v, operator requests %v, of which writes %v",
		nodes, durations, requests, writes)
}
