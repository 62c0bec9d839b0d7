package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a program run inside a namespace, the way kubelet runs a
// container: its output is appended to a log file, and it can be signalled,
// stopped, killed and started again. It runs in its own process group and,
// unless Detach, dies with the process that started it.
type Process struct {
	// Name names the process in messages and in its log.
	Name string
	// NS is the namespace it runs in ("ip netns exec"). Without one, Args
	// runs as given: for callers that enter namespaces themselves, with
	// nsenter or unshare.
	NS *NS
	// Args is the command line.
	Args []string
	// Cgroups are cgroup.procs files the process joins before it execs, so
	// that it and everything it forks is accounted, and found, there.
	Cgroups []string
	// Env is added to the environment of the process that starts it.
	Env []string
	// LogPath is where its standard output and error go (appended).
	LogPath string
	// Detach starts it without a parent-death signal, so that it outlives
	// the process that started it.
	Detach bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	starts int
}

// joinCgroups is a shell prologue: it writes the shell's own pid into every
// file given before "--", then execs the rest, so the program starts inside
// those cgroups without a window in which it could fork outside them.
const joinCgroups = `while [ "$1" != "--" ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"`

// Start starts the process. It is an error to start a running process.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(logf, "===== %s start #%d at %s: %v\n", p.Name, p.starts, time.Now().Format(time.RFC3339Nano), p.Args)
	// "ip netns exec" and the cgroup prologue exec the program in place: the
	// pid is the program's.
	argv := p.Args
	if len(p.Cgroups) > 0 {
		argv = append(append(append([]string{"sh", "-c", joinCgroups, "sh"}, p.Cgroups...), "--"), argv...)
	}
	if p.NS != nil {
		argv = append([]string{"ip", "netns", "exec", p.NS.Name}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !p.Detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Pid returns the process id, or 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is alive.
func (p *Process) Running() bool { return p.Pid() != 0 }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	pid := p.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return syscall.Kill(-pid, sig)
}

// Wait waits until the last run ends and returns how it ended: nil for
// exit code 0, else the *exec.ExitError. It returns at once when the
// process was never started.
func (p *Process) Wait() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return errors.New(p.Name + " was never started")
	}
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = p.Wait()
	return nil
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL. Stopping a process
// that is not running does nothing.
func (p *Process) Stop(grace time.Duration) {
	if p.Pid() == 0 {
		return
	}
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = p.Signal(syscall.SIGKILL)
		<-done
	}
}

func isClosed(c chan struct{}) bool {
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
