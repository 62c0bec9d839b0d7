package netns

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// The echo protocol, spoken by every server of this package and understood
// by its clients:
//
//   - TCP: the server greets each connection with its identity line
//     "id=<ID> from=<client ip:port>", then answers every line it receives
//     with "echo " and that line, until the client closes.
//   - UDP: the server answers each datagram with its identity line and
//     " msg=" plus the datagram's first line.
//
// So one request learns which server answered and which client address it
// saw, and a long-lived TCP connection or UDP socket can go on pinging.

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
// ":port", IPv4 unless the IP is IPv6) and proto ("tcp" or "udp") in the
// network namespace of the calling thread. Close stops it.
func Listen(proto, addr, id string) (*Server, error) {
	s := &Server{ID: id, Proto: proto, Addr: addr, conns: map[net.Conn]bool{}}
	var err error
	switch proto {
	case "tcp":
		if s.ln, err = net.Listen(network(proto, addr), addr); err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go s.accept()
	case "udp":
		if s.pc, err = net.ListenPacket(network(proto, addr), addr); err != nil {
			return nil, err
		}
		s.wg.Add(1)
		go s.answerDatagrams()
	default:
		return nil, fmt.Errorf("unsupported protocol %q", proto)
	}
	return s, nil
}

// Serve starts an echo server with identity id on addr ("ip:port") and
// proto ("tcp" or "udp") inside the namespace; t.Cleanup closes it.
func (n *NS) Serve(t testing.TB, proto, addr, id string) *Server {
	t.Helper()
	var s *Server
	if err := n.Do(func() (err error) { s, err = Listen(proto, addr, id); return err }); err != nil {
		t.Fatalf("listen %s %s in %s: %v", proto, addr, n.Name, err)
	}
	t.Cleanup(s.Close)
	return s
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

func (s *Server) identity(from net.Addr) string {
	return fmt.Sprintf("id=%s from=%s", s.ID, from)
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
	if _, err := io.WriteString(c, s.identity(c.RemoteAddr())+"\n"); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
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
		_, _ = s.pc.WriteTo([]byte(s.identity(from)+" msg="+strings.TrimSpace(msg)+"\n"), from)
	}
}

// network is proto with the address family of addr's IP: IPv6 for an IPv6
// address, else IPv4 (also for ":port").
func network(proto, addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			return proto + "6"
		}
	}
	return proto + "4"
}

// EchoArgs is the command line of EchoMain for a server with identity id on
// the given TCP and UDP ports of every address.
func EchoArgs(id string, tcp, udp []int) []string {
	return []string{"-id=" + id, "-tcp=" + joinInts(tcp), "-udp=" + joinInts(udp)}
}

// EchoMain is the main of an echo server process (see EchoArgs): it serves
// until SIGTERM or SIGINT and returns the exit code. Harnesses run it
// inside a namespace as a pod's server, by re-running their own executable.
func EchoMain(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	id := fs.String("id", "", "identity in every reply")
	tcp := fs.String("tcp", "", "comma-separated TCP ports")
	udp := fs.String("udp", "", "comma-separated UDP ports")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var servers []*Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for _, l := range []struct{ proto, ports string }{{"tcp", *tcp}, {"udp", *udp}} {
		ports, err := splitInts(l.ports)
		if err != nil {
			fmt.Fprintf(os.Stderr, "-%s: %v\n", l.proto, err)
			return 2
		}
		for _, port := range ports {
			s, err := Listen(l.proto, ":"+strconv.Itoa(port), *id)
			if err != nil {
				fmt.Fprintln(os.Stderr, "listen:", err)
				return 1
			}
			servers = append(servers, s)
		}
	}
	fmt.Printf("Serving id=%s tcp=%s udp=%s\n", *id, *tcp, *udp)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, p := range v {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func splitInts(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
