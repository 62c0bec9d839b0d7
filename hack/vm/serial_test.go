package main

import (
	"strings"
	"testing"
	"time"
)

func feed(p *serialParser, console string) {
	for i, l := range strings.Split(console, "\n") {
		p.Feed(l+"\r\n", time.Duration(i)*time.Second)
	}
}

const okConsole = `[    0.000000] Linux version 6.1.0
SYNX-VM: INIT-START uptime=2.4 kernel=6.1.0-56-amd64
SYNX-VM: MODULES-LOADED uptime=3.1 count=68 failed=[]
SYNX-VM: BEGIN agent_ipvs uptime=3.2
=== RUN   TestA
--- PASS: TestA (0.01s)
=== RUN   TestB
=== RUN   TestB/sub
    --- PASS: TestB/sub (0.00s)
--- PASS: TestB (0.00s)
=== RUN   TestC
    x_test.go:1: SKIPPING
--- SKIP: TestC (0.00s)
PASS
SYNX-VM: END agent_ipvs rc=0 uptime=4.0
SYNX-VM: ALL-DONE uptime=4.1`

func TestParserCountsAndPasses(t *testing.T) {
	var p serialParser
	feed(&p, okConsole)
	if err := p.Verdict([]string{"agent_ipvs"}); err != nil {
		t.Fatalf("verdict: %v", err)
	}
	pass, fail, skip := p.Totals()
	if pass != 2 || fail != 0 || skip != 1 {
		t.Fatalf("totals %d/%d/%d, want 2/0/1 (top-level only)", pass, fail, skip)
	}
	r := p.Results[0]
	if r.Pass != 3 || r.RC != 0 || p.Kernel != "6.1.0-56-amd64" || p.InitStart != time.Second {
		t.Fatalf("result %+v kernel %q init %s", r, p.Kernel, p.InitStart)
	}
}

func TestParserFailures(t *testing.T) {
	cases := map[string]struct {
		console  string
		expected []string
		want     string
	}{
		"failed test": {
			console:  strings.Replace(strings.Replace(okConsole, "--- PASS: TestA", "--- FAIL: TestA", 1), "rc=0", "rc=1", 1),
			expected: []string{"agent_ipvs"}, want: "exit code 1, failed: TestA",
		},
		"crash without END": {
			console:  okConsole[:strings.Index(okConsole, "SYNX-VM: END")],
			expected: []string{"agent_ipvs"}, want: "did not finish",
		},
		"binary never started": {
			console: okConsole, expected: []string{"agent_ipvs", "test_vm"}, want: "test_vm: never started",
		},
		"no boot": {
			console: "[    0.000000] Kernel panic", expected: []string{"agent_ipvs"}, want: "never reached /init",
		},
		"everything skipped": {
			console:  strings.NewReplacer("--- PASS: TestA", "--- SKIP: TestA", "--- PASS: TestB ", "--- SKIP: TestB ").Replace(okConsole),
			expected: []string{"agent_ipvs"}, want: "no test passed",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var p serialParser
			feed(&p, c.console)
			err := p.Verdict(c.expected)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("verdict %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestMarkerInsideKernelNoise(t *testing.T) {
	var p serialParser
	p.Feed("[   3.1] random: crng init done SYNX-VM: INIT-START uptime=1 kernel=x\n", time.Second)
	if !p.SawInit || p.Kernel != "x" {
		t.Fatal("marker after interleaved kernel output not recognised")
	}
}
