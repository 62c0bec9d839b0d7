package cluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
)

// Reply is what an echo server answered.
type Reply struct {
	// Pod, Node and IP identify the answering pod.
	Pod, Node, IP string
	// Port is the port the server received on.
	Port string
	// From is the client address (ip:port) the server saw.
	From string
	// Msg is the payload the server echoed (UDP).
	Msg string
}

// ClientIP is the IP part of From.
func (r Reply) ClientIP() string {
	h, _, _ := net.SplitHostPort(r.From)
	return h
}

func parseReply(line string) (Reply, error) {
	var r Reply
	for _, f := range strings.Fields(strings.TrimSpace(line)) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "pod":
			r.Pod = v
		case "node":
			r.Node = v
		case "ip":
			r.IP = v
		case "port":
			r.Port = v
		case "from":
			r.From = v
		case "msg":
			r.Msg = v
		}
	}
	if r.Pod == "" {
		return r, fmt.Errorf("not an echo server reply: %q", line)
	}
	return r, nil
}

// DefaultRequestTimeout bounds one request.
const DefaultRequestTimeout = 2 * time.Second

// Request sends one request from inside the namespace to addr ("ip:port")
// over proto ("tcp" or "udp") and returns the reply. A refused connection
// (no endpoints: the proxy rejects) comes back as an error wrapping
// ECONNREFUSED; a dropped one as a timeout.
func (n *NS) Request(proto, addr string) (Reply, error) {
	return n.RequestTimeout(proto, addr, DefaultRequestTimeout)
}

// RequestTimeout is Request with a timeout.
func (n *NS) RequestTimeout(proto, addr string, timeout time.Duration) (Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := n.Dial(ctx, proto+"4", addr)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if proto == "udp" {
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			return Reply{}, err
		}
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	return parseReply(line)
}

// Tally counts replies per pod over a number of requests.
type Tally struct {
	// Pods counts replies per pod name.
	Pods map[string]int
	// Nodes counts replies per node of the answering pod.
	Nodes map[string]int
	// ClientIPs counts the client addresses the servers saw.
	ClientIPs map[string]int
	// Failures counts requests that got no reply.
	Failures int
	// LastError is the error of the last failed request.
	LastError error
}

// Spread sends count requests and tallies who answered.
func (n *NS) Spread(proto, addr string, count int) Tally {
	t := Tally{Pods: map[string]int{}, Nodes: map[string]int{}, ClientIPs: map[string]int{}}
	for i := 0; i < count; i++ {
		r, err := n.Request(proto, addr)
		if err != nil {
			t.Failures++
			t.LastError = err
			continue
		}
		t.Pods[r.Pod]++
		t.Nodes[r.Node]++
		t.ClientIPs[r.ClientIP()]++
	}
	return t
}

// PodNames returns the pods that answered, sorted.
func (t Tally) PodNames() []string {
	var out []string
	for p := range t.Pods {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// String renders the tally as "pod-a=3 pod-b=4 (failures 0)".
func (t Tally) String() string {
	var b strings.Builder
	for _, p := range t.PodNames() {
		fmt.Fprintf(&b, "%s=%d ", p, t.Pods[p])
	}
	fmt.Fprintf(&b, "(failures %d)", t.Failures)
	return b.String()
}

// Stream is a long-lived TCP connection to an echo server: each Ping
// sends a line and reads its echo.
type Stream struct {
	conn net.Conn
	r    *bufio.Reader
	// Greeting is the identity the server greeted the stream with.
	Greeting Reply
	seq      int
}

// OpenStream opens a long-lived TCP connection from the namespace.
func (n *NS) OpenStream(addr string) (*Stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
	defer cancel()
	conn, err := n.Dial(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	s := &Stream{conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(DefaultRequestTimeout))
	line, err := s.r.ReadString('\n')
	if err == nil {
		s.Greeting, err = parseReply(line)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// Ping sends one line and waits for its echo.
func (s *Stream) Ping() error {
	s.seq++
	msg := fmt.Sprintf("ping %d\n", s.seq)
	_ = s.conn.SetDeadline(time.Now().Add(DefaultRequestTimeout))
	if _, err := s.conn.Write([]byte(msg)); err != nil {
		return err
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "echo "+msg {
		return fmt.Errorf("stream got %q, want the echo of %q", line, msg)
	}
	return nil
}

// Close closes the stream.
func (s *Stream) Close() error { return s.conn.Close() }

// UDPFlow is one UDP socket that keeps sending to one address, so that the
// kernel keeps one conntrack entry for it.
type UDPFlow struct {
	conn net.Conn
	seq  int
}

// OpenUDPFlow opens a UDP socket from the namespace to addr.
func (n *NS) OpenUDPFlow(addr string) (*UDPFlow, error) {
	conn, err := n.Dial(context.Background(), "udp4", addr)
	if err != nil {
		return nil, err
	}
	return &UDPFlow{conn: conn}, nil
}

// Send sends one datagram and waits up to timeout for its answer.
func (f *UDPFlow) Send(timeout time.Duration) (Reply, error) {
	f.seq++
	msg := fmt.Sprintf("seq-%d", f.seq)
	_ = f.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := f.conn.Write([]byte(msg + "\n")); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 2048)
	for {
		k, err := f.conn.Read(buf)
		if err != nil {
			return Reply{}, err
		}
		r, err := parseReply(string(buf[:k]))
		if err != nil {
			return Reply{}, err
		}
		if r.Msg == msg { // skip late answers to earlier datagrams
			return r, nil
		}
	}
}

// Close closes the socket.
func (f *UDPFlow) Close() error { return f.conn.Close() }
