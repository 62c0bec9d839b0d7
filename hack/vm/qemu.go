package main

import (
	"bufio"
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
	Accel   string
	Timeout time.Duration
	Verbose bool
	Log     string
}

type bootResult struct {
	serialParser
	accel string
	total time.Duration
}

func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// boot runs qemu, streams the serial console through the parser, and
// returns when the guest powers off or the timeout kills it.
func boot(s bootSpec) (*bootResult, error) {
	res := &bootResult{accel: s.Accel}
	if res.accel == "auto" {
		res.accel = "tcg"
		if kvmUsable() {
			res.accel = "kvm"
		}
	}
	cmdline := strings.Join([]string{
		"console=ttyS0", "rdinit=/init", "panic=-1", "loglevel=4",
		"mitigations=off", "nokaslr", "tsc=unstable", "random.trust_cpu=on",
	}, " ")
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "pc", "-accel", res.accel,
		"-m", strconv.Itoa(s.MemMB), "-smp", strconv.Itoa(s.SMP),
		"-kernel", s.Kernel.Vmlinuz, "-initrd", s.Initrd, "-append", cmdline,
		"-serial", "stdio", "-no-reboot", "-nic", "none",
	}
	if res.accel == "tcg" {
		args = append(args, "-cpu", "max")
	} else {
		args = append(args, "-cpu", "host")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	cmd.Stderr = os.Stderr
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logFile, err := os.Create(s.Log)
	if err != nil {
		return res, err
	}
	defer logFile.Close()

	start := time.Now()
	logf("booting %s (accel=%s, %d MiB, %d CPU), timeout %s", s.Kernel.Release, res.accel, s.MemMB, s.SMP, s.Timeout)
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("qemu-system-x86_64: %w (apt-get install qemu-system-x86)", err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReaderSize(stdout, 64<<10)
		for {
			l, err := r.ReadString('\n')
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
	timer := time.NewTimer(s.Timeout)
	defer timer.Stop()
	var tail []string
	inTest := false
	timedOut := false
loop:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break loop
			}
			t := time.Since(start)
			fmt.Fprintf(logFile, "[%9.3f] %s", t.Seconds(), l)
			if !strings.HasSuffix(l, "\n") {
				fmt.Fprintln(logFile)
			}
			res.Feed(l, t)
			isMarker := strings.Contains(l, marker)
			if isMarker {
				inTest = res.cur != nil
			}
			if s.Verbose || isMarker || inTest {
				fmt.Fprintf(os.Stderr, "[%7.2fs] %s", t.Seconds(), strings.TrimRight(l, "\r\n")+"\n")
			}
			tail = append(tail, l)
			if len(tail) > 60 {
				tail = tail[1:]
			}
		case <-timer.C:
			timedOut = true
			logf("timeout after %s: killing qemu", s.Timeout)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			for range lines {
			}
			break loop
		}
	}
	werr := cmd.Wait()
	res.total = time.Since(start)
	if timedOut || !res.SawAllDone {
		fmt.Fprintln(os.Stderr, "vm: last console lines:")
		for _, l := range tail {
			fmt.Fprint(os.Stderr, "  | "+strings.TrimRight(l, "\r\n")+"\n")
		}
	}
	if timedOut {
		return res, fmt.Errorf("VM timed out after %s", s.Timeout)
	}
	if werr != nil && !res.SawAllDone {
		return res, fmt.Errorf("qemu: %w", werr)
	}
	return res, nil
}
