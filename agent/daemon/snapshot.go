package daemon

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Snapshot is what the sync loop last programmed, published after every
// sync for readers on other goroutines (the agent's explain endpoint). It
// is never changed once published: the States are the model's, whose
// Services are read-only, and the objects are the watches' caches.
type Snapshot struct {
	NodeName string
	// Node is the Node object as the agent's watch last saw it.
	Node *corev1.Node
	// Time is when the sync ended; Error is its error, if it failed (the
	// kernel then holds what the States say).
	Time  time.Time
	Error string
	// Revision, Generation, Backend and BackendReason describe the
	// revision in the kernel, with its Spec; empty before the first
	// successful sync.
	Revision      string
	Generation    int64
	Backend       v1alpha1.Backend
	BackendReason string
	Spec          *v1alpha1.GatewayConfigSpec
	// IPTablesMode is the iptables flavour the backends use.
	IPTablesMode   xtables.Mode
	Families       []FamilySnapshot
	FailedPolicies []v1alpha1.FailedPolicy
	// Objects are the watched Services, EndpointSlices and ProxyPolicies;
	// nil when nothing is watched.
	Objects Objects
	// InNetNS runs kernel reads in the node's network namespace.
	InNetNS func(func() error) error
}

// FamilySnapshot is one IP family: the state last programmed (nil when the
// family is not programmed) and its status.
type FamilySnapshot struct {
	Family model.Family
	State  *model.State
	Status v1alpha1.FamilyStatus
}

// Objects are the watched objects; the watches' caches are safe for
// concurrent reads (source.Data implements it).
type Objects interface {
	Services() []*corev1.Service
	Service(ref model.ServiceRef) *corev1.Service
	EndpointSlices(ref model.ServiceRef) []*discoveryv1.EndpointSlice
	Policies() []*v1alpha1.ProxyPolicy
}

// Snapshot returns what the sync loop last programmed, or nil before the
// first sync.
func (a *Agent) Snapshot() *Snapshot { return a.published.Load() }

// publish stores a snapshot of the loop's state; it runs on the sync
// loop's goroutine, after the loop's facts were updated.
func (a *Agent) publish() {
	f := a.loop.facts
	s := &Snapshot{NodeName: a.opts.NodeName, Node: a.cachedNode(), Time: time.Now(), Error: f.Error,
		IPTablesMode: a.caps.IPTablesMode, FailedPolicies: f.FailedPolicies, InNetNS: a.opts.InNetNS}
	if f.Applied != nil {
		s.Revision, s.Generation, s.Backend, s.BackendReason = f.Applied.Revision, f.Applied.Generation, f.Applied.Backend, f.Applied.BackendReason
	}
	if a.loop.applied != nil {
		s.Spec = a.loop.applied.Spec
	}
	for _, fl := range a.loop.fams {
		s.Families = append(s.Families, FamilySnapshot{Family: fl.family, State: fl.state, Status: fl.status})
	}
	if a.loop.data != nil {
		s.Objects = a.loop.data
	}
	a.published.Store(s)
}
