// Package status writes the agent's ProxyNode status through the status
// subresource: only when something changed, plus a low-rate heartbeat of
// lastSync, bounded in size, with conflicts retried.
//
// Each owner in the agent hands the writer its own facts (the revision
// acceptor its refusal, the sync loop what is in the kernel). One goroutine
// assembles the report from the newest facts of each when it writes, so an
// older view can never overwrite a newer one.
package status

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// FieldManager is the agent's field manager.
const FieldManager = "synterix-agent"

// DefaultHeartbeat is how often lastSync is refreshed when nothing else
// changed.
const DefaultHeartbeat = time.Minute

// Condition is one condition the agent reports.
type Condition struct {
	Status  metav1.ConditionStatus
	Reason  string
	Message string
}

// Report is what the agent knows about its node.
type Report struct {
	// Generation is the ProxyNode generation whose revision is in the
	// kernel; 0 keeps the previous observedGeneration.
	Generation      int64
	Backend         v1alpha1.Backend
	BackendReason   string
	Capabilities    *v1alpha1.KernelCapabilities
	AgentVersion    string
	PodTemplateHash string
	AppliedRevision string
	LastSync        *v1alpha1.SyncStatus
	Counts          v1alpha1.RuleCounts
	Families        []v1alpha1.FamilyStatus
	// FailedPolicies lists every failed policy; the writer keeps the first
	// MaxFailedPolicies and counts them all.
	FailedPolicies []v1alpha1.FailedPolicy
	Ready          Condition
	Degraded       Condition
}

// Writer writes reports to one ProxyNode.
type Writer struct {
	client    rest.Interface
	name      string
	static    Static
	heartbeat time.Duration
	// cached returns the ProxyNode as the agent's informer has it, or nil.
	cached  func() *v1alpha1.ProxyNode
	onWrite func(result string)
	now     func() time.Time

	mu      sync.Mutex
	rev     RevisionFacts
	sync    SyncFacts
	have    bool // some facts arrived: there is something to report
	wake    chan struct{}
	written *v1alpha1.ProxyNode // the object our last write returned
}

// New returns a writer for the ProxyNode named name.
func New(client rest.Interface, name string, st Static, cached func() *v1alpha1.ProxyNode, onWrite func(string)) *Writer {
	if onWrite == nil {
		onWrite = func(string) {}
	}
	return &Writer{client: client, name: name, static: st, heartbeat: DefaultHeartbeat, cached: cached,
		onWrite: onWrite, now: time.Now, wake: make(chan struct{}, 1)}
}

// SetHeartbeat changes the heartbeat period.
func (w *Writer) SetHeartbeat(d time.Duration) { w.heartbeat = d }

// SetRevision replaces the revision acceptor's facts; they are written soon
// if they change the status. Callers serialise their own calls.
func (w *Writer) SetRevision(f RevisionFacts) {
	w.mu.Lock()
	w.rev, w.have = f, true
	w.mu.Unlock()
	w.poke()
}

// SetSync replaces the sync loop's facts, like SetRevision.
func (w *Writer) SetSync(f SyncFacts) {
	w.mu.Lock()
	w.sync, w.have = f, true
	w.mu.Unlock()
	w.poke()
}

func (w *Writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pending assembles the report the writer would write now.
func (w *Writer) Pending() (Report, bool) { return w.report(w.current()) }

// Run writes reports until ctx ends. Failed writes are retried with
// backoff by the next wake-up or heartbeat tick.
func (w *Writer) Run(ctx context.Context) {
	tick := time.NewTicker(w.heartbeat / 2)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-tick.C:
		}
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := w.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			klog.ErrorS(err, "Failed to write ProxyNode status", "proxyNode", w.name)
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			select {
			case w.wake <- struct{}{}:
			default:
			}
			continue
		}
		backoff = 0
	}
}

// Flush writes the latest report now if it changes anything or the
// heartbeat is due. It does nothing when no ProxyNode exists.
func (w *Writer) Flush(ctx context.Context) error {
	cur := w.current()
	if cur == nil {
		return nil
	}
	r, have := w.report(cur)
	if !have {
		return nil
	}
	want := Build(cur.Status, r, w.now())
	if !Due(cur.Status, want, w.now(), w.heartbeat) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := cur.DeepCopy()
		r, _ := w.report(cur)
		obj.Status = Build(cur.Status, r, w.now())
		out := &v1alpha1.ProxyNode{}
		err := w.client.Put().Resource("proxynodes").Name(w.name).SubResource("status").
			Param("fieldManager", FieldManager).Body(obj).Do(ctx).Into(out)
		switch {
		case err == nil:
			w.onWrite("ok")
			w.mu.Lock()
			w.written = out
			w.mu.Unlock()
			return nil
		case apierrors.IsConflict(err):
			w.onWrite("conflict")
			fresh := &v1alpha1.ProxyNode{}
			if gerr := w.client.Get().Resource("proxynodes").Name(w.name).Do(ctx).Into(fresh); gerr != nil {
				return gerr
			}
			cur = fresh
			return err
		case apierrors.IsNotFound(err):
			return nil // deleted meanwhile: nothing to report on
		default:
			w.onWrite("error")
			return err
		}
	})
}

// current is the newest of the cached object and the one our last write
// returned.
func (w *Writer) current() *v1alpha1.ProxyNode {
	c := w.cached()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c == nil {
		w.written = nil
		return nil
	}
	if w.written != nil && w.written.UID == c.UID && newer(w.written.ResourceVersion, c.ResourceVersion) {
		return w.written
	}
	return c
}

// newer compares resource versions, which etcd makes increasing integers;
// anything else counts as not newer.
func newer(a, b string) bool {
	var x, y uint64
	if _, err := fmt.Sscan(a, &x); err != nil {
		return false
	}
	if _, err := fmt.Sscan(b, &y); err != nil {
		return false
	}
	return x > y
}

// Build returns the status a report asks for, keeping the transition
// times of unchanged conditions from cur.
func Build(cur v1alpha1.ProxyNodeStatus, r Report, now time.Time) v1alpha1.ProxyNodeStatus {
	s := v1alpha1.ProxyNodeStatus{
		ObservedGeneration: cur.ObservedGeneration,
		Backend:            r.Backend,
		BackendReason:      trunc(r.BackendReason, 1024),
		Capabilities:       r.Capabilities,
		AgentVersion:       trunc(r.AgentVersion, 128),
		PodTemplateHash:    trunc(r.PodTemplateHash, 64),
		AppliedRevision:    r.AppliedRevision,
		LastSync:           r.LastSync,
		Counts:             r.Counts,
		Families:           families(r.Families),
		FailedPolicyCount:  int32(len(r.FailedPolicies)),
		Conditions:         append([]metav1.Condition(nil), cur.Conditions...),
	}
	if r.Generation > 0 {
		s.ObservedGeneration = r.Generation
	}
	if s.LastSync != nil && s.LastSync.Error != "" {
		ls := *s.LastSync
		ls.Error = trunc(ls.Error, 1024)
		s.LastSync = &ls
	}
	for i, p := range r.FailedPolicies {
		if i == v1alpha1.MaxFailedPolicies {
			break
		}
		p.Reason = trunc(p.Reason, 64)
		p.Message = trunc(p.Message, 512)
		s.FailedPolicies = append(s.FailedPolicies, p)
	}
	set := func(t string, c Condition) {
		if c.Status == "" {
			c.Status = metav1.ConditionUnknown
		}
		if c.Reason == "" {
			c.Reason = v1alpha1.ReasonUnknown
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: t, Status: c.Status, Reason: c.Reason,
			Message: trunc(c.Message, 32768), ObservedGeneration: s.ObservedGeneration, LastTransitionTime: metav1.NewTime(now)})
	}
	set(v1alpha1.ConditionReady, r.Ready)
	set(v1alpha1.ConditionDegraded, r.Degraded)
	// Stalled mirrors Degraded, in kstatus's terms: GitOps tools read a
	// failing node as Failed instead of still in progress.
	set(v1alpha1.ConditionStalled, r.Degraded)
	return s
}

// Due reports whether want differs from cur in anything but the times and
// durations of the last syncs (node-wide and per family), or whether the
// heartbeat is due: a periodic sync that changed nothing is not written,
// so an idle node costs the API server one write per heartbeat.
func Due(cur, want v1alpha1.ProxyNodeStatus, now time.Time, heartbeat time.Duration) bool {
	a, b := cur.DeepCopy(), want.DeepCopy()
	var last time.Time
	if a.LastSync != nil && a.LastSync.Time != nil {
		last = a.LastSync.Time.Time
	}
	for _, s := range []*v1alpha1.ProxyNodeStatus{a, b} {
		if s.LastSync != nil {
			s.LastSync.Time, s.LastSync.DurationMilliseconds = nil, nil
		}
		// Each family's last sync has its own time and duration: they
		// change with every sync too, and are no reason to write.
		for i := range s.Families {
			if ls := s.Families[i].LastSync; ls != nil {
				ls.Time, ls.DurationMilliseconds = nil, nil
			}
		}
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
	}
	if !equality.Semantic.DeepEqual(a, b) {
		return true
	}
	return want.LastSync != nil && want.LastSync.Time != nil && !want.LastSync.Time.Equal(&metav1.Time{Time: last}) &&
		now.Sub(last) >= heartbeat
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// report assembles the newest facts into a report about pn.
func (w *Writer) report(pn *v1alpha1.ProxyNode) (Report, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Assemble(w.static, w.rev, w.sync, pn), w.have
}

// families copies the per-family status with bounded messages.
func families(in []v1alpha1.FamilyStatus) []v1alpha1.FamilyStatus {
	var out []v1alpha1.FamilyStatus
	for _, f := range in {
		f.Message = trunc(f.Message, 1024)
		if f.LastSync != nil && f.LastSync.Error != "" {
			ls := *f.LastSync
			ls.Error = trunc(ls.Error, 1024)
			f.LastSync = &ls
		}
		out = append(out, f)
	}
	return out
}
