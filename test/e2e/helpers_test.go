package e2e

import (
	"errors"
	"fmt"
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

	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Every pod serves these ports.
var (
	podTCP = []int{8080, 8081, 5353}
	podUDP = []int{8080, 5353}
)

const (
	converge = 90 * time.Second // how long the proxy may take to program a change
	poll     = 500 * time.Millisecond
)

var seq atomic.Int32

// uniq returns prefix-N, unique in the suite.
func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// newNamespace creates a namespace for one spec. Namespaces are not deleted:
// no namespace controller runs; the spec deletes its Services instead.
func newNamespace() string {
	name := uniq("e2e")
	Expect(c.CreateNamespace(background, name)).To(Succeed())
	return name
}

// startPods starts one pod per listed node, deleted when the spec ends.
func startPods(prefix string, nodes ...*cluster.Node) []*cluster.Pod {
	var pods []*cluster.Pod
	for _, n := range nodes {
		p, err := c.AddPod(background, n, uniq(prefix), podTCP, podUDP)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(c.DeletePod(p)).To(Succeed()) })
		pods = append(pods, p)
	}
	return pods
}

func names(pods []*cluster.Pod) []string {
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
	Expect(c.Client.Create(background, svc)).To(Succeed())
	DeferCleanup(func() { deleteService(svc) })
	return svc
}

// deleteService deletes the Service and its EndpointSlices (no garbage
// collector runs in the cluster).
func deleteService(svc *corev1.Service) {
	Expect(client.IgnoreNotFound(c.Client.Delete(background, svc))).To(Succeed())
	Expect(c.Client.DeleteAllOf(background, &discoveryv1.EndpointSlice{}, client.InNamespace(svc.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name})).To(Succeed())
}

func setEndpoints(svc *corev1.Service, eps []cluster.Endpoint, slices int) {
	Expect(c.SetEndpoints(background, svc, eps, slices)).To(Succeed())
}

func addr(ip string, port int32) string { return fmt.Sprintf("%s:%d", ip, port) }

// answering returns the pods that answer count TCP requests from ns to
// target, sorted.
func answering(ns *netns.NS, target string, count int) []string {
	return ns.Spread("tcp", target, count, netns.RequestOptions{}).Names()
}

// expectReachesAll waits until requests from ns to target are all answered
// and every one of pods answers; it returns the last answers.
func expectReachesAll(ns *netns.NS, proto, target string, pods []*cluster.Pod) netns.Answers {
	GinkgoHelper()
	var t netns.Answers
	Eventually(func(g Gomega) {
		t = ns.Spread(proto, target, 4*len(pods)+8, netns.RequestOptions{})
		g.Expect(t.Failures).To(BeZero(), "%s %s from %s: %s: %v", proto, target, ns.Name, t, t.LastError)
		g.Expect(t.Names()).To(ConsistOf(names(pods)), "%s %s from %s", proto, target, ns.Name)
	}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
	fmt.Fprintf(GinkgoWriter, "%s %s from %s: %s\n", proto, target, ns.Name, t)
	return t
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

// ruleDump returns iptables-save of a node's namespace.
func ruleDump(n *cluster.Node) string {
	out, err := n.NS.Exec("iptables-save")
	Expect(err).NotTo(HaveOccurred())
	return out
}

func mentions(dump, key string) bool { return strings.Contains(dump, "\""+key) }
