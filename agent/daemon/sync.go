package daemon

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/dataplane"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/revision"
	"github.com/synterix/synterix-kube-proxy/agent/source"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/agent/translate"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// loopState is everything the sync loop owns. Only the loop's goroutine
// touches it, so it needs no lock.
type loopState struct {
	started time.Time
	plane   *dataplane.Plane
	data    *source.Data
	builder *model.Builder
	// applied is the revision in the kernel.
	applied *revision.Config
	facts   status.SyncFacts
	// problems is a digest of the last reported invalid input.
	problems string
}

// sync is the agent's sync loop, run by the bounded-frequency runner on one
// goroutine. It brings the kernel to the desired state of the accepted
// revision, taking in only what changed since the last sync, or removes
// every rule once the node is no longer selected; then it reports.
func (a *Agent) sync(ctx context.Context, full bool) error {
	d := a.accept.Decision()
	if d.Accepted == nil {
		return a.idle(ctx, d.Removed)
	}
	cfg := d.Accepted
	if !a.ensureData(cfg) {
		return nil // the watches' first listing asks for a sync
	}
	start := time.Now()
	batch := a.tracker.Take()
	st, failed, err := a.desired(ctx, cfg, batch)
	built := time.Now()
	var res dataplane.Result
	if err == nil {
		a.loop.plane.Tune(fmt.Sprintf("%s/%d", cfg.Name, cfg.Generation), cfg.Spec.Conntrack)
		res, err = a.loop.plane.Sync(ctx, st, full || !cfg.Same(a.loop.applied))
	}
	if err != nil {
		a.tracker.Requeue(batch, start)
		if res.Backend != "" {
			a.opts.Metrics.SyncFailures.WithLabelValues(res.Backend).Inc()
		}
		return a.syncFailed(cfg, start, err)
	}
	a.synced(cfg, st, failed, res, batch, timing{start: start, built: built, end: time.Now()})
	return nil
}

// idle handles having no revision to run: the rules stay in the kernel,
// unless the ProxyNode was deleted, when they all go.
func (a *Agent) idle(ctx context.Context, remove bool) error {
	if remove && a.loop.plane.Active() {
		if err := a.removeAll(ctx); err != nil {
			return err
		}
	}
	// Nothing to program: the changes seen so far are not overdue.
	a.tracker.Clear()
	a.opts.Health.Idle(time.Now())
	return nil
}

// ensureData points the watches at the revision's serviceProxyName, and
// adopts its sync periods. It reports whether the watches have listed.
func (a *Agent) ensureData(cfg *revision.Config) bool {
	minP, p := cfg.Periods()
	a.runner.SetPeriods(minP, p, a.opts.Burst)
	a.opts.Health.SetThreshold(max(2*p+minP, time.Minute))
	name := cfg.Spec.ServiceProxyName
	if a.loop.data == nil || a.loop.data.ProxyName != name {
		if a.loop.data != nil {
			a.loop.data.Stop()
		}
		a.tracker.Clear()
		a.loop.builder = &model.Builder{}
		a.loop.data = source.Start(a.opts.Clients, name, a.tracker, func(*source.Data) { a.runner.RequestFull() })
	}
	return a.loop.data.Ready()
}

// desired builds the node's desired state for cfg: the backend is started
// first, because the policies it cannot honour are left out (and listed).
func (a *Agent) desired(ctx context.Context, cfg *revision.Config, batch source.Batch) (*model.State, []v1alpha1.FailedPolicy, error) {
	be, err := a.loop.plane.Ensure(ctx, dataplane.Want{Backend: cfg.Choice.Backend, Spec: cfg.Spec, Caps: a.caps})
	if err != nil {
		return nil, nil, err
	}
	policies, failed := a.policies(be)
	var changed []model.ServiceRef
	if batch.Services != nil {
		changed = batch.Services
	}
	st := a.loop.builder.Build(a.modelGlobals(cfg, policies), a.loop.data, changed)
	return st, failed, nil
}

// policies translates every ProxyPolicy, leaving out (and listing) those
// that are invalid or that the backend cannot honour.
func (a *Agent) policies(be backend.Backend) ([]model.Policy, []v1alpha1.FailedPolicy) {
	var out []model.Policy
	var failed []v1alpha1.FailedPolicy
	for _, p := range a.loop.data.Policies() {
		mp, err := translate.Policy(p, a.loop.data.ServicesIn(p.Namespace))
		if err != nil {
			failed = append(failed, v1alpha1.FailedPolicy{Namespace: p.Namespace, Name: p.Name, Reason: v1alpha1.ReasonInvalid, Message: err.Error()})
			continue
		}
		if err := be.Unsupported(mp); err != nil {
			failed = append(failed, v1alpha1.FailedPolicy{Namespace: p.Namespace, Name: p.Name,
				Reason: v1alpha1.ReasonUnsupportedByBackend, Message: err.Error()})
			continue
		}
		out = append(out, mp)
	}
	sort.Slice(failed, func(i, j int) bool {
		if failed[i].Namespace != failed[j].Namespace {
			return failed[i].Namespace < failed[j].Namespace
		}
		return failed[i].Name < failed[j].Name
	})
	return out, failed
}

type timing struct{ start, built, end time.Time }

// synced records a good sync: metrics, health, node ports, problems,
// status facts, Events and logs.
func (a *Agent) synced(cfg *revision.Config, st *model.State, failed []v1alpha1.FailedPolicy, res dataplane.Result,
	batch source.Batch, t timing) {
	first := a.loop.applied == nil
	newRevision := !cfg.Same(a.loop.applied)
	services, endpoints := res.Services, res.Endpoints
	a.recordMetrics(cfg.Name, st, res, failed, batch, t, first, endpoints)
	a.reportProblems(st.Problems)
	a.updateNodePorts(st)
	a.opts.Health.Synced(t.start, t.end)
	recovered := a.loop.facts.Error != ""
	a.loop.applied = cfg
	ms := int32(min(t.end.Sub(t.start).Milliseconds(), 1<<31-1))
	syncType := v1alpha1.SyncPartial
	if res.Full {
		syncType = v1alpha1.SyncFull
	}
	a.loop.facts = status.SyncFacts{
		Applied: &status.Applied{Revision: cfg.Name, Generation: cfg.Generation, Backend: cfg.Choice.Backend,
			BackendReason: cfg.Choice.Reason},
		LastSync:       &v1alpha1.SyncStatus{Time: &metav1.Time{Time: t.end}, DurationMilliseconds: &ms, Type: syncType},
		Counts:         v1alpha1.RuleCounts{Services: int32(services), Endpoints: int32(endpoints), Rules: int32(res.Owned)},
		FailedPolicies: failed,
	}
	a.writer.SetSync(a.loop.facts)
	if recovered {
		a.event(corev1.EventTypeNormal, v1alpha1.ReasonSynced, "Rules in sync again")
	}
	if newRevision {
		klog.InfoS("Config revision applied", "revision", cfg.Name, "backend", res.Backend, "services", services,
			"duration", t.end.Sub(t.start))
		a.event(corev1.EventTypeNormal, v1alpha1.ReasonRevisionApplied, fmt.Sprintf("Revision %s is in the kernel (%s)", cfg.Name, res.Backend))
	}
	a.logSync(res, services, endpoints, len(batch.Services), t)
}

// recordMetrics updates the sync metrics. The first sync of a run takes in
// the initial listing, whose objects are not changes: only later changes
// count as network programming latency.
func (a *Agent) recordMetrics(revisionName string, st *model.State, res dataplane.Result, failed []v1alpha1.FailedPolicy, batch source.Batch,
	t timing, first bool, endpoints int) {
	m := a.opts.Metrics
	typ := "partial"
	if res.Full {
		typ = "full"
		m.SyncFull.Inc()
	} else {
		m.SyncPartial.Inc()
	}
	m.SyncDuration.WithLabelValues(typ).Observe(t.end.Sub(t.start).Seconds())
	m.LastSync.Set(float64(t.end.UnixNano()) / 1e9)
	if !first {
		for _, at := range batch.Slices {
			m.NetworkProgramming.Observe(t.end.Sub(at).Seconds())
		}
	}
	m.Services.Set(float64(len(st.Services)))
	m.Endpoints.Set(float64(endpoints))
	m.Rules.Set(float64(res.Rules))
	m.Owned.Set(float64(res.Owned))
	m.Problems.Set(float64(len(st.Problems)))
	m.FailedPolicies.Set(float64(len(failed)))
	m.Backend.Reset()
	m.Backend.WithLabelValues(res.Backend, revisionName).Set(1)
}

func (a *Agent) logSync(res dataplane.Result, services, endpoints, changed int, t timing) {
	if res.Full {
		klog.InfoS("Full sync done", "services", services, "endpoints", endpoints, "changed", res.Changed,
			"rulesWritten", res.Rules, "build", t.built.Sub(t.start), "backend", t.end.Sub(t.built),
			"sinceStart", t.end.Sub(a.loop.started))
		return
	}
	klog.V(2).InfoS("Synced", "services", services, "servicesRebuilt", changed, "changed", res.Changed,
		"rulesWritten", res.Rules, "build", t.built.Sub(t.start), "duration", t.end.Sub(t.start))
}

// syncFailed reports a failed sync: the rules in the kernel stay as they
// were, and the runner retries with backoff.
func (a *Agent) syncFailed(cfg *revision.Config, start time.Time, err error) error {
	now := time.Now()
	ms := int32(min(now.Sub(start).Milliseconds(), 1<<31-1))
	first := a.loop.facts.Error == ""
	a.loop.facts.Error = err.Error()
	a.loop.facts.LastSync = &v1alpha1.SyncStatus{Time: &metav1.Time{Time: now}, DurationMilliseconds: &ms,
		Type: v1alpha1.SyncFull, Error: err.Error()}
	a.writer.SetSync(a.loop.facts)
	klog.ErrorS(err, "Sync failed; the rules in the kernel are left as they were", "revision", cfg.Name)
	if first {
		a.event(corev1.EventTypeWarning, v1alpha1.ReasonSyncFailed, err.Error())
	}
	return err
}

// removeAll removes our rules after our ProxyNode was deleted.
func (a *Agent) removeAll(ctx context.Context) error {
	if err := a.loop.plane.RemoveAll(ctx); err != nil {
		klog.ErrorS(err, "Failed to remove the rules after the ProxyNode was deleted")
		return err
	}
	a.hc.Close()
	a.loop.applied = nil
	a.loop.facts = status.SyncFacts{}
	if a.loop.data != nil {
		a.loop.data.Stop()
		a.loop.data = nil
	}
	msg := "ProxyNode " + a.opts.NodeName + " was deleted (its GatewayConfig no longer selects this node): removed every rule of the agent; idle until a ProxyNode is assigned again"
	klog.InfoS("Removed all rules: ProxyNode deleted", "proxyNode", a.opts.NodeName)
	if n := a.cachedNode(); n != nil {
		ref := &corev1.ObjectReference{Kind: "Node", Name: n.Name, UID: n.UID, APIVersion: "v1"}
		a.opts.Recorder.Event(ref, corev1.EventTypeNormal, v1alpha1.ReasonRulesRemoved, msg)
	}
	return nil
}

// updateNodePorts opens the HealthCheckNodePorts of the Services with
// externalTrafficPolicy Local and says how many local endpoints each has.
func (a *Agent) updateNodePorts(st *model.State) {
	want := map[int32]health.NodePortService{}
	local := map[int32]map[string]bool{}
	for _, s := range st.Services {
		if s.HealthCheckNodePort <= 0 || !s.ExternalLocal {
			continue
		}
		p := s.HealthCheckNodePort
		if local[p] == nil {
			local[p] = map[string]bool{}
		}
		for _, e := range s.ExternalEndpoints {
			if e.Local && e.Ready {
				local[p][e.Addr.String()] = true
			}
		}
		want[p] = health.NodePortService{Service: health.ServiceRef{Namespace: s.Namespace, Name: s.Name}, LocalEndpoints: len(local[p])}
	}
	if err := a.hc.Update(want); err != nil {
		klog.ErrorS(err, "Failed to open some health check node ports")
	}
	a.opts.Metrics.HealthCheckNodePorts.Set(float64(a.hc.Ports()))
}

// reportProblems logs the input the model skipped and posts an Event when
// the set changed.
func (a *Agent) reportProblems(ps []model.Problem) {
	var b strings.Builder
	for i, p := range ps {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(ps)-5)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	digest := fmt.Sprintf("%d:%s", len(ps), b.String())
	changed := digest != a.loop.problems
	a.loop.problems = digest
	if !changed || len(ps) == 0 {
		return
	}
	for _, p := range ps {
		klog.InfoS("Skipped invalid input", "object", p.Object, "problem", p.Message)
	}
	a.event(corev1.EventTypeWarning, v1alpha1.ReasonInvalidInput, fmt.Sprintf("Skipped %d invalid pieces of input: %s", len(ps), b.String()))
}
