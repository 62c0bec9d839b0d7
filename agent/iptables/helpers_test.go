package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
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
// programs iptables. Backends are "pods": 10.211.0.0/16 is the cluster CIDR.
// Every backend address runs a TCP and a UDP server on port 8080 whose
// identity is its IP.
const (
	nodeIP    = "10.210.0.1"
	clientIP  = "10.210.0.2"
	client2IP = "10.210.0.3"
	nodeName  = "node-a"
)

var backendIPs = []string{"10.211.1.2", "10.211.1.3", "10.211.1.4", "10.211.2.2", "10.211.2.3", "10.211.2.4"}

type topo struct {
	t              *testing.T
	node, client   *netns.NS
	b1, b2         *netns.NS
	servers        map[string]*netns.Server // "tcp/10.211.1.2:8080"
	cfg            model.Config
	be             *Backend
	svcs           map[string]*corev1.Service
	slices         map[string]*discoveryv1.EndpointSlice
	backendOptions Options
	// prev and cur are the states of the last two successful syncs.
	prev, cur *model.State
}

func newTopo(t *testing.T, opts Options) *topo {
	t.Helper()
	netns.Require(t, "iptables", "iptables-save", "iptables-restore")
	tp := &topo{t: t, servers: map[string]*netns.Server{}, svcs: map[string]*corev1.Service{},
		slices: map[string]*discoveryv1.EndpointSlice{}, backendOptions: opts}
	tp.node, tp.client = netns.New(t, "node"), netns.New(t, "client")
	tp.b1, tp.b2 = netns.New(t, "b1"), netns.New(t, "b2")
	netns.Link(t, tp.node, "to-client", nodeIP+"/24", tp.client, "eth0", clientIP+"/24")
	tp.client.AddAddr("eth0", client2IP+"/24")
	netns.Link(t, tp.node, "to-b1", "10.211.1.1/24", tp.b1, "eth0", "10.211.1.2/24")
	netns.Link(t, tp.node, "to-b2", "10.211.2.1/24", tp.b2, "eth0", "10.211.2.2/24")
	for _, ip := range []string{"10.211.1.3", "10.211.1.4"} {
		tp.b1.AddAddr("eth0", ip+"/24")
	}
	for _, ip := range []string{"10.211.2.3", "10.211.2.4"} {
		tp.b2.AddAddr("eth0", ip+"/24")
	}
	tp.node.EnableForwarding()
	// Like a real node, ours has a default route: an uplink that swallows
	// whatever is not DNATed to a local network.
	// The far end is a namespace that does not forward, so it drops
	// silently.
	sink := netns.New(t, "sink")
	netns.Veth(t, tp.node, "uplink", sink, "eth0")
	tp.node.AddAddr("uplink", "10.250.0.1/24")
	sink.AddAddr("eth0", "10.250.0.2/24")
	tp.node.AddRoute("default", "10.250.0.2", "uplink")
	for _, ip := range backendIPs {
		ns := tp.b1
		if strings.HasPrefix(ip, "10.211.2.") {
			ns = tp.b2
		}
		for _, proto := range []string{"tcp", "udp"} {
			tp.servers[proto+"/"+ip+":8080"] = ns.Serve(t, proto, ip+":8080", ip)
		}
	}
	tp.cfg = model.Config{
		NodeName:     nodeName,
		NodeIPs:      []netip.Addr{netip.MustParseAddr(nodeIP)},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.211.0.0/16")},
	}
	if err := tp.node.Do(func() (err error) {
		tp.be, err = New(context.Background(), opts)
		return err
	}); err != nil {
		t.Fatalf("create backend: %v", err)
	}
	t.Logf("iptables mode in node namespace: %s", tp.be.Mode())
	return tp
}

// ep describes an endpoint: IP and whether it is on this node.
type ep struct {
	ip    string
	local bool
	port  int32
	state string // "", "unready", "terminating"
}

// svcSpec is a compact Service description for tests.
type svcSpec struct {
	name      string
	clusterIP string
	proto     corev1.Protocol
	port      int32
	portName  string
	nodePort  int32
	lbIP      string
	etpLocal  bool
	affinity  int32 // ClientIP timeout seconds; 0 = none
	ranges    []string
	eps       []ep
	extraPort *svcSpec // a second port on the same Service
}

func (tp *topo) put(s svcSpec) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: s.name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: s.clusterIP,
			ClusterIPs: []string{s.clusterIP}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: s.name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range []*svcSpec{&s, s.extraPort} {
		if p == nil {
			continue
		}
		proto := p.proto
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.portName, Protocol: proto, Port: p.port, NodePort: p.nodePort})
		if p.nodePort != 0 {
			svc.Spec.Type = corev1.ServiceTypeNodePort
		}
		if p.lbIP != "" {
			svc.Spec.Type = corev1.ServiceTypeLoadBalancer
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: p.lbIP}}
			svc.Spec.LoadBalancerSourceRanges = p.ranges
		}
		if p.etpLocal {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		if p.affinity > 0 {
			svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			t := p.affinity
			svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
		}
		name, port := p.portName, int32(8080)
		sub := discoveryv1.EndpointSlice{}
		for _, e := range p.eps {
			if e.port != 0 {
				port = e.port
			}
			node := "node-b"
			if e.local {
				node = nodeName
			}
			ready, serving, term := true, true, false
			switch e.state {
			case "unready":
				ready, serving = false, false
			case "terminating":
				ready, term = false, true
			}
			sub.Endpoints = append(sub.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: &node,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}})
		}
		// One slice per port keeps per-port endpoint lists independent.
		ps := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: fmt.Sprintf("%s-%s", s.name, strings.ToLower(string(proto))+p.portName),
			Labels: slice.Labels}, AddressType: slice.AddressType, Endpoints: sub.Endpoints,
			Ports: []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}}}
		tp.slices[ps.Name] = ps
	}
	tp.svcs[s.name] = svc
}

func (tp *topo) del(name string) {
	delete(tp.svcs, name)
	for k, s := range tp.slices {
		if s.Labels[discoveryv1.LabelServiceName] == name {
			delete(tp.slices, k)
		}
	}
}

func (tp *topo) state() *model.State {
	in := model.Input{Config: tp.cfg}
	for _, s := range tp.svcs {
		in.Services = append(in.Services, s)
	}
	for _, s := range tp.slices {
		in.EndpointSlices = append(in.EndpointSlices, s)
	}
	st := model.Build(in)
	if len(st.Problems) > 0 {
		tp.t.Fatalf("model problems: %v", st.Problems)
	}
	return st
}

// sync programs the node and fails the test on error.
func (tp *topo) sync(full bool) backend.SyncResult {
	tp.t.Helper()
	st := tp.state()
	var res backend.SyncResult
	if err := tp.node.Do(func() (err error) {
		res, err = tp.be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return err
	}); err != nil {
		tp.t.Fatalf("sync: %v", err)
	}
	tp.prev, tp.cur = tp.cur, st
	return res
}

// cleanConntrack deletes the UDP conntrack entries the last sync made
// stale, as the agent's sync core does after every backend's sync.
func (tp *topo) cleanConntrack() {
	tp.t.Helper()
	if err := tp.node.Do(func() error { _, err := conntrack.Clean(tp.prev, tp.cur); return err }); err != nil {
		tp.t.Fatalf("conntrack cleanup: %v", err)
	}
}

func (tp *topo) cleanup() {
	tp.t.Helper()
	if err := tp.node.Do(func() error { return tp.be.Cleanup(context.Background()) }); err != nil {
		tp.t.Fatalf("cleanup: %v", err)
	}
}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// save returns iptables-save of the node namespace without comment lines
// and counters, using the same flavour as the backend.
func (tp *topo) save() string {
	tp.t.Helper()
	out := tp.node.MustExec(tp.be.bins.Save)
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		keep = append(keep, counterRE.ReplaceAllString(l, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}

func (tp *topo) ipt(args ...string) string {
	tp.t.Helper()
	return tp.node.MustExec(append([]string{tp.be.bins.Cmd, "-w"}, args...)...)
}

func syncOpts(full bool) backend.SyncOptions { return backend.SyncOptions{Full: full} }
