package source

import (
	"sync"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Tracker records what changed since the last sync, as kube-proxy's
// service and endpoint change trackers do: the Services whose model must
// be rebuilt, and when each EndpointSlice change was triggered, which the
// sync turns into the network programming latency. It is safe for
// concurrent use by informer handlers and the sync loop.
type Tracker struct {
	m      *metrics.Metrics
	health *health.State
	// request asks the sync loop for a sync.
	request func()

	mu       sync.Mutex
	services map[model.ServiceRef]time.Time // earliest pending change
	slices   map[string]time.Time           // trigger time per EndpointSlice
	other    bool                           // a change not tied to one Service
}

// NewTracker returns an empty tracker that reports through m and h and
// calls request after each change.
func NewTracker(m *metrics.Metrics, h *health.State, request func()) *Tracker {
	return &Tracker{m: m, health: h, request: request,
		services: map[model.ServiceRef]time.Time{}, slices: map[string]time.Time{}}
}

// Batch is the changes one sync takes in.
type Batch struct {
	// Services changed; the model rebuilds these.
	Services []model.ServiceRef
	// Slices are the trigger times of the EndpointSlice changes, by slice.
	Slices map[string]time.Time
	// Other is set when something not tied to one Service changed
	// (policies, the node): the model compares its node-wide input itself.
	Other bool
}

// Service records a change of one Service (or of what targets it).
func (t *Tracker) Service(ref model.ServiceRef, at time.Time) {
	t.mu.Lock()
	if old, ok := t.services[ref]; !ok || at.Before(old) {
		if !ok {
			t.m.ServiceChangesTotal.Inc()
		}
		t.services[ref] = at
	}
	t.updateLocked()
	t.mu.Unlock()
	t.health.Queued(time.Now())
	t.request()
}

// Slice records a change of an EndpointSlice of ref, triggered at trigger.
func (t *Tracker) Slice(key string, ref model.ServiceRef, trigger time.Time) {
	t.mu.Lock()
	if old, ok := t.slices[key]; !ok || trigger.Before(old) {
		t.slices[key] = trigger
	}
	if old, ok := t.services[ref]; !ok || trigger.Before(old) {
		t.services[ref] = trigger
	}
	t.m.EndpointChangesTotal.Inc()
	t.updateLocked()
	t.mu.Unlock()
	t.health.Queued(time.Now())
	t.request()
}

// Other records a change that concerns no single Service.
func (t *Tracker) Other() {
	t.mu.Lock()
	t.other = true
	t.updateLocked()
	t.mu.Unlock()
	t.health.Queued(time.Now())
	t.request()
}

// Take returns the pending changes and forgets them.
func (t *Tracker) Take() Batch {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := Batch{Services: make([]model.ServiceRef, 0, len(t.services)), Other: t.other}
	for ref := range t.services {
		b.Services = append(b.Services, ref)
	}
	b.Slices = t.slices
	t.services, t.slices, t.other = map[model.ServiceRef]time.Time{}, map[string]time.Time{}, false
	return b
}

// Requeue puts back the changes of a sync that failed, so that the next
// one takes them in again; their times are kept.
func (t *Tracker) Requeue(b Batch, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ref := range b.Services {
		if _, ok := t.services[ref]; !ok {
			t.services[ref] = at
		}
	}
	for key, tr := range b.Slices {
		if old, ok := t.slices[key]; !ok || tr.Before(old) {
			t.slices[key] = tr
		}
	}
	t.other = t.other || b.Other
	t.updateLocked()
}

// Clear forgets every pending change (nothing is programmed to apply them
// to) and reports an idle node.
func (t *Tracker) Clear() {
	t.mu.Lock()
	t.services, t.slices, t.other = map[model.ServiceRef]time.Time{}, map[string]time.Time{}, false
	t.updateLocked()
	t.mu.Unlock()
}

// Pending reports whether changes wait for a sync.
func (t *Tracker) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.services) > 0 || t.other
}

// updateLocked publishes the pending counts and the oldest pending change.
func (t *Tracker) updateLocked() {
	t.m.EndpointChangesPending.Set(float64(len(t.slices)))
	t.m.ServiceChangesPending.Set(float64(len(t.services)))
	var oldest time.Time
	for _, at := range t.services {
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	if oldest.IsZero() {
		t.m.LastQueued.Set(0)
		return
	}
	t.m.LastQueued.Set(float64(oldest.UnixNano()) / 1e9)
}
