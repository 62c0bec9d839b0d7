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
)

// HostState is what the host's namespaces hold that a cluster could leave
// behind: mounts, firewall rules, processes, and the fixed paths that
// containerd, kubelet and the CNI plugins write by default.
type HostState struct {
	Mounts   map[string]bool
	Iptables string
	Nft      string
	Procs    map[int]string
	Paths    map[string]bool
}

// fixedPaths are the defaults of containerd, kubelet and CNI; inside a node
// they are the node's own, so none may appear on the host.
var fixedPaths = []string{
	"/run/containerd", "/var/lib/containerd", "/opt/containerd", "/var/lib/kubelet", "/var/lib/cni",
	"/var/log/pods", "/var/log/containers", "/etc/cni", "/opt/cni", "/etc/kubernetes",
}

// runtimeComms are process names that no test of this project runs on the
// host except through this package.
var runtimeComms = map[string]bool{"containerd": true, "containerd-shim": true, "kubelet": true, "runc": true, "standin": true}

// TakeHostState reads the host's state from this process's namespaces,
// which must be the host's.
func TakeHostState() (*HostState, error) {
	s := &HostState{Mounts: map[string]bool{}, Procs: map[int]string{}, Paths: map[string]bool{}}
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
		pid, _ := strconv.Atoi(filepath.Base(p))
		cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		comm, _ := os.ReadFile(filepath.Join(p, "comm"))
		cg, _ := os.ReadFile(filepath.Join(p, "cgroup"))
		s.Procs[pid] = strings.TrimSpace(string(comm)) + "\x00" + string(cmd) + "\x00" + string(cg)
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

// Leftovers compares the host now with before and lists what the cluster
// id left: mounts that are its or a runtime's (others come and go on a
// shared machine: other tests' network namespaces, image builds), rule changes,
// processes of the runtime or naming id, pids the cluster started, fixed
// paths, cgroups, namespaces and its folder.
func (before *HostState) Leftovers(id string, startedPids []int) ([]string, error) {
	now, err := TakeHostState()
	if err != nil {
		return nil, err
	}
	var left []string
	for m := range now.Mounts {
		if before.Mounts[m] {
			continue
		}
		if ours(m, id) {
			left = append(left, "mount "+m)
		}
	}
	if now.Iptables != before.Iptables {
		left = append(left, "host iptables changed:\n"+now.Iptables)
	}
	if now.Nft != before.Nft {
		left = append(left, "host nft ruleset changed:\n"+now.Nft)
	}
	for pid, desc := range now.Procs {
		if pid == os.Getpid() {
			continue
		}
		comm := strings.SplitN(desc, "\x00", 2)[0]
		_, old := before.Procs[pid]
		if (!old && runtimeComms[comm]) || strings.Contains(desc, id) {
			left = append(left, fmt.Sprintf("process %d %s", pid, strings.ReplaceAll(desc, "\x00", " ")))
		}
	}
	for _, pid := range startedPids {
		if pid > 0 {
			if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
				left = append(left, fmt.Sprintf("started process %d is still there: %s", pid, st))
			}
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
	for _, ns := range listNamespaces(id) {
		left = append(left, "network namespace "+ns)
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), id)); err == nil {
		left = append(left, "folder "+filepath.Join(os.TempDir(), id))
	}
	sort.Strings(left)
	return left, nil
}

// StartedPids lists the pids of every process the cluster started (zero for
// those not running), for Leftovers to check after Down.
func (c *Cluster) StartedPids() []int {
	var out []int
	if c.ControlPlane != nil {
		for _, p := range c.ControlPlane.procs() {
			out = append(out, p.Pid())
		}
	}
	for _, n := range c.Nodes {
		for _, p := range []*Process{n.Holder, n.Containerd, n.Kubelet} {
			if p != nil {
				out = append(out, p.Pid())
			}
		}
		if n.Cgroups != nil {
			out = append(out, n.Cgroups.Pids()...)
		}
	}
	return out
}

// ours reports whether a mount ("<point> <fstype> <source>") belongs to
// cluster id or to a container runtime, kubelet or CNI.
func ours(m, id string) bool {
	if strings.Contains(m, id) || strings.Contains(m, "containerd") || strings.Contains(m, "kubelet") ||
		strings.HasPrefix(m, "/run/netns/cni-") || strings.Contains(m, " overlay ") {
		return true
	}
	for _, p := range fixedPaths {
		if strings.HasPrefix(m, p+"/") || strings.HasPrefix(m, p+" ") {
			return true
		}
	}
	return false
}
