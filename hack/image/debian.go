package main

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// rootfsRecipe is what makes a Debian root file system: everything in it
// is part of the cache key. Bump recipeVersion when mmdebstrapArgs changes.
const recipeVersion = "1"

// slimExcludes keep documentation, man pages and translations out, as
// Debian's -slim images do; copyright files stay.
var slimExcludes = []string{
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
	"path-exclude=/usr/share/lintian/*",
}

// DebianRootfs is a cached root file system layer.
type DebianRootfs struct {
	Layer    string          // gzip-compressed tar, normalised (see normalizeRootfs)
	Dirs     map[string]bool // its directories
	Packages []string        // "name version", every package installed
}

// rootfsMeta is stored next to a cached layer.
type rootfsMeta struct {
	Suite    string
	Arch     string
	Include  []string
	Built    time.Time
	Dirs     []string
	Packages []string
}

// RootfsCache builds Debian root file systems with mmdebstrap (minbase,
// the packages of the stage, no Recommends, slim) and keeps them, because a
// build downloads and installs a few hundred packages. A layer older than
// MaxAge is built again, so that security updates reach the images.
type RootfsCache struct {
	Dir     string
	MaxAge  time.Duration
	Refresh bool // build again even when fresh
	Log     func(format string, args ...any)
}

func (c *RootfsCache) key(b DebianBase, arch string) string {
	pkgs := append([]string(nil), b.Packages...)
	sort.Strings(pkgs)
	h := sha256.Sum256([]byte(strings.Join([]string{recipeVersion, b.Suite, arch, strings.Join(pkgs, ","), strings.Join(slimExcludes, ",")}, "\n")))
	return fmt.Sprintf("debian-%s-%s-%s", b.Suite, arch, hex.EncodeToString(h[:8]))
}

// Get returns the cached layer of b, building it when missing or stale.
func (c *RootfsCache) Get(ctx context.Context, b DebianBase, arch string) (*DebianRootfs, error) {
	base := filepath.Join(c.Dir, c.key(b, arch))
	if !c.Refresh {
		if r, age, err := loadRootfs(base); err == nil && age < c.MaxAge {
			c.Log("Reusing the Debian %s root file system with %v (built %s ago)", b.Suite, b.Packages, age.Round(time.Minute))
			return r, nil
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	c.Log("Building the Debian %s root file system with %v (mmdebstrap)", b.Suite, b.Packages)
	meta, err := c.build(ctx, b, arch, base)
	if err != nil {
		return nil, err
	}
	c.Log("Built the Debian %s root file system in %s", b.Suite, time.Since(start).Round(time.Second))
	if err := writeJSON(base+".json", meta); err != nil {
		return nil, err
	}
	r, _, err := loadRootfs(base)
	return r, err
}

func loadRootfs(base string) (*DebianRootfs, time.Duration, error) {
	var m rootfsMeta
	b, err := os.ReadFile(base + ".json")
	if err != nil {
		return nil, 0, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, 0, err
	}
	if _, err := os.Stat(base + ".tar.gz"); err != nil {
		return nil, 0, err
	}
	r := &DebianRootfs{Layer: base + ".tar.gz", Dirs: map[string]bool{}, Packages: m.Packages}
	for _, d := range m.Dirs {
		r.Dirs[d] = true
	}
	return r, time.Since(m.Built), nil
}

// build runs mmdebstrap into a temporary tarball and normalises it into
// base.tar.gz.
func (c *RootfsCache) build(ctx context.Context, b DebianBase, arch, base string) (_ *rootfsMeta, err error) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return nil, fmt.Errorf("mmdebstrap is not installed (apt-get install mmdebstrap; make images does it): %w", err)
	}
	tmp, err := os.MkdirTemp(c.Dir, "build-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if rmErr := removeUnmounted(tmp); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	raw, pkgList := filepath.Join(tmp, "rootfs.tar"), filepath.Join(tmp, "packages")
	args := []string{"--mode=root", "--variant=minbase", "--arch=" + arch, "--quiet"}
	if len(b.Packages) > 0 {
		args = append(args, "--include="+strings.Join(b.Packages, ","))
	}
	for _, x := range slimExcludes {
		args = append(args, "--dpkgopt="+x)
	}
	args = append(args,
		`--customize-hook=chroot "$1" dpkg-query -W -f='${Package} ${Version}\n' > `+pkgList,
		b.Suite, raw)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// On cancel, let mmdebstrap unmount what it mounted in its chroot.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mmdebstrap %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	dirs, err := compressRootfs(raw, base+".tar.gz")
	if err != nil {
		return nil, err
	}
	pl, err := os.ReadFile(pkgList)
	if err != nil {
		return nil, err
	}
	m := &rootfsMeta{Suite: b.Suite, Arch: arch, Include: b.Packages, Built: time.Now().UTC(),
		Dirs: sortedKeys(dirs), Packages: strings.Split(strings.TrimSpace(string(pl)), "\n")}
	return m, nil
}

// compressRootfs normalises the raw tarball into a gzip-compressed layer,
// written to a temporary file and renamed into place.
func compressRootfs(raw, dst string) (map[string]bool, error) {
	in, err := os.Open(raw)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), ".layer-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	if err := out.Chmod(0o644); err != nil {
		return nil, err
	}
	zw := gzip.NewWriter(out)
	dirs, err := normalizeRootfs(in, zw)
	if err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	return dirs, os.Rename(out.Name(), dst)
}

func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// removeUnmounted removes dir, after unmounting what a killed mmdebstrap
// may have left mounted in its chroot (proc, sys, dev): removing through a
// mount would delete the host's files. It refuses when a mount stays.
func removeUnmounted(dir string) error {
	for _, m := range MountsUnder(dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if left := MountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted there: %v", dir, left)
	}
	return os.RemoveAll(dir)
}

// MountsUnder lists the mount points below dir, deepest first.
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
