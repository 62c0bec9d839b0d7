// Package echo is the one echo protocol of the test backends, its server
// and its reply parser. test/netns runs the server inside namespaces and
// sends requests to it; the cluster harness runs Main as a pod's process;
// the echo container image (test/images/echo) serves it from a container.
//
// The protocol:
//
//   - TCP: the server greets each connection with its identity line
//     "id=<ID> from=<client ip:port>", then answers every line it receives
//     with "echo " and that line, until the client closes or stays quiet
//     for a minute.
//   - UDP: the server answers each datagram with its identity line and
//     " msg=" plus the datagram's first line.
//
// So one request learns which server answered and which client address it
// saw, and a long-lived TCP connection or UDP socket can go on pinging.
package echo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idle is how long a TCP connection may stay quiet before the server
// closes it.
const idle = time.Minute

// Identity is the identity line (without newline) of server id for a
// client at from.
func Identity(id string, from net.Addr) string { return fmt.Sprintf("id=%s from=%s", id, from) }

// Reply is what an echo server answered.
type Reply struct {
	// Server is the answering server's ID.
	Server string
	// Client is the source address ip:port the server saw.
	Client string
	// Msg is the first line of the datagram a UDP server answered.
	Msg string
}

// ClientIP returns the IP part of Client.
func (r Reply) ClientIP() string {
	h, _, _ := net.SplitHostPort(r.Client)
	return h
}

// ParseReply parses an identity line; msg= takes the rest of the line.
func ParseReply(line string) (Reply, error) {
	var r Reply
	head, msg, hasMsg := strings.Cut(strings.TrimRight(line, "\r\n"), " msg=")
	if hasMsg {
		r.Msg = msg
	}
	for _, f := range strings.Fields(head) {
		if v, ok := strings.CutPrefix(f, "id="); ok {
			r.Server = v
		} else if v, ok := strings.CutPrefix(f, "from="); ok {
			r.Client = v
		}
	}
	if r.Server == "" {
		return r, fmt.Errorf("not an echo server reply: %q", line)
	}
	return r, nil
}

// Network is proto ("tcp" or "udp") with the address family of addr's IP:
// IPv6 for an IPv6 address, IPv4 for an IPv4 one, both for ":port".
func Network(proto, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return proto
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return proto + "6"
	}
	return proto + "4"
}

// Server is a real TCP or UDP echo server.
type Server struct {
	ID    string
	Proto string // "tcp" or "udp"
	Addr  string // the address it listens on, as given ("ip:port" or ":port")
	hits  atomic.Int64

	mu     sync.Mutex
	closed bool
	ln     net.Listener
	pc     net.PacketConn
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

// Listen starts an echo server with identity id on addr ("ip:port" or
// ":port") and proto ("tcp" or "udp") in the network namespace of the
// calling thread. Close stops it.
func Listen(proto, addr, id string) (*Server, error) {
	s := &Server{ID: id, Proto: proto, Addr: addr, conns: map[net.Conn]bool{}}
	var err error
	switch proto {
	case "tcp":
		if s.ln, err = net.Listen(Network(proto, addr), addr); err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go s.accept()
	case "udp":
		if s.pc, err = net.ListenPacket(Network(proto, addr), addr); err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go s.answerDatagrams()
	default:
		return nil, fmt.Errorf("unsupported protocol %q", proto)
	}
	return s, nil
}

// LocalAddr is the address the server listens on (with the port the
// kernel picked for port 0).
func (s *Server) LocalAddr() net.Addr {
	if s.ln != nil {
		return s.ln.Addr()
	}
	return s.pc.LocalAddr()
}

// Hits counts TCP connections accepted or UDP datagrams answered so far.
func (s *Server) Hits() int64 { return s.hits.Load() }

// Close stops the server and closes the connections it holds.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if s.ln != nil {
			s.ln.Close()
		}
		if s.pc != nil {
			s.pc.Close()
		}
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// accept serves every TCP connection in its own goroutine.
func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		s.hits.Add(1)
		go s.echo(c)
	}
}

// echo greets a connection with the identity line and echoes its lines.
func (s *Server) echo(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	_ = c.SetDeadline(time.Now().Add(idle))
	if _, err := io.WriteString(c, Identity(s.ID, c.RemoteAddr())+"\n"); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(idle))
		if _, err := io.WriteString(c, "echo "+line); err != nil {
			return
		}
	}
}

// answerDatagrams answers every UDP datagram with the identity line and
// the datagram's first line.
func (s *Server) answerDatagrams() {
	defer s.wg.Done()
	buf := make([]byte, 64*1024)
	for {
		k, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		s.hits.Add(1)
		msg, _, _ := strings.Cut(string(buf[:k]), "\n")
		_, _ = s.pc.WriteTo([]byte(Identity(s.ID, from)+" msg="+strings.TrimSpace(msg)+"\n"), from)
	}
}
