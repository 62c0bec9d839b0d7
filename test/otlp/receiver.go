// Package otlp is a real OTLP trace receiver for tests: the collector's
// gRPC TraceService (go.opentelemetry.io/proto/otlp), served in the test
// process, that keeps every span it is sent, so that a test can check
// spans, their attributes and their parentage as a collector sees them.
package otlp

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// Span is one received span, flattened.
type Span struct {
	TraceID, SpanID, ParentID string
	Name                      string
	// Service is the resource's service.name; Resource holds every
	// resource attribute.
	Service  string
	Resource map[string]string
	Attrs    map[string]string
	// Links are the span IDs the span links to.
	Links []string
	// Error is the status message of a span that ended with an error.
	Error string
}

// Receiver collects the spans exported to it.
type Receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	// Addr is "127.0.0.1:port"; Endpoint the same as an OTLP endpoint URL.
	Addr, Endpoint string
	mu             sync.Mutex
	spans          []Span
}

// Start serves a receiver on a free loopback port until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Addr: l.Addr().String()}
	r.Endpoint = "http://" + r.Addr
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return r
}

// Export implements the collector's TraceService.
func (r *Receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Service: res["service.name"],
					Resource: res, Attrs: attrs(s.GetAttributes())}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, hex.EncodeToString(l.GetSpanId()))
				}
				if s.GetStatus().GetCode() == 2 {
					sp.Error = s.GetStatus().GetMessage()
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetArrayValue() != nil:
			var parts []string
			for _, x := range v.GetArrayValue().GetValues() {
				parts = append(parts, anyString(x))
			}
			out[kv.GetKey()] = strings.Join(parts, ",")
		default:
			out[kv.GetKey()] = anyString(v)
		}
	}
	return out
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Trace returns the spans of one trace.
func (r *Receiver) Trace(traceID string) []Span {
	var out []Span
	for _, s := range r.Spans() {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Tree renders the spans of a trace as a tree: "service: name {attrs}",
// children indented under their parent, siblings by name.
func Tree(spans []Span, attrKeys ...string) string {
	children := map[string][]Span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []Span
	for _, s := range spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
			continue
		}
		children[s.ParentID] = append(children[s.ParentID], s)
	}
	var b strings.Builder
	var walk func(s Span, depth int)
	walk = func(s Span, depth int) {
		fmt.Fprintf(&b, "%s%s: %s", strings.Repeat("  ", depth), s.Service, s.Name)
		var kv []string
		for _, k := range attrKeys {
			if v, ok := s.Attrs[k]; ok {
				kv = append(kv, k+"="+v)
			}
		}
		if len(kv) > 0 {
			fmt.Fprintf(&b, " {%s}", strings.Join(kv, " "))
		}
		b.WriteString("\n")
		cs := children[s.SpanID]
		sort.SliceStable(cs, func(i, j int) bool {
			return cs[i].Service+cs[i].Name+cs[i].Attrs["synterix.node"] < cs[j].Service+cs[j].Name+cs[j].Attrs["synterix.node"]
		})
		for _, c := range cs {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
