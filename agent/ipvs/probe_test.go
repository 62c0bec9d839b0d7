package ipvs

import (
	"os"
	"testing"
)

// TestProbeMatchesProc checks that Probe agrees with /proc/net/ip_vs. On a
// host without IPVS both say "absent"; inside the test VM both say
// "present" (and TestVMHasIPVS in the kernel suite insists on it).
func TestProbeMatchesProc(t *testing.T) {
	_, statErr := os.Stat(ProcNetIPVS)
	err := Probe()
	if statErr == nil && err != nil {
		t.Fatalf("%s exists but Probe says: %v", ProcNetIPVS, err)
	}
	t.Logf("Probe: %v", err)
}
