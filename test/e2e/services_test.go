package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

var _ = Describe("[sig-network] Services", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("balances a multiport ClusterIP Service over every endpoint from every node and from a pod", func() {
		pods := startPods(ns, "multi", nodes()...)
		svc := createService(newService(ns, "multi", tcp("a", 80, 8080), tcp("b", 81, 8081)))
		setBackends(svc, pods, 1)
		for _, n := range nodes() {
			expectReachesAll(n.NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
			expectReachesAll(n.NS, "tcp", addr(svc.Spec.ClusterIP, 81), pods)
		}
		expectReachesAll(pods[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
	})

	It("serves a NodePort on every node to an outside client", func() {
		pods := startPods(ns, "np", nodes()[0], nodes()[1])
		s := newService(ns, "np", tcp("http", 80, 8080))
		s.Spec.Type = corev1.ServiceTypeNodePort
		svc := createService(s)
		setBackends(svc, pods, 1)
		port := svc.Spec.Ports[0].NodePort
		for _, n := range nodes() {
			expectReachesAll(t.Client(), "tcp", addr(n.IP, port), pods)
		}
	})

	It("serves a LoadBalancer address to an outside client", func() {
		pods := startPods(ns, "lb", nodes()[1], nodes()[2])
		s := newService(ns, "lb", tcp("http", 80, 8080))
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc := createService(s)
		ip := clusternet.NextLoadBalancerIP()
		Expect(shipped.SetLoadBalancerIngress(background, t.API(), svc, ip)).To(Succeed())
		setBackends(svc, pods, 1)
		expectReachesAll(t.Client(), "tcp", addr(ip, 80), pods)
	})

	It("serves externalIPs to an outside client", func() {
		pods := startPods(ns, "ext", nodes()[0], nodes()[2])
		s := newService(ns, "ext", tcp("http", 80, 8080), udp("dns", 53, 5353))
		ip := clusternet.NextExternalIP()
		s.Spec.ExternalIPs = []string{ip}
		svc := createService(s)
		setBackends(svc, pods, 1)
		expectReachesAll(t.Client(), "tcp", addr(ip, 80), pods)
		expectReachesAll(t.Client(), "udp", addr(ip, 53), pods)
	})

	It("switches session affinity on and off and honours its timeout", func() {
		pods := startPods(ns, "aff", nodes()...)
		svc := createService(newService(ns, "aff", tcp("http", 80, 8080)))
		setBackends(svc, pods, 1)
		from := nodes()[0].NS
		target := addr(svc.Spec.ClusterIP, 80)
		expectReachesAll(from, "tcp", target, pods)

		By("ClientIP affinity with a 3s timeout: one pod answers every quick request")
		Expect(patchService(svc, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](3)}}
		})).To(Succeed())
		Eventually(func() []string { return answering(from, target, 20) }).
			WithTimeout(converge).WithPolling(poll).Should(HaveLen(1))
		first := answering(from, target, 1)

		By("after 3s idle the affinity expires: another pod answers sooner or later")
		Eventually(func() []string {
			time.Sleep(3500 * time.Millisecond)
			return answering(from, target, 1)
		}).WithTimeout(converge).ShouldNot(Equal(first))

		By("affinity None again: every pod answers")
		Expect(patchService(svc, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityNone
			s.Spec.SessionAffinityConfig = nil
		})).To(Succeed())
		expectReachesAll(from, "tcp", target, pods)
	})

	It("rejects connections to a Service without endpoints", func() {
		svc := createService(newService(ns, "empty", tcp("http", 80, 8080), udp("dns", 53, 5353)))
		setBackends(svc, nil, 1)
		for _, n := range nodes() {
			expectRefused(n.NS, "tcp", addr(svc.Spec.ClusterIP, 80))
		}
		// A node's own UDP send to a rejected address fails with EPERM,
		// which a DROP would give too; a pod's gets the ICMP port
		// unreachable the REJECT sends back, which only a reject gives.
		client := startPods(ns, "client", nodes()[1])[0]
		expectRefused(client.NS, "tcp", addr(svc.Spec.ClusterIP, 80))
		expectRefused(client.NS, "udp", addr(svc.Spec.ClusterIP, 53))
	})

	It("honours service-proxy-name: a Service for another proxy is left alone", func() {
		pods := startPods(ns, "spn", nodes()[0])
		other := newService(ns, "other-proxy", tcp("http", 80, 8080))
		other.Labels = map[string]string{proxyv1alpha1.ServiceProxyNameLabel: "someone-else"}
		other = createService(other)
		setBackends(other, pods, 1)
		mine := createService(newService(ns, "mine", tcp("http", 80, 8080)))
		setBackends(mine, pods, 1)
		// Once the later Service works, the earlier one was seen and skipped.
		expectReachesAll(nodes()[1].NS, "tcp", addr(mine.Spec.ClusterIP, 80), pods)
		expectNoAnswer(nodes()[1].NS, "tcp", addr(other.Spec.ClusterIP, 80))
		Expect(mentions(ruleDump(nodes()[1]), ns+"/other-proxy")).To(BeFalse())
	})

	It("ignores headless Services", func() {
		pods := startPods(ns, "hl", nodes()[0])
		h := newService(ns, "headless", tcp("http", 80, 8080))
		h.Spec.ClusterIP = corev1.ClusterIPNone
		h = createService(h)
		setBackends(h, pods, 1)
		mine := createService(newService(ns, "regular", tcp("http", 80, 8080)))
		setBackends(mine, pods, 1)
		expectReachesAll(nodes()[2].NS, "tcp", addr(mine.Spec.ClusterIP, 80), pods)
		for _, n := range nodes() {
			dump := ruleDump(n)
			Expect(mentions(dump, ns+"/regular") || programs(dump, mine.Spec.ClusterIP)).To(BeTrue(), "rules of %s", n.Name)
			Expect(mentions(dump, ns+"/headless")).To(BeFalse(), "rules of %s", n.Name)
		}
	})

	It("serves one port number over TCP and UDP", func() {
		pods := startPods(ns, "dual", nodes()[0], nodes()[1])
		svc := createService(newService(ns, "dual", tcp("dns-tcp", 53, 5353), udp("dns-udp", 53, 5353)))
		setBackends(svc, pods, 1)
		expectReachesAll(nodes()[2].NS, "tcp", addr(svc.Spec.ClusterIP, 53), pods)
		expectReachesAll(nodes()[2].NS, "udp", addr(svc.Spec.ClusterIP, 53), pods)
	})

	It("serves a Service deleted and recreated under the same name", func() {
		pods := startPods(ns, "re", nodes()[1])
		svc := createService(newService(ns, "again", tcp("http", 80, 8080)))
		setBackends(svc, pods, 1)
		expectReachesAll(nodes()[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
		deleteService(svc)
		expectNoAnswer(nodes()[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80))
		again := createService(newService(ns, "again", tcp("http", 80, 8080)))
		setBackends(again, pods, 1)
		expectReachesAll(nodes()[0].NS, "tcp", addr(again.Spec.ClusterIP, 80), pods)
	})

	It("follows a Service up, down and up again at a fixed ClusterIP", func() {
		pods := startPods(ns, "updown", nodes()[2])
		probe := createService(newService(ns, "probe", tcp("http", 80, 8080)))
		ip := probe.Spec.ClusterIP
		deleteService(probe)
		for round := 0; round < 2; round++ {
			s := newService(ns, "updown", tcp("http", 80, 8080))
			s.Spec.ClusterIP = ip
			svc := createService(s)
			setBackends(svc, pods, 1)
			expectReachesAll(nodes()[0].NS, "tcp", addr(ip, 80), pods)
			deleteService(svc)
			expectNoAnswer(nodes()[0].NS, "tcp", addr(ip, 80))
		}
	})

	It("follows ports added to and removed from a Service", func() {
		pods := startPods(ns, "ports", nodes()[0], nodes()[1])
		svc := createService(newService(ns, "ports", tcp("a", 80, 8080)))
		setBackends(svc, pods, 1)
		from := nodes()[2].NS
		expectReachesAll(from, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
		Expect(patchService(svc, func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, tcp("b", 81, 8081)) })).To(Succeed())
		setBackends(svc, pods, 1)
		expectReachesAll(from, "tcp", addr(svc.Spec.ClusterIP, 81), pods)
		Expect(patchService(svc, func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[1:] })).To(Succeed())
		setBackends(svc, pods, 1)
		expectNoAnswer(from, "tcp", addr(svc.Spec.ClusterIP, 80))
		expectReachesAll(from, "tcp", addr(svc.Spec.ClusterIP, 81), pods)
	})

	It("balances over endpoints spread across several EndpointSlices", func() {
		pods := startPods(ns, "slices", nodes()[0], nodes()[1], nodes()[2], nodes()[0], nodes()[1], nodes()[2])
		svc := createService(newService(ns, "slices", tcp("http", 80, 8080)))
		setBackends(svc, pods, 3)
		expectReachesAll(nodes()[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
		Expect(sliceCount(svc)).To(BeNumerically(">", 1), "the endpoints must span slices for this spec to mean anything")
		By("two endpoints leave: the slices shrink and only the other four answer")
		setBackends(svc, pods[:4], 2)
		Eventually(func() []string { return answering(nodes()[0].NS, addr(svc.Spec.ClusterIP, 80), 30) }).
			WithTimeout(converge).WithPolling(poll).Should(ConsistOf(names(pods[:4])))
		Expect(sliceCount(svc)).To(BeNumerically(">", 1))
	})

	It("sends external traffic only to local endpoints with externalTrafficPolicy Local", func() {
		pods := startPods(ns, "etp", nodes()[0], nodes()[0], nodes()[1])
		_, port := etpService(ns, pods)
		a := expectReachesAll(t.Client(), "tcp", addr(nodes()[0].IP, port), pods[:2])
		Expect(a.ClientIPs).To(HaveKey(clusternet.ClientIP), "externalTrafficPolicy Local keeps the client's address")
		expectReachesAll(t.Client(), "tcp", addr(nodes()[1].IP, port), pods[2:])
		expectNoAnswer(t.Client(), "tcp", addr(nodes()[2].IP, port))
	})

	It("falls back to terminating endpoints with externalTrafficPolicy Local", Label(tierProcess), func() {
		pods := startPods(ns, "etpt", nodes()[0], nodes()[0], nodes()[1])
		svc, port := etpService(ns, pods)
		expectReachesAll(t.Client(), "tcp", addr(nodes()[0].IP, port), pods[:2])
		By("node-1's endpoints terminating but serving: still used, as no local endpoint is ready")
		setEndpoints(svc, append(cluster.Terminating(procs(pods[:2])...), cluster.Ready(procs(pods[2:])...)...))
		expectReachesAll(t.Client(), "tcp", addr(nodes()[0].IP, port), pods[:2])
		By("one of them ready again: only it is used")
		setEndpoints(svc, append(append(cluster.Ready(pods[0].proc), cluster.Terminating(pods[1].proc)...), cluster.Ready(pods[2].proc)...))
		Eventually(func() []string { return answering(t.Client(), addr(nodes()[0].IP, port), 20) }).
			WithTimeout(converge).WithPolling(poll).Should(Equal([]string{pods[0].Name}))
	})

	It("keeps cluster traffic on the node with internalTrafficPolicy Local", func() {
		pods := startPods(ns, "itp", nodes()[0], nodes()[1])
		_, target := itpService(ns, pods)
		expectReachesAll(nodes()[0].NS, "tcp", target, pods[:1])
		expectReachesAll(nodes()[1].NS, "tcp", target, pods[1:])
		expectNoAnswer(nodes()[2].NS, "tcp", target)
	})

	It("falls back to terminating endpoints with internalTrafficPolicy Local, and drops them once they stop serving", Label(tierProcess), func() {
		pods := startPods(ns, "itpt", nodes()[0], nodes()[1])
		svc, target := itpService(ns, pods)
		expectReachesAll(nodes()[0].NS, "tcp", target, pods[:1])
		By("node-1's endpoint terminating but serving: still used")
		setEndpoints(svc, append(cluster.Terminating(pods[0].proc), cluster.Ready(pods[1].proc)...))
		expectReachesAll(nodes()[0].NS, "tcp", target, pods[:1])
		By("node-1's endpoint no longer serving: node-1 drops")
		setEndpoints(svc, append([]cluster.Endpoint{{Pod: pods[0].proc, Terminating: true}}, cluster.Ready(pods[1].proc)...))
		expectNoAnswer(nodes()[0].NS, "tcp", target)
	})

	It("keeps a UDP flow answered while its server pod is replaced", func() {
		first := startPods(ns, "udp", nodes()[1])
		s := newService(ns, "udp", udp("dns", 53, 5353))
		s.Spec.Type = corev1.ServiceTypeNodePort
		svc := createService(s)
		setBackends(svc, first, 1)
		target := addr(nodes()[0].IP, svc.Spec.Ports[0].NodePort)
		expectReachesAll(t.Client(), "udp", target, first)

		flow, err := t.Client().OpenUDPFlow(target, netns.RequestOptions{})
		Expect(err).NotTo(HaveOccurred())
		defer flow.Close()
		r, err := flow.Send(time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Server).To(Equal(first[0].Name))

		By("the pod is replaced by a new one at another address; the same flow must reach it")
		second := startPods(ns, "udp", nodes()[2])
		Expect(t.DeletePod(first[0])).To(Succeed())
		setBackends(svc, second, 1)
		lost := 0
		Eventually(func() (string, error) {
			r, err := flow.Send(500 * time.Millisecond)
			if err != nil {
				lost++
			}
			return r.Server, err
		}).WithTimeout(converge).Should(Equal(second[0].Name))
		for i := 0; i < 5; i++ {
			r, err := flow.Send(time.Second)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Server).To(Equal(second[0].Name))
		}
		fmt.Fprintf(GinkgoWriter, "UDP flow moved to %s after %d unanswered datagrams\n", second[0].Name, lost)
	})
})

// sliceCount counts the EndpointSlices of svc that hold an endpoint.
func sliceCount(svc *corev1.Service) int {
	GinkgoHelper()
	var list discoveryv1.EndpointSliceList
	Expect(t.API().List(background, &list, client.InNamespace(svc.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name})).To(Succeed())
	n := 0
	for _, s := range list.Items {
		if len(s.Endpoints) > 0 {
			n++
		}
	}
	return n
}

// etpService creates a NodePort Service with externalTrafficPolicy Local
// backed by pods, and returns it and its node port.
func etpService(ns string, pods []*pod) (*corev1.Service, int32) {
	GinkgoHelper()
	s := newService(ns, uniq("etp"), tcp("http", 80, 8080))
	s.Spec.Type = corev1.ServiceTypeNodePort
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc := createService(s)
	setBackends(svc, pods, 1)
	return svc, svc.Spec.Ports[0].NodePort
}

// itpService creates a ClusterIP Service with internalTrafficPolicy Local
// backed by pods, and returns it and its ClusterIP:80.
func itpService(ns string, pods []*pod) (*corev1.Service, string) {
	GinkgoHelper()
	s := newService(ns, uniq("itp"), tcp("http", 80, 8080))
	s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	svc := createService(s)
	setBackends(svc, pods, 1)
	return svc, addr(svc.Spec.ClusterIP, 80)
}

// setEndpoints writes exactly these endpoints of svc, with their
// conditions: the process tier only, where the harness plays the
// EndpointSlice controller.
func setEndpoints(svc *corev1.Service, eps []cluster.Endpoint) {
	GinkgoHelper()
	Expect(pc.SetEndpoints(background, svc, eps, 1)).To(Succeed())
}

// procs returns the process tier's pods.
func procs(pods []*pod) []*cluster.Pod {
	var out []*cluster.Pod
	for _, p := range pods {
		out = append(out, p.proc)
	}
	return out
}

// patchService reads the Service, applies fn and updates it.
func patchService(svc *corev1.Service, fn func(*corev1.Service)) error {
	if err := t.API().Get(background, client.ObjectKeyFromObject(svc), svc); err != nil {
		return err
	}
	fn(svc)
	return t.API().Update(background, svc)
}
