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

// startReconcile starts the span of one reconcile.
func (r *GatewayConfigReconciler) startReconcile(ctx context.Context, name string) (context.Context, trace.Span) {
	return r.tracer().Start(ctx, spanReconcile, trace.WithAttributes(attribute.String("synterix.gatewayconfig", name)))
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
// assigns revision rev. Its parent is the reconcile that created the
// revision (the revision's traceparent annotation), so that every batch of
// a revision, in whatever reconcile, joins the trace of the change that
// made it; the reconcile running the batch is linked.
func (r *GatewayConfigReconciler) startBatch(ctx context.Context, obs *observation, rev string, nodes []string) (context.Context, trace.Span) {
	parent := ctx
	var links []trace.Link
	if rv := obs.revs[rev]; rv != nil {
		if tp := rv.Annotations[proxyv1alpha1.TraceParentAnnotation]; tp != "" && traceparent.SpanContext(tp).IsValid() {
			parent = traceparent.Into(ctx, tp)
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
