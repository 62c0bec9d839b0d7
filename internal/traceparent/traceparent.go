// Package traceparent carries trace context across the API as a W3C
// traceparent in an annotation (v1alpha1.TraceParentAnnotation): the
// operator stamps a config revision and each ProxyNode it assigns, and the
// agent's first sync of the revision continues that trace. It needs only
// the OpenTelemetry API, not the SDK (internal/telemetry sets that up).
package traceparent

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

var propagator = propagation.TraceContext{}

// Of returns the W3C traceparent of the span in ctx, or "" when there is
// none (tracing off).
func Of(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c.Get("traceparent")
}

// Into returns ctx with the remote span a traceparent names as its
// parent; an empty or malformed value leaves ctx as it is.
func Into(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// SpanContext is the span context a traceparent names (invalid when it
// names none).
func SpanContext(traceparent string) trace.SpanContext {
	return trace.SpanContextFromContext(Into(context.Background(), traceparent))
}
