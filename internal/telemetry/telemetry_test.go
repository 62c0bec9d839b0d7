package telemetry

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/test/otlp"
)

// clearOTEL unsets every OTEL_ variable for the test, and puts them back.
func clearOTEL(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, v) // restores at the end
			os.Unsetenv(k)
		}
	}
}

// TestOffWithoutEnvironment: no OTEL_ variable, no tracing, no exporter.
func TestOffWithoutEnvironment(t *testing.T) {
	clearOTEL(t)
	if Enabled() {
		t.Fatal("tracing on without any OTEL_ variable")
	}
	tp, stop, err := Setup(context.Background(), Options{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "s")
	if span.SpanContext().IsValid() {
		t.Error("a span of the disabled provider has a valid context")
	}
	span.End()
	if err := stop(context.Background()); err != nil {
		t.Error(err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if Enabled() {
		t.Error("tracing on with OTEL_TRACES_EXPORTER=none")
	}
}

// TestExportsWhereTheEnvironmentSays: with OTEL_EXPORTER_OTLP_ENDPOINT
// pointing at a real OTLP receiver, a span arrives there with the
// program's resource and OTEL_RESOURCE_ATTRIBUTES.
func TestExportsWhereTheEnvironmentSays(t *testing.T) {
	clearOTEL(t)
	rcv := otlp.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	tp, stop, err := Setup(context.Background(), Options{ServiceName: "synterix-agent", ServiceVersion: "v1",
		Attributes: map[string]string{"k8s.node.name": "node-a"}})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "sync")
	span.End()
	if err := stop(context.Background()); err != nil {
		t.Fatalf("flush to the receiver: %v", err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 {
		t.Fatalf("received %d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Name != "sync" || s.Service != "synterix-agent" || s.Resource["k8s.node.name"] != "node-a" ||
		s.Resource["service.version"] != "v1" || s.Resource["deployment.environment"] != "test" {
		t.Errorf("span %+v", s)
	}
}

// TestUnsupportedSettings are refused with a clear error.
func TestUnsupportedSettings(t *testing.T) {
	for k, v := range map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"} {
		t.Run(k, func(t *testing.T) {
			clearOTEL(t)
			t.Setenv(k, v)
			if _, _, err := Setup(context.Background(), Options{ServiceName: "x"}); err == nil || !strings.Contains(err.Error(), v) {
				t.Errorf("%s=%s: %v", k, v, err)
			}
		})
	}
}
