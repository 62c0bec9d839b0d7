package ipvs

import (
	"errors"
	"fmt"
	"time"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// reconciler diffs IPVS virtual servers and destinations against the
// desired state and applies only the differences. It remembers
// destinations that are draining (graceful termination).
type reconciler struct {
	h        Handle
	now      func() time.Time
	graceful time.Duration
	// draining: destinations set to weight 0, with the time after which
	// they are deleted even if connections remain.
	draining map[vsKey]map[rsKey]time.Time
}

func newReconciler(h Handle, graceful time.Duration, now func() time.Time) *reconciler {
	if now == nil {
		now = time.Now
	}
	return &reconciler{h: h, now: now, graceful: graceful, draining: map[vsKey]map[rsKey]time.Time{}}
}

// reconcileStats counts kernel writes.
type reconcileStats struct {
	ServicesAdded, ServicesUpdated, ServicesDeleted int
	DestsAdded, DestsUpdated, DestsDeleted          int
	// Draining counts destinations at weight 0 kept for their connections.
	Draining int
	// Leftover are owned, undesired services that could not be deleted.
	Leftover []vsKey
	// Changed are the model service keys (virtualServer.Source) whose
	// virtual servers or destinations this reconcile wrote.
	Changed map[string]bool
}

func (s reconcileStats) writes() int {
	return s.ServicesAdded + s.ServicesUpdated + s.ServicesDeleted + s.DestsAdded + s.DestsUpdated + s.DestsDeleted
}

// reconcile makes the kernel match desired. Kernel services not in desired
// are deleted only when owned(key) is true; others are left alone.
func (r *reconciler) reconcile(desired map[vsKey]*virtualServer, owned func(vsKey) bool) (reconcileStats, error) {
	var st reconcileStats
	var errs []error
	cur, err := r.h.GetServices()
	if err != nil {
		return st, fmt.Errorf("list ipvs services: %w", err)
	}
	have := map[vsKey]*libipvs.Service{}
	for _, s := range cur {
		if k, ok := keyOf(s); ok {
			have[k] = s
		}
	}
	st.Changed = map[string]bool{}
	for _, k := range sortedKeys(desired) {
		want := desired[k]
		before := st.writes()
		r.reconcileOne(k, want, have, &st, &errs)
		if st.writes() > before {
			st.Changed[want.Source] = true
		}
	}
	for k, s := range have {
		if _, ok := desired[k]; ok || !owned(k) {
			continue
		}
		if err := r.h.DelService(s); err != nil {
			errs = append(errs, fmt.Errorf("delete virtual server %s: %w", k, err))
			st.Leftover = append(st.Leftover, k)
			continue
		}
		delete(r.draining, k)
		st.ServicesDeleted++
	}
	// Forget draining entries of services that no longer exist.
	for k := range r.draining {
		if _, ok := desired[k]; !ok {
			delete(r.draining, k)
		}
	}
	return st, errors.Join(errs...)
}

// reconcileOne makes one desired virtual server and its destinations
// match; have is what the kernel holds.
func (r *reconciler) reconcileOne(k vsKey, want *virtualServer, have map[vsKey]*libipvs.Service, st *reconcileStats, errs *[]error) {
	svc := want.toService()
	ks, exists := have[k]
	switch {
	case !exists:
		if err := r.h.NewService(svc); err != nil {
			*errs = append(*errs, fmt.Errorf("add virtual server %s: %w", k, err))
			return
		}
		st.ServicesAdded++
	case serviceDiffers(ks, want):
		if err := r.h.UpdateService(svc); err != nil {
			*errs = append(*errs, fmt.Errorf("update virtual server %s: %w", k, err))
		} else {
			st.ServicesUpdated++
		}
	}
	var curDests []*libipvs.Destination
	if exists {
		var err error
		curDests, err = r.h.GetDestinations(svc)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("list destinations of %s: %w", k, err))
			return
		}
	}
	if err := r.reconcileDests(k, svc, want, curDests, st); err != nil {
		*errs = append(*errs, err)
	}
}

func (r *reconciler) reconcileDests(k vsKey, svc *libipvs.Service, want *virtualServer, cur []*libipvs.Destination, st *reconcileStats) error {
	var errs []error
	have := map[rsKey]*libipvs.Destination{}
	for _, d := range cur {
		if rk, ok := rsKeyOf(d); ok {
			have[rk] = d
		}
	}
	for rk, w := range want.Dests {
		d, ok := have[rk]
		switch {
		case !ok:
			if err := r.h.NewDestination(svc, toDestination(rk, w)); err != nil {
				errs = append(errs, fmt.Errorf("add destination %s to %s: %w", rk, k, err))
				continue
			}
			st.DestsAdded++
		case d.Weight != w || d.ConnectionFlags&libipvs.ConnectionFlagFwdMask != libipvs.ConnectionFlagMasq:
			// Also brings a draining destination back to life.
			if err := r.h.UpdateDestination(svc, toDestination(rk, w)); err != nil {
				errs = append(errs, fmt.Errorf("update destination %s of %s: %w", rk, k, err))
				continue
			}
			st.DestsUpdated++
		}
		r.undrain(k, rk)
	}
	now := r.now()
	for rk, d := range have {
		if _, ok := want.Dests[rk]; ok {
			continue
		}
		deadline := r.drainDeadline(k, rk, now)
		conns := d.ActiveConnections + d.InactiveConnections
		// UDP and SCTP have no end of connection to wait for; their
		// destinations go at once (expire_nodest_conn drops the flows).
		immediate := k.Proto != unix.IPPROTO_TCP || conns == 0 || !now.Before(deadline)
		if immediate {
			if err := r.h.DelDestination(svc, toDestination(rk, d.Weight)); err != nil {
				errs = append(errs, fmt.Errorf("delete destination %s of %s: %w", rk, k, err))
				continue
			}
			st.DestsDeleted++
			r.undrain(k, rk)
			continue
		}
		if d.Weight != 0 {
			if err := r.h.UpdateDestination(svc, toDestination(rk, 0)); err != nil {
				errs = append(errs, fmt.Errorf("quiesce destination %s of %s: %w", rk, k, err))
				continue
			}
			st.DestsUpdated++
		}
		st.Draining++
	}
	return errors.Join(errs...)
}

// drainDeadline returns (and on first sight records) when a destination
// that left the desired state is deleted regardless of its connections.
// A destination found at weight 0 after a restart starts a new period.
func (r *reconciler) drainDeadline(k vsKey, rk rsKey, now time.Time) time.Time {
	m := r.draining[k]
	if m == nil {
		m = map[rsKey]time.Time{}
		r.draining[k] = m
	}
	if t, ok := m[rk]; ok {
		return t
	}
	t := now.Add(r.graceful)
	m[rk] = t
	return t
}

func (r *reconciler) undrain(k vsKey, rk rsKey) {
	if m := r.draining[k]; m != nil {
		delete(m, rk)
		if len(m) == 0 {
			delete(r.draining, k)
		}
	}
}

// drainingCount returns how many destinations are draining.
func (r *reconciler) drainingCount() int {
	n := 0
	for _, m := range r.draining {
		n += len(m)
	}
	return n
}
