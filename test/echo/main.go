package echo

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// Args is the command line of Main for a server with identity id on the
// given TCP and UDP ports of every address.
func Args(id string, tcp, udp []int) []string {
	return []string{"-id=" + id, "-tcp=" + JoinPorts(tcp), "-udp=" + JoinPorts(udp)}
}

// Main is the main of an echo server process (see Args): it serves until
// SIGTERM or SIGINT and returns the exit code. Harnesses run it inside a
// namespace as a pod's server, by re-running their own executable.
func Main(args []string) int {
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
		ports, err := SplitPorts(l.ports)
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

// JoinPorts renders ports as a comma-separated list.
func JoinPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// SplitPorts parses a comma-separated list of ports (1 to 65535); empty
// items are skipped.
func SplitPorts(list string) ([]int, error) {
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
