// Package syncer runs a sync function at a bounded frequency: never more
// often than the limiter allows (minSyncPeriod with a small burst), at
// least every syncPeriod (as a full sync), and again after a failure with
// exponential backoff (also as a full sync).
package syncer

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults.
const (
	DefaultMinSyncPeriod = time.Second
	DefaultSyncPeriod    = 30 * time.Second
	DefaultBurst         = 2
	// InitialBackoff is the first retry delay after a failure; it doubles
	// up to the sync period.
	InitialBackoff = time.Second
)

// Func syncs; full asks for a full sync. A returned error schedules a full
// retry with backoff.
type Func func(ctx context.Context, full bool) error

// Runner calls a Func at a bounded frequency.
type Runner struct {
	fn Func

	mu       sync.Mutex
	limiter  *rate.Limiter
	period   time.Duration
	pending  bool
	full     bool
	wake     chan struct{}
	backoff  time.Duration
	failures int
	now      func() time.Time
}

// New returns a runner; call Run to start it.
func New(fn Func, minSyncPeriod, syncPeriod time.Duration, burst int) *Runner {
	r := &Runner{fn: fn, wake: make(chan struct{}, 1), now: time.Now}
	r.limiter = rate.NewLimiter(rate.Inf, 1)
	r.SetPeriods(minSyncPeriod, syncPeriod, burst)
	return r
}

// SetPeriods changes the bounds; it takes effect from the next sync.
func (r *Runner) SetPeriods(minSyncPeriod, syncPeriod time.Duration, burst int) {
	if syncPeriod <= 0 {
		syncPeriod = DefaultSyncPeriod
	}
	if minSyncPeriod < 0 {
		minSyncPeriod = 0
	}
	if burst < 1 {
		burst = 1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.period = syncPeriod
	if minSyncPeriod == 0 {
		r.limiter.SetLimit(rate.Inf)
	} else {
		r.limiter.SetLimit(rate.Every(minSyncPeriod))
	}
	r.limiter.SetBurst(burst)
	r.poke()
}

// Request asks for a sync (partial unless a full one is already pending).
func (r *Runner) Request() {
	r.mu.Lock()
	r.pending = true
	r.poke()
	r.mu.Unlock()
}

// RequestFull asks for a full sync.
func (r *Runner) RequestFull() {
	r.mu.Lock()
	r.pending, r.full = true, true
	r.poke()
	r.mu.Unlock()
}

// RequestFullNow asks for a full sync that the limiter does not hold back:
// the limiter is refilled. The agent asks for it when the watches' first
// listing arrives, because the syncs before it (which found nothing to
// program) spent the limiter's tokens: without it the first real sync of a
// starting agent waited up to minSyncPeriod for nothing.
func (r *Runner) RequestFullNow() {
	r.mu.Lock()
	r.limiter = rate.NewLimiter(r.limiter.Limit(), r.limiter.Burst())
	r.pending, r.full = true, true
	r.poke()
	r.mu.Unlock()
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Failures returns how many syncs failed in a row.
func (r *Runner) Failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures
}

// Run syncs until ctx ends. The first sync is full and happens at once.
func (r *Runner) Run(ctx context.Context) {
	r.RequestFull()
	periodic := time.NewTimer(r.periodNow())
	defer periodic.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-periodic.C:
			r.RequestFull()
			continue
		case <-retry:
			retry = nil
			r.RequestFull()
			continue
		}
		r.mu.Lock()
		if !r.pending || (retry != nil && r.backoff > 0) {
			// Nothing to do, or a failed sync waits for its retry timer.
			r.mu.Unlock()
			continue
		}
		res := r.limiter.Reserve()
		r.mu.Unlock()
		if d := res.Delay(); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				res.Cancel()
				return
			case <-r.wake:
				// A new request (RequestFullNow may have refilled the
				// limiter): plan again.
				t.Stop()
				res.Cancel()
				r.poke()
				continue
			case <-t.C:
			}
		}
		r.mu.Lock()
		full := r.full
		r.pending, r.full = false, false
		r.mu.Unlock()

		err := r.fn(ctx, full)

		r.mu.Lock()
		if err != nil {
			r.failures++
			if r.backoff == 0 {
				r.backoff = InitialBackoff
			} else if r.backoff *= 2; r.backoff > r.period {
				r.backoff = r.period
			}
			retry = time.After(r.backoff)
		} else {
			r.failures = 0
			r.backoff = 0
			retry = nil
			if full {
				if !periodic.Stop() {
					select {
					case <-periodic.C:
					default:
					}
				}
				periodic.Reset(r.period)
			}
		}
		r.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

func (r *Runner) periodNow() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.period
}
