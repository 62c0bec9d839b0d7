package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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
// local-cluster harness runs it.
type agentProcess struct {
	t    testing.TB
	cmd  *exec.Cmd
	log  *bytes.Buffer
	lw   *lockedWriter
	done chan struct{}
}

func (w *world) runAgent(bin, kubeconfig string, extra ...string) *agentProcess {
	w.t.Helper()
	args := append([]string{"netns", "exec", w.node.Name, bin, "--node-name=" + nodeName, "--kubeconfig=" + kubeconfig,
		"--health-addr=127.0.0.1:10256", "--metrics-addr=127.0.0.1:10249", "--operator-namespace=" + operatorNS, "-v=2"}, extra...)
	cmd := exec.Command("ip", args...)
	p := &agentProcess{t: w.t, cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	p.lw = &lockedWriter{w: p.log}
	cmd.Stdout, cmd.Stderr = p.lw, p.lw
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	w.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if w.t.Failed() {
			w.t.Logf("agent log:\n%s", p.log.String())
		}
	})
	return p
}

func (p *agentProcess) logText() string {
	p.lw.mu.Lock()
	defer p.lw.mu.Unlock()
	return p.log.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
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

// echoServer echoes every line back, inside a namespace.
func echoServer(t *testing.T, ns *netns.NS, addr string) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// traffic runs a long-lived TCP stream and a stream of new connections
// from the client namespace until stop closes.
type traffic struct {
	streamed, streamErrs atomic.Int64
	conns, connErrs      atomic.Int64
	firstErr             atomic.Value
	wg                   sync.WaitGroup
	stop                 chan struct{}
}

func (w *world) startTraffic(t *testing.T, streamTarget, connTarget string) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	var c net.Conn
	if err := w.client.Do(func() (err error) { c, err = net.DialTimeout("tcp4", streamTarget, 5*time.Second); return }); err != nil {
		t.Fatalf("open the long-lived stream: %v", err)
	}
	tr.wg.Add(2)
	go func() {
		defer tr.wg.Done()
		defer c.Close()
		r := bufio.NewReader(c)
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				return
			default:
			}
			msg := fmt.Sprintf("message %d\n", i)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				tr.fail(&tr.streamErrs, err)
				return
			}
			got, err := r.ReadString('\n')
			if err != nil || got != msg {
				tr.fail(&tr.streamErrs, fmt.Errorf("echo %q: %v", got, err))
				return
			}
			tr.streamed.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		defer tr.wg.Done()
		for {
			select {
			case <-tr.stop:
				return
			default:
			}
			r, err := w.client.Request("tcp", connTarget, netns.RequestOptions{Timeout: 5 * time.Second})
			if err != nil || !strings.HasPrefix(r.Server, "10.211.") {
				tr.fail(&tr.connErrs, fmt.Errorf("%v %q", err, r.Server))
			} else {
				tr.conns.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return tr
}

func (tr *traffic) fail(n *atomic.Int64, err error) {
	n.Add(1)
	tr.firstErr.CompareAndSwap(nil, err.Error())
}

func (tr *traffic) end() {
	close(tr.stop)
	tr.wg.Wait()
}

// TestKillAgent: cmd/agent runs as a real process in the node namespace;
// kill -9 in the middle of a long-lived TCP stream and a stream of new
// connections drops nothing, and the restarted agent adopts the rules and
// converges. SIGTERM leaves the rules; --cleanup removes them.
func TestKillAgent(t *testing.T) {
	requireKernel(t)
	bin := buildAgent(t)
	w := startAPI(t)
	w.topology()
	echoServer(t, w.b1, "10.211.1.2:9090")
	w.revision("rev-1", baseSpec())
	w.nodeObjects("rev-1")
	w.service("web", "10.0.0.10", "10.211.1.2", "10.211.1.3", "10.211.2.2")
	stream := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "stream"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.30", ClusterIPs: []string{"10.0.0.30"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 90, Protocol: corev1.ProtocolTCP}}}}
	w.create(stream)
	es := slice("stream", "10.211.1.2")
	port := int32(9090)
	es.Ports[0].Port = &port
	w.create(es)

	// The API server listens on the host's loopback; the agent reaches it
	// through a forwarder listening on the node namespace's loopback.
	u, err := url.Parse(w.cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	apiHost := u.Host
	newForwarder(t, w.node, "127.0.0.1:6443", apiHost)
	kc := kubeconfig(t, w.cfg, "https://127.0.0.1:6443")

	a1 := w.runAgent(bin, kc)
	w.waitReadyz()
	w.waitReady("rev-1")
	w.waitAnswer("10.0.0.10:80", "10.211.1.2", "10.211.1.3", "10.211.2.2")
	rulesBefore := w.iptablesSave()

	tr := w.startTraffic(t, "10.0.0.30:90", "10.0.0.10:80")
	time.Sleep(2 * time.Second)
	if err := a1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a1.done
	killed := time.Now()
	t.Logf("agent killed with SIGKILL (pid %d)", a1.cmd.Process.Pid)
	time.Sleep(2 * time.Second)
	if save := w.iptablesSave(); !strings.Contains(save, "SYNX-") {
		t.Fatal("rules gone after kill -9")
	}
	restarted := time.Now()
	a2 := w.runAgent(bin, kc)
	w.waitReadyz()
	converged := time.Since(restarted)
	time.Sleep(2 * time.Second)
	tr.end()
	t.Logf("kill -9 and restart: agent down %s, restarted agent Ready after %s; long-lived stream: %d echoes, %d errors; new connections: %d ok, %d failed; first error: %v",
		restarted.Sub(killed).Round(time.Millisecond), converged.Round(time.Millisecond), tr.streamed.Load(), tr.streamErrs.Load(),
		tr.conns.Load(), tr.connErrs.Load(), tr.firstErr.Load())
	if tr.streamErrs.Load() != 0 || tr.connErrs.Load() != 0 {
		t.Errorf("traffic dropped across the restart: stream errors %d, connection errors %d (%v)",
			tr.streamErrs.Load(), tr.connErrs.Load(), tr.firstErr.Load())
	}
	if tr.streamed.Load() == 0 || tr.conns.Load() == 0 {
		t.Error("no traffic flowed")
	}
	if after := w.iptablesSave(); chainsOf(after) != chainsOf(rulesBefore) {
		t.Errorf("restarted agent changed the rules although nothing changed:\nbefore:\n%s\nafter:\n%s", chainsOf(rulesBefore), chainsOf(after))
	}
	// The restarted agent still follows changes.
	w.setEndpoints("web", "10.211.2.2")
	w.waitOnlyAnswer("10.0.0.10:80", "10.211.2.2", 10)
	code, body, err := httpGet(w.node, "http://127.0.0.1:10249/metrics")
	if err != nil || code != 200 || !strings.Contains(body, "synterix_network_programming_duration_seconds_count") {
		t.Errorf("metrics: %d %v", code, err)
	}

	// SIGTERM: the agent exits and leaves the rules.
	if err := a2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-a2.done
	if code := a2.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exit code %d after SIGTERM", code)
	}
	if got := w.answers("10.0.0.10:80"); got != "10.211.2.2" {
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
