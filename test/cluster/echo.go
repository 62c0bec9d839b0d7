package cluster

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
	"syscall"
)

// roleEnv selects a helper role of the harness's own executable. The demo
// and the e2e test binary call RunHelperIfRequested first thing, so that the
// harness can run itself as a pod's server process.
const roleEnv = "SYNX_CLUSTER_ROLE"

// RunHelperIfRequested runs the echo server and exits when this process was
// started by the harness as a pod's server; otherwise it returns at once.
// Call it at the start of main (or TestMain) of every program that uses the
// harness.
func RunHelperIfRequested() {
	if os.Getenv(roleEnv) != "echo" {
		return
	}
	os.Exit(echoMain(os.Args[1:]))
}

// echoMain serves TCP and UDP on the given ports. Every TCP connection is
// greeted with one identity line and then gets every line it sends echoed;
// every UDP datagram is answered with the identity line and its payload.
func echoMain(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	pod := fs.String("pod", "", "pod name")
	node := fs.String("node", "", "node name")
	ip := fs.String("ip", "", "pod IP")
	tcp := fs.String("tcp", "", "comma-separated TCP ports")
	udp := fs.String("udp", "", "comma-separated UDP ports")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ident := func(port int, from net.Addr) string {
		return fmt.Sprintf("pod=%s node=%s ip=%s port=%d from=%s", *pod, *node, *ip, port, from)
	}
	for _, port := range ports(*tcp) {
		ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
		if err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			return 1
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					if _, err := fmt.Fprintln(c, ident(port, c.RemoteAddr())); err != nil {
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
				}()
			}
		}()
	}
	for _, port := range ports(*udp) {
		pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		if err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			return 1
		}
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				msg := strings.TrimSpace(string(buf[:n]))
				_, _ = pc.WriteTo([]byte(ident(port, from)+" msg="+msg+"\n"), from)
			}
		}()
	}
	fmt.Printf("Serving pod=%s tcp=%s udp=%s\n", *pod, *tcp, *udp)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}

func ports(list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if p, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func joinPorts(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}
