package ipvs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// The glue runs the iptables tools of the backend's family and of the
// configured (or, in New, detected) flavour, never the plain "iptables":
// on a legacy node, rules written by the plain binary land in the wrong
// table set (issue 10, defect 2). The runner is a FAKE; the kernel proof
// is TestKernelGlueFollowsTheNodesFlavour in the VM.
func TestGlueRunsTheToolsOfItsFamilyAndFlavour(t *testing.T) {
	for _, tc := range []struct {
		fam  model.Family
		mode xtables.Mode
		want string // prefix of every tool run
	}{
		{model.IPv4, xtables.ModeLegacy, "iptables-legacy"},
		{model.IPv4, xtables.ModeNFT, "iptables-nft"},
		{model.IPv6, xtables.ModeLegacy, "ip6tables-legacy"},
		{model.IPv6, xtables.ModeNFT, "ip6tables-nft"},
	} {
		g := &fakeGlue{}
		b, err := newBackend(Config{Family: tc.fam, IPTablesMode: tc.mode}, newFakeHandle(), newFakeNode(), g.runner,
			(&clock{t: time.Unix(1000, 0)}).now)
		if err != nil {
			t.Fatal(err)
		}
		if g.fam != tc.fam || g.mode != tc.mode {
			t.Errorf("%s %s: the backend asked for the tools of %s %s", tc.fam, tc.mode, g.fam, g.mode)
		}
		var st *model.State
		if tc.fam == model.IPv4 {
			st = state(svc("web", model.TCP, ep1))
		}
		for i := 0; i < 2; i++ {
			doSync(t, b, st)
		}
		rules, _ := g.fake.Rules("nat", "PREROUTING")
		if len(rules) != 1 || !strings.Contains(rules[0], "-j "+b.prefix+"SERVICES") {
			t.Errorf("%s %s: nat PREROUTING after two syncs: %q, want our jump once", tc.fam, tc.mode, rules)
		}
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		if dump := g.fake.Dump(); strings.Contains(dump, "SYNXIPVS") {
			t.Errorf("%s %s: glue left after Cleanup:\n%s", tc.fam, tc.mode, dump)
		}
		calls := g.fake.Calls()
		if len(calls) == 0 {
			t.Fatalf("%s %s: the glue ran nothing", tc.fam, tc.mode)
		}
		for _, c := range calls {
			if !strings.HasPrefix(c.Bin, tc.want+"-") && c.Bin != tc.want {
				t.Errorf("%s %s: the glue ran %s", tc.fam, tc.mode, c)
			}
		}
	}
}
