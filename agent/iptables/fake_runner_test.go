package iptables

// Unit tests of the sync logic on a FAKE xtables runner (in-memory tables,
// package xtablestest): which commands a sync runs and what it writes. They
// prove nothing about the kernel; kernel_test.go's TestScenarios (the
// shared scenarios of agent/backend/backendtest) does, with real netfilter.

import (
	"context"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/agent/xtables/xtablestest"
)

// newFakeBackend returns a backend on a FAKE runner of a mode.
func newFakeBackend(t *testing.T, mode xtables.Mode) (*Backend, *xtablestest.Fake) {
	t.Helper()
	fake := xtablestest.New(model.IPv4, mode)
	be, err := newBackend(context.Background(), Options{}, mode, fake)
	if err != nil {
		t.Fatal(err)
	}
	return be, fake
}

func fakeSync(t *testing.T, be *Backend, st *model.State, full bool) backend.SyncResult {
	t.Helper()
	res, err := be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

// fullDump is what a fresh backend's full sync of st leaves in empty
// FAKE tables: the reference for every other way of reaching st.
func fullDump(t *testing.T, st *model.State) string {
	t.Helper()
	be, fake := newFakeBackend(t, xtables.ModeNFT)
	fakeSync(t, be, st, true)
	return fake.Dump()
}

func TestCanaryIsOneOfOurChains(t *testing.T) {
	if !strings.HasPrefix(xtables.CanaryChain, ChainPrefix) || chainCanary != xtables.CanaryChain {
		t.Errorf("canary %q: parseSaveAll only tracks chains named %s*", xtables.CanaryChain, ChainPrefix)
	}
}

// A first full sync creates the chains the jumps need, inserts the six
// jumps, then writes each table with one restore: exactly the rules
// rendered, no canary guard. Every command is the legacy tool.
func TestFakeFullSyncPayload(t *testing.T) {
	be, fake := newFakeBackend(t, xtables.ModeLegacy)
	st := benchState(1, 1, 0)
	s := st.Services[0]
	res := fakeSync(t, be, st, false)
	if !res.Full || res.Rules == 0 {
		t.Errorf("first sync: %+v, want a full sync that writes", res)
	}
	svc := svcChain(s)
	wantNAT := "*nat\n" +
		":SYNX-CANARY - [0:0]\n:SYNX-HAIRPIN - [0:0]\n:SYNX-MARK-MASQ - [0:0]\n:SYNX-MASQ-OFFCLUS - [0:0]\n" +
		":SYNX-POSTROUTING - [0:0]\n:SYNX-SERVICES - [0:0]\n:" + svc + " - [0:0]\n" +
		"-A SYNX-CANARY -j RETURN\n" +
		"-A SYNX-MARK-MASQ -j MARK --set-xmark 0x20000/0x20000\n" +
		"-A SYNX-MASQ-OFFCLUS -s 10.128.0.0/9 -j RETURN\n" +
		"-A SYNX-MASQ-OFFCLUS -j SYNX-MARK-MASQ\n" +
		"-A SYNX-POSTROUTING -j SYNX-HAIRPIN\n" +
		"-A SYNX-POSTROUTING -m mark ! --mark 0x20000/0x20000 -j RETURN\n" +
		"-A SYNX-POSTROUTING -j MARK --set-xmark 0x0/0x20000\n" +
		"-A SYNX-POSTROUTING -j MASQUERADE --random-fully\n" +
		"-A SYNX-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment \"bench/svc-00000:http/TCP clusterip\" -j " + svc + "\n" +
		"-A " + svc + " -j SYNX-MASQ-OFFCLUS\n" +
		"-A " + svc + " -p tcp -j DNAT --to-destination 10.128.0.1:8080\n" +
		"COMMIT\n"
	wantFilter := "*filter\n:SYNX-CANARY - [0:0]\n-A SYNX-CANARY -j RETURN\nCOMMIT\n"
	var restores, inserts []string
	for _, c := range fake.Calls() {
		if !strings.HasPrefix(c.Bin, "iptables-legacy") {
			t.Errorf("the legacy backend ran %s", c)
		}
		switch {
		case c.Bin == "iptables-legacy-restore":
			restores = append(restores, c.Stdin)
			if strings.Join(c.Args, " ") != "-w --noflush" {
				t.Errorf("restore without --noflush: %s", c)
			}
		case len(c.Args) > 3 && c.Args[3] == "-I":
			inserts = append(inserts, strings.Join(c.Args[2:5], " "))
		}
	}
	// The chains the jumps lead to are made first, empty.
	wantHooks := []string{"*nat\n:SYNX-SERVICES - [0:0]\n:SYNX-POSTROUTING - [0:0]\nCOMMIT\n", "*filter\n:SYNX-FILTER - [0:0]\nCOMMIT\n"}
	if len(restores) != 4 || restores[0] != wantHooks[0] || restores[1] != wantHooks[1] || restores[2] != wantNAT || restores[3] != wantFilter {
		t.Errorf("restores:\n%s\nwant:\n%s", strings.Join(restores, "---\n"), strings.Join(append(wantHooks, wantNAT, wantFilter), "---\n"))
	}
	if got := strings.Join(inserts, ", "); got != "nat -I PREROUTING, nat -I OUTPUT, nat -I POSTROUTING, filter -I INPUT, filter -I FORWARD, filter -I OUTPUT" {
		t.Errorf("jumps inserted: %s", got)
	}
	if rules, _ := fake.Rules(tableNAT, "PREROUTING"); len(rules) != 1 || rules[0] != hooks[0].Saved() {
		t.Errorf("nat PREROUTING: %q", rules)
	}
	// The same state again, full: the kernel already matches.
	fake.ResetCalls()
	if res := fakeSync(t, be, st, true); res.Rules != 0 || len(fake.Restores()) != 0 {
		t.Errorf("second full sync: %+v, restores %q", res, fake.Restores())
	}
}

// A partial sync after one endpoint moved rewrites that Service's chain
// alone, guarded by the canary, writes nothing to the filter table, and
// leaves the tables as a full sync of the new state would.
func TestFakePartialSyncWritesOnlyChangedChains(t *testing.T) {
	be, fake := newFakeBackend(t, xtables.ModeNFT)
	fakeSync(t, be, benchState(20, 2, 0), false)
	fake.ResetCalls()
	st := benchState(20, 2, 1)
	res := fakeSync(t, be, st, false)
	if res.Full || res.Changed != 1 {
		t.Errorf("partial sync: %+v", res)
	}
	svc := svcChain(st.Services[10])
	want := "*nat\n" + canaryGuard + ":" + svc + " - [0:0]\n" +
		"-A " + svc + " -j SYNX-MASQ-OFFCLUS\n" +
		"-A " + svc + " -p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.250.1.1:8080\n" +
		"-A " + svc + " -p tcp -j DNAT --to-destination 10.129.0.11:8080\n" +
		"COMMIT\n"
	if got := fake.Restores(); len(got) != 1 || got[0] != want {
		t.Errorf("partial restores:\n%q\nwant:\n%q", got, want)
	}
	for _, c := range fake.Calls() {
		if c.Bin == "iptables-nft-save" {
			t.Errorf("a partial sync read the kernel: %s", c)
		}
	}
	if got, want := fake.Dump(), fullDump(t, st); got != want {
		t.Errorf("after the partial sync:\n%s\nwant what a full sync writes:\n%s", got, want)
	}
}

// When someone flushed or deleted our chains, a partial sync notices the
// missing canary, whether it writes something (the guard fails the
// restore) or nothing (it checks the canary), and resyncs in full.
func TestFakeMissingCanaryResyncs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vandal  [][]string
		variant int
	}{
		{"nat flushed, something to write", [][]string{{"-t", "nat", "-F"}}, 1},
		{"nat flushed, nothing to write", [][]string{{"-t", "nat", "-F"}}, 0},
		{"filter chains deleted, nothing to write", [][]string{{"-t", "filter", "-F"}, {"-t", "filter", "-X"}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, fake := newFakeBackend(t, xtables.ModeNFT)
			fakeSync(t, be, benchState(5, 2, 0), false)
			for _, args := range tc.vandal {
				if _, err := fake.Exec(context.Background(), args...); err != nil {
					t.Fatal(err)
				}
			}
			st := benchState(5, 2, tc.variant)
			if res := fakeSync(t, be, st, false); !res.Full {
				t.Errorf("sync after %v: %+v, want a full resync", tc.vandal, res)
			}
			if got, want := fake.Dump(), fullDump(t, st); got != want {
				t.Errorf("after the resync:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// Cleanup removes our jumps (also ones an older version wrote with another
// text) and every SYNX- chain, and nothing else: not kube-proxy's chains,
// not the IPVS backend's SYNXIPVS- chains.
func TestFakeCleanupTouchesOnlyOurs(t *testing.T) {
	be, fake := newFakeBackend(t, xtables.ModeNFT)
	ctx := context.Background()
	foreign := "*nat\n:KUBE-SERVICES - [0:0]\n:SYNXIPVS-SERVICES - [0:0]\n" +
		"-A PREROUTING -j KUBE-SERVICES\n-A PREROUTING -j SYNXIPVS-SERVICES\n" +
		"-A KUBE-SERVICES -d 10.96.9.9/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.211.1.4:8080\nCOMMIT\n" +
		"*filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
	if err := fake.Restore(ctx, []byte(foreign), "--noflush"); err != nil {
		t.Fatal(err)
	}
	before := fake.Dump()
	fakeSync(t, be, benchState(3, 2, 0), false)
	if _, err := fake.Exec(ctx, "-t", "nat", "-A", "OUTPUT", "-j", chainServices); err != nil {
		t.Fatal(err)
	}
	if err := be.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(); got != before {
		t.Errorf("after Cleanup:\n%s\nwant as before the sync:\n%s", got, before)
	}
	fake.ResetCalls()
	if err := be.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if r := fake.Restores(); len(r) != 0 || fake.Dump() != before {
		t.Errorf("second Cleanup wrote %q", r)
	}
}
