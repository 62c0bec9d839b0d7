package upgrade

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// logWriter sends each write to t.Log (progress lines, the deploy script's
// output).
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logf logs a line with the wall time (UTC), for matching with the
// cluster's logs.
func logf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("%s "+format, append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// nodeCount is UPGRADE_NODES, default 4: two nodes for each
// GatewayConfig, so that both rollouts show an order.
func nodeCount(t *testing.T) int {
	s := os.Getenv("UPGRADE_NODES")
	if s == "" {
		return 4
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 2 {
		t.Fatalf("UPGRADE_NODES=%q: want a number of nodes, at least 2", s)
	}
	return n
}

// upCluster brings up the real cluster with the images of imagesDir. When
// the test ends it tears the cluster down and checks that nothing of it is
// left on the host (as the e2e suite's AfterSuite); its folder (logs) is
// removed only when the test passed.
func upCluster(ctx context.Context, t *testing.T, imagesDir string, nodes int) *shipped.Cluster {
	t.Helper()
	before, err := kubenode.TakeHostState()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := shipped.Up(ctx, shipped.Options{Nodes: nodes, Progress: logWriter{t}, ImagesDir: imagesDir})
	if err != nil {
		t.Fatal(err)
	}
	stop := sc.DownOnSignal()
	t.Cleanup(func() {
		stop()
		fp := kubenode.CaptureFootprint(sc.ID)
		if err := sc.Down(); err != nil {
			t.Errorf("tearing %s down: %v", sc.ID, err)
		}
		left, err := before.Leftovers(sc.ID, fp)
		if err != nil {
			t.Error(err)
		}
		for _, l := range left {
			if !strings.HasPrefix(l, "folder ") { // kept for its logs until below
				t.Errorf("left on the host by the cluster: %s", l)
			}
		}
		if t.Failed() {
			t.Logf("UPGRADE TEST FAILED: the logs are in %s", sc.Dir)
		} else if err := sc.RemoveDir(); err != nil {
			t.Error(err)
		}
	})
	return sc
}

// worktreePrefix names the folders of N-1's worktrees.
const worktreePrefix = "synx-upgrade-"

// sweepWorktrees removes the worktrees of runs whose process is gone (a
// run killed by SIGKILL or ended by Ctrl-C, whose cleanup never ran), and
// prunes git's record of them.
func sweepWorktrees(root string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), worktreePrefix+"*"))
	for _, d := range dirs {
		if data, err := os.ReadFile(filepath.Join(d, "owner")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && syscall.Kill(pid, 0) == nil {
				continue // a live run's
			}
		}
		_, _ = git(root, "worktree", "remove", "--force", filepath.Join(d, "nminus1"))
		_ = os.RemoveAll(d)
	}
	_, _ = git(root, "worktree", "prune")
}

// ownDir marks dir as this process's.
func ownDir(dir string) error {
	return os.WriteFile(filepath.Join(dir, "owner"), []byte(fmt.Sprint(os.Getpid())), 0o644)
}
