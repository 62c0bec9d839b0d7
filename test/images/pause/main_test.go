package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary run as pause itself.
func TestMain(m *testing.M) {
	if os.Getenv("SYNX_PAUSE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestVersion(t *testing.T) {
	out, err := pauseCmd("-v").Output()
	if err != nil || strings.TrimSpace(string(out)) != "pause dev" {
		t.Errorf("-v: %q %v", out, err)
	}
}

func pauseCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), "SYNX_PAUSE_MAIN=1")
	return cmd
}

// Pause runs as PID 1 of a new PID namespace, as in a pod. A process that
// enters the namespace and leaves an orphan behind makes pause its parent;
// when the orphan exits, pause must reap it. Then SIGTERM ends pause with
// status 0.
func TestReapsOrphansAndExitsOnSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: needs root for a PID namespace")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("SKIPPING: nsenter (util-linux) is not installed")
	}
	cmd := pauseCmd()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()

	// nsenter's child (sh) starts sleep in pause's namespace and exits:
	// sleep's parent becomes the namespace's init, pause. sleep must not
	// hold nsenter's output pipe, or CombinedOutput waits for it to end.
	if out, err := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--",
		"/bin/sh", "-c", "sleep 2 >/dev/null 2>&1 & exit 0").CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	if !waitFor(10*time.Second, func() bool { return len(children(pid)) > 0 }) {
		t.Fatal("the orphan never became a child of pause")
	}
	if !waitFor(30*time.Second, func() bool { return len(children(pid)) == 0 }) {
		t.Fatalf("pause did not reap its child: %v", children(pid))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v (stderr %q)", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("pause complained as PID 1: %q", stderr.String())
	}
}

// children lists the processes (zombies included) whose parent is pid, as
// "pid:state".
func children(pid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name()+":"+f[0])
		}
	}
	return out
}

func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
