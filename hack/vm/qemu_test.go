package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests below run a FAKE qemu: a shell script that prints what a guest
// would print on its serial console (or what a broken KVM does), so that the
// choice of accelerator is tested without a kernel. The real boot is tested
// by `make test-ipvs-vm`.

const fakeGuest = `echo "SYNX-VM: INIT-START uptime=1 kernel=fake"
echo "SYNX-VM: BEGIN t uptime=1"
echo "--- PASS: TestX (0.00s)"
echo "SYNX-VM: END t rc=0 uptime=1"
echo "SYNX-VM: ALL-DONE uptime=1"`

// fakeQemu writes a script that behaves as kvm says under -accel kvm and
// boots the fake guest under -accel tcg, and records each accelerator used.
func fakeQemu(t *testing.T, kvm string) (bin, calls string) {
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script := `#!/bin/sh
accel=
while [ $# -gt 0 ]; do [ "$1" = -accel ] && accel=$2; shift; done
echo "$accel" >> ` + calls + `
if [ "$accel" = kvm ]; then
` + kvm + `
fi
` + fakeGuest + "\n"
	bin = filepath.Join(dir, "qemu")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, calls
}

func fakeSpec(t *testing.T, qemu string, kvm error) bootSpec {
	return bootSpec{
		Kernel: kernel{Release: "fake", Vmlinuz: "/dev/null"}, Initrd: "/dev/null", MemMB: 64, SMP: 1,
		Accel: "auto", Timeout: time.Minute, KVMDeadline: 2 * time.Second,
		Log: filepath.Join(t.TempDir(), "console.log"), Qemu: qemu,
		OpenKVM: func() error { return kvm },
	}
}

func TestAccelChoiceWithFakeQemu(t *testing.T) {
	cases := map[string]struct {
		kvmScript string
		kvmOpen   error
		wantAccel string
		wantCalls string
		wantWhy   string
	}{
		"kvm boots": {
			kvmScript: ":", wantAccel: "kvm", wantCalls: "kvm", wantWhy: "/dev/kvm opens",
		},
		"no /dev/kvm": {
			kvmScript: ":", kvmOpen: os.ErrNotExist, wantAccel: "tcg", wantCalls: "tcg", wantWhy: "/dev/kvm unusable",
		},
		"kvm aborts": {
			kvmScript: `echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; exit 134`,
			wantAccel: "tcg", wantCalls: "kvm tcg", wantWhy: "failed to set MSR 0x10a",
		},
		"kvm silent": {
			kvmScript: "exec sleep 60", wantAccel: "tcg", wantCalls: "kvm tcg", wantWhy: "no output from /init within 2s",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			qemu, calls := fakeQemu(t, c.kvmScript)
			res, err := bootAuto(fakeSpec(t, qemu, c.kvmOpen))
			if err != nil {
				t.Fatalf("boot: %v", err)
			}
			if err := res.Verdict([]string{"t"}); err != nil {
				t.Fatalf("verdict: %v", err)
			}
			got, _ := os.ReadFile(calls)
			if res.accel != c.wantAccel || strings.Join(strings.Fields(string(got)), " ") != c.wantCalls ||
				!strings.Contains(res.why, c.wantWhy) {
				t.Fatalf("accel %q (%s), calls %q; want %q (%s), calls %q", res.accel, res.why, got, c.wantAccel, c.wantWhy, c.wantCalls)
			}
		})
	}
}

// A test failure inside a guest that booted under KVM is a test failure,
// not a reason to boot again under TCG.
func TestKVMGuestFailureIsNotRetried(t *testing.T) {
	qemu, calls := fakeQemu(t, `echo "SYNX-VM: INIT-START uptime=1 kernel=fake"; echo "SYNX-VM: BEGIN t"; exit 1`)
	res, err := bootAuto(fakeSpec(t, qemu, nil))
	if errors.Is(err, errNoInit) {
		t.Fatalf("boot: %v", err)
	}
	got, _ := os.ReadFile(calls)
	if strings.TrimSpace(string(got)) != "kvm" || res.Verdict([]string{"t"}) == nil {
		t.Fatalf("calls %q, verdict %v: want one kvm boot and a failing verdict", got, res.Verdict([]string{"t"}))
	}
}

// An explicit -accel is used as given, with no fallback.
func TestExplicitAccelIsNotReplaced(t *testing.T) {
	qemu, calls := fakeQemu(t, `exit 134`)
	s := fakeSpec(t, qemu, nil)
	s.Accel = "kvm"
	if _, err := bootAuto(s); err == nil {
		t.Fatal("want an error from a kvm boot that aborts")
	}
	if got, _ := os.ReadFile(calls); strings.TrimSpace(string(got)) != "kvm" {
		t.Fatalf("calls %q, want kvm only", got)
	}
}
