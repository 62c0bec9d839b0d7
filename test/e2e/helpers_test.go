package e2e

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

const (
	converge = 90 * time.Second // how long the proxy may take to program a change
	poll     = 500 * time.Millisecond
)

var seq atomic.Int32

// uniq returns prefix-N, unique in the suite.
func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// nodes returns the nodes of the cluster.
func nodes() []*node { return t.Nodes() }

// newNamespace creates a namespace for one spec. On the shipped tier the
// namespace controller deletes it, and everything in it, when the spec
// ends; the process tier has no such controller, so its specs delete their
// Services themselves (createService).
func newNamespace() string {
	name := uniq("e2e")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	Expect(t.API().Create(background, ns)).To(Succeed())
	if sc != nil {
		DeferCleanup(func() { Expect(client.IgnoreNotFound(t.API().Delete(background, ns))).To(Succeed()) })
	}
	return name
}

// startPods starts one echo pod per listed node in namespace ns, deleted
// when the spec ends.
func startPods(ns, prefix string, on ...*node) []*pod {
	GinkgoHelper()
	pods, err := t.StartPods(ns, prefix, on)
	for _, p := range pods {
		DeferCleanup(func() { Expect(t.DeletePod(p)).To(Succeed()) })
	}
	Expect(err).NotTo(HaveOccurred())
	return pods
}

func names(pods []*pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}

func tcp(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(target)}
}

func udp(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolUDP, Port: port, TargetPort: intstr.FromInt32(target)}
}

// newService returns a ClusterIP Service with the ports.
func newService(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	}
}

// createService creates the Service and deletes it (and its slices) when the
// spec ends.
func createService(svc *corev1.Service) *corev1.Service {
	GinkgoHelper()
	t.Select(svc)
	Expect(t.API().Create(background, svc)).To(Succeed())
	DeferCleanup(func() { deleteService(svc) })
	return svc
}

// deleteService deletes the Service and, on the process tier (no garbage
// collector), its EndpointSlices.
func deleteService(svc *corev1.Service) {
	GinkgoHelper()
	Expect(client.IgnoreNotFound(t.API().Delete(background, svc))).To(Succeed())
	if pc != nil {
		Expect(t.API().DeleteAllOf(background, &discoveryv1.EndpointSlice{}, client.InNamespace(svc.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name})).To(Succeed())
	}
}

// setBackends makes pods the ready endpoints of svc (see tier.SetBackends).
func setBackends(svc *corev1.Service, pods []*pod, slices int) {
	GinkgoHelper()
	Expect(t.SetBackends(svc, pods, slices)).To(Succeed())
}

// addr is ip:port, with an IPv6 address in brackets.
func addr(ip string, port int32) string { return net.JoinHostPort(ip, strconv.Itoa(int(port))) }

// answering returns the pods that answer count TCP requests from ns to
// target, sorted.
func answering(ns *netns.NS, target string, count int) []string {
	return ns.Spread("tcp", target, count, netns.RequestOptions{}).Names()
}

// expectReachesAll waits until requests from ns to target are all answered
// and every one of pods answers; it returns the last answers.
func expectReachesAll(ns *netns.NS, proto, target string, pods []*pod) netns.Answers {
	GinkgoHelper()
	var a netns.Answers
	Eventually(func(g Gomega) {
		a = ns.Spread(proto, target, 4*len(pods)+8, netns.RequestOptions{})
		g.Expect(a.Failures).To(BeZero(), "%s %s from %s: %s: %v", proto, target, ns.Name, a, a.LastError)
		g.Expect(a.Names()).To(ConsistOf(names(pods)), "%s %s from %s", proto, target, ns.Name)
	}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
	fmt.Fprintf(GinkgoWriter, "%s %s from %s: %s\n", proto, target, ns.Name, a)
	return a
}

// expectNoAnswer waits until requests from ns to target get no answer, then
// checks that several more get none either; it returns the last error.
func expectNoAnswer(ns *netns.NS, proto, target string) error {
	GinkgoHelper()
	var last error
	opts := netns.RequestOptions{Timeout: time.Second}
	Eventually(func() error {
		_, last = ns.Request(proto, target, opts)
		return last
	}).WithTimeout(converge).WithPolling(poll).Should(HaveOccurred(), "%s %s from %s still answered", proto, target, ns.Name)
	for i := 0; i < 3; i++ {
		r, err := ns.Request(proto, target, opts)
		Expect(err).To(HaveOccurred(), "%s %s from %s answered by %s", proto, target, ns.Name, r.Server)
		last = err
	}
	return last
}

// expectRefused waits until requests from ns to target are refused (the
// proxy rejects them with ICMP port unreachable / TCP RST).
func expectRefused(ns *netns.NS, proto, target string) {
	GinkgoHelper()
	// A SYN rejected by a local rule is retried once before connect gives
	// up with ECONNREFUSED, about a second later: allow for it.
	Eventually(func() error {
		_, err := ns.Request(proto, target, netns.RequestOptions{Timeout: 5 * time.Second})
		return err
	}).WithTimeout(converge).WithPolling(poll).Should(MatchError(isRefused, "ECONNREFUSED"), "%s %s from %s", proto, target, ns.Name)
}

var isRefused = func(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// ruleDump returns what a node's namespace holds for every backend:
// iptables-save, then nft list ruleset.
func ruleDump(n *node) string {
	GinkgoHelper()
	out, err := n.NS.Exec("iptables-save")
	Expect(err).NotTo(HaveOccurred())
	nft, err := n.NS.Exec("nft", "list", "ruleset")
	Expect(err).NotTo(HaveOccurred())
	return out + nft
}

// mentions reports whether the rules name a Service ("namespace/name"): in
// an iptables rule's comment, or in an nftables chain's name, which ends
// with namespace/name/protocol/port.
func mentions(dump, key string) bool {
	return strings.Contains(dump, "\""+key) || strings.Contains(dump, "-"+key+"/")
}

// programs reports whether the rules match an address as a frontend: an
// iptables rule's "-d ADDR/32" (ip6tables: "/128"), or an nftables map
// element "ADDR . proto" (the nftables backend names no Service whose port
// needs no chain of its own).
func programs(dump, addr string) bool {
	host := "/32 "
	if strings.Contains(addr, ":") {
		host = "/128 "
	}
	return strings.Contains(dump, "-d "+addr+host) || strings.Contains(dump, addr+" . ")
}
