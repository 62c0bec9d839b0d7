// Package dataplane owns the node agent's backend through its life: it
// builds the backend a revision asks for, switches backends without a gap
// (the old backend's rules go only once the new one has synced), runs the
// backend-neutral steps after every sync of every backend (stale conntrack
// entries), tunes conntrack once per revision, and removes
// everything when the node is no longer selected.
//
// All kernel work runs through Options.InNetNS, so that a test can run it
// in a test network namespace.
package dataplane

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Options configure a Plane.
type Options struct {
	// InNetNS runs kernel work; nil runs it on the calling goroutine.
	InNetNS func(func() error) error
	// NewBackend builds a backend; nil uses DefaultNewBackend.
	NewBackend Factory
	// Conntrack deletes the conntrack entries a sync made wrong; nil uses
	// conntrack.Clean.
	Conntrack func(old, cur *model.State) (uint, error)
	// Event posts an Event about the node's ProxyNode.
	Event func(typ, reason, msg string)
}

// Want is the backend a revision asks for.
type Want struct {
	Family  model.Family
	Backend v1alpha1.Backend
	Spec    *v1alpha1.GatewayConfigSpec
	Caps    probe.Capabilities
}

// Plane is the backend in use and what it last put in the kernel. It is
// used from the sync loop only.
type Plane struct {
	opts Options
	be   backend.Backend
	key  string
	// old is the previous backend, cleaned up after the new one synced.
	old backend.Backend
	// last is the state in the kernel, for the conntrack cleanup; nil after
	// a backend switch, so that every UDP frontend is cleaned once.
	last  *model.State
	tuned string
}

// New returns an empty Plane.
func New(opts Options) *Plane {
	if opts.InNetNS == nil {
		opts.InNetNS = func(f func() error) error { return f() }
	}
	if opts.NewBackend == nil {
		opts.NewBackend = DefaultNewBackend
	}
	if opts.Conntrack == nil {
		opts.Conntrack = conntrack.Clean
	}
	if opts.Event == nil {
		opts.Event = func(string, string, string) {}
	}
	return &Plane{opts: opts}
}

// Ensure returns the backend w needs, building it when the kind or its
// options changed; a previous backend of another kind is kept for cleanup.
func (p *Plane) Ensure(ctx context.Context, w Want) (backend.Backend, error) {
	key := backendKey(w)
	if p.be != nil && p.key == key {
		return p.be, nil
	}
	var nb backend.Backend
	err := p.opts.InNetNS(func() error {
		var err error
		nb, err = p.opts.NewBackend(ctx, w.Backend, w.Spec, w.Caps, w.Family)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start %s backend: %w", w.Backend, err)
	}
	if p.be != nil && p.be.Name() != nb.Name() {
		p.old, p.last = p.be, nil
	}
	p.be, p.key = nb, key
	return nb, nil
}

// Result is what one sync did.
type Result struct {
	backend.SyncResult
	// Backend is the name of the backend that synced.
	Backend string
	// Services and Endpoints count what the state asks for, the same way
	// whatever the backend (model.State.Counts).
	Services, Endpoints int
	// ConntrackDeleted counts the conntrack entries deleted after the sync.
	ConntrackDeleted uint
}

// Sync makes the kernel match st with the current backend, then deletes the
// conntrack entries the change made wrong, whichever the backend: UDP flows
// to a removed endpoint, and flows recorded un-NATed before their frontend
// was served (package conntrack says why). Finally the rules of a previous
// backend go.
func (p *Plane) Sync(ctx context.Context, st *model.State, full bool) (Result, error) {
	if p.be == nil {
		return Result{}, errors.New("no backend: Ensure was not called")
	}
	var res backend.SyncResult
	err := p.opts.InNetNS(func() error {
		var err error
		res, err = p.be.Sync(ctx, st, backend.SyncOptions{Full: full})
		return err
	})
	if err != nil {
		return Result{SyncResult: res, Backend: p.be.Name()}, err
	}
	deleted := p.cleanConntrack(st)
	p.last = st
	p.retireOld(ctx)
	out := Result{SyncResult: res, Backend: p.be.Name(), ConntrackDeleted: deleted}
	out.Services, out.Endpoints = st.Counts()
	return out, nil
}

// cleanConntrack deletes stale flows and returns how many; a failure is
// logged, the rules are in place anyway.
func (p *Plane) cleanConntrack(st *model.State) uint {
	var n uint
	err := p.opts.InNetNS(func() error {
		var err error
		n, err = p.opts.Conntrack(p.last, st)
		return err
	})
	if err != nil {
		klog.ErrorS(err, "Failed to delete stale conntrack entries")
	} else if n > 0 {
		klog.V(2).InfoS("Deleted stale conntrack entries", "count", n)
	}
	return n
}

// retireOld removes the rules of the previous backend, now that the new one
// is in the kernel.
func (p *Plane) retireOld(ctx context.Context) {
	old := p.old
	if old == nil {
		return
	}
	p.old = nil
	if err := p.opts.InNetNS(func() error { return old.Cleanup(ctx) }); err != nil {
		klog.ErrorS(err, "Failed to remove the rules of the previous backend", "backend", old.Name())
		return
	}
	klog.InfoS("Removed the rules of the previous backend", "backend", old.Name(), "now", p.be.Name())
	p.opts.Event(corev1.EventTypeNormal, v1alpha1.ReasonBackendSwitched, fmt.Sprintf("Switched from %s to %s", old.Name(), p.be.Name()))
}

// Active reports whether any backend may have rules in the kernel.
func (p *Plane) Active() bool { return p.be != nil || p.old != nil }

// RemoveAll removes the rules of every backend the Plane started. On
// success the Plane is empty again.
func (p *Plane) RemoveAll(ctx context.Context) error {
	var errs []error
	for _, b := range []backend.Backend{p.be, p.old} {
		if b == nil {
			continue
		}
		if err := p.opts.InNetNS(func() error { return b.Cleanup(ctx) }); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.be, p.key, p.old, p.last, p.tuned = nil, "", nil, nil, ""
	return nil
}
