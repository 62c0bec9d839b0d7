package kubenode

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestCgroupTreeDestroy puts a process that forks into a tree's runtime
// cgroup the way a node's processes are started, and checks that the tree
// sees both processes, that Destroy kills them (and waits until they are
// reaped) and removes the tree from every hierarchy.
func TestCgroupTreeDestroy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING CGROUP TEST: needs root")
	}
	path := fmt.Sprintf("/%stest-%d", Prefix, os.Getpid())
	tree, err := NewCgroupTree(path, "runtime")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tree.Destroy(10 * time.Second) })
	p := &netns.Process{
		Name:    "forker",
		Args:    []string{"sh", "-c", "sleep 600 & exec sleep 601"},
		Cgroups: tree.ProcsFiles("runtime"),
		LogPath: filepath.Join(t.TempDir(), "forker.log"),
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	if err := pollUntil(10*time.Second, func() bool { pids = tree.Pids(); return len(pids) == 2 }); err != nil {
		t.Fatalf("processes in %s: %v, want the shell's two sleeps", path, pids)
	}
	if !slices.Contains(pids, p.Pid()) {
		t.Errorf("started process %d not in %v", p.Pid(), pids)
	}
	if err := tree.Destroy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("process %d survived Destroy", pid)
		}
	}
	if left := LeftoverCgroups(path[1:]); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

func pollUntil(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
