package vm

import (
	"context"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestBackendChoiceSeesIPVS: the agent's own kernel probe, run inside the VM
// kernel, reports IPVS and Auto mode picks the IPVS backend.
func TestBackendChoiceSeesIPVS(t *testing.T) {
	requireVM(t)
	caps := probe.Default.Probe(context.Background())
	if !caps.IPVS {
		t.Fatalf("probe inside the VM: no IPVS (%s)", caps.IPVSMissing)
	}
	choice, err := probe.Choose(v1alpha1.BackendModeAuto, caps)
	if err != nil {
		t.Fatalf("Choose(Auto): %v", err)
	}
	if choice.Backend != v1alpha1.BackendIPVS {
		t.Fatalf("Choose(Auto) = %+v, want IPVS", choice)
	}
	t.Logf("kernel %s, iptables %s, choice: %+v", caps.KernelVersion, caps.IPTablesMode, choice)
}
