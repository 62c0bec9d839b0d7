package ipvs

// Real-kernel tests of the IPVS backend. They need a kernel with IPVS, root,
// and the tools of the test VM; they run only inside the VM built by
// hack/vm (SYNX_IN_VM=1, `make test-ipvs-vm`) and skip, loudly, elsewhere.
//
// Topology (all namespaces created here and deleted by t.Cleanup):
//
//	client 192.168.50.100/24 (+ .101) --- node 192.168.50.2/24
//	node 10.244.0.1 (on every backend link) --- backend i 10.244.1.i/32
//
// The backend programs the "node" namespace; Go TCP/UDP servers run in
// the backend namespaces; requests come from the client namespace (or a
// backend, for in-cluster and hairpin traffic).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

const (
	clientIP  = "192.168.50.100"
	client2IP = "192.168.50.101"
	kNodeIP   = "192.168.50.2"
	gwIP      = "10.244.0.1"
	kVIP      = "10.96.0.10"
	lbVIP     = "203.0.113.7"
)

func requireKernel(t *testing.T) {
	t.Helper()
	if os.Getenv("SYNX_IN_VM") != "1" {
		t.Skip("SKIPPING REAL-KERNEL IPVS TEST: only runs inside the hack/vm test VM (make test-ipvs-vm); this host kernel is not used")
	}
	if err := Probe(); err != nil {
		t.Fatalf("inside the VM IPVS must be present: %v", err)
	}
	netns.Require(t, "iptables-restore", "iptables")
}

type topo struct {
	client, node *netns.NS
	backends     []*netns.NS
	backendIPs   []string
}

func newTopo(t *testing.T, n int) *topo {
	t.Helper()
	tp := &topo{client: netns.New(t, "cli"), node: netns.New(t, "node")}
	netns.Veth(t, tp.client, "c0", tp.node, "n-c")
	tp.client.AddAddr("c0", clientIP+"/24")
	tp.client.AddAddr("c0", client2IP+"/24")
	tp.client.AddRoute("default", kNodeIP, "")
	tp.node.AddAddr("n-c", kNodeIP+"/24")
	tp.node.Sysctl("net.ipv4.ip_forward", "1")
	for i := 1; i <= n; i++ {
		b := netns.New(t, fmt.Sprintf("b%d", i))
		ip := fmt.Sprintf("10.244.1.%d", i)
		nodeIf := fmt.Sprintf("n-b%d", i)
		netns.Veth(t, tp.node, nodeIf, b, "b0")
		tp.node.AddAddr(nodeIf, gwIP+"/32")
		tp.node.AddRoute(ip+"/32", "", nodeIf)
		// /32: every packet of a backend, even to another backend, goes
		// through the node (as with most CNIs).
		b.AddAddr("b0", ip+"/32")
		b.AddRoute(gwIP+"/32", "", "b0")
		b.MustExec("ip", "route", "replace", "default", "via", gwIP, "dev", "b0", "onlink")
		tp.backends = append(tp.backends, b)
		tp.backendIPs = append(tp.backendIPs, ip)
	}
	return tp
}

func (tp *topo) nsPath() string { return "/run/netns/" + tp.node.Name }

// newKernelBackend creates a backend programming the node namespace and
// registers Cleanup + Close.
func (tp *topo) newKernelBackend(t *testing.T, cfg Config) *Backend {
	t.Helper()
	cfg.NetNSPath = tp.nsPath()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		b.Close()
	})
	return b
}

func kSync(t *testing.T, b *Backend, st *model.State) {
	t.Helper()
	if _, err := b.Sync(context.Background(), st, backend.SyncOptions{}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func kEps(ips ...string) []model.Endpoint {
	var out []model.Endpoint
	for _, ip := range ips {
		out = append(out, model.Endpoint{Addr: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true})
	}
	return out
}

type svcOpt func(*model.Service)

// kService builds a service port: ClusterIP kVIP:port and NodePort
// kNodeIP:nodePort (when nodePort > 0), endpoints on port 8080.
func kService(name string, proto model.Protocol, port, nodePort int32, endpoints []string, opts ...svcOpt) *model.Service {
	s := &model.Service{
		Key: "default/" + name + ":p/" + string(proto), Namespace: "default", Name: name, Protocol: proto,
		Frontends: []model.Frontend{{Kind: model.KindClusterIP, Addr: netip.MustParseAddr(kVIP), Port: port,
			Protocol: proto, Masquerade: model.MasqueradeOffCluster}},
		InternalEndpoints: kEps(endpoints...), ExternalEndpoints: kEps(endpoints...),
	}
	if nodePort > 0 {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr(kNodeIP),
			Port: nodePort, Protocol: proto, Masquerade: model.MasqueradeAlways})
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func kState(svcs ...*model.Service) *model.State {
	return &model.State{NodeName: "node", Family: model.IPv4, NodeIPs: []netip.Addr{netip.MustParseAddr(kNodeIP)},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}, Services: svcs}
}

// okTimeout bounds requests that must succeed. It is generous because the
// VM runs under software emulation on a shared, sometimes busy, host; it is
// never used to tell success from failure.
const okTimeout = 15 * time.Second

// request sends one request and fails the test on error.
func request(t *testing.T, from *netns.NS, proto, target, local string) netns.Reply {
	t.Helper()
	r, err := from.Request(proto, target, netns.RequestOptions{Local: local, Timeout: okTimeout})
	if err != nil {
		t.Fatalf("%s request %s -> %s: %v", proto, local, target, err)
	}
	return r
}

func serveAll(t *testing.T, tp *topo, proto string) {
	for i, b := range tp.backends {
		b.Serve(t, proto, tp.backendIPs[i]+":8080", fmt.Sprintf("b%d", i+1))
	}
}

func TestKernelRoundRobinIsEven(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 3)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{Scheduler: "rr"})
	kSync(t, b, kState(kService("web", model.TCP, 80, 0, tp.backendIPs)))
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		counts[request(t, tp.client, "tcp", kVIP+":80", "").Server]++
	}
	for i := range tp.backends {
		if id := fmt.Sprintf("b%d", i+1); counts[id] != 10 {
			t.Fatalf("rr over 3 backends, 30 requests: got %v, want 10 each", counts)
		}
	}
}

func TestKernelMasqueradeAndSourcePreservation(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{})
	web := kService("web", model.TCP, 80, 30080, tp.backendIPs[1:2])
	local := kService("local", model.TCP, 81, 0, tp.backendIPs[1:2], func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: netip.MustParseAddr(lbVIP),
			Port: 81, Protocol: model.TCP, Masquerade: model.MasqueradeNever})
		s.ExternalLocal = true
	})
	kSync(t, b, kState(web, local))

	// Off-cluster client to a ClusterIP (OffCluster): masqueraded.
	if r := request(t, tp.client, "tcp", kVIP+":80", ""); r.ClientIP() != gwIP {
		t.Errorf("off-cluster -> ClusterIP: backend saw %s, want masquerade to %s", r.ClientIP(), gwIP)
	}
	// In-cluster client (backend 1) to the ClusterIP: source preserved.
	if r := request(t, tp.backends[0], "tcp", kVIP+":80", ""); r.ClientIP() != tp.backendIPs[0] {
		t.Errorf("in-cluster -> ClusterIP: backend saw %s, want %s", r.ClientIP(), tp.backendIPs[0])
	}
	// NodePort (Always): masqueraded.
	if r := request(t, tp.client, "tcp", kNodeIP+":30080", ""); r.Server != "b2" || r.ClientIP() != gwIP {
		t.Errorf("NodePort: reply %+v, want b2 seeing %s", r, gwIP)
	}
	// Load balancer IP with Local policy (Never): client address kept.
	if r := request(t, tp.client, "tcp", lbVIP+":81", ""); r.ClientIP() != clientIP {
		t.Errorf("LB Local: backend saw %s, want the client %s", r.ClientIP(), clientIP)
	}
}

func TestKernelHairpin(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 1)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(kService("self", model.TCP, 80, 0, tp.backendIPs)))
	// The only endpoint calls its own service: without the hairpin
	// masquerade the reply would not come back through the node.
	r := request(t, tp.backends[0], "tcp", kVIP+":80", "")
	if r.Server != "b1" || r.ClientIP() == tp.backendIPs[0] {
		t.Fatalf("hairpin reply %+v: want b1 seeing a masqueraded source", r)
	}
}

func TestKernelSessionAffinity(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 3)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{Scheduler: "rr"})
	kSync(t, b, kState(kService("sticky", model.TCP, 80, 0, tp.backendIPs, func(s *model.Service) {
		s.Affinity = model.Affinity{ClientIP: true, Timeout: 60 * time.Second}
	})))
	first := request(t, tp.client, "tcp", kVIP+":80", "").Server
	for i := 0; i < 9; i++ {
		if got := request(t, tp.client, "tcp", kVIP+":80", "").Server; got != first {
			t.Fatalf("request %d went to %s, affinity says %s", i+2, got, first)
		}
	}
}

func TestKernelNoEndpoints(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 1)
	b := tp.newKernelBackend(t, Config{})
	cluster := kService("empty", model.TCP, 80, 0, nil)
	local := kService("emptylocal", model.TCP, 82, 0, nil, func(s *model.Service) {
		s.Frontends = []model.Frontend{{Kind: model.KindLoadBalancer, Addr: netip.MustParseAddr(lbVIP), Port: 82,
			Protocol: model.TCP, Masquerade: model.MasqueradeNever}}
		s.ExternalLocal = true
	})
	kSync(t, b, kState(cluster, local))
	_, err := tp.client.Request("tcp", kVIP+":80", netns.RequestOptions{Timeout: okTimeout})
	if o := netns.Outcome(err); o != "refused" {
		t.Errorf("Cluster policy, no endpoints: outcome %s (%v), want refused", o, err)
	}
	_, err = tp.client.Request("tcp", lbVIP+":82", netns.RequestOptions{Timeout: 2 * time.Second})
	if o := netns.Outcome(err); o != "timeout" {
		t.Errorf("Local policy, no endpoints: outcome %s (%v), want timeout (dropped)", o, err)
	}
}

func TestKernelSourceRanges(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 1)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(kService("fw", model.TCP, 80, 0, tp.backendIPs, func(s *model.Service) {
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: netip.MustParseAddr(lbVIP),
			Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeAlways,
			SourceRanges: []netip.Prefix{netip.MustParsePrefix(clientIP + "/32")}})
	})))
	if r := request(t, tp.client, "tcp", lbVIP+":80", clientIP); r.Server != "b1" {
		t.Fatalf("allowed source: %+v", r)
	}
	_, err := tp.client.Request("tcp", lbVIP+":80", netns.RequestOptions{Local: client2IP, Timeout: 2 * time.Second})
	if o := netns.Outcome(err); o != "timeout" {
		t.Fatalf("source outside the ranges: outcome %s (%v), want dropped", o, err)
	}
	// The ClusterIP of the same service has no source ranges.
	if r := request(t, tp.client, "tcp", kVIP+":80", client2IP); r.Server != "b1" {
		t.Fatalf("ClusterIP from %s: %+v", client2IP, r)
	}
}

func TestKernelSamePortDifferentProtocols(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	tp.backends[0].Serve(t, "tcp", tp.backendIPs[0]+":8080", "tcp-b1")
	tp.backends[1].Serve(t, "udp", tp.backendIPs[1]+":8080", "udp-b2")
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(
		kService("dns", model.TCP, 53, 30053, tp.backendIPs[0:1]),
		kService("dns", model.UDP, 53, 30053, tp.backendIPs[1:2])))
	for _, target := range []string{kVIP + ":53", kNodeIP + ":30053"} {
		if r := request(t, tp.client, "tcp", target, ""); r.Server != "tcp-b1" {
			t.Errorf("tcp %s: %+v", target, r)
		}
		if r := request(t, tp.client, "udp", target, ""); r.Server != "udp-b2" {
			t.Errorf("udp %s: %+v", target, r)
		}
	}
}

func TestKernelSourceHashingIsStickyPerSource(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 3)
	serveAll(t, tp, "tcp")
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(kService("sh", model.TCP, 80, 0, tp.backendIPs, func(s *model.Service) {
		s.Algorithm = model.AlgorithmSourceHashing
	})))
	for _, src := range []string{clientIP, client2IP} {
		first := request(t, tp.client, "tcp", kVIP+":80", src).Server
		for i := 0; i < 8; i++ {
			if got := request(t, tp.client, "tcp", kVIP+":80", src).Server; got != first {
				t.Fatalf("sh: source %s went to %s then %s", src, first, got)
			}
		}
	}
}

// holdServer answers "id=<id> from=<client>\n" on accept, then echoes lines until the
// client closes: connections stay open as long as the client wants.
type holdServer struct {
	id string
	ln net.Listener
	wg sync.WaitGroup
}

func serveHold(t *testing.T, ns *netns.NS, addr, id string) *holdServer {
	t.Helper()
	s := &holdServer{id: id}
	if err := ns.Do(func() (err error) { s.ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "id=%s from=%s\n", id, c.RemoteAddr())
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", id, sc.Text())
				}
			}()
		}
	}()
	t.Cleanup(func() { s.ln.Close(); s.wg.Wait() })
	return s
}

// heldConn is a client connection that stays open.
type heldConn struct {
	c      *net.TCPConn
	r      *bufio.Reader
	server string
	// from is the client address the server saw.
	from string
}

func dialHold(t *testing.T, from *netns.NS, target string) *heldConn {
	t.Helper()
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp", target, okTimeout); return }); err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	h := &heldConn{c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(okTimeout))
	line, err := h.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "id="); ok {
			h.server = v
		}
		if v, ok := strings.CutPrefix(f, "from="); ok {
			h.from = v
		}
	}
	if h.server == "" {
		t.Fatalf("malformed greeting %q", line)
	}
	t.Cleanup(func() { c.Close() })
	return h
}

// ping proves the connection still carries data to the same server.
func (h *heldConn) ping(t *testing.T) {
	t.Helper()
	_ = h.c.SetDeadline(time.Now().Add(okTimeout))
	if _, err := fmt.Fprintf(h.c, "ping\n"); err != nil {
		t.Fatalf("write on held connection: %v", err)
	}
	line, err := h.r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != h.server+" ping" {
		t.Fatalf("held connection answer %q, %v; want %q", line, err, h.server+" ping")
	}
}

// reset closes with RST so that IPVS forgets the connection quickly.
func (h *heldConn) reset() {
	_ = h.c.SetLinger(0)
	_ = h.c.Close()
}

func shortRequest(t *testing.T, from *netns.NS, target string) string {
	t.Helper()
	h := dialHold(t, from, target)
	h.reset()
	return h.server
}

func TestKernelLeastConnectionPrefersIdleBackend(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	for i, ns := range tp.backends {
		serveHold(t, ns, tp.backendIPs[i]+":8080", fmt.Sprintf("b%d", i+1))
	}
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(kService("lc", model.TCP, 80, 0, tp.backendIPs, func(s *model.Service) {
		s.Algorithm = model.AlgorithmLeastConnections
	})))
	busy := dialHold(t, tp.client, kVIP+":80")
	for i := 0; i < 5; i++ {
		if got := shortRequest(t, tp.client, kVIP+":80"); got == busy.server {
			t.Fatalf("lc sent request %d to %s, which holds an active connection", i+1, got)
		}
	}
	busy.ping(t)
}

// ipvsDest reads one destination of a virtual server from the kernel.
func ipvsDest(t *testing.T, b *Backend, vs vsKey, rs rsKey) *libipvs.Destination {
	t.Helper()
	svc := (&virtualServer{Key: vs}).toService()
	ds, err := b.ipvs.GetDestinations(svc)
	if err != nil {
		t.Fatalf("GetDestinations %s: %v", vs, err)
	}
	for _, d := range ds {
		if k, _ := rsKeyOf(d); k == rs {
			return d
		}
	}
	return nil
}

func TestKernelGracefulTermination(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	for i, ns := range tp.backends {
		serveHold(t, ns, tp.backendIPs[i]+":8080", fmt.Sprintf("b%d", i+1))
	}
	b := tp.newKernelBackend(t, Config{Scheduler: "rr", GracefulTimeout: time.Hour})
	kSync(t, b, kState(kService("gt", model.TCP, 80, 0, tp.backendIPs)))
	held := dialHold(t, tp.client, kVIP+":80")
	gone, stay := 0, 1
	if held.server == "b2" {
		gone, stay = 1, 0
	}
	vs := vsKey{Addr: netip.MustParseAddr(kVIP), Proto: unix.IPPROTO_TCP, Port: 80}
	goneRS := rsKey{Addr: netip.MustParseAddr(tp.backendIPs[gone]), Port: 8080}

	// The held connection's endpoint leaves the service.
	kSync(t, b, kState(kService("gt", model.TCP, 80, 0, tp.backendIPs[stay:stay+1])))
	d := ipvsDest(t, b, vs, goneRS)
	if d == nil || d.Weight != 0 {
		t.Fatalf("removed endpoint with an open connection: destination %+v, want weight 0 (draining)", d)
	}
	for i := 0; i < 4; i++ {
		if got := shortRequest(t, tp.client, kVIP+":80"); got != fmt.Sprintf("b%d", stay+1) {
			t.Fatalf("new connection %d went to draining %s", i+1, got)
		}
	}
	held.ping(t)

	// Once the connection is gone, a sync deletes the destination. IPVS
	// keeps a reset connection for a few seconds (CLOSE state), so sync
	// until it is gone, for at most 60 rounds.
	held.reset()
	deleted := false
	for i := 0; i < 60 && !deleted; i++ {
		kSync(t, b, kState(kService("gt", model.TCP, 80, 0, tp.backendIPs[stay:stay+1])))
		deleted = ipvsDest(t, b, vs, goneRS) == nil
		if !deleted {
			time.Sleep(time.Second)
		}
	}
	if !deleted {
		t.Fatalf("draining destination never deleted after its connection closed (draining=%d)", b.Draining())
	}
}

func TestKernelGracefulTimeoutDeletesBusyDestination(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	for i, ns := range tp.backends {
		serveHold(t, ns, tp.backendIPs[i]+":8080", fmt.Sprintf("b%d", i+1))
	}
	b := tp.newKernelBackend(t, Config{Scheduler: "rr", GracefulTimeout: time.Nanosecond})
	kSync(t, b, kState(kService("gt", model.TCP, 80, 0, tp.backendIPs)))
	held := dialHold(t, tp.client, kVIP+":80")
	gone, stay := 0, 1
	if held.server == "b2" {
		gone, stay = 1, 0
	}
	vs := vsKey{Addr: netip.MustParseAddr(kVIP), Proto: unix.IPPROTO_TCP, Port: 80}
	goneRS := rsKey{Addr: netip.MustParseAddr(tp.backendIPs[gone]), Port: 8080}
	st := kState(kService("gt", model.TCP, 80, 0, tp.backendIPs[stay:stay+1]))
	kSync(t, b, st)
	kSync(t, b, st) // the (1ns) grace period has passed by now
	if d := ipvsDest(t, b, vs, goneRS); d != nil {
		t.Fatalf("destination with an open connection not deleted after the grace timeout: %+v", d)
	}
}

func TestKernelRestartAdoptsWithoutRecreating(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	for i, ns := range tp.backends {
		serveHold(t, ns, tp.backendIPs[i]+":8080", fmt.Sprintf("b%d", i+1))
	}
	b1 := tp.newKernelBackend(t, Config{})
	st := kState(kService("web", model.TCP, 80, 30080, tp.backendIPs))
	kSync(t, b1, st)
	held := dialHold(t, tp.client, kVIP+":80")
	vs := vsKey{Addr: netip.MustParseAddr(kVIP), Proto: unix.IPPROTO_TCP, Port: 80}
	rs := rsKey{Addr: netip.MustParseAddr(tp.backendIPs[0]), Port: 8080}
	if held.server == "b2" {
		rs.Addr = netip.MustParseAddr(tp.backendIPs[1])
	}
	if d := ipvsDest(t, b1, vs, rs); d == nil || d.ActiveConnections != 1 {
		t.Fatalf("destination of the held connection: %+v, want 1 active connection", d)
	}
	// A second backend instance (a restarted agent) adopts the kernel state.
	b2 := tp.newKernelBackend(t, Config{})
	res, err := b2.Sync(context.Background(), st, backend.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 0 || res.Rules != 0 {
		t.Fatalf("restarted backend changed %d services and wrote %d objects, want none", res.Changed, res.Rules)
	}
	if d := ipvsDest(t, b2, vs, rs); d == nil || d.ActiveConnections != 1 || d.Weight != 1 {
		t.Fatalf("after the restart sync the destination is %+v, want the same one with its connection", d)
	}
	held.ping(t)
	// It also owns the state: an empty sync removes everything.
	held.reset()
	kSync(t, b2, kState())
	if n := ourServices(t, b2); n != 0 {
		t.Fatalf("%d virtual servers left after syncing an empty state", n)
	}
}

func ourServices(t *testing.T, b *Backend) int {
	t.Helper()
	svcs, err := b.ipvs.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	return len(svcs)
}

func TestKernelCleanupRemovesOnlyOurs(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 1)
	serveAll(t, tp, "tcp")
	// Foreign state in the node: an IPVS service, an iptables chain with a
	// jump, an ipset.
	tp.node.MustExec("ipset", "create", "FOREIGN-SET", "hash:ip")
	if out, err := tp.node.ExecInput([]byte("*nat\n:FOREIGN - [0:0]\n-A PREROUTING -j FOREIGN\nCOMMIT\n"), "iptables-restore", "--noflush"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	b := tp.newKernelBackend(t, Config{StrictARP: true})
	foreign := &libipvs.Service{Address: net.ParseIP("10.99.0.1").To4(), Protocol: unix.IPPROTO_TCP, Port: 99,
		SchedName: "wlc", AddressFamily: unix.AF_INET, Netmask: 0xffffffff}
	if err := b.ipvs.NewService(foreign); err != nil {
		t.Fatal(err)
	}
	kSync(t, b, kState(kService("web", model.TCP, 80, 30080, tp.backendIPs)))
	if r := request(t, tp.client, "tcp", kVIP+":80", ""); r.Server != "b1" {
		t.Fatalf("%+v", r)
	}
	var arpIgnore, arpAnnounce []byte
	if err := tp.node.Do(func() (err error) {
		if arpIgnore, err = os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore"); err != nil {
			return err
		}
		arpAnnounce, err = os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_announce")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(arpIgnore)) != "1" || strings.TrimSpace(string(arpAnnounce)) != "2" {
		t.Errorf("strict ARP: arp_ignore=%q arp_announce=%q", arpIgnore, arpAnnounce)
	}

	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	svcs, err := b.ipvs.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Port != 99 {
		t.Fatalf("after Cleanup the IPVS table has %d services, want only the foreign one", len(svcs))
	}
	// The backend's own flavour: detection picks the one holding FOREIGN.
	save := tp.node.MustExec(xtables.BinariesFor(model.IPv4, b.cfg.IPTablesMode).Save)
	if strings.Contains(save, "SYNXIPVS") {
		t.Errorf("our rules survived Cleanup:\n%s", save)
	}
	if !strings.Contains(save, "-A PREROUTING -j FOREIGN") {
		t.Errorf("Cleanup removed a foreign rule:\n%s", save)
	}
	sets := tp.node.MustExec("ipset", "list", "-n")
	if strings.Contains(sets, "SYNXIPVS") || !strings.Contains(sets, "FOREIGN-SET") {
		t.Errorf("ipsets after Cleanup: %q", sets)
	}
	if _, err := tp.node.Exec("ip", "link", "show", DefaultDummyInterface); err == nil {
		t.Errorf("dummy interface %s survived Cleanup", DefaultDummyInterface)
	}
	if _, err := tp.client.Request("tcp", kVIP+":80", netns.RequestOptions{Timeout: time.Second}); err == nil {
		t.Errorf("the service still answers after Cleanup")
	}
}

func TestKernelEverySchedulerIsAccepted(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 2)
	serveAll(t, tp, "tcp")
	st := kState(kService("web", model.TCP, 80, 0, tp.backendIPs))
	for _, sched := range Schedulers {
		// A new backend instance per scheduler: the running virtual
		// server is updated in place, not recreated.
		b := tp.newKernelBackend(t, Config{Scheduler: sched})
		kSync(t, b, st)
		svcs, err := b.ipvs.GetServices()
		if err != nil {
			t.Fatal(err)
		}
		if len(svcs) != 1 || svcs[0].SchedName != sched {
			var names []string
			for _, s := range svcs {
				names = append(names, s.SchedName)
			}
			t.Fatalf("after syncing with %s the kernel's services have schedulers %q, want one with %s", sched, names, sched)
		}
		if r := request(t, tp.client, "tcp", kVIP+":80", ""); r.Server == "" {
			t.Fatalf("%s: no answer", sched)
		}
	}
}

// The IPVS timeouts reach the kernel of the node namespace (the IPVS
// configuration is per network namespace); zero fields keep the kernel's
// value. A virtual server in an exclude CIDR survives a sync that drops it
// and a cleanup.
func TestKernelTimeoutsAndExcludeCIDRs(t *testing.T) {
	requireKernel(t)
	tp := newTopo(t, 1)
	before := tp.newKernelBackend(t, Config{})
	orig, err := before.ipvs.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{TCPTimeout: 777 * time.Second, UDPTimeout: 55 * time.Second,
		ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix(kVIP + "/32")}}
	b := tp.newKernelBackend(t, cfg)
	kSync(t, b, kState(kService("web", model.TCP, 80, 30080, tp.backendIPs)))
	got, err := b.ipvs.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got.TimeoutTCP != 777*time.Second || got.TimeoutUDP != 55*time.Second || got.TimeoutTCPFin != orig.TimeoutTCPFin {
		t.Fatalf("kernel timeouts %+v, want tcp 777s, udp 55s, tcpFin kept at %s", got, orig.TimeoutTCPFin)
	}
	kSync(t, b, kState())
	svcs, err := b.ipvs.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Address.String() != kVIP {
		t.Fatalf("after dropping the service the kernel has %d virtual servers, want only the excluded %s", len(svcs), kVIP)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if svcs, err = b.ipvs.GetServices(); err != nil || len(svcs) != 1 {
		t.Fatalf("after Cleanup: %d virtual servers (%v), want the excluded one", len(svcs), err)
	}
	// Not ours any more: remove it by hand so the namespace is clean.
	if err := b.ipvs.DelService(svcs[0]); err != nil {
		t.Fatal(err)
	}
}
