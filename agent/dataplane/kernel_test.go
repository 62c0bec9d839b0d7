package dataplane

// Real-kernel tests of the sync step every backend goes through. They run
// on this host for iptables, and in the hack/vm test VM (make test-ipvs-vm)
// for iptables and IPVS; a backend the kernel cannot run is skipped, loudly.
//
// Topology (namespaces created here and deleted by t.Cleanup):
//
//	client 192.168.60.100 --- node 192.168.60.1
//	node 10.245.1.1 --- b1 10.245.1.2;  node 10.245.2.1 --- b2 10.245.2.2

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

const udpVIP = "10.97.0.10"

type kernelTopo struct {
	client, node, b1, b2 *netns.NS
}

func newKernelTopo(t *testing.T) *kernelTopo {
	t.Helper()
	netns.Require(t, "iptables-restore", "iptables-save")
	k := &kernelTopo{client: netns.New(t, "cli"), node: netns.New(t, "node"), b1: netns.New(t, "b1"), b2: netns.New(t, "b2")}
	netns.Link(t, k.node, "to-cli", "192.168.60.1/24", k.client, "eth0", "192.168.60.100/24")
	netns.Link(t, k.node, "to-b1", "10.245.1.1/24", k.b1, "eth0", "10.245.1.2/24")
	netns.Link(t, k.node, "to-b2", "10.245.2.1/24", k.b2, "eth0", "10.245.2.2/24")
	k.node.EnableForwarding()
	k.b1.Serve(t, "udp", "10.245.1.2:5353", "b1")
	k.b2.Serve(t, "udp", "10.245.2.2:5353", "b2")
	return k
}

// udpState is the node's state with a UDP ClusterIP Service on port 53
// whose one endpoint is ip:5353.
func udpState(ip string) *model.State {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns"},
		Spec: corev1.ServiceSpec{ClusterIP: udpVIP, ClusterIPs: []string{udpVIP},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	name, port, proto, ready := "dns", int32(5353), corev1.ProtocolUDP, true
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}
	return model.Build(model.Input{
		Config:   model.Config{NodeName: "node", NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.60.1")}},
		Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}})
}

// planeFor builds a Plane in the node namespace with backend b, or skips
// when this kernel cannot run it.
func (k *kernelTopo) planeFor(t *testing.T, b v1alpha1.Backend) *Plane {
	t.Helper()
	var caps probe.Capabilities
	_ = k.node.Do(func() error { caps = probe.Default.Probe(context.Background()); return nil })
	if b == v1alpha1.BackendIPVS && !caps.IPVS {
		t.Skipf("SKIPPING %s: this kernel has no IPVS (the hack/vm test VM runs it)", b)
	}
	p := New(Options{InNetNS: k.node.Do})
	if _, err := p.Ensure(context.Background(), Want{Backend: b, Spec: &v1alpha1.GatewayConfigSpec{}, Caps: caps}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.RemoveAll(context.Background()) })
	return p
}

// A UDP client keeps its 5-tuple. When the Service's endpoint is replaced,
// the next datagram of the same flow must reach the new endpoint, on every
// backend: the stale conntrack entry must go with the old endpoint
// (issue 10, defect 1: the IPVS path never cleaned conntrack).
func TestUDPFlowFollowsReplacedEndpoint(t *testing.T) {
	for _, b := range []v1alpha1.Backend{v1alpha1.BackendIPTables, v1alpha1.BackendIPVS} {
		t.Run(string(b), func(t *testing.T) {
			k := newKernelTopo(t)
			p := k.planeFor(t, b)
			ctx := context.Background()
			if _, err := p.Sync(ctx, udpState("10.245.1.2"), true); err != nil {
				t.Fatal(err)
			}
			opts := netns.RequestOptions{Local: ":40053", Timeout: 2 * time.Second}
			if r, err := k.client.Request("udp", udpVIP+":53", opts); err != nil || r.Server != "b1" {
				t.Fatalf("before the change: reply %+v, err %v; want b1", r, err)
			}
			if _, err := p.Sync(ctx, udpState("10.245.2.2"), false); err != nil {
				t.Fatal(err)
			}
			r, err := k.client.Request("udp", udpVIP+":53", opts)
			if err != nil || r.Server != "b2" {
				t.Fatalf("after the endpoint moved to b2, the same UDP flow got reply %+v, err %v: the stale flow to b1 was not removed", r, err)
			}
		})
	}
}
