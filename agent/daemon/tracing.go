package daemon

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/agent/dataplane"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/revision"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/internal/traceparent"
)

// tracerName names the agent's tracer (the instrumentation scope).
const tracerName = "github.com/synterix/synterix-kube-proxy/agent/daemon"

// Span names of a sync. Each sync is one span; each IP family a child,
// with the model build, the backend's apply and the conntrack cleanup as
// its children, and the counts as attributes.
const (
	spanSync      = "sync"
	spanFamily    = "sync family"
	spanBuild     = "model build"
	spanApply     = "backend apply"
	spanConntrack = "conntrack cleanup"
)

// startSync starts the span of a sync. The first sync of a revision
// continues the trace of the operator's rollout batch that assigned it
// (the ProxyNode's traceparent annotation), so that one trace goes from a
// GatewayConfig change to the kernel of every node.
func (a *Agent) startSync(ctx context.Context, cfg *revision.Config, full bool) (context.Context, trace.Span) {
	first := !cfg.Same(a.loop.applied)
	if pn := a.cachedProxyNode(); first && pn != nil && pn.Spec.Revision == cfg.Name {
		ctx = traceparent.Into(ctx, pn.Annotations[v1alpha1.TraceParentAnnotation])
	}
	return a.tracer.Start(ctx, spanSync, trace.WithAttributes(
		attribute.String("synterix.node", a.opts.NodeName),
		attribute.String("synterix.revision", cfg.Name),
		attribute.Bool("synterix.sync.full", full),
		attribute.Bool("synterix.revision.first_sync", first)))
}

// endSpan records a sync's error, if any, and ends its span.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startFamily starts the span of one family's sync; the conntrack cleanup,
// which the data plane runs without a context, finds it in the family.
func (a *Agent) startFamily(ctx context.Context, fl *familyLoop) (context.Context, trace.Span) {
	ctx, span := a.tracer.Start(ctx, spanFamily, trace.WithAttributes(attribute.String("synterix.ip_family", string(fl.family))))
	fl.traceCtx = ctx
	return ctx, span
}

// familyDone sets the family span's counts and ends it.
func familyDone(span trace.Span, res dataplane.Result, err error) {
	span.SetAttributes(
		attribute.String("synterix.backend", res.Backend),
		attribute.Bool("synterix.sync.full", res.Full),
		attribute.Int("synterix.services", res.Services),
		attribute.Int("synterix.endpoints", res.Endpoints),
		attribute.Int("synterix.services.changed", res.Changed),
		attribute.Int("synterix.rules.written", res.Rules),
		attribute.Int("synterix.rules.owned", res.Owned))
	endSpan(span, err)
}

// build runs a model build in its span.
func (a *Agent) build(ctx context.Context, fl *familyLoop, g model.Globals, src model.Source, changed []model.ServiceRef) *model.State {
	_, span := a.tracer.Start(ctx, spanBuild)
	st := fl.builder.Build(g, src, changed)
	services, endpoints := st.Counts()
	rebuilt := len(changed)
	if changed == nil {
		rebuilt = -1 // every Service
	}
	span.SetAttributes(attribute.Int("synterix.services", services), attribute.Int("synterix.endpoints", endpoints),
		attribute.Int("synterix.services.rebuilt", rebuilt), attribute.Int("synterix.problems", len(st.Problems)))
	span.End()
	return st
}

// tracedBackend runs a backend's Sync in its span.
type tracedBackend struct {
	backend.Backend
	tracer trace.Tracer
}

func (b tracedBackend) Sync(ctx context.Context, st *model.State, opts backend.SyncOptions) (backend.SyncResult, error) {
	ctx, span := b.tracer.Start(ctx, spanApply, trace.WithAttributes(attribute.String("synterix.backend", b.Name())))
	res, err := b.Backend.Sync(ctx, st, opts)
	span.SetAttributes(attribute.Bool("synterix.sync.full", res.Full), attribute.Int("synterix.services.changed", res.Changed),
		attribute.Int("synterix.rules.written", res.Rules), attribute.Int("synterix.rules.owned", res.Owned))
	endSpan(span, err)
	return res, err
}

// tracedPlane are the data plane options of a family whose backend syncs
// and conntrack cleanups are traced.
func (a *Agent) tracedPlane(fl *familyLoop) dataplane.Options {
	factory := a.opts.NewBackend
	if factory == nil {
		factory = dataplane.DefaultNewBackend
	}
	return dataplane.Options{
		InNetNS: a.opts.InNetNS, Event: a.event,
		NewBackend: func(ctx context.Context, choice v1alpha1.Backend, spec *v1alpha1.GatewayConfigSpec, caps probe.Capabilities,
			fam model.Family) (backend.Backend, error) {
			be, err := factory(ctx, choice, spec, caps, fam)
			if err != nil {
				return nil, err
			}
			return tracedBackend{Backend: be, tracer: a.tracer}, nil
		},
		Conntrack: func(old, cur *model.State) (uint, error) {
			ctx := fl.traceCtx
			if ctx == nil {
				ctx = context.Background()
			}
			_, span := a.tracer.Start(ctx, spanConntrack)
			n, err := conntrack.Clean(old, cur)
			span.SetAttributes(attribute.Int("synterix.conntrack.deleted", int(n)))
			endSpan(span, err)
			return n, err
		},
	}
}
