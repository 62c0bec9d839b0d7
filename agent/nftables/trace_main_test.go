package nftables_test

import (
	"context"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
	"github.com/synterix/synterix-kube-proxy/agent/trace/tracetest"
)

// TestMain checks the packet tracer against every request the kernel
// tests of this package send (package trace/tracetest): before each
// request, the nftables tables the "node" namespace holds are read back
// and the packet is traced over them; the trace must allow what the
// packet then really did, or the test that sent it fails.
func TestMain(m *testing.M) {
	tracetest.Main(m, func(ctx context.Context, fam model.Family) (trace.Tracer, error) {
		return kernel.NFTables(ctx, fam)
	})
}
