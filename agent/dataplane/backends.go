package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/agent/ipvs"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Factory builds the backend of a choice; it runs in the node's network
// namespace.
type Factory func(ctx context.Context, choice v1alpha1.Backend, spec *v1alpha1.GatewayConfigSpec, caps probe.Capabilities,
	family model.Family) (backend.Backend, error)

// DefaultNewBackend builds the real iptables, IPVS or nftables backend of
// one IP family.
func DefaultNewBackend(ctx context.Context, choice v1alpha1.Backend, spec *v1alpha1.GatewayConfigSpec, caps probe.Capabilities,
	family model.Family) (backend.Backend, error) {
	switch choice {
	case v1alpha1.BackendIPTables:
		o := iptables.Options{Mode: caps.IPTablesMode, Family: family}
		if spec.IPTables != nil && spec.IPTables.MasqueradeBit != nil {
			o.MasqueradeBit = int(*spec.IPTables.MasqueradeBit)
		}
		return iptables.New(ctx, o)
	case v1alpha1.BackendIPVS:
		cfg := ipvsConfig(spec.IPVS)
		cfg.IPTablesMode, cfg.Family = caps.IPTablesMode, family
		return ipvs.New(cfg)
	case v1alpha1.BackendNFTables:
		o := nftablesOptions(spec)
		o.Family = family
		return nftables.New(o)
	}
	return nil, fmt.Errorf("unknown backend %q", choice)
}

// backendKey identifies the backend instance a revision needs: a change of
// key builds a new instance.
func backendKey(w Want) string {
	key := string(w.Family) + "/" + string(w.Backend)
	s := w.Spec
	if s == nil {
		return key
	}
	if s.IPTables != nil && s.IPTables.MasqueradeBit != nil {
		key += fmt.Sprintf("/masq=%d", *s.IPTables.MasqueradeBit)
	}
	if w.Backend == v1alpha1.BackendIPVS && s.IPVS != nil {
		cfg := ipvsConfig(s.IPVS)
		key += fmt.Sprintf("/sched=%s/strictARP=%t/timeouts=%s,%s,%s/exclude=%v", cfg.Scheduler, cfg.StrictARP,
			cfg.TCPTimeout, cfg.TCPFinTimeout, cfg.UDPTimeout, cfg.ExcludeCIDRs)
	}
	return key
}

// ipvsConfig is the IPVS backend configuration of a revision. CIDRs that do
// not parse are left out (the API validates them).
func ipvsConfig(v *v1alpha1.IPVSConfig) ipvs.Config {
	cfg := ipvs.Config{Family: model.IPv4}
	if v == nil {
		return cfg
	}
	cfg.Scheduler = string(v.Scheduler)
	cfg.StrictARP = v.StrictARP != nil && *v.StrictARP
	dur := func(d *metav1.Duration) time.Duration {
		if d == nil || d.Duration < 0 {
			return 0
		}
		return d.Duration
	}
	cfg.TCPTimeout, cfg.TCPFinTimeout, cfg.UDPTimeout = dur(v.TCPTimeout), dur(v.TCPFinTimeout), dur(v.UDPTimeout)
	for _, c := range v.ExcludeCIDRs {
		if p, err := netip.ParsePrefix(string(c)); err == nil {
			cfg.ExcludeCIDRs = append(cfg.ExcludeCIDRs, p.Masked())
		}
	}
	return cfg
}

// nftablesOptions are the nftables backend's options of a revision: the
// masquerade bit of spec.iptables, which names the packet mark bit of
// every backend's rules.
func nftablesOptions(spec *v1alpha1.GatewayConfigSpec) nftables.Options {
	o := nftables.Options{Family: model.IPv4}
	if spec.IPTables != nil && spec.IPTables.MasqueradeBit != nil {
		o.MasqueradeBit = int(*spec.IPTables.MasqueradeBit)
	}
	return o
}

// CleanupAll removes the rules of every backend the node can run. It is
// what "agent --cleanup" does.
func CleanupAll(ctx context.Context, caps probe.Capabilities) error {
	var errs []error
	if caps.IPTablesMode != "" {
		for _, fam := range []model.Family{model.IPv4, model.IPv6} {
			be, err := iptables.New(ctx, iptables.Options{Mode: caps.IPTablesMode, Family: fam})
			if err == nil {
				err = be.Cleanup(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("iptables %s: %w", fam, err))
			}
		}
	}
	if caps.IPVS {
		for _, fam := range []model.Family{model.IPv4, model.IPv6} {
			be, err := ipvs.New(ipvs.Config{IPTablesMode: caps.IPTablesMode, Family: fam})
			if err == nil {
				err = be.Cleanup(ctx)
				be.Close()
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("ipvs %s: %w", fam, err))
			}
		}
	}
	if caps.NFTables {
		for _, fam := range []model.Family{model.IPv4, model.IPv6} {
			be, err := nftables.New(nftables.Options{Family: fam})
			if err == nil {
				err = be.Cleanup(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("nftables %s: %w", fam, err))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("cleanup: %v", errs)
}
