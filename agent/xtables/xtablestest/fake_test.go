package xtablestest

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// step is one command of a script played on the FAKE and on the real tools.
type step struct {
	restore string   // restore input, or
	exec    []string // iptables arguments
	flush   bool     // restore without --noflush
}

// script exercises what the backends rely on: declared chains are flushed,
// -D of a missing rule fails the whole block, jumps need their target,
// -X refuses a chain still used or not empty, a block without --noflush
// empties its table, -C/-I/-D/-S by arguments.
var script = []step{
	{restore: "*nat\n:SYNX-A - [0:0]\n:SYNX-B - [0:0]\n-A SYNX-A -j SYNX-B\n-A SYNX-B -j RETURN\n" +
		"-A PREROUTING -m comment --comment \"x y\" -j SYNX-A\nCOMMIT\n"},
	{exec: []string{"-w", "-t", "nat", "-I", "OUTPUT", "1", "-m", "comment", "--comment", "hook here", "-j", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "hook here", "-j", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "other", "-j", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-A", "OUTPUT", "-j", "SYNX-MISSING"}},
	{restore: "*nat\n:SYNX-C - [0:0]\n-A SYNX-C -j RETURN\n-D SYNX-A -j RETURN\nCOMMIT\n"},
	{restore: "*nat\n-D SYNX-A -j SYNX-B\n-X SYNX-B\nCOMMIT\n"},
	{restore: "*nat\n:SYNX-B - [0:0]\n-D SYNX-A -j SYNX-B\n-X SYNX-B\nCOMMIT\n"},
	{exec: []string{"-w", "-t", "nat", "-X", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-S", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-S", "SYNX-NONE"}},
	{restore: "*filter\n:SYNX-F - [0:0]\n-A SYNX-F -j DROP\n-A INPUT -j SYNX-F\nCOMMIT\n"},
	{restore: "*filter\n:SYNX-G - [0:0]\nCOMMIT\n", flush: true},
	{exec: []string{"-w", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "hook here", "-j", "SYNX-A"}},
	{exec: []string{"-w", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "hook here", "-j", "SYNX-A"}},
}

// play runs the script and returns, per step, whether it succeeded, and
// the tables at the end.
func play(t *testing.T, r xtables.Runner) ([]bool, map[string]map[string][]string) {
	ctx := context.Background()
	var ok []bool
	for _, s := range script {
		var err error
		switch {
		case s.restore != "" && s.flush:
			err = r.Restore(ctx, []byte(s.restore), "-w")
		case s.restore != "":
			err = r.Restore(ctx, []byte(s.restore), "-w", "--noflush")
		default:
			_, err = r.Exec(ctx, s.exec...)
		}
		ok = append(ok, err == nil)
	}
	var saved string
	if err := r.Save(ctx, func(rd io.Reader) error {
		b, err := io.ReadAll(rd)
		saved = string(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ok, parse(saved)
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// parse reads save output into table -> chain -> rules; built-in chains
// are kept only when they have rules.
func parse(saved string) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	var cur map[string][]string
	for _, l := range strings.Split(saved, "\n") {
		l = counters.ReplaceAllString(l, "")
		switch {
		case strings.HasPrefix(l, "*"):
			cur = map[string][]string{}
			out[l[1:]] = cur
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l[1:])
			if f[1] == "-" {
				cur[f[0]] = []string{}
			}
		case strings.HasPrefix(l, "-A "):
			f := strings.SplitN(l, " ", 3)
			cur[f[1]] = append(cur[f[1]], f[2])
		}
	}
	for name, t := range out {
		if len(t) == 0 {
			delete(out, name)
		}
	}
	return out
}

func render(m map[string]map[string][]string) string {
	var lines []string
	for tn, t := range m {
		for c, rules := range t {
			lines = append(lines, fmt.Sprintf("%s %s %q", tn, c, rules))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestFakeMatchesTheRealTools plays the same script on the FAKE and on the
// real tools of both flavours in a namespace: every step must succeed or
// fail alike, and the tables must end up alike. It is what makes unit tests
// on the FAKE worth anything.
func TestFakeMatchesTheRealTools(t *testing.T) {
	netns.Require(t, "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore")
	for _, mode := range []xtables.Mode{xtables.ModeLegacy, xtables.ModeNFT} {
		real, err := xtables.NewRunner(model.IPv4, mode)
		if err != nil {
			t.Fatal(err)
		}
		ns := netns.New(t, "fake")
		var realOK []bool
		var realTables map[string]map[string][]string
		if err := ns.Do(func() error { realOK, realTables = play(t, real); return nil }); err != nil {
			t.Fatal(err)
		}
		fakeOK, fakeTables := play(t, New(model.IPv4, mode))
		for i := range script {
			if realOK[i] != fakeOK[i] {
				t.Errorf("%s step %d %+v: real tool ok=%v, FAKE ok=%v", mode, i, script[i], realOK[i], fakeOK[i])
			}
		}
		if r, f := render(realTables), render(fakeTables); r != f {
			t.Errorf("%s: tables differ\nreal:\n%s\nFAKE:\n%s", mode, r, f)
		}
	}
}
