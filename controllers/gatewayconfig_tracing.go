package controllers

import (
	"context"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/internal/traceparent"
)

// tracerName names the operator's tracer (the instrumentation scope).
const tracerName = "github.com/synterix/synterix-kube-proxy/controllers"

// Span names: one span per reconcile of a GatewayConfig, one child per
// phase (observe, plan, apply, status), and one per rollout batch (the
// nodes a step assigns a revision), whose trace the agents continue.
const (
	spanReconcile = "reconcile GatewayConfig"
	spanBatch     = "rollout batch"
)

var noopTracer = noop.NewTracerProvider().Tracer(tracerName)

func (r *GatewayConfigReconciler) tracer() trace.Tracer {
	if r.Tracer == nil {
		return noopTracer
	}
	return r.Tracer
}

// reconcileKey keeps the span of the reconcile in its context, so that a
// revision created in any phase records the reconcile as its origin.
type reconcileKey struct{}

// startReconcile starts the span of one reconcile.
func (r *GatewayConfigReconciler) startReconcile(ctx context.Context, name string) (context.Context, trace.Span) {
	ctx, span := r.tracer().Start(ctx, spanReconcile, trace.WithAttributes(attribute.String("synterix.gatewayconfig", name)))
	return context.WithValue(ctx, reconcileKey{}, span.SpanContext()), span
}

// revisionAnnotation is the traceparent annotation of a new revision: the
// reconcile that creates it; nil when tracing is off.
func revisionAnnotation(ctx context.Context) map[string]string {
	sc, _ := ctx.Value(reconcileKey{}).(trace.SpanContext)
	return traceAnnotation(trace.ContextWithSpanContext(ctx, sc))
}

// startPhase starts the span of one named phase of a reconcile.
func (r *GatewayConfigReconciler) startPhase(ctx context.Context, phase string) (context.Context, trace.Span) {
	return r.tracer().Start(ctx, phase)
}

// endSpan records err, if any, and ends the span.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startBatch starts the span of a rollout batch: the nodes this step
// assigns revision rev. In the reconcile that created the revision it is a
// child of the apply phase; in a later one, its parent is that reconcile
// (the revision's traceparent annotation), so that every batch of a
// revision joins the trace of the change that made it, and the reconcile
// running the batch is linked.
func (r *GatewayConfigReconciler) startBatch(ctx context.Context, obs *observation, rev string, nodes []string) (context.Context, trace.Span) {
	parent := ctx
	var links []trace.Link
	if rv := obs.revs[rev]; rv != nil {
		origin := traceparent.SpanContext(rv.Annotations[proxyv1alpha1.TraceParentAnnotation])
		if origin.IsValid() && origin.TraceID() != trace.SpanContextFromContext(ctx).TraceID() {
			parent = traceparent.Into(ctx, rv.Annotations[proxyv1alpha1.TraceParentAnnotation])
			links = append(links, trace.LinkFromContext(ctx))
		}
	}
	sort.Strings(nodes)
	shown := nodes
	if len(shown) > 20 {
		shown = shown[:20]
	}
	return r.tracer().Start(parent, spanBatch, trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("synterix.gatewayconfig", obs.gcName),
		attribute.String("synterix.revision", rev),
		attribute.Int("synterix.nodes", len(nodes)),
		attribute.StringSlice("synterix.node_names", shown)))
}
