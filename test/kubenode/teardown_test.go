package kubenode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// childEnv makes the test binary a cluster owner for TestInterruptAndKill:
// it brings a one-node cluster up with a running pod, prints "READY <id>"
// and waits to be signalled.
const childEnv = "SYNX_KUBENODE_CHILD"

// TestInterruptAndKill proves the two ways a run can end early: Ctrl-C
// (SIGINT) tears everything down at once, and after SIGKILL, which no
// handler sees, the cluster is left (the leftover check sees it) until the
// next run's SweepStale removes all of it.
func TestInterruptAndKill(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runChild(t)
		return
	}
	before := requireNodes(t)
	t.Run("SIGINT", func(t *testing.T) {
		id, wait := startChild(t)
		fp := CaptureFootprint(id)
		if err := wait(syscall.SIGINT); err == nil || !strings.Contains(err.Error(), "exit status 130") {
			t.Errorf("child after SIGINT: %v, want exit status 130 from the teardown handler", err)
		}
		left, err := before.Leftovers(id, fp)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range left {
			t.Errorf("left after SIGINT: %s", l)
		}
	})
	t.Run("SIGKILL", func(t *testing.T) {
		id, wait := startChild(t)
		fp := CaptureFootprint(id)
		_ = wait(syscall.SIGKILL)
		left, err := before.Leftovers(id, fp)
		if err != nil {
			t.Fatal(err)
		}
		// Kubelet, containerd and the control plane die with their parent;
		// the shims and containers they started do not.
		var cgroups, namespaces, procs int
		for _, l := range left {
			cgroups += strings.Count(l, "cgroup /sys/fs/cgroup/")
			namespaces += strings.Count(l, "network namespace ")
			procs += strings.Count(l, "process ")
		}
		if cgroups == 0 || namespaces == 0 || procs == 0 {
			t.Errorf("after SIGKILL the check sees %q; want the node's cgroups, namespaces and containers", left)
		}
		if n := SweepStale(); n < 1 {
			t.Errorf("SweepStale removed %d clusters, want the killed run's", n)
		}
		if left, err = before.Leftovers(id, fp); err != nil {
			t.Fatal(err)
		}
		for _, l := range left {
			t.Errorf("left after SIGKILL and SweepStale: %s", l)
		}
	})
}

// startChild runs this test binary as a cluster owner and waits for READY.
// wait sends sig and waits for the child to exit.
func startChild(t *testing.T) (id string, wait func(syscall.Signal) error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInterruptAndKill$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	logPath := filepath.Join(t.TempDir(), "child.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "READY" {
				ready <- f[1]
			}
		}
		close(ready)
	}()
	select {
	case id = <-ready:
	case <-time.After(4 * time.Minute):
	}
	if id == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		data, _ := os.ReadFile(logPath)
		t.Fatalf("child cluster did not get ready:\n%s", data)
	}
	return id, func(sig syscall.Signal) error {
		_ = cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			return fmt.Errorf("child did not exit within 2m of %v", sig)
		}
	}
}

// runChild is the child's side: a cluster with a running pod, then wait.
func runChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Up(ctx, Options{Nodes: 1, Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	c.DownOnSignal()
	defer func() { _ = c.Down() }()
	// The ServiceAccount admission plugin refuses pods until the
	// ServiceAccount controller made "default".
	if err := poll.Until(ctx, time.Minute, "ServiceAccount default/default", func(ctx context.Context) (bool, string, error) {
		_, err := c.Kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kube.CoreV1().Pods("default").Create(ctx, echoPod("echo", c.Nodes[0].Name, false, 8080), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodReady(ctx, "default", "echo", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(c.Nodes[0].Cgroups.PodPids(podUID(ctx, t, c, "default", "echo"))) == 0 {
		t.Fatal("the pod has no process in the node's cgroups")
	}
	fmt.Printf("READY %s\n", c.ID)
	<-ctx.Done()
}

func podUID(ctx context.Context, t *testing.T, c *Cluster, ns, name string) string {
	p, err := c.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}
