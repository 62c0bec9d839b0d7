// Package health serves the agent's /healthz, /livez and /readyz endpoints,
// and the HealthCheckNodePort servers of Services with
// externalTrafficPolicy Local.
package health

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// State is what the health endpoints judge. The agent updates it; the
// handlers only read it.
type State struct {
	mu sync.Mutex
	// oldestPending is when the oldest change not yet in the kernel was
	// seen; zero when nothing is pending.
	oldestPending time.Time
	lastSync      time.Time
	synced        bool
	nodeDeleting  string
	threshold     time.Duration
	now           func() time.Time
}

// NewState returns a state whose pending changes turn unhealthy after
// threshold.
func NewState(threshold time.Duration) *State {
	return &State{threshold: threshold, now: time.Now}
}

// SetThreshold changes how old a pending change may get.
func (s *State) SetThreshold(d time.Duration) {
	s.mu.Lock()
	s.threshold = d
	s.mu.Unlock()
}

// Queued records a change seen at t; only the oldest pending one counts.
func (s *State) Queued(t time.Time) {
	s.mu.Lock()
	if s.oldestPending.IsZero() || t.Before(s.oldestPending) {
		s.oldestPending = t
	}
	s.mu.Unlock()
}

// Synced records a successful sync that took in every change seen before
// started.
func (s *State) Synced(started, finished time.Time) {
	s.mu.Lock()
	if !s.oldestPending.IsZero() && !s.oldestPending.After(started) {
		s.oldestPending = time.Time{}
	}
	s.lastSync = finished
	s.synced = true
	s.mu.Unlock()
}

// Idle records that the agent has nothing to program (no ProxyNode, or no
// acceptable revision yet): changes seen before at are no longer pending,
// and readiness is unchanged.
func (s *State) Idle(at time.Time) {
	s.mu.Lock()
	if !s.oldestPending.IsZero() && !s.oldestPending.After(at) {
		s.oldestPending = time.Time{}
	}
	s.mu.Unlock()
}

// NodeDeleting marks the node as going away (reason) or not (""): it has
// a deletionTimestamp or the ToBeDeletedByClusterAutoscaler taint.
func (s *State) NodeDeleting(reason string) {
	s.mu.Lock()
	s.nodeDeleting = reason
	s.mu.Unlock()
}

// Live reports whether the agent keeps up with changes, and why not. It
// judges /livez: a liveness probe must not restart the agent of a node
// that is being drained but still carries traffic, so node deletion does
// not count here.
func (s *State) Live() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked()
}

func (s *State) liveLocked() (bool, string) {
	if !s.oldestPending.IsZero() {
		if age := s.now().Sub(s.oldestPending); age > s.threshold {
			return false, fmt.Sprintf("a change has waited %s for a sync (threshold %s)", age.Round(time.Second), s.threshold)
		}
	}
	return true, ""
}

// Healthy reports whether the agent keeps up and the node is not going
// away, and why not. It judges /healthz and the HealthCheckNodePorts:
// load balancers that probe them stop sending to a node being drained
// (KEP-3836).
func (s *State) Healthy() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthyLocked()
}

func (s *State) healthyLocked() (bool, string) {
	if s.nodeDeleting != "" {
		return false, "node is being deleted: " + s.nodeDeleting
	}
	return s.liveLocked()
}

// Ready reports whether the first sync succeeded.
func (s *State) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// report is the JSON body of /healthz, /livez and /readyz.
type report struct {
	LastUpdated time.Time `json:"lastUpdated"`
	CurrentTime time.Time `json:"currentTime"`
	// NodeHealthy is the verdict of /healthz (/livez: of /livez).
	NodeHealthy bool `json:"nodeHealthy"`
	// NodeEligible is false while the node is being deleted or tainted
	// for deletion; only /healthz fails for it.
	NodeEligible bool      `json:"nodeEligible"`
	Reason       string    `json:"reason,omitempty"`
	FirstSynced  bool      `json:"firstSynced"`
	OldestChange time.Time `json:"oldestPendingChange,omitzero"`
}

// report reads the state once; live judges by Live instead of Healthy.
func (s *State) report(live bool) report {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, why := s.healthyLocked()
	if live {
		ok, why = s.liveLocked()
	}
	return report{LastUpdated: s.lastSync, CurrentTime: s.now(), NodeHealthy: ok, NodeEligible: s.nodeDeleting == "",
		Reason: why, FirstSynced: s.synced, OldestChange: s.oldestPending}
}

// Handler serves /healthz (Healthy), /livez (Live) and /readyz (first
// sync done), each 200 or 503 with a JSON body.
func (s *State) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		r := s.report(false)
		write(w, r.NodeHealthy, r)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		r := s.report(true)
		write(w, r.NodeHealthy, r)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := s.report(false)
		write(w, r.FirstSynced, r)
	})
	return mux
}

func write(w http.ResponseWriter, ok bool, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}
