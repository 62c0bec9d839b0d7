package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// buildAgent builds cmd/agent into a temporary folder.
func buildAgent(t testing.TB) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agent: %v\n%s", err, out)
	}
	return bin
}

// agentProcess is cmd/agent running inside the node namespace, the way the
// local-cluster harness runs it. The test kills it when it ends and shows
// its log when it failed.
type agentProcess struct{ *netns.Process }

func (w *world) runAgent(bin, kubeconfig string, extra ...string) *agentProcess {
	w.t.Helper()
	p := &agentProcess{&netns.Process{Name: "agent", NS: w.node,
		Args: append([]string{bin, "--node-name=" + nodeName, "--kubeconfig=" + kubeconfig,
			"--health-addr=127.0.0.1:10256", "--metrics-addr=127.0.0.1:10249", "--operator-namespace=" + operatorNS, "-v=2"}, extra...),
		LogPath: filepath.Join(w.t.TempDir(), "agent.log")}}
	if err := p.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		_ = p.Kill()
		if w.t.Failed() {
			w.t.Logf("agent log:\n%s", p.logText())
		}
	})
	return p
}

func (p *agentProcess) logText() string {
	data, _ := os.ReadFile(p.LogPath)
	return string(data)
}

// waitReadyz waits for the agent's /readyz in the node namespace.
func (w *world) waitReadyz() { w.waitReadyzTB(w.t, 90*time.Second) }

func (w *world) waitReadyzTB(t testing.TB, d time.Duration) {
	t.Helper()
	eventuallyFor(t, d, "/readyz 200", func() (bool, string) {
		code, body, err := httpGet(w.node, "http://127.0.0.1:10256/readyz")
		if err != nil {
			return false, err.Error()
		}
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
}

// startTraffic runs a long-lived TCP stream to streamTarget and a stream of
// new connections to connTarget from the client namespace, until Stop.
func (w *world) startTraffic(t *testing.T, streamTarget, connTarget string) *netns.Load {
	opts := netns.RequestOptions{Timeout: 5 * time.Second}
	stream, err := w.client.OpenStream(streamTarget, opts)
	if err != nil {
		t.Fatalf("open the long-lived stream: %v", err)
	}
	t.Cleanup(func() { stream.Close() })
	load := netns.NewLoad()
	load.Run("stream", "stream ping "+streamTarget, 10*time.Millisecond, stream.Ping)
	load.Run("conns", "new connection to "+connTarget, 20*time.Millisecond, func() error {
		r, err := w.client.Request("tcp", connTarget, opts)
		if err == nil && !strings.HasPrefix(r.Server, "10.211.") {
			err = fmt.Errorf("answered by %q", r.Server)
		}
		return err
	})
	return load
}

// TestKillAgent: cmd/agent runs as a real process in the node namespace;
// kill -9 in the middle of a long-lived TCP stream and a stream of new
// connections drops nothing, and the restarted agent adopts the rules and
// converges. SIGTERM leaves the rules; --cleanup removes them.
func TestKillAgent(t *testing.T) {
	requireKernel(t)
	bin := buildAgent(t)
	w := startWeb(t, "rev-1", baseSpec())
	w.setEndpoints("web", "10.211.1.2", "10.211.1.3", "10.211.2.2")
	w.b1.Serve(t, "tcp", "10.211.1.2:9090", "stream")
	stream := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "stream"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.30", ClusterIPs: []string{"10.0.0.30"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 90, Protocol: corev1.ProtocolTCP}}}}
	w.create(stream)
	es := slice("stream", "10.211.1.2")
	port := int32(9090)
	es.Ports[0].Port = &port
	w.create(es)

	kc := w.nodeKubeconfig(t)
	a1 := w.runAgent(bin, kc)
	w.waitReadyz()
	w.waitReady("rev-1")
	w.waitAnswer(webVIP, "10.211.1.2", "10.211.1.3", "10.211.2.2")
	rulesBefore := w.iptablesSave()

	tr := w.startTraffic(t, "10.0.0.30:90", webVIP)
	time.Sleep(2 * time.Second)
	pid := a1.Pid()
	if err := a1.Kill(); err != nil {
		t.Fatal(err)
	}
	tr.SetPhase("agent killed")
	killed := time.Now()
	t.Logf("agent killed with SIGKILL (pid %d)", pid)
	time.Sleep(2 * time.Second)
	if save := w.iptablesSave(); !strings.Contains(save, "SYNX-") {
		t.Fatal("rules gone after kill -9")
	}
	restarted := time.Now()
	tr.SetPhase("agent restarted")
	a2 := w.runAgent(bin, kc)
	w.waitReadyz()
	converged := time.Since(restarted)
	tr.SetPhase("agent ready")
	time.Sleep(2 * time.Second)
	tr.Stop()
	streamed, streamErrs := tr.Count("stream")
	conns, connErrs := tr.Count("conns")
	t.Logf("kill -9 and restart: agent down %s, restarted agent Ready after %s; long-lived stream: %d echoes, %d errors; new connections: %d ok, %d failed; first error: %v",
		restarted.Sub(killed).Round(time.Millisecond), converged.Round(time.Millisecond), streamed, streamErrs,
		conns, connErrs, tr.FirstError())
	if streamErrs != 0 || connErrs != 0 {
		t.Errorf("traffic dropped across the restart: stream errors %d, connection errors %d; failures (UTC):\n%s",
			streamErrs, connErrs, strings.Join(tr.Failures(), "\n"))
	}
	if streamed == 0 || conns == 0 {
		t.Error("no traffic flowed")
	}
	if after := w.iptablesSave(); chainsOf(after) != chainsOf(rulesBefore) {
		t.Errorf("restarted agent changed the rules although nothing changed:\nbefore:\n%s\nafter:\n%s", chainsOf(rulesBefore), chainsOf(after))
	}
	// The restarted agent still follows changes.
	w.setEndpoints("web", "10.211.2.2")
	w.waitOnlyAnswer(webVIP, "10.211.2.2", 10)
	code, body, err := httpGet(w.node, "http://127.0.0.1:10249/metrics")
	if err != nil || code != 200 || !strings.Contains(body, "synterix_network_programming_duration_seconds_count") {
		t.Errorf("metrics: %d %v", code, err)
	}

	// SIGTERM: the agent exits with code 0 and leaves the rules.
	if err := a2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a2.Wait(); err != nil {
		t.Errorf("agent ended with %v after SIGTERM, want exit code 0", err)
	}
	if got := w.answers(webVIP); got != "10.211.2.2" {
		t.Errorf("after SIGTERM the service is answered by %q", got)
	}

	// --cleanup removes every rule and exits.
	out, err := w.node.Exec(bin, "--cleanup")
	if err != nil {
		t.Fatalf("agent --cleanup: %v\n%s", err, out)
	}
	if save := w.iptablesSave(); strings.Contains(save, "SYNX") {
		t.Errorf("rules left after --cleanup:\n%s", save)
	}
}

// chainsOf keeps the rule lines of an iptables-save output (no counters,
// no comments), sorted, so that two dumps compare by content.
func chainsOf(save string) string {
	var lines []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A ") || (strings.HasPrefix(l, ":") && strings.Contains(l, "SYNX")) {
			if i := strings.Index(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
				l = l[:i]
			}
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
