package ipvs_test

import (
	"context"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
	"github.com/synterix/synterix-kube-proxy/agent/trace/tracetest"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// TestMain checks the packet tracer against every request the kernel
// tests of this package send (package trace/tracetest; they run in the
// hack/vm VM): before each request, the virtual servers, ipsets and glue
// the "node" namespace holds are read back and the packet is traced over
// them; the trace must allow what the packet then really did.
func TestMain(m *testing.M) {
	tracetest.Main(m, func(ctx context.Context, fam model.Family) (trace.Tracer, error) {
		return kernel.IPVS(ctx, fam, xtables.ModeAuto)
	})
}
