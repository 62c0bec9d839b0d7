package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
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

// binaries are the commands of one mode.
type binaries struct {
	iptables, save, restore string
}

func binariesFor(m Mode) binaries {
	switch m {
	case ModeNFT, ModeLegacy:
		return binaries{"iptables-" + string(m), "iptables-" + string(m) + "-save", "iptables-" + string(m) + "-restore"}
	}
	return binaries{"iptables", "iptables-save", "iptables-restore"}
}

// DetectMode picks legacy or nft the way the iptables-wrappers scripts do:
// whichever flavour already holds more rules in this network namespace is
// the one the rest of the node (kubelet, CNI) writes, so it is the one to
// use; with a tie, nft. When only one flavour is installed it wins.
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
	legacy := countRules(ctx, "iptables-legacy-save") + countRules(ctx, "ip6tables-legacy-save")
	nft := countRules(ctx, "iptables-nft-save") + countRules(ctx, "ip6tables-nft-save")
	if legacy > nft {
		return ModeLegacy, nil
	}
	return ModeNFT, nil
}

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
