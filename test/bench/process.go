package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Process is a contender running inside the node namespace. "ip netns exec"
// execs the contender in place, so the pid is the contender's own.
type Process struct {
	cmd     *exec.Cmd
	Started time.Time
	done    chan struct{}
	log     *os.File
}

// StartProcess runs bin with args inside ns, its output appended to logPath.
func StartProcess(ns *netns.NS, logPath, bin string, args ...string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that Kill also ends the iptables-restore or
	// nft it may be running, as the end of a container's first process does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &Process{cmd: cmd, done: make(chan struct{}), log: log}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = cmd.Wait(); log.Close(); close(p.done) }()
	return p, nil
}

// Alive reports whether the process still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process and its children (its process group)
// and waits until the process is gone.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Usage is what a process has consumed so far.
type Usage struct {
	// CPU is user and system time of the process and of the children it has
	// waited for (iptables-restore, nft, …).
	CPU time.Duration
	// PeakRSS is the process's peak resident set (VmHWM), in bytes; its
	// children's memory is not included.
	PeakRSS int64
}

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// Usage reads the process's CPU times and peak memory from /proc. It
// returns an error once the process has exited.
func (p *Process) Usage() (Usage, error) {
	pid := p.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// Fields after the command name, which may hold spaces: state is the
	// first, utime the 12th, stime, cutime and cstime the next three.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 15 {
		return Usage{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	u := Usage{CPU: time.Duration(ticks) * time.Second / clockTicks}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			u.PeakRSS = kb * 1024
		}
	}
	return u, nil
}
