package echo

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestParseReply(t *testing.T) {
	r, err := ParseReply("id=web-1 from=10.0.0.1:5353 msg=a b c\n")
	if err != nil || r.Server != "web-1" || r.Client != "10.0.0.1:5353" || r.ClientIP() != "10.0.0.1" || r.Msg != "a b c" {
		t.Errorf("got %+v %v", r, err)
	}
	if _, err := ParseReply("HTTP/1.1 400 Bad Request\r\n"); err == nil {
		t.Error("a reply without id= parsed")
	}
}

func TestNetwork(t *testing.T) {
	for addr, want := range map[string]string{"10.0.0.1:80": "tcp4", "[fd00::1]:80": "tcp6", ":80": "tcp", "bad": "tcp"} {
		if got := Network("tcp", addr); got != want {
			t.Errorf("Network(tcp, %s) = %s, want %s", addr, got, want)
		}
	}
}

// TestServerOnLoopback speaks the protocol to real servers on port 0 of
// loopback: the TCP greeting and echo, the UDP answer with msg=, the hit
// counts, and Close ending a connection the server still holds.
func TestServerOnLoopback(t *testing.T) {
	tcp, err := Listen("tcp", "127.0.0.1:0", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := Listen("udp", "127.0.0.1:0", "u")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()

	c, err := net.DialTimeout("tcp", tcp.LocalAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != fmt.Sprintf("id=a from=%s\n", c.LocalAddr()) {
		t.Errorf("greeting %q %v", line, err)
	}
	fmt.Fprintln(c, "hello")
	if line, err := r.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Errorf("echo %q %v", line, err)
	}

	u, err := net.Dial("udp", udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_ = u.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(u, "seq-7")
	buf := make([]byte, 512)
	k, err := u.Read(buf)
	if got, perr := ParseReply(string(buf[:k])); err != nil || perr != nil || got.Server != "u" || got.Client != u.LocalAddr().String() || got.Msg != "seq-7" {
		t.Errorf("udp reply %q %v %v", buf[:k], err, perr)
	}
	if tcp.Hits() != 1 || udp.Hits() != 1 {
		t.Errorf("hits tcp %d udp %d, want 1 and 1", tcp.Hits(), udp.Hits())
	}
	tcp.Close() // returns only once the held connection is closed
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("the connection outlived Close")
	}
}

func TestPorts(t *testing.T) {
	if p, err := SplitPorts(" 80, ,8080"); err != nil || JoinPorts(p) != "80,8080" {
		t.Errorf("SplitPorts: %v %v", p, err)
	}
	for _, bad := range []string{"0", "x", "70000"} {
		if _, err := SplitPorts(bad); err == nil {
			t.Errorf("SplitPorts(%q): no error", bad)
		}
	}
	if a := Args("p", []int{1, 2}, nil); fmt.Sprint(a) != "[-id=p -tcp=1,2 -udp=]" {
		t.Errorf("Args: %v", a)
	}
}
