package ipvs

import (
	"os"
	"testing"
)

// TestVMHasIPVS: inside the test VM (SYNX_IN_VM=1) the Debian kernel has
// IPVS, and the backend choice must see it.
func TestVMHasIPVS(t *testing.T) {
	if os.Getenv("SYNX_IN_VM") != "1" {
		t.Skip("SKIPPING real-kernel IPVS test: not inside the test VM (run make test-ipvs-vm)")
	}
	if err := Probe(); err != nil {
		t.Fatalf("inside the VM the kernel must have IPVS: %v", err)
	}
}
