// Command echo is the backend of test Services: every TCP connection and
// every UDP datagram is answered with one line "id=<id> from=<client
// ip:port>", the format test/netns parses. A TCP connection then gets each
// line it sends back, prefixed with "echo ". An HTTP server answers
// /healthz and /readyz with "ok" (for probes) and any other path with the
// same identity line.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout))
}

// config is the command line.
type config struct {
	id        string
	tcp, udp  []int // 0 picks a free port
	http      int
	noHTTP    bool
	listenIP  string
	printVers bool
}

func parseFlags(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	def := getenv("POD_NAME")
	if def == "" {
		def, _ = os.Hostname()
	}
	fs.StringVar(&c.id, "id", def, "Identity in the replies (default $POD_NAME, else the host name).")
	tcp := fs.String("tcp", "8080", "Comma-separated TCP ports; empty for none.")
	udp := fs.String("udp", "8080", "Comma-separated UDP ports; empty for none.")
	fs.IntVar(&c.http, "http", 8081, "HTTP port of /healthz, /readyz and the identity; 0 for none.")
	fs.StringVar(&c.listenIP, "listen", "", "Address to listen on (default: every address, IPv4 and IPv6).")
	fs.BoolVar(&c.printVers, "version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	if c.tcp, err = ports(*tcp); err != nil {
		return c, fmt.Errorf("-tcp: %w", err)
	}
	if c.udp, err = ports(*udp); err != nil {
		return c, fmt.Errorf("-udp: %w", err)
	}
	if c.http < 0 || c.http > 65535 {
		return c, fmt.Errorf("-http: port %d is out of range", c.http)
	}
	c.noHTTP = c.http == 0
	if strings.ContainsAny(c.id, " \t\n") || c.id == "" {
		return c, fmt.Errorf("-id %q must be one non-empty word", c.id)
	}
	return c, nil
}

func ports(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("bad port %q", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// run serves until ctx ends or SIGTERM/SIGINT arrives; it returns the exit
// code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) int {
	c, err := parseFlags(args, getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 2
	}
	if c.printVers {
		fmt.Fprintln(stdout, "echo", version)
		return 0
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := start(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Serving id=%s tcp=%v udp=%v http=%d\n", c.id, c.tcp, c.udp, c.http)
	<-ctx.Done()
	s.close()
	return 0
}

// server is the set of listeners of one run.
type server struct {
	id       string
	tcp, udp []net.Addr // in the order of the config
	http     net.Addr
	closers  []io.Closer
	wg       sync.WaitGroup
}

func reply(id string, from net.Addr) string { return fmt.Sprintf("id=%s from=%s\n", id, from) }

// start listens on every port before it returns, so that a readiness probe
// that passes means every port answers.
func start(c config) (*server, error) {
	s := &server{id: c.id}
	for _, p := range c.tcp {
		ln, err := net.Listen("tcp", net.JoinHostPort(c.listenIP, strconv.Itoa(p)))
		if err != nil {
			s.close()
			return nil, err
		}
		s.closers, s.tcp = append(s.closers, ln), append(s.tcp, ln.Addr())
		s.goServe(func() { s.serveTCP(ln) })
	}
	for _, p := range c.udp {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(c.listenIP, strconv.Itoa(p)))
		if err != nil {
			s.close()
			return nil, err
		}
		s.closers, s.udp = append(s.closers, pc), append(s.udp, pc.LocalAddr())
		s.goServe(func() { s.serveUDP(pc) })
	}
	if !c.noHTTP {
		ln, err := net.Listen("tcp", net.JoinHostPort(c.listenIP, strconv.Itoa(c.http)))
		if err != nil {
			s.close()
			return nil, err
		}
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
		s.closers, s.http = append(s.closers, srv), ln.Addr()
		s.goServe(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "echo: http:", err)
			}
		})
	}
	return s, nil
}

func (s *server) goServe(f func()) {
	s.wg.Add(1)
	go func() { defer s.wg.Done(); f() }()
}

func (s *server) close() {
	for _, c := range s.closers {
		_ = c.Close()
	}
	s.wg.Wait()
}

// serveTCP greets each connection with the identity line, then echoes its
// lines until the client closes or goes quiet for a minute.
func (s *server) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			if _, err := io.WriteString(c, reply(s.id, c.RemoteAddr())); err != nil {
				return
			}
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				if _, err := io.WriteString(c, "echo "+line); err != nil {
					return
				}
			}
		}()
	}
}

// serveUDP answers every datagram with the identity line.
func (s *server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo([]byte(reply(s.id, from)), from)
	}
}

// ServeHTTP answers the probes and, on any other path, the identity.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch r.URL.Path {
	case "/healthz", "/readyz":
		_, _ = io.WriteString(w, "ok\n")
	default:
		from, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
		_, _ = io.WriteString(w, reply(s.id, from))
	}
}
