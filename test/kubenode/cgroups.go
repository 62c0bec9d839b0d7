package kubenode

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hierarchies returns the mount point of every cgroup hierarchy of this
// machine, v1 controllers, named v1 hierarchies and the v2 one alike.
// Kubelet's cgroupRoot and the node's runtime cgroup are made in each.
func Hierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		fields, typ := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(typ) < 1 || (typ[0] != "cgroup" && typ[0] != "cgroup2") {
			continue
		}
		out = append(out, fields[4])
	}
	sort.Strings(out)
	return out, s.Err()
}

// CgroupTree is one cgroup path (such as /synx-kn-1a2b-node-1) present in
// every hierarchy; the processes of a node and its pods live below it.
type CgroupTree struct {
	Path        string
	hierarchies []string
}

// NewCgroupTree makes path, and each sub path below it, in every hierarchy.
// cpuset's cpus and mems are copied from the parent, as v1 leaves them empty
// and an empty cpuset accepts no process.
func NewCgroupTree(path string, subs ...string) (*CgroupTree, error) {
	hs, err := Hierarchies()
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	t := &CgroupTree{Path: path, hierarchies: hs}
	for _, h := range hs {
		dirs := []string{filepath.Join(h, path)}
		for _, s := range subs {
			dirs = append(dirs, filepath.Join(h, path, s))
		}
		for _, d := range dirs {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return t, fmt.Errorf("create cgroup %s: %w", d, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f)); err == nil {
					if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
						return t, fmt.Errorf("cgroup %s: %s: %w", d, f, err)
					}
				}
			}
		}
	}
	return t, nil
}

// OpenCgroupTree is the tree at path as it is, to destroy what a run that
// died left behind.
func OpenCgroupTree(path string) (*CgroupTree, error) {
	hs, err := Hierarchies()
	return &CgroupTree{Path: path, hierarchies: hs}, err
}

// ProcsFiles are the cgroup.procs files of sub in every hierarchy: a process
// written to all of them lives in the sub cgroup everywhere.
func (t *CgroupTree) ProcsFiles(sub string) []string {
	var out []string
	for _, h := range t.hierarchies {
		out = append(out, filepath.Join(h, t.Path, sub, "cgroup.procs"))
	}
	return out
}

// Pids lists every process in the tree, in any hierarchy.
func (t *CgroupTree) Pids() []int {
	seen := map[int]bool{}
	for _, h := range t.hierarchies {
		_ = filepath.WalkDir(filepath.Join(h, t.Path), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, s := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(s); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for p := range seen {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	return pids
}

// Destroy kills every process in the tree (thawing frozen cgroups first, as
// a frozen process cannot die), then removes its cgroups, deepest first, in
// every hierarchy. It gives up after timeout and says what is left.
func (t *CgroupTree) Destroy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	killed := map[int]bool{}
	for {
		t.thaw()
		pids := t.Pids()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v survive SIGKILL", t.Path, pids)
		}
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A killed process leaves its cgroups at once but stays a zombie until
	// its parent reaps it; orphans (shims, containers) are reaped by PID 1,
	// which may take a moment. Wait, so that "nothing left" means gone.
	if err := waitGone(killed, deadline); err != nil {
		return fmt.Errorf("cgroup %s: %w", t.Path, err)
	}
	var errs []error
	for _, h := range t.hierarchies {
		root := filepath.Join(h, t.Path)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Children sort after their parent; remove in reverse.
		sort.Strings(dirs)
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirRetry(dirs[i], deadline); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// thaw writes THAWED to every freezer.state in the tree.
func (t *CgroupTree) thaw() {
	for _, h := range t.hierarchies {
		_ = filepath.WalkDir(filepath.Join(h, t.Path), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "freezer.state" {
				_ = os.WriteFile(p, []byte("THAWED"), 0o644)
			}
			return nil
		})
	}
}

// rmdirRetry removes an empty cgroup; the kernel refuses (EBUSY) for a
// moment after its last process died.
func rmdirRetry(dir string, deadline time.Time) error {
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LeftoverCgroups lists the cgroups whose name starts with prefix at the top
// of any hierarchy.
func LeftoverCgroups(prefix string) []string {
	hs, _ := Hierarchies()
	var out []string
	for _, h := range hs {
		m, _ := filepath.Glob(filepath.Join(h, prefix+"*"))
		out = append(out, m...)
	}
	return out
}

// PodPids lists the processes of the pod with this UID: kubelet's cgroupfs
// driver keeps each pod in a cgroup named pod<uid> below cgroupRoot.
func (t *CgroupTree) PodPids(uid string) []int {
	for _, h := range t.hierarchies {
		var pids []int
		_ = filepath.WalkDir(filepath.Join(h, t.Path), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() || !strings.Contains(p, "/pod"+uid) {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, s := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(s); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if len(pids) > 0 {
			return pids
		}
	}
	return nil
}

// waitGone waits until none of pids is in the process table.
func waitGone(pids map[int]bool, deadline time.Time) error {
	for {
		var alive []int
		for pid := range pids {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			sort.Ints(alive)
			return fmt.Errorf("killed processes %v are not reaped", alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
