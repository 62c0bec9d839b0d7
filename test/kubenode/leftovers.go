package kubenode

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// HostState is what the host's namespaces hold that a cluster could leave
// behind: mounts, firewall rules, processes, and the fixed paths that
// containerd, kubelet and the CNI plugins write by default.
type HostState struct {
	Mounts   map[string]bool
	Iptables string
	Nft      string
	Procs    map[int]bool
	Paths    map[string]bool
}

// fixedPaths are the defaults of containerd, kubelet and CNI; inside a node
// they are the node's own, so none may appear on the host.
var fixedPaths = []string{
	"/run/containerd", "/var/lib/containerd", "/opt/containerd", "/var/lib/kubelet", "/var/lib/cni",
	"/var/log/pods", "/var/log/containers", "/etc/cni", "/opt/cni", "/etc/kubernetes",
}

// TakeHostState reads the host's state from this process's namespaces,
// which must be the host's.
func TakeHostState() (*HostState, error) {
	s := &HostState{Mounts: map[string]bool{}, Procs: map[int]bool{}, Paths: map[string]bool{}}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, typ := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(typ) >= 2 {
			s.Mounts[fields[4]+" "+typ[0]+" "+typ[1]] = true
		}
	}
	f.Close()
	if s.Iptables, err = ruleset("iptables-save"); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("nft"); err == nil {
		if s.Nft, err = ruleset("nft", "list", "ruleset"); err != nil {
			return nil, err
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if pid, err := strconv.Atoi(filepath.Base(p)); err == nil {
			s.Procs[pid] = true
		}
	}
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil {
			s.Paths[p] = true
		}
	}
	return s, nil
}

var counters = regexp.MustCompile(`\[\d+:\d+\]|packets \d+ bytes \d+`)

// ruleset runs a dump command and drops its comments and counters.
func ruleset(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, counters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(keep, "\n"), nil
}

// Footprint is what a running cluster owns that outlives a plain "is the
// folder gone" check: its processes and its network namespaces (by inode,
// as a deleted namespace lives on while a process is in it).
type Footprint struct {
	Pids  map[int]string
	NetNS map[uint64]string
}

// CaptureFootprint records, while cluster id runs, every process in one of
// its network namespaces or cgroups, and the namespaces' inodes. Call it
// before Down (or before a run is killed) and give it to Leftovers.
func CaptureFootprint(id string) Footprint {
	f := Footprint{Pids: map[int]string{}, NetNS: map[uint64]string{}}
	for _, name := range netns.List(id + "-") {
		if ino, err := nsInode("/run/netns/" + name); err == nil {
			f.NetNS[ino] = name
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if why := f.owns(pid, id); why != "" {
			f.Pids[pid] = why
		}
	}
	return f
}

// owns says why process pid is the cluster's, or "" when it is not: it is
// in one of the cluster's network namespaces or cgroups, or names the
// cluster on its command line.
func (f Footprint) owns(pid int, id string) string {
	p := "/proc/" + strconv.Itoa(pid)
	if ino, err := nsInode(p + "/ns/net"); err == nil && f.NetNS[ino] != "" {
		return "in network namespace " + f.NetNS[ino]
	}
	if cg, _ := os.ReadFile(p + "/cgroup"); strings.Contains(string(cg), "/"+id+"-") {
		return "in a cgroup of " + id
	}
	if cmd, _ := os.ReadFile(p + "/cmdline"); strings.Contains(string(cmd), id) {
		return "names " + id + ": " + strings.ReplaceAll(string(cmd), "\x00", " ")
	}
	return ""
}

func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Leftovers compares the host now with before and lists what cluster id
// left: its mounts (others come and go on a shared machine: other tests'
// network namespaces, image builds, other containerds), firewall rule
// changes, processes of its footprint still there and any process now in
// its namespaces or cgroups, fixed runtime paths, cgroups, namespaces and
// its folder.
func (before *HostState) Leftovers(id string, fp Footprint) ([]string, error) {
	now, err := TakeHostState()
	if err != nil {
		return nil, err
	}
	var left []string
	for m := range now.Mounts {
		if !before.Mounts[m] && OwnMount(m, id) {
			left = append(left, "mount "+m)
		}
	}
	if now.Iptables != before.Iptables {
		left = append(left, "host iptables changed:\n"+now.Iptables)
	}
	if now.Nft != before.Nft {
		left = append(left, "host nft ruleset changed:\n"+now.Nft)
	}
	for pid := range now.Procs {
		why := fp.owns(pid, id)
		if why == "" && fp.Pids[pid] != "" {
			why = "was " + fp.Pids[pid]
		}
		if why != "" && pid != os.Getpid() {
			stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			left = append(left, fmt.Sprintf("process %d (%s): %s", pid, why, strings.TrimSpace(string(stat))))
		}
	}
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil && !before.Paths[p] {
			left = append(left, "path "+p)
		}
	}
	for _, cg := range LeftoverCgroups(id) {
		left = append(left, "cgroup "+cg)
	}
	for _, ns := range netns.List(id) {
		left = append(left, "network namespace "+ns)
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), id)); err == nil {
		left = append(left, "folder "+filepath.Join(os.TempDir(), id))
	}
	sort.Strings(left)
	return left, nil
}

// OwnMount reports whether a mount (a mountinfo line, or "<point> <fstype>
// <source>") is cluster id's or sits at a fixed path of containerd, kubelet
// or CNI, where no mount of any node may show on the host.
func OwnMount(m, id string) bool {
	if strings.Contains(m, id) || strings.Contains(m, "/run/netns/cni-") {
		return true
	}
	for _, p := range fixedPaths {
		if strings.Contains(m, " "+p+"/") || strings.HasPrefix(m, p+"/") || strings.Contains(m, " "+p+" ") || strings.HasPrefix(m, p+" ") {
			return true
		}
	}
	return false
}
