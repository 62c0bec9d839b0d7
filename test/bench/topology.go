package bench

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Addresses of the topology, all in namespaces a run creates and deletes:
//
//	client (10.210.0.2) ── node (10.210.0.1) ── a (10.211.1.2, backend A of the probe Service)
//	                        contender here    ├─ b (10.211.2.2, backend B)
//	                                          └─ sink (10.250.0.2): answers every bulk
//	                                             endpoint 10.128.0.0/12, and rejects
//	                                             Service addresses no rule caught
const (
	clientIP    = "10.210.0.2"
	backendA    = "10.211.1.2"
	backendB    = "10.211.2.2"
	backendPort = 8080
	sinkRange   = "10.128.0.0/12"
	apiListen   = "127.0.0.1:6443"
)

// Topology is one run's network namespaces: a fresh node namespace (an
// empty kernel for the contender), the client, two backends and the sink,
// and a forwarder that gives the node namespace the API server on
// 127.0.0.1:6443, counting the bytes the contender exchanges with it.
type Topology struct {
	Node, Client, A, B, Sink *netns.NS
	Fwd                      *Forwarder
}

// NewTopology builds the namespaces and starts the servers; t.Cleanup
// deletes them.
func NewTopology(t testing.TB, apiHost string) (*Topology, error) {
	tp := &Topology{Node: netns.New(t, "node"), Client: netns.New(t, "client"),
		A: netns.New(t, "a"), B: netns.New(t, "b"), Sink: netns.New(t, "sink")}
	netns.Link(t, tp.Node, "to-client", nodeIP+"/24", tp.Client, "eth0", clientIP+"/24")
	netns.Link(t, tp.Node, "to-a", "10.211.1.1/24", tp.A, "eth0", backendA+"/24")
	netns.Link(t, tp.Node, "to-b", "10.211.2.1/24", tp.B, "eth0", backendB+"/24")
	netns.Link(t, tp.Node, "uplink", "10.250.0.1/24", tp.Sink, "eth0", "10.250.0.2/24")
	tp.Node.EnableForwarding()
	// The node routes everything else, Service addresses included, to the
	// sink, as a node routes them to its gateway.
	tp.Node.AddRoute("default", "10.250.0.2", "uplink")
	// The sink owns every bulk endpoint address (a local route: one socket
	// on 0.0.0.0 answers them all) and rejects, at once, Service addresses
	// that reached it because no rule on the node translated them.
	tp.Sink.MustExec("ip", "route", "add", "local", sinkRange, "dev", "lo")
	tp.Sink.MustExec("ip", "route", "add", "unreachable", serviceCIDR)
	tp.Sink.Sysctl("net.ipv4.icmp_ratelimit", "0")
	tp.A.Serve(t, "tcp", fmt.Sprintf("%s:%d", backendA, backendPort), backendA)
	tp.B.Serve(t, "tcp", fmt.Sprintf("%s:%d", backendB, backendPort), backendB)
	if err := serveAny(t, tp.Sink); err != nil {
		return nil, err
	}
	fwd, err := NewForwarder(tp.Node, apiListen, apiHost)
	if err != nil {
		return nil, err
	}
	t.Cleanup(fwd.Stop)
	tp.Fwd = fwd
	return tp, nil
}

// serveAny answers TCP on port 8080 of every local address of ns with the
// address the client reached ("id=<ip>"), the reply format of
// netns.Request.
func serveAny(t testing.TB, ns *netns.NS) error {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", backendPort)); return }); err != nil {
		return fmt.Errorf("listen in the sink: %w", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			local, _, _ := net.SplitHostPort(c.LocalAddr().String())
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "id=%s from=%s\n", local, c.RemoteAddr())
			c.Close()
		}
	}()
	return nil
}

// Forwarder listens inside a namespace and forwards every connection to an
// address of the test process's namespace: a process inside the node
// namespace reaches the API server on the host's loopback without touching
// the host's links or rules. It counts the bytes each way.
type Forwarder struct {
	Down, Up atomic.Int64 // bytes from the API server, bytes to it
	target   string
	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]bool
}

// NewForwarder starts forwarding listen (inside ns) to target.
func NewForwarder(ns *netns.NS, listen, target string) (*Forwarder, error) {
	f := &Forwarder{target: target, conns: map[net.Conn]bool{}}
	if err := ns.Do(func() (err error) { f.ln, err = net.Listen("tcp", listen); return }); err != nil {
		return nil, fmt.Errorf("forwarder: %w", err)
	}
	go f.accept(f.ln)
	return f, nil
}

func (f *Forwarder) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns[c], f.conns[u] = true, true
		f.mu.Unlock()
		go f.pipe(u, c, &f.Up)
		go f.pipe(c, u, &f.Down)
	}
}

func (f *Forwarder) pipe(dst, src net.Conn, n *atomic.Int64) {
	_, _ = io.Copy(counting{dst, n}, src)
	dst.Close()
	src.Close()
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
}

// Stop closes the listener and every forwarded connection.
func (f *Forwarder) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
}

// counting is a writer that counts the bytes written through it as they go,
// so that a long watch is counted before it ends.
type counting struct {
	w io.Writer
	n *atomic.Int64
}

func (c counting) Write(b []byte) (int, error) {
	k, err := c.w.Write(b)
	c.n.Add(int64(k))
	return k, err
}
