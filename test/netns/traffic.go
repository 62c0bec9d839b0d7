package netns

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Server is a real TCP or UDP server listening inside a namespace. Every
// request is answered with "id=<ID> from=<client addr>" so the client learns
// which server answered and which source address it saw.
type Server struct {
	ID    string
	Proto string // "tcp" or "udp"
	Addr  string // ip:port it listens on
	hits  atomic.Int64
	stop  func()
	wg    sync.WaitGroup
}

// Hits counts requests answered so far.
func (s *Server) Hits() int64 { return s.hits.Load() }

// Close stops the server; it is also registered with t.Cleanup.
func (s *Server) Close() {
	s.stop()
	s.wg.Wait()
}

// Serve starts a server with identity id on addr ("ip:port") and proto
// ("tcp" or "udp") inside the namespace.
func (n *NS) Serve(t testing.TB, proto, addr, id string) *Server {
	t.Helper()
	s := &Server{ID: id, Proto: proto, Addr: addr}
	var once sync.Once
	switch proto {
	case "tcp":
		var ln net.Listener
		if err := n.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return }); err != nil {
			t.Fatalf("listen tcp %s in %s: %v", addr, n.Name, err)
		}
		s.stop = func() { once.Do(func() { ln.Close() }) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.hits.Add(1)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "id=%s from=%s\n", id, c.RemoteAddr())
				c.Close()
			}
		}()
	case "udp":
		var pc net.PacketConn
		if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return }); err != nil {
			t.Fatalf("listen udp %s in %s: %v", addr, n.Name, err)
		}
		s.stop = func() { once.Do(func() { pc.Close() }) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 2048)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.hits.Add(1)
				_, _ = pc.WriteTo([]byte(fmt.Sprintf("id=%s from=%s\n", id, from)), from)
			}
		}()
	default:
		t.Fatalf("unsupported protocol %q", proto)
	}
	t.Cleanup(s.Close)
	return s
}

// Reply is what a Server answered.
type Reply struct {
	// Server is the answering server's ID.
	Server string
	// Client is the source address ip:port the server saw.
	Client string
}

// ClientIP returns the IP part of Client.
func (r Reply) ClientIP() string {
	h, _, _ := net.SplitHostPort(r.Client)
	return h
}

// RequestOptions tune one request.
type RequestOptions struct {
	// Local binds the client socket to "ip", ":port" or "ip:port".
	Local string
	// Timeout bounds the whole request. Default 2s. A filtered (dropped)
	// request ends with a timeout error.
	Timeout time.Duration
}

// Request sends one request from inside the namespace to target
// ("ip:port") and returns the server's reply.
func (n *NS) Request(proto, target string, opts RequestOptions) (Reply, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	var conn net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: opts.Timeout}
		if opts.Local != "" {
			local := opts.Local
			if !strings.Contains(local, ":") {
				local += ":0"
			}
			var err error
			switch proto {
			case "tcp":
				d.LocalAddr, err = net.ResolveTCPAddr("tcp4", local)
			case "udp":
				d.LocalAddr, err = net.ResolveUDPAddr("udp4", local)
			}
			if err != nil {
				return err
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
		var err error
		conn, err = d.Dial(proto+"4", target)
		return err
	})
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(opts.Timeout))
	if proto == "udp" {
		if _, err := conn.Write([]byte("hello\n")); err != nil {
			return Reply{}, err
		}
	}
	buf := make([]byte, 512)
	var got []byte
	for {
		k, err := conn.Read(buf)
		got = append(got, buf[:k]...)
		if proto == "udp" || err == io.EOF || (err == nil && strings.HasSuffix(string(got), "\n")) {
			if proto == "udp" && err != nil {
				return Reply{}, err
			}
			break
		}
		if err != nil {
			return Reply{}, err
		}
	}
	return parseReply(string(got))
}

func parseReply(s string) (Reply, error) {
	var r Reply
	for _, f := range strings.Fields(s) {
		switch {
		case strings.HasPrefix(f, "id="):
			r.Server = f[3:]
		case strings.HasPrefix(f, "from="):
			r.Client = f[5:]
		}
	}
	if r.Server == "" {
		return r, fmt.Errorf("malformed reply %q", s)
	}
	return r, nil
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

// Tally sends count requests and counts replies per server ID; failures are
// counted under "!" + Outcome(err).
func (n *NS) Tally(proto, target string, count int, opts RequestOptions) map[string]int {
	m := map[string]int{}
	for i := 0; i < count; i++ {
		r, err := n.Request(proto, target, opts)
		if err != nil {
			m["!"+Outcome(err)]++
			continue
		}
		m[r.Server]++
	}
	return m
}
