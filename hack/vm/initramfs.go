package main

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

//go:embed init.sh
var initScript []byte

// loadModules are modprobed, in this order, by /init before any test runs.
// Names that the kernel has built in are skipped; names that the kernel
// does not have at all are reported. Everything else in the netfilter
// directories is shipped too, so that the kernel's request_module() (through
// busybox modprobe) finds whatever an iptables rule asks for.
var loadModules = []string{
	// ip_vs calls into libcrc32c, which asks the crypto API for "crc32c";
	// modules.dep does not list that dependency, so load it first.
	"crc32c_generic", "libcrc32c",
	"dummy", "veth",
	"nfnetlink", "nf_conntrack", "nf_nat", "nf_conntrack_netlink",
	"x_tables", "ip_tables", "iptable_filter", "iptable_nat", "iptable_mangle", "iptable_raw",
	"ip6_tables", "ip6table_filter", "ip6table_nat", "ip6table_mangle", "ip6table_raw",
	"nf_tables", "nft_compat", "nft_chain_nat", "nft_ct", "nft_nat", "nft_masq",
	"nft_reject_inet", "nft_counter",
	"xt_comment", "xt_mark", "xt_MASQUERADE", "xt_addrtype", "xt_conntrack", "xt_set",
	"xt_multiport", "xt_statistic", "xt_nat", "xt_tcpudp", "xt_ipvs", "xt_recent",
	"xt_physdev", "xt_CT", "ipt_REJECT", "ip6t_REJECT", "xt_NFLOG",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip",
	"ip_set_hash_ipportnet", "ip_set_hash_net", "ip_set_hash_netport",
	"ip_set_hash_netnet", "ip_set_bitmap_port", "ip_set_list_set",
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh",
	"ip_vs_dh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh",
}

// mergedInto names modules that newer kernels fold into another module:
// their absence is expected where the other one ships. nft_counter became
// part of nf_tables.ko (Debian's 6.1 has its symbols there); the VM
// self-test TestNFTCountersCount proves that counters still count.
var mergedInto = map[string]string{"nft_counter": "nf_tables"}

// shipDirs: every module below these directories goes into the initramfs.
var shipDirs = []string{
	"kernel/net/netfilter",
	"kernel/net/ipv4/netfilter",
	"kernel/net/ipv6/netfilter",
	"kernel/net/bridge", // br_netfilter, bridge: some tests may use a bridge
	"kernel/net/802",
	"kernel/net/llc",
}

// userBinaries are copied from the host (Debian packages iptables, ipset)
// together with the shared libraries ldd reports for them.
var userBinaries = []string{
	"/usr/sbin/xtables-nft-multi",
	"/usr/sbin/xtables-legacy-multi",
	"/usr/sbin/ipset",
}

// hostTools are looked up on the host PATH and installed as /usr/sbin/NAME
// (ahead of busybox's applets): iproute2's ip has "ip netns", which the
// shared test helpers use. Optional ones are skipped when absent.
var hostTools = []struct {
	Name     string
	Required bool
	Package  string
}{
	{"ip", true, "iproute2"},
	{"conntrack", false, "conntrack"},
	// The nftables backend needs no tool; its kernel tests read the table
	// with nft.
	{"nft", false, "nftables"},
}

const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

type testBinary struct {
	Name    string // e.g. agent_ipvs
	Path    string // host path of the compiled test binary
	PkgDir  string // host source directory, for testdata/
	Package string
}

type initramfsSpec struct {
	Kernel       kernel
	Tests        []testBinary
	TestArgs     []string
	IptablesMode string // "nft" or "legacy"
}

// buildInitramfs stages a root tree in dir/rootfs and packs it with cpio
// into dir/initramfs.cpio. Returns the archive path.
func buildInitramfs(dir string, spec initramfsSpec) (string, error) {
	root := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/synx", "proc", "sys", "dev", "tmp", "run", "tests", "lib64"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := copyFile("/bin/busybox", filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return "", fmt.Errorf("busybox-static missing? %w", err)
	}
	if ef, err := elf.Open("/bin/busybox"); err == nil {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				ef.Close()
				return "", fmt.Errorf("/bin/busybox is dynamically linked; install busybox-static")
			}
		}
		ef.Close()
	}
	// The kernel runs this for request_module(); busybox modprobe reads
	// modules.dep written by depmod below.
	if err := os.Symlink("/bin/busybox", filepath.Join(root, "sbin/modprobe")); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "init"), initScript, 0o755); err != nil {
		return "", err
	}
	if err := writeEtc(root); err != nil {
		return "", err
	}
	t0 := time.Now()
	loaded, err := stageModules(root, spec.Kernel)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/synx/modules"), []byte(strings.Join(loaded, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	t1 := time.Now()
	if err := stageUserland(root, spec.IptablesMode); err != nil {
		return "", err
	}
	logf("staged modules in %s, userland in %s", t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	var list bytes.Buffer
	for _, tb := range spec.Tests {
		td := filepath.Join(root, "tests", tb.Name)
		if err := os.MkdirAll(td, 0o755); err != nil {
			return "", err
		}
		bin := tb.Name + ".test"
		if err := copyFile(tb.Path, filepath.Join(td, bin), 0o755); err != nil {
			return "", err
		}
		if st, err := os.Stat(filepath.Join(tb.PkgDir, "testdata")); err == nil && st.IsDir() {
			if err := run("", "cp", "-a", filepath.Join(tb.PkgDir, "testdata"), td); err != nil {
				return "", err
			}
		}
		fmt.Fprintf(&list, "%s %s\n", tb.Name, bin)
	}
	if err := os.WriteFile(filepath.Join(root, "tests/list"), list.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "tests/args"), []byte(strings.Join(spec.TestArgs, " ")+"\n"), 0o644); err != nil {
		return "", err
	}
	archive := filepath.Join(dir, "initramfs.cpio")
	out, err := os.Create(archive)
	if err != nil {
		return "", err
	}
	defer out.Close()
	// Uncompressed: unpacking gzip under software emulation costs seconds.
	cmd := exec.Command("sh", "-c", "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0")
	cmd.Dir = root
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cpio: %w", err)
	}
	return archive, out.Close()
}

func writeEtc(root string) error {
	files := map[string]string{
		"etc/protocols": "ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\nipv6-icmp 58 IPv6-ICMP\nsctp 132 SCTP\n",
		"etc/services":  "",
		"etc/passwd":    "root:x:0:0:root:/tmp:/bin/sh\n",
		"etc/group":     "root:x:0:\n",
		"etc/hosts":     "127.0.0.1 localhost\n::1 localhost\n",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// stageModules copies the selected modules (with their modules.dep closure)
// and runs depmod on the staged tree. Returns the names /init must modprobe.
func stageModules(root string, k kernel) ([]string, error) {
	deps, err := moduleDeps(k)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(k.modDir(), "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	byName := map[string]string{}
	for p := range deps {
		byName[modName(p)] = p
	}
	want := map[string]bool{}
	var add func(p string)
	add = func(p string) {
		if want[p] {
			return
		}
		want[p] = true
		for _, d := range deps[p] {
			add(d)
		}
	}
	var load []string
	for _, n := range loadModules {
		if p, ok := byName[n]; ok {
			add(p)
			load = append(load, n)
		} else if host, ok := mergedInto[n]; ok && byName[host] != "" {
			logf("kernel %s has no module %s: it is part of %s there (test/vm checks that it works)", k.Release, n, host)
		} else if !builtin[n] {
			logf("warning: kernel %s has no module %s (neither loadable nor built in)", k.Release, n)
		}
	}
	for p := range deps {
		for _, d := range shipDirs {
			if strings.HasPrefix(p, d+"/") {
				add(p)
			}
		}
	}
	if p, ok := byName["veth"]; ok {
		add(p)
	}
	dst := filepath.Join(root, "lib/modules", k.Release)
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := copyFile(filepath.Join(k.modDir(), p), filepath.Join(dst, p), 0o644); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if err := copyFile(filepath.Join(k.modDir(), f), filepath.Join(dst, f), 0o644); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	// depmod -b on the staged tree writes a modules.dep with only what ships.
	if err := run("", "depmod", "-b", root, k.Release); err != nil {
		return nil, err
	}
	logf("initramfs: %d modules shipped, %d loaded at boot", len(paths), len(load))
	return load, nil
}

// stageUserland copies iptables (nft and legacy), ipset, the xtables
// extensions and every shared library they need, at the same paths as on
// the host, plus the dynamic loader.
func stageUserland(root, mode string) error {
	bins := append([]string{}, userBinaries...)
	toolSrc := map[string]string{}
	for _, tool := range hostTools {
		p, err := exec.LookPath(tool.Name)
		if err != nil {
			if tool.Required {
				return fmt.Errorf("%s not found on the host (apt-get install %s)", tool.Name, tool.Package)
			}
			continue
		}
		p, _ = filepath.EvalSymlinks(p)
		toolSrc[tool.Name] = p
		bins = append(bins, p)
	}
	exts, _ := filepath.Glob(filepath.Join(xtablesDir, "*.so"))
	libs := map[string]bool{}
	ls, err := lddLibs(append(bins, exts...)...)
	if err != nil {
		return fmt.Errorf("ldd: %w (install iptables, ipset and iproute2)", err)
	}
	for _, l := range ls {
		libs[l] = true
	}
	for _, b := range append(bins, exts...) {
		if err := copyFile(b, filepath.Join(root, b), 0o755); err != nil {
			return err
		}
	}
	for l := range libs {
		if err := copyFile(l, filepath.Join(root, l), 0o755); err != nil {
			return err
		}
	}
	for name, src := range toolSrc {
		if err := copyFile(src, filepath.Join(root, "usr/sbin", name), 0o755); err != nil {
			return err
		}
	}
	multi := "xtables-nft-multi"
	if mode == "legacy" {
		multi = "xtables-legacy-multi"
	}
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, suf := range []string{"", "-save", "-restore"} {
			if err := os.Symlink(multi, filepath.Join(root, "usr/sbin", fam+suf)); err != nil {
				return err
			}
			if err := os.Symlink("xtables-legacy-multi", filepath.Join(root, "usr/sbin", fam+"-legacy"+suf)); err != nil {
				return err
			}
			if err := os.Symlink("xtables-nft-multi", filepath.Join(root, "usr/sbin", fam+"-nft"+suf)); err != nil {
				return err
			}
		}
	}
	return nil
}

// libDirs are searched for DT_NEEDED libraries (Debian amd64 layout).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib", "/lib"}

// lddLibs returns the shared libraries (and the ELF interpreter) the given
// files need, transitively, by reading DT_NEEDED entries with debug/elf:
// running ldd on ~120 xtables extensions costs seconds under load.
func lddLibs(files ...string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var walk func(path string) error
	walk = func(path string) error {
		ef, err := elf.Open(path)
		if err != nil {
			return err
		}
		defer ef.Close()
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				if _, err := p.ReadAt(b, 0); err != nil {
					return err
				}
				interp := strings.TrimRight(string(b), "\x00")
				if !seen[interp] {
					seen[interp] = true
					out = append(out, interp)
				}
			}
		}
		needed, err := ef.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, n := range needed {
			found := ""
			for _, d := range libDirs {
				if c := filepath.Join(d, n); exists(c) {
					found = c
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, not found in %v", path, n, libDirs)
			}
			if seen[found] {
				continue
			}
			seen[found] = true
			out = append(out, found)
			if err := walk(found); err != nil {
				return err
			}
		}
		return nil
	}
	for _, f := range files {
		if err := walk(f); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// copyFile copies src (following symlinks) to dst, creating parents.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
