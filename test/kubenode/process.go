package kubenode

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one long-running program of the cluster (etcd, a kubelet,
// containerd, ...). Its output is appended to LogPath. It is started with a
// parent-death signal, so it dies with the harness even on SIGKILL; what it
// forks off on purpose (containerd's shims) is found again by its cgroup.
type Process struct {
	// Name names the process in messages.
	Name string
	// Argv is the full command line, namespace entry included.
	Argv []string
	// Cgroups are cgroup.procs files the process joins before it execs, so
	// that it and everything it forks is accounted, and found, there.
	Cgroups []string
	// LogPath receives standard output and error.
	LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// joinCgroups is a shell prologue: it writes the shell's own pid into every
// file given before "--", then execs the rest, so the program starts inside
// those cgroups without a window in which it could fork outside them.
const joinCgroups = `while [ "$1" != "--" ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"`

// Start starts the process; starting a running process is an error.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("%s is already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "===== %s start at %s: %s\n", p.Name, time.Now().Format(time.RFC3339Nano), strings.Join(p.Argv, " "))
	argv := p.Argv
	if len(p.Cgroups) > 0 {
		argv = append(append(append([]string{"sh", "-c", joinCgroups, "sh"}, p.Cgroups...), "--"), p.Argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// Pid is the process id, or 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is alive.
func (p *Process) Running() bool { return p.Pid() != 0 }

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILL.
func (p *Process) Stop(grace time.Duration) {
	pid := p.Pid()
	if pid == 0 {
		return
	}
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
}

func closed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}
