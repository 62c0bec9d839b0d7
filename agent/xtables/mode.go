// Package xtables is the kernel plumbing the agent's iptables-based code
// shares: it picks the iptables flavour of a node (legacy or nft), names the
// tools of a (family, flavour) pair, runs them and reports their errors
// clearly, and owns the rules that hook a backend's chains into the
// built-in ones.
//
// The name is that of the userspace framework behind iptables and
// ip6tables alike (xtables-legacy-multi, xtables-nft-multi): the package
// serves both address families and both flavours, and no one backend.
//
// Backends use it through the narrow Runner interface, so that their unit
// tests run on a FAKE runner (package xtablestest) without a kernel.
package xtables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Mode is the iptables flavour the node uses.
type Mode string

// Modes.
const (
	ModeAuto   Mode = ""
	ModeNFT    Mode = "nft"
	ModeLegacy Mode = "legacy"
	// ModePlain uses "iptables", "iptables-save" and "iptables-restore"
	// as found on PATH, whatever they are.
	ModePlain Mode = "plain"
)

// CanaryChain is the agent's flush detector: the iptables backend keeps a
// RETURN rule in it in the nat and filter tables, notices a flush by its
// absence, and mode detection adopts the flavour that holds it.
const CanaryChain = "SYNX-CANARY"

// Binaries are the commands of one family and mode.
type Binaries struct {
	// Cmd is iptables or ip6tables (with the flavour suffix).
	Cmd, Save, Restore string
}

// BinariesFor names the tools of a family and mode, e.g.
// ip6tables-legacy-restore. ModeAuto and ModePlain name the unsuffixed
// tools.
func BinariesFor(fam model.Family, m Mode) Binaries {
	base := "iptables"
	if fam == model.IPv6 {
		base = "ip6tables"
	}
	switch m {
	case ModeNFT, ModeLegacy:
		base += "-" + string(m)
	}
	return Binaries{Cmd: base, Save: base + "-save", Restore: base + "-restore"}
}

// DetectMode picks the flavour to use in the calling thread's network
// namespace. Where our canary chain exists in exactly one flavour (a
// restarted agent), that one wins: listing one chain is cheap, and the
// agent adopts what it wrote. Otherwise it goes the way the
// iptables-wrappers scripts do: whichever flavour already holds more rules
// is the one the rest of the node (kubelet, CNI) writes; with a tie, nft.
// When only one flavour is installed it wins; with neither, plain.
func DetectMode(ctx context.Context) (Mode, error) {
	_, errN := exec.LookPath("iptables-nft-save")
	_, errL := exec.LookPath("iptables-legacy-save")
	switch {
	case errN != nil && errL != nil:
		if _, err := exec.LookPath("iptables-save"); err != nil {
			return "", fmt.Errorf("no iptables-save, iptables-nft-save or iptables-legacy-save on PATH")
		}
		return ModePlain, nil
	case errL != nil:
		return ModeNFT, nil
	case errN != nil:
		return ModeLegacy, nil
	}
	nft, legacy := hasCanary(ctx, "iptables-nft"), hasCanary(ctx, "iptables-legacy")
	switch {
	case nft && !legacy:
		return ModeNFT, nil
	case legacy && !nft:
		return ModeLegacy, nil
	}
	nLegacy := countRules(ctx, "iptables-legacy-save") + countRules(ctx, "ip6tables-legacy-save")
	nNFT := countRules(ctx, "iptables-nft-save") + countRules(ctx, "ip6tables-nft-save")
	if nLegacy > nNFT {
		return ModeLegacy, nil
	}
	return ModeNFT, nil
}

// hasCanary reports whether the nat table of a flavour has our canary.
func hasCanary(ctx context.Context, bin string) bool {
	if _, err := exec.LookPath(bin); err != nil {
		return false
	}
	return exec.CommandContext(ctx, bin, "-w", "-t", "nat", "-S", CanaryChain).Run() == nil
}

// countRules counts the rules a save tool prints; 0 when it fails.
func countRules(ctx context.Context, bin string) int {
	out, err := exec.CommandContext(ctx, bin).Output()
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("-A ")) {
			n++
		}
	}
	return n
}
