package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestImagesRunInContainerd builds the four images for real (the Debian
// roots with mmdebstrap, from the user's cache when fresh), imports the
// archives into a private containerd as a node would (namespace k8s.io)
// and runs them with runc: the agent's binary and netfilter tools, the
// manager's user and default agent image, pause's exit on SIGTERM, and real
// TCP, UDP and HTTP requests to echo from another network namespace.
func TestImagesRunInContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPING CONTAINER TEST in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING CONTAINER TEST: needs root for containerd, runc and network namespaces")
	}
	for _, b := range []string{"containerd", "ctr", "runc", "mmdebstrap", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("SKIPPING CONTAINER TEST: %s is not installed (apt-get install containerd runc mmdebstrap iproute2)", b)
		}
	}
	out := t.TempDir()
	o, err := parseFlags([]string{"-root", repoRoot, "-out", out, "-build-arg", "VERSION=v0.0.0-ctrtest"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := build(ctx, o, t.Logf); err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t)
	for _, target := range AllTargets {
		if _, err := c.ctr("images", "import", filepath.Join(out, target+".tar")); err != nil {
			t.Fatalf("import %s: %v", target, err)
		}
		full, _, _ := fullRef(o.images[target])
		if ls, _ := c.ctr("images", "ls", "-q"); !strings.Contains(ls, full+"\n") {
			t.Fatalf("%s is not among the imported images:\n%s", full, ls)
		}
	}
	image := func(target string) string { full, _, _ := fullRef(o.images[target]); return full }
	t.Run("agent", func(t *testing.T) { testAgent(t, c, image("agent"), o.buildArgs["VERSION"]) })
	t.Run("manager", func(t *testing.T) { testManager(t, c, image("manager"), image("agent")) })
	t.Run("pause", func(t *testing.T) { testPause(t, c, image("pause")) })
	t.Run("echo", func(t *testing.T) { testEcho(t, c, image("echo")) })
}

func testAgent(t *testing.T, c *containerd, image, version string) {
	netAdmin := []string{"--cap-add", "CAP_NET_ADMIN", "--cap-add", "CAP_NET_RAW"}
	for i, tc := range []struct {
		caps []string
		args []string
		want string
	}{
		{nil, []string{"/agent", "--version"}, version + "\n"},
		{nil, []string{"/agent", "--help"}, "-node-name"},
		{nil, []string{"iptables", "--version"}, "(nf_tables)"},
		{nil, []string{"iptables-save", "--version"}, "(nf_tables)"},
		{nil, []string{"iptables-restore", "--version"}, "(nf_tables)"},
		{nil, []string{"ip6tables", "--version"}, "(nf_tables)"},
		{nil, []string{"iptables-legacy", "--version"}, "(legacy)"},
		{nil, []string{"ip6tables-legacy-restore", "--version"}, "(legacy)"},
		{nil, []string{"nft", "--version"}, "nftables v"},
		{netAdmin, []string{"ipset", "--version"}, "protocol version"},
		{nil, []string{"conntrack", "--version"}, "conntrack v"},
		// The agent probes the kernel and removes its rules in the
		// container's own network namespace: it finds its tools.
		{netAdmin, []string{"/agent", "--cleanup"}, "Removed all rules of the agent"},
	} {
		got, err := c.run(image, fmt.Sprintf("agent-%d", i), tc.caps, tc.args...)
		if err != nil || !strings.Contains(got, tc.want) {
			t.Errorf("%v: %v, output %q; want %q", tc.args, err, got, tc.want)
		}
	}
}

func testManager(t *testing.T, c *containerd, image, agentImage string) {
	got, err := c.run(image, "manager-help", nil, "/manager", "--help")
	if err != nil || !strings.Contains(got, agentImage) {
		t.Errorf("/manager --help: %v; want the default agent image %s in:\n%s", err, agentImage, got)
	}
	if got, err := c.run(image, "manager-sh", nil, "/bin/sh", "-c", "true"); err == nil {
		t.Errorf("the manager image runs a shell: %q", got)
	}
	// containerd gives the container the image's user.
	if _, err := c.ctr("containers", "create", image, "manager-user"); err != nil {
		t.Fatal(err)
	}
	defer c.ctr("containers", "rm", "manager-user")
	info, err := c.ctr("containers", "info", "manager-user")
	if err != nil {
		t.Fatal(err)
	}
	var ci struct {
		Spec struct {
			Process struct {
				User struct{ UID, GID int }
			}
		}
	}
	if err := json.Unmarshal([]byte(info), &ci); err != nil {
		t.Fatal(err)
	}
	if u := ci.Spec.Process.User; u.UID != 65532 || u.GID != 65532 {
		t.Errorf("the manager runs as %d:%d, want 65532:65532", u.UID, u.GID)
	}
}

func testPause(t *testing.T, c *containerd, image string) {
	bg := c.start(t, image, "pause-1", nil)
	// Let pause install its signal handler: before it, the Go runtime
	// exits with status 2 on SIGTERM. A settling pause, not an assertion.
	time.Sleep(time.Second)
	if code := bg.stop(t); code != 0 {
		t.Errorf("pause exited %d on SIGTERM, want 0; output %q", code, bg.out.String())
	}
}

func testEcho(t *testing.T, c *containerd, image string) {
	netns.Require(t)
	pod, cli := netns.New(t, "pod"), netns.New(t, "cli")
	netns.Veth(t, cli, "c0", pod, "p0")
	cli.AddAddr("c0", "10.251.7.1/24")
	pod.AddAddr("p0", "10.251.7.2/24")
	bg := c.start(t, image, "echo-1", []string{"--with-ns", "network:/run/netns/" + pod.Name, "--env", "POD_NAME=echo-pod"})
	var r netns.Reply
	var err error
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if r, err = cli.Request("tcp", "10.251.7.2:8080", netns.RequestOptions{Timeout: time.Second}); err == nil {
			break
		}
	}
	if err != nil || r.Server != "echo-pod" || r.ClientIP() != "10.251.7.1" {
		t.Fatalf("TCP: %+v %v (echo output %q)", r, err, bg.out.String())
	}
	if r, err = cli.Request("udp", "10.251.7.2:8080", netns.RequestOptions{Timeout: 5 * time.Second}); err != nil || r.Server != "echo-pod" || r.ClientIP() != "10.251.7.1" {
		t.Errorf("UDP: %+v %v", r, err)
	}
	var resp string
	err = cli.Do(func() error {
		conn, err := net.DialTimeout("tcp", "10.251.7.2:8081", 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "GET /readyz HTTP/1.0\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(conn)
		resp = string(b)
		return err
	})
	if err != nil || !strings.HasPrefix(resp, "HTTP/1.0 200") || !strings.HasSuffix(resp, "\r\n\r\nok\n") {
		t.Errorf("GET /readyz: %v %q", err, resp)
	}
	if uid := taskUID(t, c, "echo-1"); uid != "65532" {
		t.Errorf("echo runs as uid %s, want 65532", uid)
	}
	if code := bg.stop(t); code != 0 {
		t.Errorf("echo exited %d on SIGTERM, want 0; output %q", code, bg.out.String())
	}
}

// taskUID reads the real uid of a running task's process from /proc.
func taskUID(t *testing.T, c *containerd, id string) string {
	ls, err := c.ctr("tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(ls, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != id {
			continue
		}
		st, err := os.ReadFile("/proc/" + f[1] + "/status")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(st))
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
				return strings.Fields(u)[0]
			}
		}
	}
	t.Fatalf("no task %s in\n%s", id, ls)
	return ""
}

// containerd is a private containerd: its own root, state, socket and
// config under a temporary directory, stopped with every task, shim and
// mount it made.
type containerd struct {
	t    *testing.T
	dir  string
	sock string
	cmd  *exec.Cmd
}

func startContainerd(t *testing.T) *containerd {
	dir, err := os.MkdirTemp("", "synx-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := c.ctr("version"); err == nil {
			return c
		} else if time.Now().After(end) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd did not start: %v\n%s", err, b)
		}
	}
}

func (c *containerd) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// run runs a container to its end and returns its output. No cgroup: the
// test leaves none behind on a cgroup v1 host.
func (c *containerd) run(image, id string, extra []string, args ...string) (string, error) {
	a := append(append([]string{"run", "--rm", "--cgroup", ""}, extra...), image, id)
	return c.ctr(append(a, args...)...)
}

// background is a container started with ctr run in the background.
type background struct {
	c    *containerd
	id   string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func (c *containerd) start(t *testing.T, image, id string, extra []string) *background {
	a := append(append([]string{"--address", c.sock, "-n", "k8s.io", "run", "--rm", "--cgroup", ""}, extra...), image, id)
	b := &background{c: c, id: id, cmd: exec.Command("ctr", a...), out: &bytes.Buffer{}, done: make(chan error, 1)}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		ls, _ := c.ctr("tasks", "ls")
		if strings.Contains(ls, id+" ") && strings.Contains(ls, "RUNNING") {
			return b
		}
		if time.Now().After(end) {
			t.Fatalf("%s is not running: %s\n%s", id, ls, b.out.String())
		}
	}
}

// stop sends SIGTERM and returns the container's exit status.
func (b *background) stop(t *testing.T) int {
	if _, err := b.c.ctr("tasks", "kill", "--signal", "SIGTERM", b.id); err != nil {
		t.Error(err)
	}
	select {
	case err := <-b.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Error(err)
			return -1
		}
		return 0
	case <-time.After(time.Minute):
		t.Errorf("%s did not stop within a minute of SIGTERM", b.id)
		return -1
	}
}

// stop kills every task and container, stops containerd and checks that no
// shim, mount or file of it is left.
func (c *containerd) stop() {
	t := c.t
	if ls, err := c.ctr("tasks", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(ls) {
			_, _ = c.ctr("tasks", "kill", "--signal", "SIGKILL", id)
			_, _ = c.ctr("tasks", "rm", "-f", id)
		}
	}
	if ls, err := c.ctr("containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(ls) {
			_, _ = c.ctr("containers", "rm", id)
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	for _, pid := range processesMentioning(c.dir) {
		t.Errorf("process %d of the private containerd outlived it; killing it", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range MountsUnder(c.dir) {
		t.Errorf("mount %s outlived the private containerd; unmounting it", m)
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Error(err)
	}
}

// processesMentioning lists processes whose command line names dir (the
// shims carry the socket's path).
func processesMentioning(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
