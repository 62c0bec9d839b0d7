package upgrade

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// The recorder watches the agent pods and the ProxyNodes and keeps every
// change that says who replaced an agent and when: a node assigned a
// revision, a node ready at a revision and pod template, an agent pod
// created, ready, deleted. Events are ordered by resourceVersion: this
// cluster has one etcd, whose revision numbers every write of every kind,
// so the order of a pod's deletion and a ProxyNode's assignment is exact
// (a fact of this test's control plane, not a promise of the API, which
// calls resourceVersion opaque).

// Event kinds.
const (
	evAssigned    = "assigned"     // ProxyNode spec.revision changed
	evNodeReady   = "node ready"   // ProxyNode Ready at its revision, with a pod template hash
	evPodCreated  = "pod created"  // agent pod bound to a node
	evPodReady    = "pod ready"    // agent pod Ready
	evPodDeleting = "pod deleting" // agent pod being deleted (or gone)
)

type event struct {
	rv       int64
	at       time.Time
	kind     string
	node     string
	pod, uid string
	// revision: assigned or ready at; hash: the pod template hash the
	// ProxyNode reports, or the pod's label; image: the pod's agent image.
	revision, hash, image string
}

func (e event) String() string {
	s := fmt.Sprintf("%-13s %-7s", e.kind, e.node)
	if e.pod != "" {
		s += " pod " + e.pod
	}
	if e.revision != "" {
		s += " revision " + e.revision
	}
	if e.hash != "" {
		s += " template " + e.hash
	}
	if e.image != "" {
		s += " image " + e.image
	}
	return s
}

type podSeen struct {
	node, name      string
	ready, deleting bool
}

type recorder struct {
	mu     sync.Mutex
	events []event
	pods   map[string]*podSeen // by UID
	// assigned and ready are each node's last spec.revision and last
	// "revision/hash" it was ready at.
	assigned, ready map[string]string
	errs            []string
	cancel          context.CancelFunc
	done            sync.WaitGroup
}

// startRecorder lists and then watches the agent pods and the ProxyNodes
// until stop.
func startRecorder(ctx context.Context, cfg *rest.Config) (*recorder, error) {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &recorder{pods: map[string]*podSeen{}, assigned: map[string]string{}, ready: map[string]string{}, cancel: cancel}
	agents := []client.ListOption{client.InNamespace(shipped.OperatorNamespace), client.MatchingLabels{"app.kubernetes.io/name": "synterix-agent"}}
	for _, w := range []struct {
		list func() client.ObjectList
		opts []client.ListOption
	}{
		{func() client.ObjectList { return &corev1.PodList{} }, agents},
		{func() client.ObjectList { return &proxyv1alpha1.ProxyNodeList{} }, nil},
	} {
		rv, err := r.list(ctx, wc, w.list(), w.opts)
		if err != nil {
			cancel()
			return nil, err
		}
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			r.watch(ctx, wc, w.list, w.opts, rv)
		}()
	}
	return r, nil
}

// stop ends the watches.
func (r *recorder) stop() {
	r.cancel()
	r.done.Wait()
}

// list records every object of the list as it is now and returns the
// list's resourceVersion.
func (r *recorder) list(ctx context.Context, wc client.WithWatch, list client.ObjectList, opts []client.ListOption) (string, error) {
	if err := wc.List(ctx, list, opts...); err != nil {
		return "", err
	}
	rv := list.GetResourceVersion()
	items, err := meta.ExtractList(list)
	if err != nil {
		return "", err
	}
	for _, o := range items {
		// Each at its own last write: exact for what it shows, later than
		// any change a watch that expired (410) may have missed.
		m, err := meta.Accessor(o)
		if err != nil {
			return "", err
		}
		r.observe(o, false, parseRV(m.GetResourceVersion()))
	}
	if _, ok := list.(*corev1.PodList); ok {
		r.goneSince(items, parseRV(rv))
	}
	return rv, nil
}

// watch follows changes from resourceVersion rv; a closed watch is
// resumed where it ended, an expired one listed anew (and noted).
func (r *recorder) watch(ctx context.Context, wc client.WithWatch, list func() client.ObjectList, opts []client.ListOption, rv string) {
	for ctx.Err() == nil {
		w, err := wc.Watch(ctx, list(), append([]client.ListOption{&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}}}, opts...)...)
		if err != nil {
			if ctx.Err() == nil {
				r.noteErr("watch: %v", err)
				time.Sleep(time.Second)
			}
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Error:
				if ctx.Err() != nil {
					break
				}
				r.noteErr("watch error: %v", ev.Object)
				if rv, err = r.list(ctx, wc, list(), opts); err != nil {
					r.noteErr("list after a watch error: %v", err)
				}
			case watch.Added, watch.Modified, watch.Deleted:
				m, err := meta.Accessor(ev.Object)
				if err != nil {
					continue
				}
				rv = m.GetResourceVersion()
				r.observe(ev.Object, ev.Type == watch.Deleted, parseRV(rv))
			}
		}
		w.Stop()
	}
}

// goneSince records as deleted, at rv, the agent pods seen before that a
// new listing (items) no longer holds: deleted while no watch ran.
func (r *recorder) goneSince(items []runtime.Object, rv int64) {
	listed := map[string]bool{}
	for _, o := range items {
		if m, err := meta.Accessor(o); err == nil {
			listed[string(m.GetUID())] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, seen := range r.pods {
		if !listed[uid] && !seen.deleting {
			seen.deleting = true
			r.add(event{rv: rv, at: time.Now(), node: seen.node, pod: seen.name, uid: uid}, evPodDeleting)
		}
	}
}

func (r *recorder) noteErr(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func parseRV(rv string) int64 {
	n, _ := strconv.ParseInt(rv, 10, 64)
	return n
}

// observe turns one state of an object into events.
func (r *recorder) observe(o runtime.Object, deleted bool, rv int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	switch o := o.(type) {
	case *corev1.Pod:
		r.observePod(o, deleted, rv, now)
	case *proxyv1alpha1.ProxyNode:
		r.observeNode(o, rv, now)
	}
}

func (r *recorder) observePod(p *corev1.Pod, deleted bool, rv int64, now time.Time) {
	if p.Spec.NodeName == "" {
		return // not bound yet
	}
	uid := string(p.UID)
	seen := r.pods[uid]
	e := event{rv: rv, at: now, node: p.Spec.NodeName, pod: p.Name, uid: uid,
		hash: p.Labels[proxyv1alpha1.PodTemplateHashLabel], image: agentImage(p)}
	if seen == nil {
		seen = &podSeen{node: p.Spec.NodeName, name: p.Name}
		r.pods[uid] = seen
		r.add(e, evPodCreated)
	}
	if ready := isReady(p); ready && !seen.ready {
		seen.ready = true
		r.add(e, evPodReady)
	}
	if (deleted || p.DeletionTimestamp != nil) && !seen.deleting {
		seen.deleting = true
		r.add(e, evPodDeleting)
	}
}

func (r *recorder) observeNode(pn *proxyv1alpha1.ProxyNode, rv int64, now time.Time) {
	if pn.Spec.Revision != r.assigned[pn.Name] {
		r.assigned[pn.Name] = pn.Spec.Revision
		r.add(event{rv: rv, at: now, node: pn.Name, revision: pn.Spec.Revision}, evAssigned)
	}
	s := pn.Status
	ready := ""
	if s.ObservedGeneration == pn.Generation && s.AppliedRevision == pn.Spec.Revision &&
		meta.IsStatusConditionTrue(s.Conditions, proxyv1alpha1.ConditionReady) {
		ready = s.AppliedRevision + "/" + s.PodTemplateHash
	}
	if ready != "" && ready != r.ready[pn.Name] {
		r.add(event{rv: rv, at: now, node: pn.Name, revision: s.AppliedRevision, hash: s.PodTemplateHash}, evNodeReady)
	}
	r.ready[pn.Name] = ready
}

func (r *recorder) add(e event, kind string) {
	e.kind = kind
	r.events = append(r.events, e)
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func agentImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == "agent" {
			return c.Image
		}
	}
	if len(p.Spec.Containers) > 0 {
		return p.Spec.Containers[0].Image
	}
	return ""
}

// since returns the events after resourceVersion from, in order.
func (r *recorder) since(from int64) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.events {
		if e.rv > from {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].rv < out[j].rv })
	return out
}

// errors returns what went wrong with the watches.
func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// timeline prints events as lines with their time since start.
func timeline(events []event, start time.Time, nodes map[string]bool) string {
	var b strings.Builder
	for _, e := range events {
		if nodes != nil && !nodes[e.node] {
			continue
		}
		fmt.Fprintf(&b, "  +%6.1fs rv %-6d %s\n", e.at.Sub(start).Seconds(), e.rv, e)
	}
	return b.String()
}
