package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// binaryResult is what the serial console told about one test binary.
type binaryResult struct {
	Name     string
	RC       int  // exit code of the test binary; -1 until END is seen
	Ended    bool // END marker seen
	Pass     int  // "--- PASS" lines (tests and subtests)
	Fail     int
	Skip     int
	TopPass  int // top-level tests only
	TopFail  int
	TopSkip  int
	Started  time.Duration // host time since qemu start when BEGIN arrived
	Finished time.Duration
	Failures []string // names of failed tests
}

// serialParser consumes console lines one at a time. It is a pure state
// machine (no I/O) so that it can be unit tested on recorded output.
type serialParser struct {
	InitStart     time.Duration // host time of "SYNX-VM: INIT-START" (boot time)
	ModulesLoaded time.Duration
	AllDone       time.Duration
	SawInit       bool
	SawAllDone    bool
	ModuleFails   []string
	Kernel        string
	Results       []*binaryResult
	cur           *binaryResult
}

const marker = "SYNX-VM: "

// Feed handles one line that arrived at host time t (since qemu start).
func (p *serialParser) Feed(line string, t time.Duration) {
	line = strings.TrimRight(line, "\r\n")
	if i := strings.Index(line, marker); i >= 0 {
		p.marker(line[i+len(marker):], t)
		return
	}
	if p.cur == nil {
		return
	}
	trimmed := strings.TrimLeft(line, " ")
	top := len(trimmed) == len(line)
	var kind string
	switch {
	case strings.HasPrefix(trimmed, "--- PASS: "):
		kind = "pass"
	case strings.HasPrefix(trimmed, "--- FAIL: "):
		kind = "fail"
	case strings.HasPrefix(trimmed, "--- SKIP: "):
		kind = "skip"
	default:
		return
	}
	r := p.cur
	switch kind {
	case "pass":
		r.Pass++
		if top {
			r.TopPass++
		}
	case "fail":
		r.Fail++
		if top {
			r.TopFail++
		}
		name := strings.Fields(strings.TrimPrefix(trimmed, "--- FAIL: "))
		if len(name) > 0 {
			r.Failures = append(r.Failures, name[0])
		}
	case "skip":
		r.Skip++
		if top {
			r.TopSkip++
		}
	}
}

func (p *serialParser) marker(m string, t time.Duration) {
	f := strings.Fields(m)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "INIT-START":
		p.SawInit = true
		p.InitStart = t
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "kernel="); ok {
				p.Kernel = v
			}
		}
	case "MODULES-LOADED":
		p.ModulesLoaded = t
	case "MODULE-FAIL":
		if len(f) > 1 {
			p.ModuleFails = append(p.ModuleFails, strings.TrimSuffix(f[1], ":"))
		}
	case "BEGIN":
		if len(f) > 1 {
			p.cur = &binaryResult{Name: f[1], RC: -1, Started: t}
			p.Results = append(p.Results, p.cur)
		}
	case "END":
		if p.cur != nil {
			p.cur.Ended = true
			p.cur.Finished = t
			for _, kv := range f[2:] {
				if v, ok := strings.CutPrefix(kv, "rc="); ok {
					if n, err := strconv.Atoi(v); err == nil {
						p.cur.RC = n
					}
				}
			}
			p.cur = nil
		}
	case "ALL-DONE":
		p.SawAllDone = true
		p.AllDone = t
	}
}

// Verdict returns nil when every test binary ran to its end with exit
// code 0, the VM reported ALL-DONE, and at least one test passed.
func (p *serialParser) Verdict(expected []string) error {
	if !p.SawInit {
		return fmt.Errorf("the VM never reached /init (kernel did not boot?)")
	}
	seen := map[string]*binaryResult{}
	for _, r := range p.Results {
		seen[r.Name] = r
	}
	var errs []string
	for _, name := range expected {
		r, ok := seen[name]
		switch {
		case !ok:
			errs = append(errs, name+": never started")
		case !r.Ended:
			errs = append(errs, name+": did not finish (crash or timeout)")
		case r.RC != 0:
			errs = append(errs, fmt.Sprintf("%s: exit code %d, failed: %s", name, r.RC, strings.Join(r.Failures, " ")))
		}
	}
	if !p.SawAllDone && len(errs) == 0 {
		errs = append(errs, "no ALL-DONE marker")
	}
	pass, _, _ := p.Totals()
	if len(errs) == 0 && pass == 0 {
		errs = append(errs, "no test passed inside the VM (all skipped?)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Totals counts top-level tests.
func (p *serialParser) Totals() (pass, fail, skip int) {
	for _, r := range p.Results {
		pass += r.TopPass
		fail += r.TopFail
		skip += r.TopSkip
	}
	return
}
