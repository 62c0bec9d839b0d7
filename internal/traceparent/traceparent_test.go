package traceparent

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestRoundTrip: a span's traceparent, carried as a string, gives a
// context whose next span is its child in the same trace.
func TestRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, parent := tp.Tracer("t").Start(context.Background(), "batch")
	s := Of(ctx)
	if len(s) != 55 || s[:3] != "00-" {
		t.Fatalf("traceparent %q", s)
	}
	_, child := tp.Tracer("t").Start(Into(context.Background(), s), "sync")
	if child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Error("the child is in another trace")
	}
	if ro, ok := child.(sdktrace.ReadOnlySpan); !ok || ro.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("the child's parent is not the span of the traceparent")
	}
	if Of(context.Background()) != "" || SpanContext("garbage").IsValid() || Into(context.Background(), "") != context.Background() {
		t.Error("no span, or a malformed traceparent, must give nothing")
	}
}
