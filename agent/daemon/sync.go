package daemon

import (
	"context"
	"errors"
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
	data    *source.Data
	fams    []*familyLoop
	// applied is the revision in the kernel of every family the node has.
	applied *revision.Config
	facts   status.SyncFacts
	// problems is a digest of the last reported invalid input.
	problems string
}

// pass is one run of the sync loop over the node's families.
type pass struct {
	cfg      *revision.Config
	batch    source.Batch
	full     bool
	single   bool // the node programs one family only
	timing   timing
	policies []model.Policy
	failed   []v1alpha1.FailedPolicy
	polDone  bool
	errs     []error
	backend  string
	res      map[model.Family]dataplane.Result
}

// sync is the agent's sync loop, run by the bounded-frequency runner on one
// goroutine. It brings the kernel to the desired state of the accepted
// revision, family by family, taking in only what changed since the last
// sync, or removes every rule once the node is no longer selected; then it
// reports.
func (a *Agent) sync(ctx context.Context, full bool) error {
	d := a.accept.Decision()
	if d.Accepted == nil {
		return a.idle(ctx, d.Removed)
	}
	cfg := d.Accepted
	if !a.ensureData(cfg) {
		return nil // the watches' first listing asks for a sync
	}
	p := &pass{cfg: cfg, batch: a.tracker.Take(), full: full || !cfg.Same(a.loop.applied),
		timing: timing{start: time.Now()}, res: map[model.Family]dataplane.Result{}}
	ctx, span := a.startSync(ctx, cfg, p.full)
	var serr error
	defer func() { endSpan(span, serr) }()
	present, why := nodeFamilies(a.cachedNode())
	p.single = len(present) == 1
	for _, fl := range a.familyLoops() {
		if !present[fl.family] {
			a.retireFamily(ctx, fl, why[fl.family])
			continue
		}
		a.syncFamily(ctx, fl, p)
	}
	p.timing.end = time.Now()
	if serr = errors.Join(p.errs...); serr != nil {
		a.tracker.Requeue(p.batch, p.timing.start)
		return a.syncFailed(cfg, p.timing.start, serr)
	}
	a.synced(p)
	return nil
}

// syncFamily builds one family's desired state and programs it; a failure
// is recorded in the pass and in the family's status, and leaves the other
// family alone.
func (a *Agent) syncFamily(ctx context.Context, fl *familyLoop, p *pass) {
	start := time.Now()
	ctx, span := a.startFamily(ctx, fl)
	st, res, err := a.programFamily(ctx, fl, p)
	familyDone(span, res, err)
	now := time.Now()
	ms := int32(min(now.Sub(start).Milliseconds(), 1<<31-1))
	ls := &v1alpha1.SyncStatus{Time: &metav1.Time{Time: now}, DurationMilliseconds: &ms, Type: v1alpha1.SyncPartial}
	if res.Full {
		ls.Type = v1alpha1.SyncFull
	}
	fl.status = v1alpha1.FamilyStatus{Family: fl.status.Family, Programmed: true, Counts: fl.status.Counts, LastSync: ls}
	if err != nil {
		err = fmt.Errorf("%s: %w", fl.family, err)
		ls.Type, ls.Error = v1alpha1.SyncFull, err.Error()
		p.errs = append(p.errs, err)
		if res.Backend != "" {
			a.opts.Metrics.SyncFailures.WithLabelValues(res.Backend, string(fl.family)).Inc()
		}
		return
	}
	fl.state = st
	fl.status.Counts = v1alpha1.RuleCounts{Services: int32(res.Services), Endpoints: int32(res.Endpoints), Rules: int32(res.Owned)}
	p.res[fl.family], p.backend = res, res.Backend
	a.recordFamilyMetrics(fl.family, res, now.Sub(start))
}

// programFamily starts the family's backend (the policies it cannot honour
// are left out, and listed), builds the family's state from the changed
// Services and programs it.
func (a *Agent) programFamily(ctx context.Context, fl *familyLoop, p *pass) (*model.State, dataplane.Result, error) {
	be, err := fl.plane.Ensure(ctx, dataplane.Want{Family: fl.family, Backend: p.cfg.Choice.Backend, Spec: p.cfg.Spec, Caps: a.caps})
	if err != nil {
		return nil, dataplane.Result{}, err
	}
	if !p.polDone {
		p.policies, p.failed = a.policies(be)
		p.polDone = true
		// Conntrack tuning is node-wide: once, with the first family.
		fl.plane.Tune(fmt.Sprintf("%s/%d", p.cfg.Name, p.cfg.Generation), p.cfg.Spec.Conntrack)
	}
	var changed []model.ServiceRef
	if p.batch.Services != nil {
		changed = p.batch.Services
	}
	st := a.build(ctx, fl, a.modelGlobals(p.cfg, fl.family, p.single, p.policies), a.loop.data, changed)
	res, err := fl.plane.Sync(ctx, st, p.full || fl.state == nil)
	return st, res, err
}

// retireFamily removes the rules of a family the node no longer has, and
// says why it is not programmed.
func (a *Agent) retireFamily(ctx context.Context, fl *familyLoop, why string) {
	if fl.plane.Active() {
		if err := fl.plane.RemoveAll(ctx); err != nil {
			klog.ErrorS(err, "Failed to remove the rules of a family the node no longer has", "family", fl.family)
			why += "; removing its old rules failed: " + err.Error()
		}
	}
	fl.state, fl.builder = nil, &model.Builder{}
	fl.status = v1alpha1.FamilyStatus{Family: fl.status.Family, Message: why}
}

// idle handles having no revision to run: the rules stay in the kernel,
// unless the ProxyNode was deleted, when they all go.
func (a *Agent) idle(ctx context.Context, remove bool) error {
	if remove && a.active() {
		if err := a.removeAll(ctx); err != nil {
			return err
		}
	}
	// Nothing to program: the changes seen so far are not overdue.
	a.tracker.Clear()
	a.opts.Health.Idle(time.Now())
	return nil
}

// active reports whether any family may have rules in the kernel.
func (a *Agent) active() bool {
	for _, fl := range a.loop.fams {
		if fl.plane.Active() {
			return true
		}
	}
	return false
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
		for _, fl := range a.familyLoops() {
			fl.builder = &model.Builder{}
		}
		a.loop.data = source.Start(a.opts.Clients, name, a.tracker, func(*source.Data) { a.runner.RequestFullNow() })
	}
	return a.loop.data.Ready()
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

type timing struct{ start, end time.Time }

// synced records a good pass: metrics, health, node ports, problems, status
// facts, Events and logs.
func (a *Agent) synced(p *pass) {
	cfg := p.cfg
	first, newRevision := a.loop.applied == nil, !cfg.Same(a.loop.applied)
	var counts v1alpha1.RuleCounts
	var states []*model.State
	var fams []v1alpha1.FamilyStatus
	for _, fl := range a.loop.fams {
		counts.Services += fl.status.Counts.Services
		counts.Endpoints += fl.status.Counts.Endpoints
		counts.Rules += fl.status.Counts.Rules
		fams = append(fams, fl.status)
		if fl.state != nil {
			states = append(states, fl.state)
		}
	}
	a.recordMetrics(cfg.Name, p, states, first)
	a.reportProblems(states)
	a.updateNodePorts(states)
	a.opts.Health.Synced(p.timing.start, p.timing.end)
	recovered := a.loop.facts.Error != ""
	a.loop.applied = cfg
	a.loop.facts = status.SyncFacts{
		Applied: &status.Applied{Revision: cfg.Name, Generation: cfg.Generation, Backend: cfg.Choice.Backend,
			BackendReason: cfg.Choice.Reason},
		LastSync:       a.lastSync(p),
		Counts:         counts,
		Families:       fams,
		FailedPolicies: p.failed,
	}
	a.writer.SetSync(a.loop.facts)
	a.publish()
	if recovered {
		a.event(corev1.EventTypeNormal, v1alpha1.ReasonSynced, "Rules in sync again")
	}
	if newRevision {
		klog.InfoS("Config revision applied", "revision", cfg.Name, "backend", p.backend, "services", counts.Services,
			"duration", p.timing.end.Sub(p.timing.start))
		a.event(corev1.EventTypeNormal, v1alpha1.ReasonRevisionApplied, fmt.Sprintf("Revision %s is in the kernel (%s)", cfg.Name, p.backend))
	}
	a.logSync(p, counts)
}

// lastSync is the pass's sync status: full when any family's was.
func (a *Agent) lastSync(p *pass) *v1alpha1.SyncStatus {
	ms := int32(min(p.timing.end.Sub(p.timing.start).Milliseconds(), 1<<31-1))
	ls := &v1alpha1.SyncStatus{Time: &metav1.Time{Time: p.timing.end}, DurationMilliseconds: &ms, Type: v1alpha1.SyncPartial}
	for _, r := range p.res {
		if r.Full {
			ls.Type = v1alpha1.SyncFull
		}
	}
	return ls
}

// recordFamilyMetrics updates one family's sync metrics.
func (a *Agent) recordFamilyMetrics(fam model.Family, res dataplane.Result, took time.Duration) {
	m, f := a.opts.Metrics, string(fam)
	typ := "partial"
	if res.Full {
		typ = "full"
		m.SyncFull.WithLabelValues(f).Inc()
	} else {
		m.SyncPartial.WithLabelValues(f).Inc()
	}
	m.SyncDuration.WithLabelValues(typ, f).Observe(took.Seconds())
	m.Services.WithLabelValues(f).Set(float64(res.Services))
	m.Endpoints.WithLabelValues(f).Set(float64(res.Endpoints))
	m.Rules.WithLabelValues(f).Set(float64(res.Rules))
	m.Owned.WithLabelValues(f).Set(float64(res.Owned))
	m.ConntrackDeleted.WithLabelValues(f).Add(float64(res.ConntrackDeleted))
}

// recordMetrics updates the node-wide metrics of a good pass. The first
// sync of a run takes in the initial listing, whose objects are not
// changes: only later changes count as network programming latency.
func (a *Agent) recordMetrics(revisionName string, p *pass, states []*model.State, first bool) {
	m := a.opts.Metrics
	m.LastSync.Set(float64(p.timing.end.UnixNano()) / 1e9)
	if !first {
		for _, at := range p.batch.Slices {
			m.NetworkProgramming.Observe(p.timing.end.Sub(at).Seconds())
		}
	}
	problems := 0
	for _, st := range states {
		problems += len(st.Problems)
	}
	m.Problems.Set(float64(problems))
	m.FailedPolicies.Set(float64(len(p.failed)))
	m.Backend.Reset()
	m.Backend.WithLabelValues(p.backend, revisionName).Set(1)
}

func (a *Agent) logSync(p *pass, counts v1alpha1.RuleCounts) {
	full, changed, written := false, 0, 0
	for _, r := range p.res {
		full = full || r.Full
		changed += r.Changed
		written += r.Rules
	}
	took := p.timing.end.Sub(p.timing.start)
	if full {
		klog.InfoS("Full sync done", "services", counts.Services, "endpoints", counts.Endpoints, "changed", changed,
			"rulesWritten", written, "duration", took, "sinceStart", p.timing.end.Sub(a.loop.started))
		return
	}
	klog.V(2).InfoS("Synced", "services", counts.Services, "servicesRebuilt", len(p.batch.Services), "changed", changed,
		"rulesWritten", written, "duration", took)
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
	a.loop.facts.Families = nil
	for _, fl := range a.loop.fams {
		a.loop.facts.Families = append(a.loop.facts.Families, fl.status)
	}
	a.writer.SetSync(a.loop.facts)
	a.publish()
	klog.ErrorS(err, "Sync failed; the rules in the kernel are left as they were", "revision", cfg.Name)
	if first {
		a.event(corev1.EventTypeWarning, v1alpha1.ReasonSyncFailed, err.Error())
	}
	return err
}

// removeAll removes our rules after our ProxyNode was deleted.
func (a *Agent) removeAll(ctx context.Context) error {
	var errs []error
	for _, fl := range a.loop.fams {
		if err := fl.plane.RemoveAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fl.family, err))
		}
		fl.state, fl.builder = nil, &model.Builder{}
		fl.status = v1alpha1.FamilyStatus{Family: fl.status.Family}
	}
	if err := errors.Join(errs...); err != nil {
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
	a.publish()
	msg := "ProxyNode " + a.opts.NodeName + " was deleted (its GatewayConfig no longer selects this node): removed every rule of the agent; idle until a ProxyNode is assigned again"
	klog.InfoS("Removed all rules: ProxyNode deleted", "proxyNode", a.opts.NodeName)
	if n := a.cachedNode(); n != nil {
		ref := &corev1.ObjectReference{Kind: "Node", Name: n.Name, UID: n.UID, APIVersion: "v1"}
		a.opts.Recorder.Event(ref, corev1.EventTypeNormal, v1alpha1.ReasonRulesRemoved, msg)
	}
	return nil
}

// updateNodePorts opens the HealthCheckNodePorts of the Services with
// externalTrafficPolicy Local and says how many local endpoints each has,
// over every family.
func (a *Agent) updateNodePorts(states []*model.State) {
	want := map[int32]health.NodePortService{}
	local := map[int32]map[string]bool{}
	for _, s := range allServices(states) {
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

// allServices lists the service ports of every family.
func allServices(states []*model.State) []*model.Service {
	var out []*model.Service
	for _, st := range states {
		out = append(out, st.Services...)
	}
	return out
}

// reportProblems logs the input the model skipped, in any family, and posts
// an Event when the set changed.
func (a *Agent) reportProblems(states []*model.State) {
	var ps []model.Problem
	seen := map[model.Problem]bool{}
	for _, st := range states {
		for _, p := range st.Problems {
			if !seen[p] {
				seen[p] = true
				ps = append(ps, p)
			}
		}
	}
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
