package netns

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/echo"
)

// Reply is what an echo server answered (test/echo).
type Reply = echo.Reply

// DefaultTimeout bounds a request, a stream's ping and a dial when the
// options give none.
const DefaultTimeout = 2 * time.Second

// RequestOptions tune a request, a stream or a UDP flow.
type RequestOptions struct {
	// Local binds the client socket to "ip", ":port" or "ip:port".
	Local string
	// Timeout bounds the whole request (default DefaultTimeout). A
	// filtered (dropped) request ends with a timeout error.
	Timeout time.Duration
}

func (o RequestOptions) timeout() time.Duration {
	if o.Timeout == 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

// dial connects from inside the namespace to target over proto ("tcp" or
// "udp"), bound to opts.Local when given.
func (n *NS) dial(proto, target string, opts RequestOptions) (net.Conn, error) {
	nw := echo.Network(proto, target)
	d := net.Dialer{Timeout: opts.timeout()}
	if opts.Local != "" {
		local := opts.Local
		if net.ParseIP(local) != nil {
			local = net.JoinHostPort(local, "0")
		}
		var err error
		if proto == "tcp" {
			d.LocalAddr, err = net.ResolveTCPAddr(nw, local)
		} else {
			d.LocalAddr, err = net.ResolveUDPAddr(nw, local)
		}
		if err != nil {
			return nil, err
		}
		// Allow quick reuse of a fixed local port between requests.
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			_ = c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			return serr
		}
	}
	var conn net.Conn
	err := n.Do(func() (err error) { conn, err = d.Dial(nw, target); return err })
	return conn, err
}

// Request sends one request from inside the namespace to target
// ("ip:port") over proto ("tcp" or "udp") and returns the server's reply.
// A refused request comes back as an error wrapping ECONNREFUSED, a dropped
// one as a timeout (see Outcome).
func (n *NS) Request(proto, target string, opts RequestOptions) (Reply, error) {
	done := n.observe(proto, target, opts)
	r, err := n.request(proto, target, opts)
	done(r, err)
	return r, err
}

func (n *NS) request(proto, target string, opts RequestOptions) (Reply, error) {
	conn, err := n.dial(proto, target, opts)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(opts.timeout()))
	if proto == "udp" {
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			return Reply{}, err
		}
		buf := make([]byte, 2048)
		k, err := conn.Read(buf)
		if err != nil {
			return Reply{}, err
		}
		return echo.ParseReply(string(buf[:k]))
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return Reply{}, err
	}
	return echo.ParseReply(line)
}

// Outcome classifies a request error: "ok", "refused" (TCP RST or ICMP port
// unreachable, e.g. an iptables REJECT), "timeout" (packets dropped),
// "unreachable" (ICMP host/net unreachable or prohibited) or "error".
func Outcome(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EACCES):
		return "unreachable"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

// Answers is who answered a series of requests.
type Answers struct {
	// Servers counts replies per server ID.
	Servers map[string]int
	// ClientIPs counts the client addresses the servers saw.
	ClientIPs map[string]int
	// Failed counts the requests that got no reply, per Outcome.
	Failed map[string]int
	// Failures is how many requests got no reply.
	Failures int
	// LastError is the error of the last failed request.
	LastError error
}

// Spread sends count requests one after the other and counts who answered.
func (n *NS) Spread(proto, target string, count int, opts RequestOptions) Answers {
	a := Answers{Servers: map[string]int{}, ClientIPs: map[string]int{}, Failed: map[string]int{}}
	for i := 0; i < count; i++ {
		r, err := n.Request(proto, target, opts)
		if err != nil {
			a.Failures++
			a.Failed[Outcome(err)]++
			a.LastError = err
			continue
		}
		a.Servers[r.Server]++
		a.ClientIPs[r.ClientIP()]++
	}
	return a
}

// Tally is Spread in one map: replies per server ID, and failures under
// "!" + Outcome(err).
func (n *NS) Tally(proto, target string, count int, opts RequestOptions) map[string]int {
	a := n.Spread(proto, target, count, opts)
	m := a.Servers
	for o, k := range a.Failed {
		m["!"+o] = k
	}
	return m
}

// Names returns the IDs of the servers that answered, sorted.
func (a Answers) Names() []string {
	out := make([]string, 0, len(a.Servers))
	for s := range a.Servers {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// String renders the answers as "a=3 b=4 (failures 0)".
func (a Answers) String() string {
	var b strings.Builder
	for _, s := range a.Names() {
		fmt.Fprintf(&b, "%s=%d ", s, a.Servers[s])
	}
	fmt.Fprintf(&b, "(failures %d)", a.Failures)
	return b.String()
}

// Stream is a long-lived TCP connection to an echo server: each Ping sends
// a line and reads its echo.
type Stream struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	seq     int
	// Greeting is the identity the server greeted the stream with.
	Greeting Reply
}

// OpenStream opens a long-lived TCP connection from the namespace to
// target and reads the server's greeting; opts.Timeout bounds that and
// each Ping.
func (n *NS) OpenStream(target string, opts RequestOptions) (*Stream, error) {
	conn, err := n.dial("tcp", target, opts)
	if err != nil {
		return nil, err
	}
	s := &Stream{conn: conn, r: bufio.NewReader(conn), timeout: opts.timeout()}
	_ = conn.SetDeadline(time.Now().Add(s.timeout))
	line, err := s.r.ReadString('\n')
	if err == nil {
		s.Greeting, err = echo.ParseReply(line)
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
	_ = s.conn.SetDeadline(time.Now().Add(s.timeout))
	if _, err := io.WriteString(s.conn, msg); err != nil {
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

// OpenUDPFlow opens a UDP socket from the namespace to target.
func (n *NS) OpenUDPFlow(target string, opts RequestOptions) (*UDPFlow, error) {
	conn, err := n.dial("udp", target, opts)
	if err != nil {
		return nil, err
	}
	return &UDPFlow{conn: conn}, nil
}

// Send sends one datagram and waits up to timeout for its answer; late
// answers to earlier datagrams are skipped.
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
		r, err := echo.ParseReply(string(buf[:k]))
		if err != nil {
			return Reply{}, err
		}
		if r.Msg == msg {
			return r, nil
		}
	}
}

// Close closes the socket.
func (f *UDPFlow) Close() error { return f.conn.Close() }
