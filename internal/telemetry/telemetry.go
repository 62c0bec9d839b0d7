// Package telemetry sets up OpenTelemetry tracing for the operator and the
// agent from the standard OTEL_* environment variables: traces are
// exported over OTLP (gRPC) when the environment asks for them, and tracing
// is off, at no cost, when it does not. Only the programs (cmd/manager,
// cmd/agent) and the tests that run them in-process call it; the packages
// that trace (controllers, agent/daemon) take a trace.TracerProvider and
// never read the environment.
// Trace context crosses the API in an annotation (internal/traceparent).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options name the program in the traces it exports.
type Options struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME overrides it.
	ServiceName    string
	ServiceVersion string
	// Attributes are more resource attributes, e.g. the node's name;
	// OTEL_RESOURCE_ATTRIBUTES adds to them.
	Attributes map[string]string
}

// Enabled reports whether the environment asks for traces: some OTEL_
// variable is set, the SDK is not disabled and the traces exporter is not
// "none".
func Enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") {
			return true
		}
	}
	return false
}

// Setup returns the TracerProvider the environment asks for, and the
// function that flushes and stops it. When tracing is off it returns a
// no-op provider. The exporter reads its settings (endpoint, headers,
// TLS, timeout) from the OTEL_EXPORTER_OTLP_* variables; the sampler from
// OTEL_TRACES_SAMPLER (default: parent-based, always on).
func Setup(ctx context.Context, o Options) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled() {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	if e := os.Getenv("OTEL_TRACES_EXPORTER"); e != "" && e != "otlp" {
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: only otlp (or none) is supported", e)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(k); p != "" && p != "grpc" {
			return nil, nil, fmt.Errorf("%s=%s: only grpc is supported", k, p)
		}
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := Resource(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// Resource describes the program: service.name and version, the given
// attributes, then what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say.
func Resource(ctx context.Context, o Options) (*resource.Resource, error) {
	kv := []attribute.KeyValue{semconv.ServiceName(o.ServiceName)}
	if o.ServiceVersion != "" {
		kv = append(kv, semconv.ServiceVersion(o.ServiceVersion))
	}
	for k, v := range o.Attributes {
		kv = append(kv, attribute.String(k, v))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(kv...), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return res, nil
}
