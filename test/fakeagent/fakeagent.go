// Package fakeagent is a SIMULATED agent for operator tests. It programs no
// kernel: it watches ProxyNodes on a real API server and writes their status
// as the real agent would (observedGeneration, appliedRevision, Ready and
// Degraded conditions, backend, last sync, failed policies), following a
// behaviour the test chooses per node and revision: report Ready, report a
// failure, or hold (say nothing yet). It stands in for the per-node agents
// only; the API server, etcd and the operator under test are real.
//
// With Namespace set, each node's agent also reports the pod template it
// runs (status.podTemplateHash), as the real agent reports its
// POD_TEMPLATE_HASH: that of the agent pod on the node in Namespace (its
// label proxy.synterix.io/pod-template-hash; a test stands in for the
// DaemonSet controller, which envtest lacks, by creating those pods). When
// the node has no pod now, the agent is the one of the last pod seen there,
// still running; when it never had one, the simulated pod runs the pod
// template of its assigned revision (the revision's label).
package fakeagent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// FieldOwner is the field manager of the simulated agent's writes.
const FieldOwner = client.FieldOwner("synterix-agent")

// Outcome is what a simulated agent does with its assigned revision.
type Outcome int

const (
	// Hold says nothing: the node stays pending.
	Hold Outcome = iota
	// Ready applies the revision and reports Ready.
	Ready
	// Fail reports Ready=False and Degraded=True at the revision.
	Fail
)

// Report is what a simulated agent reports.
type Report struct {
	Outcome Outcome
	// Backend is the backend reported; IPTables when empty.
	Backend proxyv1alpha1.Backend
	// FailedPolicies are the policies the node could not program.
	FailedPolicies []proxyv1alpha1.FailedPolicy
	// PodTemplateHash is the pod template the agent runs; the fleet fills
	// it when its Namespace is set.
	PodTemplateHash string
}

// Behavior decides the report of a node for a revision.
type Behavior func(node, revision string) Report

// Always returns a behaviour that reports outcome on every node.
func Always(o Outcome) Behavior { return func(string, string) Report { return Report{Outcome: o} } }

// Fleet simulates the agents of every node.
type Fleet struct {
	c client.Client
	// Namespace, when set, is where the agent pods and config revisions
	// are: the agents report the pod template they run. Set before Start.
	Namespace string

	mu       sync.Mutex
	behavior Behavior
	written  map[string]string // node -> key of the last report written
	podHash  map[string]string // node -> pod template hash of the last pod seen
	queue    workqueue.TypedRateLimitingInterface[string]
	cache    cache.Cache
	// Reports counts the status writes.
	reports int
}

// New returns a fleet that writes with c (a client the test owns, not the
// operator's) and starts with behaviour b.
func New(c client.Client, b Behavior) *Fleet {
	return &Fleet{c: c, behavior: b, written: map[string]string{}, podHash: map[string]string{}}
}

// SetBehavior changes the behaviour and looks at every node again.
func (f *Fleet) SetBehavior(b Behavior) {
	f.mu.Lock()
	f.behavior = b
	q := f.queue
	f.mu.Unlock()
	if q != nil {
		f.resync()
	}
}

// Reports returns how many status writes the fleet made.
func (f *Fleet) Reports() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reports
}

// Start watches ProxyNodes through its own informer on cfg and reports with
// workers goroutines until ctx ends. It returns once the informer has synced.
func (f *Fleet) Start(ctx context.Context, cfg *rest.Config, workers int) error {
	c, err := cache.New(cfg, cache.Options{Scheme: f.c.Scheme()})
	if err != nil {
		return err
	}
	inf, err := c.GetInformer(ctx, &proxyv1alpha1.ProxyNode{})
	if err != nil {
		return err
	}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	add := func(obj any) {
		if o, ok := obj.(client.Object); ok {
			q.Add(o.GetName())
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, n any) { add(n) },
	}); err != nil {
		return err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the simulated agents' cache did not sync")
	}
	f.mu.Lock()
	f.queue, f.cache = q, c
	f.mu.Unlock()
	go func() { <-ctx.Done(); q.ShutDown() }()
	for i := 0; i < workers; i++ {
		go func() {
			for {
				name, shut := q.Get()
				if shut {
					return
				}
				if err := f.sync(ctx, name); err != nil && ctx.Err() == nil {
					q.AddRateLimited(name)
				} else {
					q.Forget(name)
				}
				q.Done(name)
			}
		}()
	}
	return nil
}

// Sync has the agents of the nodes whose name starts with prefix sync again
// and report, as real agents do when a Service or a ProxyPolicy changes: their
// status gets a new lastSync even when nothing else changed.
func (f *Fleet) Sync(prefix string) {
	f.mu.Lock()
	for name := range f.written {
		if strings.HasPrefix(name, prefix) {
			delete(f.written, name)
		}
	}
	f.mu.Unlock()
	f.resync()
}

func (f *Fleet) resync() {
	var list proxyv1alpha1.ProxyNodeList
	if err := f.cache.List(context.Background(), &list); err != nil {
		return
	}
	for _, pn := range list.Items {
		f.queue.Add(pn.Name)
	}
}

// sync writes the status of one node when its report changed.
func (f *Fleet) sync(ctx context.Context, name string) error {
	pn := &proxyv1alpha1.ProxyNode{}
	if err := f.cache.Get(ctx, client.ObjectKey{Name: name}, pn); err != nil {
		return client.IgnoreNotFound(err)
	}
	f.mu.Lock()
	rep := f.behavior(pn.Name, pn.Spec.Revision)
	f.mu.Unlock()
	if rep.Outcome == Hold {
		return nil
	}
	if f.Namespace != "" {
		h, err := f.podTemplateHash(ctx, pn)
		if err != nil {
			return err
		}
		rep.PodTemplateHash = h
	}
	key := fmt.Sprintf("%d/%s/%v", pn.Generation, pn.Spec.Revision, rep)
	f.mu.Lock()
	same := f.written[name] == key && pn.Status.ObservedGeneration == pn.Generation
	f.mu.Unlock()
	if same {
		return nil
	}
	if err := Write(ctx, f.c, pn, rep); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	f.mu.Lock()
	f.written[name] = key
	f.reports++
	f.mu.Unlock()
	return nil
}

// Write writes the status a real agent would after handling pn's current spec.
func Write(ctx context.Context, c client.Client, pn *proxyv1alpha1.ProxyNode, rep Report) error {
	orig := pn.DeepCopy()
	now := metav1.NewTime(time.Now())
	s := &pn.Status
	s.ObservedGeneration = pn.Generation
	s.Backend = rep.Backend
	if s.Backend == "" {
		s.Backend = proxyv1alpha1.BackendIPTables
	}
	s.BackendReason = "simulated agent"
	s.AgentVersion = "fakeagent"
	s.PodTemplateHash = rep.PodTemplateHash
	s.FailedPolicies = rep.FailedPolicies
	s.FailedPolicyCount = int32(len(rep.FailedPolicies))
	ready := metav1.Condition{Type: proxyv1alpha1.ConditionReady, ObservedGeneration: pn.Generation, LastTransitionTime: now}
	degraded := metav1.Condition{Type: proxyv1alpha1.ConditionDegraded, ObservedGeneration: pn.Generation, LastTransitionTime: now}
	switch rep.Outcome {
	case Ready:
		s.AppliedRevision = pn.Spec.Revision
		s.LastSync = &proxyv1alpha1.SyncStatus{Time: &now, Type: proxyv1alpha1.SyncFull, DurationMilliseconds: ptr(int32(1))}
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, proxyv1alpha1.ReasonSynced, "Rules are in the kernel"
		degraded.Status, degraded.Reason = metav1.ConditionFalse, proxyv1alpha1.ReasonAsExpected
	case Fail:
		s.LastSync = &proxyv1alpha1.SyncStatus{Time: &now, Type: proxyv1alpha1.SyncFull, Error: "simulated failure"}
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, proxyv1alpha1.ReasonSyncFailed, "simulated failure"
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, proxyv1alpha1.ReasonSyncFailed, "simulated failure"
	}
	meta.SetStatusCondition(&s.Conditions, ready)
	meta.SetStatusCondition(&s.Conditions, degraded)
	stalled := degraded // the agent's Stalled mirrors its Degraded
	stalled.Type = proxyv1alpha1.ConditionStalled
	meta.SetStatusCondition(&s.Conditions, stalled)
	return c.Status().Patch(ctx, pn, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), FieldOwner)
}

// podTemplateHash is the pod template the agent of pn's node runs: see the
// package comment.
func (f *Fleet) podTemplateHash(ctx context.Context, pn *proxyv1alpha1.ProxyNode) (string, error) {
	var pods corev1.PodList
	if err := f.c.List(ctx, &pods, client.InNamespace(f.Namespace), client.MatchingLabels{"app.kubernetes.io/name": "synterix-agent"}); err != nil {
		return "", err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if PodNode(p) == pn.Name && p.DeletionTimestamp.IsZero() {
			h := p.Labels[proxyv1alpha1.PodTemplateHashLabel]
			f.mu.Lock()
			f.podHash[pn.Name] = h
			f.mu.Unlock()
			return h, nil
		}
	}
	f.mu.Lock()
	h, seen := f.podHash[pn.Name]
	f.mu.Unlock()
	if seen {
		return h, nil
	}
	rev := &appsv1.ControllerRevision{}
	if err := f.c.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: pn.Spec.Revision}, rev); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	return rev.Labels[proxyv1alpha1.PodTemplateHashLabel], nil
}

// PodNode returns the node of a DaemonSet pod: spec.nodeName, else the one
// metadata.name of its required node affinity.
func PodNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, m := range t.MatchFields {
				if m.Key == "metadata.name" && len(m.Values) == 1 {
					return m.Values[0]
				}
			}
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
