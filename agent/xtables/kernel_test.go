package xtables_test

// Kernel tests: real tools, real netfilter, in network namespaces the tests
// create and delete.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

var allTools = []string{
	"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
	"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore",
	"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
}

// TestRunnerWritesItsFlavourAndFamily: what a runner restores, inserts and
// deletes lands in the tables of its own family and flavour and in no
// other, and its save reads them back.
func TestRunnerWritesItsFlavourAndFamily(t *testing.T) {
	netns.Require(t, allTools...)
	ctx := context.Background()
	for _, fam := range []model.Family{model.IPv4, model.IPv6} {
		for _, mode := range []xtables.Mode{xtables.ModeLegacy, xtables.ModeNFT} {
			ns := netns.New(t, "xt")
			r, err := xtables.NewRunner(fam, mode)
			if err != nil {
				t.Fatal(err)
			}
			j := xtables.Jump{Table: "nat", Chain: "OUTPUT", Args: []string{"-m", "comment", "--comment", "xtables test", "-j", "SYNX-XT"}}
			var saved string
			if err := ns.Do(func() error {
				if err := r.Restore(ctx, []byte("*nat\n:SYNX-XT - [0:0]\n-A SYNX-XT -j RETURN\nCOMMIT\n"), "-w", "--noflush"); err != nil {
					return err
				}
				if _, err := xtables.Ensure(ctx, r, j); err != nil {
					return err
				}
				return r.Save(ctx, func(rd io.Reader) error {
					b, err := io.ReadAll(rd)
					saved = string(b)
					return err
				}, "-t", "nat")
			}); err != nil {
				t.Fatalf("%s %s: %v", fam, mode, err)
			}
			own := r.Binaries()
			if !strings.Contains(saved, "-A OUTPUT "+j.Saved()) || !strings.Contains(saved, "-A SYNX-XT -j RETURN") {
				t.Errorf("%s save misses what the runner wrote:\n%s", own.Save, saved)
			}
			for _, f := range []model.Family{model.IPv4, model.IPv6} {
				for _, m := range []xtables.Mode{xtables.ModeLegacy, xtables.ModeNFT} {
					out := ns.MustExec(xtables.BinariesFor(f, m).Save)
					if in := strings.Contains(out, "SYNX-XT"); in != (f == fam && m == mode) {
						t.Errorf("runner %s/%s: SYNX-XT in %s: %v\n%s", fam, mode, xtables.BinariesFor(f, m).Save, in, out)
					}
				}
			}
			if err := ns.Do(func() error { return xtables.Delete(ctx, r, j) }); err != nil {
				t.Fatal(err)
			}
			if out := ns.MustExec(own.Save, "-t", "nat"); strings.Contains(out, "-A OUTPUT") {
				t.Errorf("jump left after Delete:\n%s", out)
			}
		}
	}
}

// TestRunnerErrors: a rejected restore names the input line; a failed
// command names the tool and its message; a parser error stops Save
// without hanging the tool.
func TestRunnerErrors(t *testing.T) {
	netns.Require(t, "iptables-nft", "iptables-nft-save", "iptables-nft-restore")
	ctx := context.Background()
	ns := netns.New(t, "xterr")
	r, err := xtables.NewRunner(model.IPv4, xtables.ModeNFT)
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		return r.Restore(ctx, []byte("*nat\n:SYNX-E - [0:0]\n-D SYNX-E -j RETURN\nCOMMIT\n"), "-w", "--noflush")
	})
	if err == nil || !strings.Contains(err.Error(), `(input line 3: "-D SYNX-E -j RETURN")`) || !strings.Contains(err.Error(), "iptables-nft-restore") {
		t.Errorf("restore error: %v", err)
	}
	_, err = r.Exec(ctx, "-w", "-t", "nat", "-S", "SYNX-NONE")
	if err == nil || !strings.Contains(err.Error(), "iptables-nft -w -t nat -S SYNX-NONE") {
		t.Errorf("exec error: %v", err)
	}
	boom := errors.New("parser gave up")
	err = ns.Do(func() error {
		if err := r.Restore(ctx, []byte("*filter\n:SYNX-F - [0:0]\n-A SYNX-F -j RETURN\nCOMMIT\n"), "--noflush"); err != nil {
			return err
		}
		return r.Save(ctx, func(rd io.Reader) error {
			_, _ = bufio.NewReader(rd).ReadString('\n')
			return boom
		})
	})
	if !errors.Is(err, boom) {
		t.Errorf("save with a failing parser: %v, want %v", err, boom)
	}
}

// TestDetectMode: rules written with one flavour make detection pick it.
func TestDetectMode(t *testing.T) {
	netns.Require(t, "iptables-legacy", "iptables-nft", "iptables-legacy-save", "iptables-nft-save")
	for _, tc := range []struct {
		bin  string
		want xtables.Mode
	}{{"iptables-legacy", xtables.ModeLegacy}, {"iptables-nft", xtables.ModeNFT}} {
		ns := netns.New(t, "mode")
		ns.MustExec(tc.bin, "-t", "filter", "-A", "INPUT", "-j", "ACCEPT")
		ns.MustExec(tc.bin, "-t", "filter", "-A", "INPUT", "-j", "ACCEPT")
		if got := detect(t, ns); got != tc.want {
			t.Errorf("rules written by %s: detected %s, want %s", tc.bin, got, tc.want)
		}
	}
}

// TestDetectModeAdoptsOurFlavour: where our canary chain exists in one
// flavour, that flavour is chosen even when the other holds more rules.
func TestDetectModeAdoptsOurFlavour(t *testing.T) {
	netns.Require(t, "iptables-nft", "iptables-legacy", "iptables-nft-save", "iptables-legacy-save")
	for _, tc := range []struct {
		bin, other string
		want       xtables.Mode
	}{{"iptables-legacy", "iptables-nft", xtables.ModeLegacy}, {"iptables-nft", "iptables-legacy", xtables.ModeNFT}} {
		ns := netns.New(t, "probe")
		ns.MustExec(tc.bin, "-t", "nat", "-N", xtables.CanaryChain)
		for _, c := range []string{"A", "B", "C"} {
			ns.MustExec(tc.other, "-t", "filter", "-N", "OTHER-"+c)
			ns.MustExec(tc.other, "-t", "filter", "-A", "OTHER-"+c, "-j", "RETURN")
		}
		if got := detect(t, ns); got != tc.want {
			t.Errorf("canary in %s: mode %s, want %s", tc.bin, got, tc.want)
		}
	}
}

func detect(t *testing.T, ns *netns.NS) xtables.Mode {
	t.Helper()
	var got xtables.Mode
	if err := ns.Do(func() (err error) { got, err = xtables.DetectMode(context.Background()); return }); err != nil {
		t.Fatal(err)
	}
	return got
}
