package xtables_test

import (
	"context"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/agent/xtables/xtablestest"
)

func TestBinariesFor(t *testing.T) {
	for _, tc := range []struct {
		fam  model.Family
		mode xtables.Mode
		want xtables.Binaries
	}{
		{model.IPv4, xtables.ModeLegacy, xtables.Binaries{Cmd: "iptables-legacy", Save: "iptables-legacy-save", Restore: "iptables-legacy-restore"}},
		{model.IPv4, xtables.ModeNFT, xtables.Binaries{Cmd: "iptables-nft", Save: "iptables-nft-save", Restore: "iptables-nft-restore"}},
		{model.IPv4, xtables.ModePlain, xtables.Binaries{Cmd: "iptables", Save: "iptables-save", Restore: "iptables-restore"}},
		{"", xtables.ModeLegacy, xtables.Binaries{Cmd: "iptables-legacy", Save: "iptables-legacy-save", Restore: "iptables-legacy-restore"}},
		{model.IPv6, xtables.ModeLegacy, xtables.Binaries{Cmd: "ip6tables-legacy", Save: "ip6tables-legacy-save", Restore: "ip6tables-legacy-restore"}},
		{model.IPv6, xtables.ModeNFT, xtables.Binaries{Cmd: "ip6tables-nft", Save: "ip6tables-nft-save", Restore: "ip6tables-nft-restore"}},
		{model.IPv6, xtables.ModePlain, xtables.Binaries{Cmd: "ip6tables", Save: "ip6tables-save", Restore: "ip6tables-restore"}},
	} {
		if got := xtables.BinariesFor(tc.fam, tc.mode); got != tc.want {
			t.Errorf("BinariesFor(%q, %q) = %+v, want %+v", tc.fam, tc.mode, got, tc.want)
		}
	}
}

func TestNewRunnerRefusesAuto(t *testing.T) {
	if _, err := xtables.NewRunner(model.IPv4, xtables.ModeAuto); err == nil {
		t.Error("NewRunner accepted ModeAuto; the mode must be detected first")
	}
}

// The rule text must be byte for byte what iptables-save prints, or a
// saved table is never found to hold a jump and it is added again.
func TestSavedArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", "comment", "--comment", "synterix service portals", "-j", "SYNX-SERVICES"},
			`-m comment --comment "synterix service portals" -j SYNX-SERVICES`},
		{[]string{"-m", "comment", "--comment", "one_word-1", "-j", "X"}, `-m comment --comment one_word-1 -j X`},
		{[]string{"-m", "comment", "--comment", `say "hi"`, "-j", "X"}, `-m comment --comment "say \"hi\"" -j X`},
		{[]string{"-m", "comment", "--comment", "a/b", "-j", "X"}, `-m comment --comment "a/b" -j X`},
		{[]string{"-j", "X"}, `-j X`},
	} {
		if got := xtables.SavedArgs(tc.args); got != tc.want {
			t.Errorf("SavedArgs(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
	j := xtables.Jump{Table: "nat", Chain: "OUTPUT", Args: []string{"-m", "comment", "--comment", "x y", "-j", "SYNX-A"}}
	if j.Target() != "SYNX-A" || j.Saved() != `-m comment --comment "x y" -j SYNX-A` {
		t.Errorf("jump %+v: target %q, saved %q", j, j.Target(), j.Saved())
	}
}

func TestQuoteFailedLine(t *testing.T) {
	in := []byte("*nat\n:SYNX-A - [0:0]\n-A SYNX-A -j NOWHERE\nCOMMIT\n")
	if got, want := xtables.QuoteFailedLine(in, "iptables-restore: line 3 failed"), ` (input line 3: "-A SYNX-A -j NOWHERE")`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	for _, msg := range []string{"iptables-restore: line 9 failed", "no line here", "line 0 failed"} {
		if got := xtables.QuoteFailedLine(in, msg); got != "" {
			t.Errorf("%q: got %s, want nothing", msg, got)
		}
	}
}

func TestHasRandomFully(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		version string
		want    bool
		err     bool
	}{
		{"iptables v1.8.9 (nf_tables)", true, false},
		{"iptables v1.6.2", true, false},
		{"iptables v1.6.1", false, false},
		{"iptables v1.4.21", false, false},
		{"ip6tables-legacy v2.0.0 (legacy)", true, false},
		{"something else", false, true},
	} {
		f := xtablestest.New(model.IPv4, xtables.ModeNFT) // FAKE runner
		f.Version = tc.version
		got, err := xtables.HasRandomFully(ctx, f)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%q: %v, %v; want %v (error %v)", tc.version, got, err, tc.want, tc.err)
		}
	}
}

// Jump helpers against the FAKE runner: Ensure adds once, Delete removes
// every copy and nothing else, and a missing jump or chain is no error.
func TestJumpHelpers(t *testing.T) {
	ctx := context.Background()
	f := xtablestest.New(model.IPv4, xtables.ModeLegacy) // FAKE runner
	if err := f.Restore(ctx, []byte("*nat\n:SYNX-A - [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n"), "--noflush"); err != nil {
		t.Fatal(err)
	}
	j := xtables.Jump{Table: "nat", Chain: "PREROUTING", Args: []string{"-m", "comment", "--comment", "ours here", "-j", "SYNX-A"}}
	for i, want := range []bool{true, false} {
		if added, err := xtables.Ensure(ctx, f, j); err != nil || added != want {
			t.Fatalf("Ensure #%d: added %v, %v; want %v", i+1, added, err, want)
		}
	}
	if err := xtables.Insert(ctx, f, j); err != nil {
		t.Fatal(err)
	}
	rules, _ := f.Rules("nat", "PREROUTING")
	if len(rules) != 3 || rules[0] != j.Saved() || rules[2] != "-j ACCEPT" {
		t.Fatalf("PREROUTING after Ensure and Insert: %q", rules)
	}
	if err := xtables.Delete(ctx, f, j); err != nil {
		t.Fatal(err)
	}
	if rules, _ := f.Rules("nat", "PREROUTING"); len(rules) != 1 || rules[0] != "-j ACCEPT" {
		t.Fatalf("PREROUTING after Delete: %q", rules)
	}
	if err := xtables.Delete(ctx, f, j); err != nil {
		t.Errorf("Delete of a missing jump: %v", err)
	}
	if err := xtables.Delete(ctx, f, xtables.Jump{Table: "nat", Chain: "NOPE", Args: []string{"-j", "SYNX-A"}}); err != nil {
		t.Errorf("Delete from a missing chain: %v", err)
	}
	for _, c := range f.Calls() {
		if !strings.HasPrefix(c.Bin, "iptables-legacy") {
			t.Errorf("the legacy runner ran %s", c)
		}
	}
}
