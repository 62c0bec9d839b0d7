package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// kernel is a Debian kernel package extracted under bin/vm/kernels/<pkg>.
type kernel struct {
	Package string // the real (non-meta) package name, e.g. linux-image-6.1.0-50-amd64
	Release string // uname -r, e.g. 6.1.0-50-amd64
	Root    string // extraction root
	Vmlinuz string
}

func (k kernel) modDir() string { return filepath.Join(k.Root, "lib", "modules", k.Release) }

var imagePkgRe = regexp.MustCompile(`^linux-image-[0-9][^ ]*$`)

// resolveKernelPackage follows Debian meta packages (linux-image-amd64 ->
// linux-image-6.1.0-NN-amd64) down to the package that ships boot/vmlinuz.
func resolveKernelPackage(name string) (string, error) {
	seen := map[string]bool{}
	for i := 0; i < 5; i++ {
		if seen[name] {
			break
		}
		seen[name] = true
		out, err := exec.Command("apt-cache", "depends", "--important", name).Output()
		if err != nil {
			return "", fmt.Errorf("apt-cache depends %s: %w (run apt-get update?)", name, err)
		}
		next := ""
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			dep, ok := strings.CutPrefix(line, "Depends: ")
			if !ok {
				continue
			}
			dep = strings.Trim(dep, "<>")
			if imagePkgRe.MatchString(dep) && strings.HasPrefix(dep, "linux-image-") {
				next = dep
				break
			}
		}
		if next == "" {
			return name, nil // no linux-image dependency: this is the real image
		}
		name = next
	}
	return name, nil
}

// fetchKernel downloads (apt-get download) and extracts the kernel package,
// decompresses modules, and runs depmod on the extracted tree. Everything is
// cached: a second call with the same package does no work.
func fetchKernel(outDir, pkgName string) (kernel, error) {
	k, err := fetchKernelOnce(outDir, pkgName)
	if err == nil {
		return k, nil
	}
	// Stale package lists name a kernel the archive no longer serves:
	// refresh them once and try again.
	logf("%v; running apt-get update and retrying", err)
	_ = os.Remove(filepath.Join(outDir, "kernels", "resolved-"+pkgName))
	if uerr := run("", "apt-get", "update", "-q"); uerr != nil {
		return k, fmt.Errorf("%w (apt-get update: %v)", err, uerr)
	}
	return fetchKernelOnce(outDir, pkgName)
}

func fetchKernelOnce(outDir, pkgName string) (kernel, error) {
	// apt-cache takes seconds; the resolution is cached with the kernel
	// (remove bin/vm to pick up a newer kernel from the archive).
	resolved := filepath.Join(outDir, "kernels", "resolved-"+pkgName)
	var real string
	if b, err := os.ReadFile(resolved); err == nil {
		real = strings.TrimSpace(string(b))
	}
	if real == "" || !exists(filepath.Join(outDir, "kernels", real, ".done")) {
		var err error
		if real, err = resolveKernelPackage(pkgName); err != nil {
			return kernel{}, err
		}
	}
	k := kernel{Package: real, Root: filepath.Join(outDir, "kernels", real)}
	done := filepath.Join(k.Root, ".done")
	if _, err := os.Stat(done); err != nil {
		if err := os.RemoveAll(k.Root); err != nil {
			return k, err
		}
		dl := filepath.Join(outDir, "debs")
		if err := os.MkdirAll(dl, 0o755); err != nil {
			return k, err
		}
		// apt-get download writes into the working directory.
		logf("apt-get download %s", real)
		if err := run(dl, "apt-get", "download", "-q", real); err != nil {
			return k, err
		}
		debs, _ := filepath.Glob(filepath.Join(dl, real+"_*.deb"))
		if len(debs) == 0 {
			return k, fmt.Errorf("no .deb for %s in %s", real, dl)
		}
		sort.Strings(debs)
		deb := debs[len(debs)-1]
		logf("extracting %s", filepath.Base(deb))
		if err := os.MkdirAll(k.Root, 0o755); err != nil {
			return k, err
		}
		if err := run("", "dpkg-deb", "-x", deb, k.Root); err != nil {
			return k, err
		}
		rel, err := findRelease(k.Root)
		if err != nil {
			return k, err
		}
		k.Release = rel
		if err := decompressModules(k.modDir()); err != nil {
			return k, err
		}
		logf("depmod %s", rel)
		if err := run("", "depmod", "-b", k.Root, rel); err != nil {
			return k, err
		}
		if err := os.WriteFile(done, []byte(rel+"\n"), 0o644); err != nil {
			return k, err
		}
	}
	if err := os.WriteFile(resolved, []byte(real+"\n"), 0o644); err != nil {
		return k, err
	}
	rel, err := findRelease(k.Root)
	if err != nil {
		return k, err
	}
	k.Release = rel
	k.Vmlinuz = filepath.Join(k.Root, "boot", "vmlinuz-"+rel)
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return k, fmt.Errorf("kernel image: %w", err)
	}
	return k, nil
}

func findRelease(root string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("no lib/modules in %s: %w", root, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("no kernel release dir in %s/lib/modules", root)
}

// decompressModules turns .ko.xz / .ko.zst into plain .ko so that busybox
// insmod/modprobe inside the VM can load them without decompressors.
func decompressModules(dir string) error {
	var xzs, zsts []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(p, ".ko.xz"):
			xzs = append(xzs, p)
		case strings.HasSuffix(p, ".ko.zst"):
			zsts = append(zsts, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(xzs)+len(zsts) > 0 {
		logf("decompressing %d modules", len(xzs)+len(zsts))
	}
	for _, batch := range chunk(xzs, 200) {
		if err := run("", "xz", append([]string{"-d", "-f"}, batch...)...); err != nil {
			return err
		}
	}
	for _, batch := range chunk(zsts, 200) {
		if err := run("", "zstd", append([]string{"-q", "-d", "-f", "--rm"}, batch...)...); err != nil {
			return err
		}
	}
	return nil
}

func chunk(s []string, n int) [][]string {
	var out [][]string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}

// moduleDeps parses modules.dep of the extracted tree: module path -> deps.
func moduleDeps(k kernel) (map[string][]string, error) {
	f, err := os.Open(filepath.Join(k.modDir(), "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// modName turns kernel/net/netfilter/ipvs/ip_vs_rr.ko into ip_vs_rr.
func modName(path string) string {
	b := filepath.Base(path)
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
