// Command vm runs Go test binaries inside a Debian kernel booted by
// qemu-system-x86_64, so that kernel features this host lacks (IPVS) are
// tested against a real kernel. It uses KVM where /dev/kvm opens and really
// boots the guest, and software emulation (TCG) otherwise.
//
// Steps, each cached under -out (bin/vm by default):
//  1. apt-get download the kernel package(s), dpkg-deb -x, depmod.
//  2. go test -c (CGO_ENABLED=0, static) for every package given.
//  3. stage an initramfs: busybox-static, modules, iptables/ipset with their
//     libraries, the test binaries, and /init (init.sh); pack with cpio.
//  4. boot; /init runs each binary with -test.v and prints to ttyS0; the
//     host parses the console and exits non-zero on failure or timeout.
//
// Usage: go run ./hack/vm [-kernel linux-image-amd64,linux-image-6.12-amd64] [-run REGEX] [pkgs...]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "vm: "+format+"\n", a...)
}

// run executes a command in dir with output on stderr.
func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// options are the command's flags.
type options struct {
	out, kernels, runRe, accel, iptMode, testArgs string
	timeout, kvmWait                              time.Duration
	memMB, smp                                    int
	verbose                                       bool
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.out, "out", "bin/vm", "cache and work directory")
	flag.StringVar(&o.kernels, "kernel", "linux-image-amd64", "comma-separated Debian kernel packages; each gets its own VM run")
	flag.StringVar(&o.runRe, "run", "", "passed to the test binaries as -test.run")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "wall-clock limit for one VM run (boot + tests)")
	flag.IntVar(&o.memMB, "mem", 1024, "VM memory in MiB")
	flag.IntVar(&o.smp, "smp", 1, "VM CPUs (each is a host thread under TCG)")
	flag.StringVar(&o.accel, "accel", "auto", "kvm, tcg or auto (kvm when /dev/kvm opens and boots, else tcg)")
	flag.DurationVar(&o.kvmWait, "kvm-deadline", 60*time.Second, "with -accel auto: how long a KVM boot may stay silent before /init, before falling back to tcg")
	flag.StringVar(&o.iptMode, "iptables", "nft", "iptables flavour behind iptables/iptables-restore in the VM: nft or legacy")
	flag.BoolVar(&o.verbose, "v", false, "echo the whole console, not only test output")
	flag.StringVar(&o.testArgs, "args", "", "extra arguments for every test binary (space separated)")
	flag.Parse()
	return o
}

// kernelRun is what one VM run gave.
type kernelRun struct {
	summary          string
	pass, fail, skip int
	failed           bool
}

// main builds the test binaries once, then boots one VM per kernel package
// and prints each run's results and a closing "N passed, N failed" line.
func main() {
	o := parseFlags()
	pkgs := flag.Args()
	if len(pkgs) == 0 {
		pkgs = []string{"./agent/ipvs/..."}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		fatal(err)
	}
	absOut, _ := filepath.Abs(o.out)
	tests, err := buildTests(filepath.Join(absOut, "tests"), pkgs)
	if err != nil {
		fatal(err)
	}
	if len(tests) == 0 {
		fatal(fmt.Errorf("no test binaries built for %v", pkgs))
	}
	args := []string{"-test.timeout=15m"}
	if o.runRe != "" {
		args = append(args, "-test.run="+o.runRe)
	}
	args = append(args, strings.Fields(o.testArgs)...)

	var runs []kernelRun
	for _, kp := range strings.Split(o.kernels, ",") {
		if kp = strings.TrimSpace(kp); kp != "" {
			runs = append(runs, runKernel(o, absOut, kp, tests, args))
		}
	}
	fmt.Println()
	failed := false
	var totPass, totFail, totSkip int
	for _, r := range runs {
		fmt.Println(r.summary)
		totPass, totFail, totSkip = totPass+r.pass, totFail+r.fail, totSkip+r.skip
		failed = failed || r.failed
	}
	// The closing line, in the "N passed, N failed" form CI reads.
	fmt.Printf("ipvs-vm: %d passed, %d failed, %d skipped\n", totPass, totFail, totSkip)
	if failed {
		os.Exit(1)
	}
}

// runKernel boots the VM of one kernel package with the test binaries and
// prints its results.
func runKernel(o options, absOut, kp string, tests []testBinary, args []string) kernelRun {
	t0 := time.Now()
	k, err := fetchKernel(absOut, kp)
	if err != nil {
		fatal(err)
	}
	work := filepath.Join(absOut, "run", k.Release)
	if err := os.MkdirAll(work, 0o755); err != nil {
		fatal(err)
	}
	initrd, err := buildInitramfs(work, initramfsSpec{Kernel: k, Tests: tests, TestArgs: args, IptablesMode: o.iptMode})
	if err != nil {
		fatal(err)
	}
	st, _ := os.Stat(initrd)
	logf("kernel %s (%s), initramfs %.1f MiB, prepared in %s", k.Release, k.Package, float64(st.Size())/(1<<20), time.Since(t0).Round(time.Millisecond))
	res, err := bootAuto(bootSpec{
		Kernel: k, Initrd: initrd, MemMB: o.memMB, SMP: o.smp, Accel: o.accel,
		Timeout: o.timeout, KVMDeadline: o.kvmWait, Verbose: o.verbose, Log: filepath.Join(work, "console.log"),
	})
	names := make([]string, len(tests))
	for i, tb := range tests {
		names[i] = tb.Name
	}
	verdict := err
	if verdict == nil {
		verdict = res.Verdict(names)
	}
	printRun(k, res)
	run := kernelRun{}
	run.pass, run.fail, run.skip = res.Totals()
	status := "PASS"
	if verdict != nil {
		run.failed = true
		status = "FAIL: " + verdict.Error()
		fmt.Printf("  console log: %s\n", filepath.Join(work, "console.log"))
		if run.fail == 0 {
			run.fail = 1 // a crash, timeout or missing binary counts as a failure
		}
	}
	fmt.Printf("  result: %s\n", status)
	run.summary = fmt.Sprintf("kernel %s: %d passed, %d failed, %d skipped", k.Release, run.pass, run.fail, run.skip)
	return run
}

// printRun prints how the VM of kernel k booted and what each test binary
// did.
func printRun(k kernel, res *bootResult) {
	fmt.Printf("\n=== VM %s (%s) accel=%s (%s)\n", k.Release, k.Package, res.accel, res.why)
	fmt.Printf("boot to /init: %s, modules loaded: %s, tests: %s, total: %s\n",
		res.InitStart.Round(time.Millisecond), (res.ModulesLoaded - res.InitStart).Round(time.Millisecond),
		(res.AllDone - res.ModulesLoaded).Round(time.Millisecond), res.total.Round(time.Millisecond))
	for _, r := range res.Results {
		fmt.Printf("  %-28s rc=%d  %s  top-level %d pass / %d fail / %d skip  (incl. subtests %d/%d/%d)\n",
			r.Name, r.RC, (r.Finished - r.Started).Round(time.Millisecond), r.TopPass, r.TopFail, r.TopSkip, r.Pass, r.Fail, r.Skip)
	}
	if len(res.ModuleFails) > 0 {
		fmt.Printf("  modules that failed to load: %s\n", strings.Join(res.ModuleFails, " "))
	}
}

func fatal(err error) {
	logf("error: %v", err)
	os.Exit(2)
}

// buildTests compiles one static test binary per package that has tests.
func buildTests(dir string, pkgs []string) ([]testBinary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	listArgs := append([]string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}\t{{.Module.Path}}"}, pkgs...)
	out, err := exec.Command("go", listArgs...).Output()
	if err != nil {
		return nil, fmt.Errorf("go list %v: %w", pkgs, err)
	}
	var tests []testBinary
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 5 || (f[2] == "0" && f[3] == "0") {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(f[0], f[4]), "/")
		if rel == "" {
			rel = filepath.Base(f[0])
		}
		name := strings.NewReplacer("/", "_", ".", "_").Replace(rel)
		bin := filepath.Join(dir, name+".test")
		t0 := time.Now()
		// -s -w: no symbol table or DWARF (stack traces still work): a
		// smaller initramfs unpacks faster under emulation.
		cmd := exec.Command("go", "test", "-c", "-ldflags=-s -w", "-o", bin, f[0])
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go test -c %s: %w", f[0], err)
		}
		logf("built %s in %s", name, time.Since(t0).Round(time.Millisecond))
		tests = append(tests, testBinary{Name: name, Path: bin, PkgDir: f[1], Package: f[0]})
	}
	return tests, nil
}
