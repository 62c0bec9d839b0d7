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
// whose identity is its IP. Over IPv6 every address is translated (see
// IP): the client is fd00:10:210:0::2, the cluster CIDR fd00:10:211::/48.
const (
	NodeIP    = "10.210.0.1"
	ClientIP  = "10.210.0.2"
	Client2IP = "10.210.0.3"
	NodeName  = "node-a"
	// VIP is the ClusterIP most scenarios use.
	VIP = "10.96.0.10"
	// ClusterCIDR is the pods' network.
	ClusterCIDR = "10.211.0.0/16"
)

// BackendIPs are the addresses of the backend "pods".
var BackendIPs = []string{"10.211.1.2", "10.211.1.3", "10.211.1.4", "10.211.2.2", "10.211.2.3", "10.211.2.4"}

// Topo is one scenario's namespaces, its Services and the backends under
// test: one for the scenario's family, and one more per family added
// with AddFamily (dual-stack scenarios).
type Topo struct {
	T            testing.TB
	H            Harness
	Fam          model.Family // the scenario's family
	Node, Client *netns.NS
	B1, B2       *netns.NS
	sink         *netns.NS
	Servers      map[string]*netns.Server // "tcp/10.211.1.2:8080", "tcp/[fd00:10:211:1::2]:8080"
	Cfg          model.Config
	// NodeObj is the Node the model reads (spec.podCIDRs for NodeCIDR).
	NodeObj *corev1.Node
	// Backend is the backend of Fam; Backends holds every family's.
	Backend  backend.Backend
	Backends map[model.Family]backend.Backend
	fams     []model.Family
	svcs     map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
	// Prev and Cur are the states of Fam's last two successful syncs.
	Prev, Cur *model.State
}

// NewTopo builds the topology of the harness's family (IPv4 when unset)
// and a backend in the node namespace.
func NewTopo(t testing.TB, h Harness) *Topo {
	t.Helper()
	netns.Require(t, h.Tools...)
	fam := h.Family
	if fam == "" {
		fam = model.IPv4
	}
	tp := &Topo{T: t, H: h, Fam: fam, Servers: map[string]*netns.Server{}, svcs: map[string]*corev1.Service{},
		slices: map[string]*discoveryv1.EndpointSlice{}, Backends: map[model.Family]backend.Backend{},
		NodeObj: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}}}
	tp.Node, tp.Client = netns.New(t, "node"), netns.New(t, "client")
	tp.B1, tp.B2 = netns.New(t, "b1"), netns.New(t, "b2")
	tp.sink = netns.New(t, "sink")
	for _, ns := range []*netns.NS{tp.Node, tp.Client, tp.B1, tp.B2, tp.sink} {
		// No duplicate address detection on the links about to be made:
		// their IPv6 link-local addresses are usable at once too.
		ns.Sysctl("net.ipv6.conf.default.accept_dad", "0")
		ns.Sysctl("net.ipv6.conf.all.accept_dad", "0")
	}
	netns.Veth(t, tp.Node, "to-client", tp.Client, "eth0")
	netns.Veth(t, tp.Node, "to-b1", tp.B1, "eth0")
	netns.Veth(t, tp.Node, "to-b2", tp.B2, "eth0")
	// Like a real node, ours has a default route: an uplink that swallows
	// whatever is not DNATed to a local network. The far end is a
	// namespace that does not forward, so it drops silently.
	netns.Veth(t, tp.Node, "uplink", tp.sink, "eth0")
	tp.Cfg = model.Config{NodeName: NodeName, Family: fam}
	tp.AddFamily(fam)
	return tp
}

// AddFamily gives every namespace its addresses and routes of fam, starts
// the servers on the backend addresses of fam, adds the family to the
// model's configuration, and builds the family's backend.
func (tp *Topo) AddFamily(fam model.Family) {
	t := tp.T
	t.Helper()
	add := func(ns *netns.NS, ifname, v4cidr string, extra ...string) {
		args := []string{"ip", "addr", "add", IP(fam, v4cidr), "dev", ifname}
		if fam == model.IPv6 {
			args = append(args, "nodad") // usable at once, no duplicate detection
			args = append(args, extra...)
		}
		ns.MustExec(args...)
	}
	route := func(ns *netns.NS, via, dev string) {
		v := "-4"
		if fam == model.IPv6 {
			v = "-6"
		}
		ns.MustExec("ip", v, "route", "add", "default", "via", IP(fam, via), "dev", dev)
	}
	add(tp.Node, "to-client", NodeIP+"/24")
	add(tp.Client, "eth0", ClientIP+"/24")
	// IPv6 prefers the newest address as a source; the second client
	// address is deprecated so that ClientIP stays the default one, as
	// over IPv4. Sockets bound to it still work.
	add(tp.Client, "eth0", Client2IP+"/24", "preferred_lft", "0")
	add(tp.Node, "to-b1", "10.211.1.1/24")
	add(tp.Node, "to-b2", "10.211.2.1/24")
	add(tp.Node, "uplink", "10.250.0.1/24")
	add(tp.sink, "eth0", "10.250.0.2/24")
	for _, ip := range BackendIPs {
		ns := tp.B1
		if strings.HasPrefix(ip, "10.211.2.") {
			ns = tp.B2
		}
		add(ns, "eth0", ip+"/24")
	}
	route(tp.Client, NodeIP, "eth0")
	route(tp.B1, "10.211.1.1", "eth0")
	route(tp.B2, "10.211.2.1", "eth0")
	route(tp.Node, "10.250.0.2", "uplink")
	if fam == model.IPv6 {
		tp.Node.Sysctl("net.ipv6.conf.all.forwarding", "1")
	} else {
		tp.Node.EnableForwarding()
	}
	for _, ip := range BackendIPs {
		ns := tp.B1
		if strings.HasPrefix(ip, "10.211.2.") {
			ns = tp.B2
		}
		for _, proto := range []string{"tcp", "udp"} {
			a := At(fam, ip, 8080)
			tp.Servers[proto+"/"+a] = ns.Serve(t, proto, a, IP(fam, ip))
		}
	}
	tp.fams = append(tp.fams, fam)
	tp.Cfg.NodeIPs = append(tp.Cfg.NodeIPs, netip.MustParseAddr(IP(fam, NodeIP)))
	tp.Cfg.LocalDetection.Mode = model.LocalClusterCIDR
	tp.Cfg.LocalDetection.ClusterCIDRs = append(tp.Cfg.LocalDetection.ClusterCIDRs, netip.MustParsePrefix(IP(fam, ClusterCIDR)))
	tp.newBackend(fam)
}

// Restart replaces every backend by a new instance, as an agent restart
// does; the kernel keeps its rules.
func (tp *Topo) Restart() {
	tp.T.Helper()
	for _, fam := range tp.fams {
		tp.newBackend(fam)
	}
}

func (tp *Topo) newBackend(fam model.Family) {
	tp.T.Helper()
	var be backend.Backend
	if err := tp.Node.Do(func() (err error) {
		be, err = tp.H.New(context.Background(), fam)
		return err
	}); err != nil {
		tp.T.Fatalf("create %s backend: %v", fam, err)
	}
	tp.Backends[fam] = be
	if fam == tp.Fam {
		tp.Backend = be
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

// Svc is a compact Service description. Addresses are of the IPv4 test
// plan; Put translates them into each family of the Service.
type Svc struct {
	Name        string
	ClusterIP   string
	Proto       corev1.Protocol
	Port        int32
	PortName    string
	NodePort    int32
	LBIP        string
	ExternalIPs []string
	ETPLocal    bool
	ITPLocal    bool
	Affinity    int32 // ClientIP timeout seconds; 0 = none
	Ranges      []string
	Eps         []Ep
	ExtraPort   *Svc // a second port on the same Service
	// Families are the Service's IP families, in order (ClusterIPs,
	// ipFamilies); empty means the topology's family.
	Families []model.Family
	// Policy is the Service's ipFamilyPolicy; empty means SingleStack.
	Policy corev1.IPFamilyPolicy
}

// Put adds or replaces a Service and its EndpointSlices (one per port and
// family).
func (tp *Topo) Put(s Svc) {
	fams := s.Families
	if len(fams) == 0 {
		fams = []model.Family{tp.Fam}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: s.Name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, IPFamilyPolicy: &s.Policy},
	}
	if s.Policy == "" {
		svc.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicySingleStack)
	}
	for _, f := range fams {
		svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, IP(f, s.ClusterIP))
		svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, corev1.IPFamily(f))
		for _, e := range s.ExternalIPs {
			svc.Spec.ExternalIPs = append(svc.Spec.ExternalIPs, IP(f, e))
		}
	}
	svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	for k, es := range tp.slices {
		if es.Labels[discoveryv1.LabelServiceName] == s.Name {
			delete(tp.slices, k)
		}
	}
	for _, p := range []*Svc{&s, s.ExtraPort} {
		if p != nil {
			tp.putPort(svc, p, fams)
		}
	}
	tp.svcs[s.Name] = svc
}

// putPort adds one port to the Service and its EndpointSlice of each
// family (one slice per port keeps per-port endpoint lists independent).
func (tp *Topo) putPort(svc *corev1.Service, p *Svc, fams []model.Family) {
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
		for _, f := range fams {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: IP(f, p.LBIP)})
			for _, r := range p.Ranges {
				svc.Spec.LoadBalancerSourceRanges = append(svc.Spec.LoadBalancerSourceRanges, IP(f, r))
			}
		}
	}
	if p.ETPLocal {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if p.ITPLocal {
		svc.Spec.InternalTrafficPolicy = ptrTo(corev1.ServiceInternalTrafficPolicyLocal)
	}
	if p.Affinity > 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		t := p.Affinity
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
	}
	for _, f := range fams {
		ps := endpointSlice(svc.Name, p, proto, f)
		tp.slices[ps.Name] = ps
	}
}

// endpointSlice is the EndpointSlice of one port and family.
func endpointSlice(svc string, p *Svc, proto corev1.Protocol, fam model.Family) *discoveryv1.EndpointSlice {
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
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{IP(fam, e.IP)}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}})
	}
	at := discoveryv1.AddressTypeIPv4
	if fam == model.IPv6 {
		at = discoveryv1.AddressTypeIPv6
	}
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "test",
		Name:   fmt.Sprintf("%s-%s%s-%s", svc, strings.ToLower(string(proto)), p.PortName, strings.ToLower(string(fam))),
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: at, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}}}
}

func ptrTo[T any](v T) *T { return &v }

// Del removes a Service and its EndpointSlices.
func (tp *Topo) Del(name string) {
	delete(tp.svcs, name)
	for k, s := range tp.slices {
		if s.Labels[discoveryv1.LabelServiceName] == name {
			delete(tp.slices, k)
		}
	}
}

// State builds the model's state of the Services put so far, for the
// topology's family.
func (tp *Topo) State() *model.State { return tp.StateOf(tp.Fam) }

// StateOf builds the model's state of one family; model problems fail the
// test.
func (tp *Topo) StateOf(fam model.Family) *model.State {
	st := tp.BuildState(fam)
	if len(st.Problems) > 0 {
		tp.T.Fatalf("model problems: %v", st.Problems)
	}
	return st
}

// BuildState builds the model's state of one family, problems included.
func (tp *Topo) BuildState(fam model.Family) *model.State {
	cfg := tp.Cfg
	cfg.Family = fam
	in := model.Input{Config: cfg, Node: tp.NodeObj}
	for _, s := range tp.svcs {
		in.Services = append(in.Services, s)
	}
	for _, s := range tp.slices {
		in.EndpointSlices = append(in.EndpointSlices, s)
	}
	return model.Build(in)
}

// Sync programs the node with the Services put so far and fails the test
// on error.
func (tp *Topo) Sync(full bool) backend.SyncResult {
	tp.T.Helper()
	return tp.SyncState(tp.State(), full)
}

// SyncState programs the node with a state of the topology's family.
func (tp *Topo) SyncState(st *model.State, full bool) backend.SyncResult {
	tp.T.Helper()
	res := tp.syncWith(tp.Backend, st, full)
	tp.Prev, tp.Cur = tp.Cur, st
	return res
}

// SyncFamily programs one family's backend with that family's state.
func (tp *Topo) SyncFamily(fam model.Family, full bool) backend.SyncResult {
	tp.T.Helper()
	if fam == tp.Fam {
		return tp.Sync(full)
	}
	return tp.syncWith(tp.Backends[fam], tp.StateOf(fam), full)
}

func (tp *Topo) syncWith(be backend.Backend, st *model.State, full bool) backend.SyncResult {
	tp.T.Helper()
	var res backend.SyncResult
	if err := tp.Node.Do(func() (err error) {
		res, err = be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return err
	}); err != nil {
		tp.T.Fatalf("sync %s: %v", st.Family, err)
	}
	return res
}

// CleanConntrack deletes the conntrack entries the last sync made
// stale, as the agent's sync core does after every backend's sync.
func (tp *Topo) CleanConntrack() {
	tp.T.Helper()
	if err := tp.Node.Do(func() error { _, err := conntrack.Clean(tp.Prev, tp.Cur); return err }); err != nil {
		tp.T.Fatalf("conntrack cleanup: %v", err)
	}
}

// Cleanup runs the backend's Cleanup in the node namespace.
func (tp *Topo) Cleanup() { tp.CleanupFamily(tp.Fam) }

// CleanupFamily runs the Cleanup of one family's backend.
func (tp *Topo) CleanupFamily(fam model.Family) {
	tp.T.Helper()
	if err := tp.Node.Do(func() error { return tp.Backends[fam].Cleanup(context.Background()) }); err != nil {
		tp.T.Fatalf("cleanup %s: %v", fam, err)
	}
}

// Dump is the harness's dump of the node namespace, for the topology's
// family.
func (tp *Topo) Dump() string {
	tp.T.Helper()
	return tp.H.Dump(tp.T, tp.Node, tp.Fam)
}

// Wipe removes the backend's rules as another program would.
func (tp *Topo) Wipe() { tp.H.Wipe(tp.T, tp.Node, tp.Fam) }

// WipeDispatch empties the backend's dispatch entries.
func (tp *Topo) WipeDispatch() { tp.H.WipeDispatch(tp.T, tp.Node, tp.Fam) }

// Dispatch lists the backend's dispatch entries.
func (tp *Topo) Dispatch() []string { return tp.H.Dispatch(tp.T, tp.Node, tp.Fam) }

// Owned counts what the backend holds in the kernel.
func (tp *Topo) Owned() int { return tp.H.Owned(tp.T, tp.Node, tp.Fam) }

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
