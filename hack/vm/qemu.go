package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type bootSpec struct {
	Kernel  kernel
	Initrd  string
	MemMB   int
	SMP     int
	Accel   string // kvm, tcg or auto
	Timeout time.Duration
	// KVMDeadline bounds the wait for /init's first marker under KVM when
	// Accel is auto; past it, the boot is retried under TCG.
	KVMDeadline time.Duration
	Verbose     bool
	Log         string
	// Qemu is the emulator binary; tests put a fake here.
	Qemu string
	// OpenKVM reports whether /dev/kvm can be opened; tests replace it.
	OpenKVM func() error
}

type bootResult struct {
	serialParser
	accel string
	// why says how accel was chosen, in words for the log and summary.
	why   string
	total time.Duration
}

// errNoInit means qemu exited, or stayed silent past the deadline, before
// the guest's /init printed its first marker: the accelerator, not the
// tests, failed.
var errNoInit = errors.New("the guest never reached /init")

func openKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// bootAuto boots under the accelerator asked for. With "auto" it tries KVM
// only where /dev/kvm opens, and falls back to software emulation (TCG) when
// qemu aborts or the guest stays silent past KVMDeadline, because a /dev/kvm
// that opens can still fail to run a guest (nested KVM refusing an MSR).
func bootAuto(s bootSpec) (*bootResult, error) {
	if s.Qemu == "" {
		s.Qemu = "qemu-system-x86_64"
	}
	if s.OpenKVM == nil {
		s.OpenKVM = openKVM
	}
	if s.Accel != "auto" {
		return boot(s, "asked for with -accel")
	}
	if err := s.OpenKVM(); err != nil {
		s.Accel = "tcg"
		return boot(s, fmt.Sprintf("/dev/kvm unusable (%v)", err))
	}
	s.Accel = "kvm"
	res, err := boot(s, "/dev/kvm opens")
	if !errors.Is(err, errNoInit) {
		return res, err
	}
	logf("KVM failed (%v): booting again under software emulation (TCG)", err)
	s.Accel = "tcg"
	return boot(s, fmt.Sprintf("KVM failed: %v", err))
}

// qemuArgs is the command line of one boot.
func qemuArgs(s bootSpec) []string {
	cmdline := strings.Join([]string{
		"console=ttyS0", "rdinit=/init", "panic=-1", "loglevel=4",
		"mitigations=off", "nokaslr", "tsc=unstable", "random.trust_cpu=on",
	}, " ")
	cpu := "host"
	if s.Accel == "tcg" {
		cpu = "max"
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "pc", "-accel", s.Accel, "-cpu", cpu,
		"-m", strconv.Itoa(s.MemMB), "-smp", strconv.Itoa(s.SMP),
		"-kernel", s.Kernel.Vmlinuz, "-initrd", s.Initrd, "-append", cmdline,
		"-serial", "stdio", "-no-reboot", "-nic", "none",
	}
}

// boot runs qemu once under s.Accel, streams the serial console through the
// parser, and returns when the guest powers off or a deadline kills it. Under
// kvm with a KVMDeadline, an exit or silence before /init is errNoInit.
func boot(s bootSpec, why string) (*bootResult, error) {
	res := &bootResult{accel: s.Accel, why: why}
	cmd := exec.Command(s.Qemu, qemuArgs(s)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	stderr := &tailWriter{w: os.Stderr}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logFile, err := os.Create(s.Log)
	if err != nil {
		return res, err
	}
	defer logFile.Close()

	start := time.Now()
	logf("booting %s (accel=%s: %s; %d MiB, %d CPU), timeout %s", s.Kernel.Release, s.Accel, why, s.MemMB, s.SMP, s.Timeout)
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("%s: %w (apt-get install qemu-system-x86)", s.Qemu, err)
	}
	initDeadline := time.Duration(0)
	if s.Accel == "kvm" {
		initDeadline = s.KVMDeadline
	}
	c := console{res: res, log: logFile, verbose: s.Verbose, start: start}
	outcome := c.stream(readLines(stdout), s.Timeout, initDeadline, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	werr := cmd.Wait()
	res.total = time.Since(start)
	if !res.SawInit && initDeadline > 0 {
		if outcome == streamInitDeadline {
			return res, fmt.Errorf("%w: no output from /init within %s", errNoInit, initDeadline)
		}
		return res, fmt.Errorf("%w: qemu exited (%v): %s", errNoInit, werr, stderr.last())
	}
	if outcome != streamEOF || !res.SawAllDone {
		c.printTail()
	}
	if outcome == streamTimeout {
		return res, fmt.Errorf("VM timed out after %s", s.Timeout)
	}
	if werr != nil && !res.SawAllDone {
		return res, fmt.Errorf("qemu: %w", werr)
	}
	return res, nil
}

// readLines delivers the console line by line and closes at EOF.
func readLines(r io.Reader) <-chan string {
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			l, err := br.ReadString('\n')
			if l != "" {
				lines <- l
			}
			if err != nil {
				if err != io.EOF {
					logf("console read: %v", err)
				}
				return
			}
		}
	}()
	return lines
}

type streamOutcome int

const (
	streamEOF streamOutcome = iota
	streamTimeout
	streamInitDeadline
)

// console copies the guest's serial output to the log, the parser and (for
// test output) stderr, keeping the last lines for a failure report.
type console struct {
	res     *bootResult
	log     io.Writer
	verbose bool
	start   time.Time
	tail    []string
	inTest  bool
}

// stream consumes lines until EOF, the overall timeout, or (when
// initDeadline is set) the init deadline passing before /init spoke. On a
// deadline it calls kill and drains the console.
func (c *console) stream(lines <-chan string, timeout, initDeadline time.Duration, kill func()) streamOutcome {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var initC <-chan time.Time
	if initDeadline > 0 {
		t := time.NewTimer(initDeadline)
		defer t.Stop()
		initC = t.C
	}
	outcome := streamEOF
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return outcome
			}
			c.line(l)
			continue
		case <-timer.C:
			outcome = streamTimeout
			logf("timeout after %s: killing qemu", timeout)
		case <-initC:
			if c.res.SawInit {
				initC = nil
				continue
			}
			outcome = streamInitDeadline
			logf("no output from /init within %s: killing qemu", initDeadline)
		}
		kill()
		for range lines {
		}
		return outcome
	}
}

func (c *console) line(l string) {
	t := time.Since(c.start)
	fmt.Fprintf(c.log, "[%9.3f] %s", t.Seconds(), l)
	if !strings.HasSuffix(l, "\n") {
		fmt.Fprintln(c.log)
	}
	c.res.Feed(l, t)
	isMarker := strings.Contains(l, marker)
	if isMarker {
		c.inTest = c.res.cur != nil
	}
	if c.verbose || isMarker || c.inTest {
		fmt.Fprintf(os.Stderr, "[%7.2fs] %s", t.Seconds(), strings.TrimRight(l, "\r\n")+"\n")
	}
	c.tail = append(c.tail, l)
	if len(c.tail) > 60 {
		c.tail = c.tail[1:]
	}
}

func (c *console) printTail() {
	fmt.Fprintln(os.Stderr, "vm: last console lines:")
	for _, l := range c.tail {
		fmt.Fprint(os.Stderr, "  | "+strings.TrimRight(l, "\r\n")+"\n")
	}
}

// tailWriter passes qemu's stderr through and keeps its last bytes, so that
// the reason for an abort can be named.
type tailWriter struct {
	w   io.Writer
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2048 {
		t.buf = t.buf[len(t.buf)-2048:]
	}
	return t.w.Write(p)
}

func (t *tailWriter) last() string {
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "no message"
	}
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-2):], " / ")
}
