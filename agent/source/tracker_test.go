package source

import (
	"sort"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

func TestTrackerTakeRequeueClear(t *testing.T) {
	requests := 0
	tr := NewTracker(metrics.New(), health.NewState(time.Minute), func() { requests++ })
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := model.ServiceRef{Namespace: "ns", Name: "a"}, model.ServiceRef{Namespace: "ns", Name: "b"}
	tr.Slice("ns/a-1", a, t0.Add(2*time.Second))
	tr.Slice("ns/a-1", a, t0.Add(time.Second)) // an older trigger of the same slice wins
	tr.Service(b, t0.Add(3*time.Second))
	if requests != 3 || !tr.Pending() {
		t.Fatalf("requests %d pending %t", requests, tr.Pending())
	}
	batch := tr.Take()
	got := []string{}
	for _, r := range batch.Services {
		got = append(got, r.Name)
	}
	sort.Strings(got)
	if len(got) != 2 || got[0] != "a" || got[1] != "b" || !batch.Slices["ns/a-1"].Equal(t0.Add(time.Second)) {
		t.Fatalf("batch %+v", batch)
	}
	if tr.Pending() {
		t.Fatal("Take left changes pending")
	}
	// A failed sync puts its changes back, trigger times kept.
	tr.Requeue(batch, t0.Add(10*time.Second))
	again := tr.Take()
	if len(again.Services) != 2 || !again.Slices["ns/a-1"].Equal(t0.Add(time.Second)) {
		t.Fatalf("after requeue %+v", again)
	}
	tr.Other()
	tr.Clear()
	if tr.Pending() {
		t.Fatal("Clear left changes pending")
	}
}
