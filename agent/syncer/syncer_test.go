package syncer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu    sync.Mutex
	calls []bool
	fail  int
	ch    chan bool
}

func (r *recorder) fn(_ context.Context, full bool) error {
	r.mu.Lock()
	r.calls = append(r.calls, full)
	fail := r.fail > 0
	if fail {
		r.fail--
	}
	r.mu.Unlock()
	r.ch <- full
	if fail {
		return errors.New("boom")
	}
	return nil
}

func next(t *testing.T, ch chan bool) bool {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(time.Minute):
		t.Fatal("no sync")
		return false
	}
}

// The first sync is full, requests are partial, a failure makes the retry
// full.
func TestRunnerFullPartialRetry(t *testing.T) {
	r := &recorder{ch: make(chan bool, 100), fail: 0}
	run := New(r.fn, 0, time.Hour, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go run.Run(ctx)
	if !next(t, r.ch) {
		t.Error("first sync was not full")
	}
	run.Request()
	if next(t, r.ch) {
		t.Error("a plain request made a full sync")
	}
	r.mu.Lock()
	r.fail = 1
	r.mu.Unlock()
	run.Request()
	if next(t, r.ch) {
		t.Error("request made a full sync")
	}
	if !next(t, r.ch) {
		t.Error("the retry after a failure was not full")
	}
	if run.Failures() != 0 {
		t.Errorf("failures %d after a successful retry", run.Failures())
	}
	run.RequestFull()
	if !next(t, r.ch) {
		t.Error("RequestFull made a partial sync")
	}
}

// Requests that arrive while the limiter holds a sync back are batched
// into one sync.
func TestRunnerBatches(t *testing.T) {
	r := &recorder{ch: make(chan bool, 100)}
	// One sync per hour at most after the burst of 1: the first sync
	// uses the burst, the next waits; cancel before it can run.
	run := New(r.fn, time.Hour, 2*time.Hour, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run.Run(ctx); close(done) }()
	next(t, r.ch)
	for i := 0; i < 50; i++ {
		run.Request()
	}
	cancel()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) != 1 {
		t.Errorf("%d syncs, want 1: the limiter let %d requests through", len(r.calls), len(r.calls)-1)
	}
}

// The periodic timer forces full syncs.
func TestRunnerPeriodicFull(t *testing.T) {
	r := &recorder{ch: make(chan bool, 100)}
	run := New(r.fn, 0, 50*time.Millisecond, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go run.Run(ctx)
	for i := 0; i < 3; i++ {
		if !next(t, r.ch) {
			t.Errorf("sync %d without requests was partial", i)
		}
	}
}

// RequestFullNow is not held back by the limiter, where RequestFull is:
// with minSyncPeriod an hour, the first sync spends the only token.
func TestRequestFullNow(t *testing.T) {
	r := &recorder{ch: make(chan bool, 100)}
	run := New(r.fn, time.Hour, 2*time.Hour, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go run.Run(ctx)
	next(t, r.ch) // the first sync, at once
	run.RequestFull()
	select {
	case <-r.ch:
		t.Fatal("RequestFull was not held back by a limiter of one sync an hour")
	case <-time.After(200 * time.Millisecond):
	}
	run.RequestFullNow()
	if !next(t, r.ch) {
		t.Error("the sync asked for by RequestFullNow was partial")
	}
}
