// Package probe finds out what the node's kernel and userspace can run, and
// chooses the backend a config revision asks for. It never falls back
// silently: a mode the node cannot run is an error that says what is
// missing.
package probe

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/ipvs"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Capabilities is what the node can run.
type Capabilities struct {
	IPVS bool
	// IPVSMissing says why IPVS is not available.
	IPVSMissing string
	NFTables    bool
	// NFTablesMissing says why nf_tables is not available.
	NFTablesMissing string
	// IPTablesMode is the iptables flavour in use; empty when no iptables
	// userspace was found.
	IPTablesMode    xtables.Mode
	IPTablesMissing string
	KernelVersion   string
}

// Prober runs the individual probes; tests replace them.
type Prober struct {
	IPVS     func() error
	NFTables func() error
	IPTables func(ctx context.Context) (xtables.Mode, error)
	Uname    func() string
}

// Default probes the real kernel, in the network namespace of the calling
// thread.
//
// IPTables is xtables.DetectMode: where our canary chain is in exactly one
// flavour (a restarted agent) that one, else the flavour holding more rules.
var Default = Prober{IPVS: ipvs.Probe, NFTables: probeNFTables, IPTables: xtables.DetectMode, Uname: uname}

// Probe runs the probes.
func (p Prober) Probe(ctx context.Context) Capabilities {
	var c Capabilities
	if err := p.IPVS(); err != nil {
		c.IPVSMissing = err.Error()
	} else {
		c.IPVS = true
	}
	if err := p.NFTables(); err != nil {
		c.NFTablesMissing = err.Error()
	} else {
		c.NFTables = true
	}
	if m, err := p.IPTables(ctx); err != nil {
		c.IPTablesMissing = err.Error()
	} else {
		c.IPTablesMode = m
	}
	c.KernelVersion = p.Uname()
	return c
}

func probeNFTables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	_, err = c.ListTables()
	return err
}

func uname() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Choice is the backend an agent runs and why.
type Choice struct {
	Backend v1alpha1.Backend
	Reason  string
}

// Choose picks the backend for a configured mode. It returns an error, and
// no choice, when the mode asks for something the node lacks.
//
// Auto never picks nftables: what Auto means must not change under a
// running cluster because its agents were upgraded. A cluster moves to
// nftables by setting mode NFTables, a config change the operator rolls
// out node by node (docs/backends.md).
func Choose(mode v1alpha1.BackendMode, c Capabilities) (Choice, error) {
	switch mode {
	case v1alpha1.BackendModeIPVS:
		if !c.IPVS {
			return Choice{}, fmt.Errorf("mode IPVS requested but the kernel has no IPVS: %s", c.IPVSMissing)
		}
		if c.IPTablesMode == "" {
			return Choice{}, fmt.Errorf("mode IPVS requested but the IPVS backend needs iptables for its glue rules: %s", c.IPTablesMissing)
		}
		return Choice{v1alpha1.BackendIPVS, "mode IPVS requested and the kernel has IPVS"}, nil
	case v1alpha1.BackendModeNFTables:
		if !c.NFTables {
			return Choice{}, fmt.Errorf("mode NFTables requested but the kernel has no nf_tables (or it cannot be listed): %s", c.NFTablesMissing)
		}
		return Choice{v1alpha1.BackendNFTables, "mode NFTables requested and the kernel has nf_tables"}, nil
	case v1alpha1.BackendModeIPTables:
		if c.IPTablesMode == "" {
			return Choice{}, fmt.Errorf("mode IPTables requested but no iptables userspace was found: %s", c.IPTablesMissing)
		}
		return Choice{v1alpha1.BackendIPTables, fmt.Sprintf("mode IPTables requested (iptables %s)", c.IPTablesMode)}, nil
	case v1alpha1.BackendModeAuto, "":
		if c.IPTablesMode == "" {
			return Choice{}, fmt.Errorf("no backend can run: no iptables userspace (%s)", c.IPTablesMissing)
		}
		if c.IPVS {
			return Choice{v1alpha1.BackendIPVS, "mode Auto and the kernel has IPVS"}, nil
		}
		return Choice{v1alpha1.BackendIPTables, fmt.Sprintf("mode Auto and the kernel has no IPVS (%s); using iptables %s", firstLine(c.IPVSMissing), c.IPTablesMode)}, nil
	}
	return Choice{}, fmt.Errorf("unknown backend mode %q", mode)
}

// Status converts capabilities to the ProxyNode status field.
func (c Capabilities) Status() *v1alpha1.KernelCapabilities {
	k := &v1alpha1.KernelCapabilities{IPVS: c.IPVS, NFTables: c.NFTables, KernelVersion: truncate(c.KernelVersion, 128)}
	switch c.IPTablesMode {
	case xtables.ModeLegacy:
		k.IPTablesMode = v1alpha1.IPTablesModeLegacy
	case xtables.ModeNFT:
		k.IPTablesMode = v1alpha1.IPTablesModeNFT
	}
	var missing []string
	if !c.IPVS {
		missing = append(missing, "IPVS: "+c.IPVSMissing)
	}
	if c.IPTablesMode == "" {
		missing = append(missing, "iptables: "+c.IPTablesMissing)
	}
	if !c.NFTables {
		missing = append(missing, "nftables: "+firstLine(c.NFTablesMissing))
	}
	k.Missing = truncate(strings.Join(missing, "; "), 1024)
	return k
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
