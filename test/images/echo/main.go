// Command echo is the backend of test Services in the echo image: TCP and
// UDP servers speaking the echo protocol of test/echo (every TCP connection
// is greeted with "id=<id> from=<client ip:port>" and then gets each line
// it sends back prefixed with "echo "; every UDP datagram is answered with
// that line and msg=<payload>), the format test/netns parses. An HTTP
// server answers /healthz and /readyz with "ok" (for probes) and any other
// path with the same identity line.
package main

import (
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

	"github.com/synterix/synterix-kube-proxy/test/echo"
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
	if c.tcp, err = echo.SplitPorts(*tcp); err != nil {
		return c, fmt.Errorf("-tcp: %w", err)
	}
	if c.udp, err = echo.SplitPorts(*udp); err != nil {
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
	echoes   []*echo.Server
	httpSrv  *http.Server
	wg       sync.WaitGroup
}

// start listens on every port before it returns, so that a readiness probe
// that passes means every port answers.
func start(c config) (*server, error) {
	s := &server{id: c.id}
	for _, l := range []struct {
		proto string
		ports []int
		addrs *[]net.Addr
	}{{"tcp", c.tcp, &s.tcp}, {"udp", c.udp, &s.udp}} {
		for _, p := range l.ports {
			e, err := echo.Listen(l.proto, net.JoinHostPort(c.listenIP, strconv.Itoa(p)), c.id)
			if err != nil {
				s.close()
				return nil, err
			}
			s.echoes, *l.addrs = append(s.echoes, e), append(*l.addrs, e.LocalAddr())
		}
	}
	if !c.noHTTP {
		ln, err := net.Listen("tcp", net.JoinHostPort(c.listenIP, strconv.Itoa(c.http)))
		if err != nil {
			s.close()
			return nil, err
		}
		s.httpSrv, s.http = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}, ln.Addr()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "echo: http:", err)
			}
		}()
	}
	return s, nil
}

func (s *server) close() {
	for _, e := range s.echoes {
		e.Close()
	}
	if s.httpSrv != nil {
		_ = s.httpSrv.Close()
	}
	s.wg.Wait()
}

// ServeHTTP answers the probes and, on any other path, the identity.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch r.URL.Path {
	case "/healthz", "/readyz":
		_, _ = io.WriteString(w, "ok\n")
	default:
		from, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
		_, _ = io.WriteString(w, echo.Identity(s.id, from)+"\n")
	}
}
