package dataplane

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestIPVSConfigOfARevision(t *testing.T) {
	v := &v1alpha1.IPVSConfig{Scheduler: "lc", TCPTimeout: &metav1.Duration{Duration: time.Hour},
		UDPTimeout: &metav1.Duration{Duration: 0}, ExcludeCIDRs: []v1alpha1.CIDR{"10.1.2.3/16", "bad"}}
	cfg := ipvsConfig(v)
	if cfg.Scheduler != "lc" || cfg.TCPTimeout != time.Hour || cfg.TCPFinTimeout != 0 || cfg.UDPTimeout != 0 {
		t.Fatalf("ipvs config %+v", cfg)
	}
	if !slices.Equal(cfg.ExcludeCIDRs, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}) {
		t.Fatalf("exclude CIDRs %v", cfg.ExcludeCIDRs)
	}
}

// A change of an IPVS timeout or exclude CIDR builds a new backend.
func TestBackendKeyCoversIPVSFields(t *testing.T) {
	key := func(v *v1alpha1.IPVSConfig) string {
		return backendKey(Want{Backend: v1alpha1.BackendIPVS, Spec: &v1alpha1.GatewayConfigSpec{IPVS: v}})
	}
	base := key(&v1alpha1.IPVSConfig{Scheduler: "rr"})
	for name, v := range map[string]*v1alpha1.IPVSConfig{
		"tcpTimeout":    {Scheduler: "rr", TCPTimeout: &metav1.Duration{Duration: time.Minute}},
		"tcpFinTimeout": {Scheduler: "rr", TCPFinTimeout: &metav1.Duration{Duration: time.Minute}},
		"udpTimeout":    {Scheduler: "rr", UDPTimeout: &metav1.Duration{Duration: time.Minute}},
		"excludeCIDRs":  {Scheduler: "rr", ExcludeCIDRs: []v1alpha1.CIDR{"10.0.0.0/8"}},
	} {
		if key(v) == base {
			t.Errorf("changing %s keeps the backend key %q", name, base)
		}
	}
	if key(&v1alpha1.IPVSConfig{Scheduler: "rr"}) != base {
		t.Error("the same config gives another key")
	}
}

func TestConntrackTuningOfARevision(t *testing.T) {
	var least int32 = 5
	var per int32 = 7
	tu := conntrackTuning(&v1alpha1.ConntrackConfig{MaxPerCore: &per, Min: &least,
		UDPTimeout: &metav1.Duration{Duration: 9 * time.Second}})
	if tu.MaxPerCore != 7 || tu.Min != 5 || tu.UDPTimeout != 9*time.Second || tu.TCPEstablishedTimeout != 0 {
		t.Fatalf("tuning %+v", tu)
	}
	if conntrackTuning(nil) != (conntrack.Tuning{}) {
		t.Fatal("nil config is not the zero tuning")
	}
}
