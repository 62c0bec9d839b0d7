package probe

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestChoose(t *testing.T) {
	withIPVS := Capabilities{IPVS: true, IPTablesMode: xtables.ModeNFT, NFTables: true}
	noIPVS := Capabilities{IPVSMissing: "IPVS is not available in this kernel: /proc/net/ip_vs missing", IPTablesMode: xtables.ModeLegacy}
	nothing := Capabilities{IPVSMissing: "no ipvs", IPTablesMissing: "no iptables-save on PATH"}
	for _, tc := range []struct {
		mode    v1alpha1.BackendMode
		caps    Capabilities
		want    v1alpha1.Backend
		errWant string
	}{
		{v1alpha1.BackendModeAuto, withIPVS, v1alpha1.BackendIPVS, ""},
		{"", withIPVS, v1alpha1.BackendIPVS, ""},
		{v1alpha1.BackendModeAuto, noIPVS, v1alpha1.BackendIPTables, ""},
		{v1alpha1.BackendModeIPTables, withIPVS, v1alpha1.BackendIPTables, ""},
		{v1alpha1.BackendModeIPVS, withIPVS, v1alpha1.BackendIPVS, ""},
		{v1alpha1.BackendModeIPVS, noIPVS, "", "/proc/net/ip_vs missing"},
		{v1alpha1.BackendModeIPTables, nothing, "", "no iptables-save"},
		{v1alpha1.BackendModeAuto, nothing, "", "no iptables-save"},
		{"Bogus", withIPVS, "", "unknown backend mode"},
		{v1alpha1.BackendModeNFTables, withIPVS, v1alpha1.BackendNFTables, ""},
		{v1alpha1.BackendModeNFTables, Capabilities{NFTables: true}, v1alpha1.BackendNFTables, ""}, // needs no iptables
		{v1alpha1.BackendModeNFTables, noIPVS, "", "no nf_tables"},
		// Auto keeps its meaning whatever the kernel can do.
		{v1alpha1.BackendModeAuto, Capabilities{NFTables: true, IPTablesMode: xtables.ModeNFT, IPVSMissing: "none"}, v1alpha1.BackendIPTables, ""},
	} {
		c, err := Choose(tc.mode, tc.caps)
		if tc.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errWant) {
				t.Errorf("%s: err %v, want one containing %q", tc.mode, err, tc.errWant)
			}
			continue
		}
		if err != nil || c.Backend != tc.want || c.Reason == "" {
			t.Errorf("%s: got %+v %v, want %s with a reason", tc.mode, c, err, tc.want)
		}
	}
}

func TestProbeAndStatus(t *testing.T) {
	p := Prober{
		IPVS:     func() error { return errors.New("no IPVS here") },
		NFTables: func() error { return nil },
		IPTables: func(context.Context) (xtables.Mode, error) { return xtables.ModeNFT, nil },
		Uname:    func() string { return "6.1.0" },
	}
	c := p.Probe(context.Background())
	if c.IPVS || !c.NFTables || c.IPTablesMode != xtables.ModeNFT || c.KernelVersion != "6.1.0" {
		t.Fatalf("caps %+v", c)
	}
	s := c.Status()
	if s.IPTablesMode != v1alpha1.IPTablesModeNFT || !strings.Contains(s.Missing, "no IPVS here") {
		t.Errorf("status %+v", s)
	}
}

// The real probe runs on this machine; it must not fail whatever the kernel.
func TestDefaultProbe(t *testing.T) {
	c := Default.Probe(context.Background())
	t.Logf("this machine: %+v", c)
	if c.KernelVersion == "" {
		t.Error("no kernel version")
	}
}
