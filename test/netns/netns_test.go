package netns

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/echo"
)

// echoEnv makes the test binary an echo server process (TestEchoProcess).
const echoEnv = "SYNX_NETNS_TEST_ECHO"

func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) != "" {
		os.Exit(echo.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestRoutedRequest builds client - router - server, serves TCP and UDP on
// two addresses, and checks replies name the right server and the real
// client address. The namespaces must be gone once the subtest ends.
func TestRoutedRequest(t *testing.T) {
	Require(t)
	var names []string
	t.Run("topology", func(t *testing.T) {
		router, client, server := New(t, "rt"), New(t, "cl"), New(t, "sv")
		names = []string{router.Name, client.Name, server.Name}
		Link(t, router, "to-cl", "10.201.1.1/24", client, "eth0", "10.201.1.2/24")
		Link(t, router, "to-sv", "10.201.2.1/24", server, "eth0", "10.201.2.2/24")
		server.AddAddr("eth0", "10.201.2.3/24")
		router.EnableForwarding()
		a := server.Serve(t, "tcp", "10.201.2.2:8080", "a")
		server.Serve(t, "tcp", "10.201.2.3:8080", "b")
		server.Serve(t, "udp", "10.201.2.2:8080", "a-udp")
		for _, tc := range []struct{ proto, target, want string }{
			{"tcp", "10.201.2.2:8080", "a"}, {"tcp", "10.201.2.3:8080", "b"}, {"udp", "10.201.2.2:8080", "a-udp"},
		} {
			r, err := client.Request(tc.proto, tc.target, RequestOptions{})
			if err != nil {
				t.Fatalf("%s %s: %v", tc.proto, tc.target, err)
			}
			if r.Server != tc.want || r.ClientIP() != "10.201.1.2" {
				t.Errorf("%s %s: got %+v, want server %s from 10.201.1.2", tc.proto, tc.target, r, tc.want)
			}
		}
		// Nothing listens on 9999: TCP gets a RST, UDP an ICMP port unreachable.
		for _, proto := range []string{"tcp", "udp"} {
			if _, err := client.Request(proto, "10.201.2.2:9999", RequestOptions{}); Outcome(err) != "refused" {
				t.Errorf("%s to closed port: outcome %s (%v), want refused", proto, Outcome(err), err)
			}
		}
		// A fixed local port is honoured.
		r, err := client.Request("udp", "10.201.2.2:8080", RequestOptions{Local: "10.201.1.2:40000"})
		if err != nil || !strings.HasSuffix(r.Client, ":40000") {
			t.Errorf("fixed local port: %+v %v", r, err)
		}
		if out := client.MustExec("ip", "-o", "addr"); !strings.Contains(out, "10.201.1.2") {
			t.Errorf("Exec did not run inside the client namespace: %s", out)
		}
		before := a.Hits()
		got := client.Spread("tcp", "10.201.2.2:8080", 3, RequestOptions{})
		if got.Servers["a"] != 3 || got.ClientIPs["10.201.1.2"] != 3 || got.Failures != 0 || a.Hits() != before+3 {
			t.Errorf("Spread of 3 requests to a: %s %+v, server hits %d -> %d", got, got, before, a.Hits())
		}
		if m := client.Tally("tcp", "10.201.2.2:9999", 2, RequestOptions{}); m["!refused"] != 2 || len(m) != 1 {
			t.Errorf("Tally of 2 refused requests: %v", m)
		}
	})
	for _, n := range names {
		if Exists(n) {
			t.Errorf("namespace %s still exists after its test ended", n)
		}
	}
}

// TestStreamAndFlow: a long-lived TCP stream is greeted once and then
// echoes pings; a UDP flow keeps its source port and gets its own
// datagrams answered; both work over IPv6 too. Closing the server breaks
// the stream, and a Load records that failure in the phase it fell in.
func TestStreamAndFlow(t *testing.T) {
	Require(t)
	a, b := New(t, "sa"), New(t, "sb")
	Veth(t, a, "va", b, "vb")
	a.AddAddr("va", "10.202.0.1/24")
	b.AddAddr("vb", "10.202.0.2/24")
	a.MustExec("ip", "-6", "addr", "add", "fd00:202::1/64", "dev", "va", "nodad")
	b.MustExec("ip", "-6", "addr", "add", "fd00:202::2/64", "dev", "vb", "nodad")
	for _, ip := range []string{"10.202.0.2", "fd00:202::2"} {
		target := net.JoinHostPort(ip, "7000")
		b.Serve(t, "tcp", target, "s-"+ip)
		b.Serve(t, "udp", target, "u-"+ip)
		s, err := a.OpenStream(target, RequestOptions{})
		if err != nil {
			t.Fatalf("open stream to %s: %v", target, err)
		}
		if s.Greeting.Server != "s-"+ip {
			t.Errorf("stream to %s greeted by %+v", target, s.Greeting)
		}
		for i := 0; i < 3; i++ {
			if err := s.Ping(); err != nil {
				t.Errorf("ping %d over %s: %v", i, target, err)
			}
		}
		s.Close()
		f, err := a.OpenUDPFlow(target, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r1, err1 := f.Send(time.Second)
		r2, err2 := f.Send(time.Second)
		if err1 != nil || err2 != nil || r1.Server != "u-"+ip || r1.Client != r2.Client || r2.Msg != "seq-2" {
			t.Errorf("UDP flow to %s: %+v %v, %+v %v", target, r1, err1, r2, err2)
		}
		f.Close()
	}

	srv := b.Serve(t, "tcp", "10.202.0.2:7001", "doomed")
	s, err := a.OpenStream("10.202.0.2:7001", RequestOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	load := NewLoad()
	load.Run("pings", "ping doomed", 10*time.Millisecond, s.Ping)
	waitFor(t, "pings answered", func() bool { ok, _ := load.Count("pings"); return ok > 0 })
	load.SetPhase("server closed")
	srv.Close()
	waitFor(t, "pings failing", func() bool { _, bad := load.Count("pings"); return bad > 0 })
	load.Stop()
	f := load.Failures()
	if len(f) == 0 || !strings.Contains(f[0], "ping doomed (server closed)") || load.FirstError() == nil {
		t.Errorf("failures %q, first error %v: want the ping failures in phase \"server closed\"", f, load.FirstError())
	}
}

// TestEchoProcess runs the echo server as a process in a namespace (the
// test binary re-executed, as the cluster harness runs pods), stops and
// restarts it, and checks that deleting the namespace kills what still runs
// in it.
func TestEchoProcess(t *testing.T) {
	Require(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, b := New(t, "pa"), New(t, "pb")
	Link(t, a, "va", "10.203.0.1/24", b, "vb", "10.203.0.2/24")
	p := &Process{Name: "echo", NS: b, Args: append([]string{self}, echo.Args("pod-x", []int{7000}, []int{7001})...),
		Env: []string{echoEnv + "=1"}, LogPath: filepath.Join(t.TempDir(), "echo.log")}
	for round := 1; round <= 2; round++ {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ proto, target string }{{"tcp", "10.203.0.2:7000"}, {"udp", "10.203.0.2:7001"}} {
			var r Reply
			waitFor(t, tc.proto+" echo process answers", func() bool {
				r, err = a.Request(tc.proto, tc.target, RequestOptions{Timeout: 500 * time.Millisecond})
				return err == nil
			})
			if r.Server != "pod-x" || r.ClientIP() != "10.203.0.1" {
				t.Errorf("round %d %s: %+v", round, tc.proto, r)
			}
		}
		if round == 1 {
			p.Stop(5 * time.Second)
			if p.Running() || p.Wait() != nil {
				t.Errorf("after SIGTERM: running %v, exit %v; want a clean exit", p.Running(), p.Wait())
			}
		}
	}
	pid := p.Pid()
	if err := Delete(b.Name); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- p.Wait() }()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatalf("echo process %d survived the deletion of its namespace", pid)
	}
	if err := syscall.Kill(pid, 0); err == nil || p.Running() {
		t.Errorf("echo process %d survived the deletion of its namespace", pid)
	}
	if log, _ := os.ReadFile(p.LogPath); strings.Count(string(log), "Serving id=pod-x") != 2 {
		t.Errorf("log of two runs:\n%s", log)
	}
}

// waitFor polls cond until it holds; the deadline only bounds a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
