package backendtest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Test topology, all in namespaces the test creates:
//
//	client (10.210.0.2, .3) ── node (10.210.0.1) ─┬─ b1 (10.211.1.2, .3, .4)
//	                           rules live here     ├─ b2 (10.211.2.2, .3, .4)
//	                                               └─ sink (10.250.0.2, default route)
//
// The node routes between client and backends and is where the backend
// programs the kernel. Backends are "pods": 10.211.0.0/16 is the cluster
// CIDR. Every backend address runs a TCP and a UDP server on port 8080
// whose identity is its IP.
const (
	NodeIP    = "10.210.0.1"
	ClientIP  = "10.210.0.2"
	Client2IP = "10.210.0.3"
	NodeName  = "node-a"
	// VIP is the ClusterIP most scenarios use.
	VIP = "10.96.0.10"
)

// BackendIPs are the addresses of the backend "pods".
var BackendIPs = []string{"10.211.1.2", "10.211.1.3", "10.211.1.4", "10.211.2.2", "10.211.2.3", "10.211.2.4"}

// Topo is one scenario's namespaces, its Services and the backend under
// test.
type Topo struct {
	T            testing.TB
	H            Harness
	Node, Client *netns.NS
	B1, B2       *netns.NS
	Servers      map[string]*netns.Server // "tcp/10.211.1.2:8080"
	Cfg          model.Config
	Backend      backend.Backend
	svcs         map[string]*corev1.Service
	slices       map[string]*discoveryv1.EndpointSlice
	// Prev and Cur are the states of the last two successful syncs.
	Prev, Cur *model.State
}

// NewTopo builds the topology and a backend in the node namespace.
func NewTopo(t testing.TB, h Harness) *Topo {
	t.Helper()
	netns.Require(t, h.Tools...)
	tp := &Topo{T: t, H: h, Servers: map[string]*netns.Server{}, svcs: map[string]*corev1.Service{},
		slices: map[string]*discoveryv1.EndpointSlice{}}
	tp.Node, tp.Client = netns.New(t, "node"), netns.New(t, "client")
	tp.B1, tp.B2 = netns.New(t, "b1"), netns.New(t, "b2")
	netns.Link(t, tp.Node, "to-client", NodeIP+"/24", tp.Client, "eth0", ClientIP+"/24")
	tp.Client.AddAddr("eth0", Client2IP+"/24")
	netns.Link(t, tp.Node, "to-b1", "10.211.1.1/24", tp.B1, "eth0", "10.211.1.2/24")
	netns.Link(t, tp.Node, "to-b2", "10.211.2.1/24", tp.B2, "eth0", "10.211.2.2/24")
	for _, ip := range []string{"10.211.1.3", "10.211.1.4"} {
		tp.B1.AddAddr("eth0", ip+"/24")
	}
	for _, ip := range []string{"10.211.2.3", "10.211.2.4"} {
		tp.B2.AddAddr("eth0", ip+"/24")
	}
	tp.Node.EnableForwarding()
	// Like a real node, ours has a default route: an uplink that swallows
	// whatever is not DNATed to a local network. The far end is a
	// namespace that does not forward, so it drops silently.
	sink := netns.New(t, "sink")
	netns.Veth(t, tp.Node, "uplink", sink, "eth0")
	tp.Node.AddAddr("uplink", "10.250.0.1/24")
	sink.AddAddr("eth0", "10.250.0.2/24")
	tp.Node.AddRoute("default", "10.250.0.2", "uplink")
	for _, ip := range BackendIPs {
		ns := tp.B1
		if strings.HasPrefix(ip, "10.211.2.") {
			ns = tp.B2
		}
		for _, proto := range []string{"tcp", "udp"} {
			tp.Servers[proto+"/"+ip+":8080"] = ns.Serve(t, proto, ip+":8080", ip)
		}
	}
	tp.Cfg = model.Config{
		NodeName: NodeName,
		NodeIPs:  []netip.Addr{netip.MustParseAddr(NodeIP)},
		LocalDetection: model.LocalDetection{Mode: model.LocalClusterCIDR,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.211.0.0/16")}},
	}
	tp.Restart()
	return tp
}

// Restart replaces the backend by a new instance, as an agent restart
// does; the kernel keeps its rules.
func (tp *Topo) Restart() {
	tp.T.Helper()
	if err := tp.Node.Do(func() (err error) {
		tp.Backend, err = tp.H.New(context.Background())
		return err
	}); err != nil {
		tp.T.Fatalf("create backend: %v", err)
	}
}

// Ep describes an endpoint: its IP, whether it is on this node, its port
// (default 8080) and its state: "", "unready" or "terminating".
type Ep struct {
	IP    string
	Local bool
	Port  int32
	State string
}

// Svc is a compact Service description.
type Svc struct {
	Name      string
	ClusterIP string
	Proto     corev1.Protocol
	Port      int32
	PortName  string
	NodePort  int32
	LBIP      string
	ETPLocal  bool
	Affinity  int32 // ClientIP timeout seconds; 0 = none
	Ranges    []string
	Eps       []Ep
	ExtraPort *Svc // a second port on the same Service
}

// Put adds or replaces a Service and its EndpointSlices (one per port).
func (tp *Topo) Put(s Svc) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: s.Name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: s.ClusterIP,
			ClusterIPs: []string{s.ClusterIP}},
	}
	labels := map[string]string{discoveryv1.LabelServiceName: s.Name}
	for _, p := range []*Svc{&s, s.ExtraPort} {
		if p == nil {
			continue
		}
		proto := p.Proto
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.PortName, Protocol: proto, Port: p.Port, NodePort: p.NodePort})
		if p.NodePort != 0 {
			svc.Spec.Type = corev1.ServiceTypeNodePort
		}
		if p.LBIP != "" {
			svc.Spec.Type = corev1.ServiceTypeLoadBalancer
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: p.LBIP}}
			svc.Spec.LoadBalancerSourceRanges = p.Ranges
		}
		if p.ETPLocal {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		if p.Affinity > 0 {
			svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			t := p.Affinity
			svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
		}
		name, port := p.PortName, int32(8080)
		var eps []discoveryv1.Endpoint
		for _, e := range p.Eps {
			if e.Port != 0 {
				port = e.Port
			}
			node := "node-b"
			if e.Local {
				node = NodeName
			}
			ready, serving, term := true, true, false
			switch e.State {
			case "unready":
				ready, serving = false, false
			case "terminating":
				ready, term = false, true
			}
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{e.IP}, NodeName: &node,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}})
		}
		// One slice per port keeps per-port endpoint lists independent.
		ps := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "test",
			Name: fmt.Sprintf("%s-%s", s.Name, strings.ToLower(string(proto))+p.PortName), Labels: labels},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
			Ports: []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}}}
		tp.slices[ps.Name] = ps
	}
	tp.svcs[s.Name] = svc
}

// Del removes a Service and its EndpointSlices.
func (tp *Topo) Del(name string) {
	delete(tp.svcs, name)
	for k, s := range tp.slices {
		if s.Labels[discoveryv1.LabelServiceName] == name {
			delete(tp.slices, k)
		}
	}
}

// State builds the model's state of the Services put so far.
func (tp *Topo) State() *model.State {
	in := model.Input{Config: tp.Cfg}
	for _, s := range tp.svcs {
		in.Services = append(in.Services, s)
	}
	for _, s := range tp.slices {
		in.EndpointSlices = append(in.EndpointSlices, s)
	}
	st := model.Build(in)
	if len(st.Problems) > 0 {
		tp.T.Fatalf("model problems: %v", st.Problems)
	}
	return st
}

// Sync programs the node with the Services put so far and fails the test
// on error.
func (tp *Topo) Sync(full bool) backend.SyncResult {
	tp.T.Helper()
	return tp.SyncState(tp.State(), full)
}

// SyncState programs the node with a state.
func (tp *Topo) SyncState(st *model.State, full bool) backend.SyncResult {
	tp.T.Helper()
	var res backend.SyncResult
	if err := tp.Node.Do(func() (err error) {
		res, err = tp.Backend.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return err
	}); err != nil {
		tp.T.Fatalf("sync: %v", err)
	}
	tp.Prev, tp.Cur = tp.Cur, st
	return res
}

// CleanConntrack deletes the UDP conntrack entries the last sync made
// stale, as the agent's sync core does after every backend's sync.
func (tp *Topo) CleanConntrack() {
	tp.T.Helper()
	if err := tp.Node.Do(func() error { _, err := conntrack.Clean(tp.Prev, tp.Cur); return err }); err != nil {
		tp.T.Fatalf("conntrack cleanup: %v", err)
	}
}

// Cleanup runs the backend's Cleanup in the node namespace.
func (tp *Topo) Cleanup() {
	tp.T.Helper()
	if err := tp.Node.Do(func() error { return tp.Backend.Cleanup(context.Background()) }); err != nil {
		tp.T.Fatalf("cleanup: %v", err)
	}
}

// Dump is the harness's dump of the node namespace.
func (tp *Topo) Dump() string {
	tp.T.Helper()
	return tp.H.Dump(tp.T, tp.Node)
}

// DiffLines shows the lines only in a ("-") or only in b ("+").
func DiffLines(a, b string) string {
	as, bs := map[string]int{}, map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		as[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		bs[l]++
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if bs[l] == 0 {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if as[l] == 0 {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, different order or counts)"
	}
	return strings.Join(out, "\n")
}
