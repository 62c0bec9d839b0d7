package upgrade

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// prevVersion tags release N-1's images and is stamped into its binaries,
// so that its images never shadow N's in a node's containerd.
const prevVersion = "v0.0.0-nminus1"

// Image names of release N-1 (the Makefile's default repository).
const (
	prevManagerImage = "ghcr.io/synterix/synterix-kube-proxy:" + prevVersion
	prevAgentImage   = "ghcr.io/synterix/synterix-kube-proxy-agent:" + prevVersion
)

// podTemplateMerge is the subject that starts the merge which made agent
// pods part of the rollout (revisions with pod templates, an OnDelete
// DaemonSet). Its first parent is the default N-1: an operator with
// RollingUpdate DaemonSets and revisions without pod templates.
const podTemplateMerge = "Merge branch 'upgrade'"

// previousCommit returns the commit of release N-1: UPGRADE_FROM (any git
// revision) when set, else the first parent of the podTemplateMerge on
// HEAD's first-parent history.
func previousCommit(root string) (string, error) {
	rev := os.Getenv("UPGRADE_FROM")
	if rev == "" {
		out, err := git(root, "log", "--first-parent", "--format=%H %s", "HEAD")
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(out, "\n") {
			hash, subject, _ := strings.Cut(l, " ")
			if strings.HasPrefix(subject, podTemplateMerge) {
				rev = hash + "^1"
				break
			}
		}
		if rev == "" {
			return "", fmt.Errorf("no commit %q on HEAD's first-parent history: set UPGRADE_FROM to release N-1's commit", podTemplateMerge)
		}
	}
	out, err := git(root, "rev-parse", "--verify", rev+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("UPGRADE_FROM=%q: %w", rev, err)
	}
	return strings.TrimSpace(out), nil
}

func git(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// buildPrevious checks commit out into a detached git worktree of the
// repository at root (removed when the test ends) and builds release N-1's
// manager and agent images there with its own hack/image, tagged
// prevVersion, into that worktree's bin/images. It returns the release to
// deploy and its two images.
func buildPrevious(ctx context.Context, t *testing.T, root, commit string) (shipped.Release, []kubenode.Image) {
	t.Helper()
	sweepWorktrees(root)
	parent, err := os.MkdirTemp("", worktreePrefix)
	if err == nil {
		err = ownDir(parent)
	}
	if err != nil {
		t.Fatal(err)
	}
	wt := filepath.Join(parent, "nminus1")
	if _, err := git(root, "worktree", "add", "--detach", wt, commit); err != nil {
		_ = os.RemoveAll(parent)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := git(root, "worktree", "remove", "--force", wt); err != nil {
			t.Errorf("removing the worktree of N-1: %v", err)
		}
		_ = os.RemoveAll(parent)
	})
	epoch, err := git(wt, "log", "-1", "--format=%ct")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(wt, "bin", "images")
	cmd := exec.CommandContext(ctx, "go", "run", "./hack/image", "-out", out,
		"-build-arg", "VERSION="+prevVersion, "-build-arg", "AGENT_IMAGE="+prevAgentImage,
		"-image", "manager="+prevManagerImage, "-image", "agent="+prevAgentImage, "manager", "agent")
	cmd.Dir = wt
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strings.TrimSpace(epoch))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building N-1's images (%s) in %s: %v\n%s", commit, wt, err, b)
	}
	images, err := readImages(out)
	if err != nil {
		t.Fatal(err)
	}
	var list []kubenode.Image
	for _, target := range []string{"manager", "agent"} {
		img, ok := images[target]
		if !ok {
			t.Fatalf("N-1's hack/image wrote no %s image into %s", target, out)
		}
		img.Target = "nminus1-" + target
		list = append(list, img)
	}
	return shipped.Release{Root: wt, Manager: prevManagerImage, Agent: prevAgentImage}, list
}

// readImages reads an images.json without asking for a pause image (N-1's
// folder holds only its manager and agent).
func readImages(dir string) (map[string]kubenode.Image, error) {
	data, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return nil, err
	}
	var list []kubenode.Image
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s/images.json: %w", dir, err)
	}
	out := map[string]kubenode.Image{}
	for _, img := range list {
		out[img.Target] = img
	}
	return out, nil
}

// combineImages writes, into a new folder, an images.json that lists N's
// four images (root/bin/images, from make images) and N-1's manager and
// agent, so that every node imports both releases: an upgrade or a
// downgrade then pulls nothing, as on a cluster with a registry mirror.
func combineImages(t *testing.T, root string, prev []kubenode.Image) (dir string, current shipped.Release) {
	t.Helper()
	n, err := kubenode.LoadImages(filepath.Join(root, "bin", "images"))
	if err != nil {
		t.Fatal(err)
	}
	list := prev
	for _, target := range []string{"manager", "agent", "pause", "echo"} {
		img, ok := n[target]
		if !ok {
			t.Fatalf("no %s image in %s/bin/images: run 'make images'", target, root)
		}
		if img.Image == prevManagerImage || img.Image == prevAgentImage {
			t.Fatalf("N's %s image is named %s, like N-1's: build N with another VERSION", target, img.Image)
		}
		list = append(list, img)
	}
	dir = t.TempDir()
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, shipped.Release{Root: root, Manager: n["manager"].Image, Agent: n["agent"].Image}
}
