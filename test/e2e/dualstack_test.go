package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/clusternet"
)

var bothFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}

// The shipped tier's cluster is dual-stack, IPv4 primary (test/kubenode):
// two service ranges, nodes with an address and a podCIDR of each family,
// pods with an address of each. These specs send real packets over IPv6
// and both families; the process tier's nodes are IPv4 only.
var _ = Describe("[sig-network] Dual-stack Services", Label(tierShipped), func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("serves a RequireDualStack ClusterIP Service on both ClusterIPs, from a node and from a pod on another node", func() {
		pods := startPods(ns, "req", nodes()[1], nodes()[2])
		s := newService(ns, "req", tcp("http", 80, 8080), udp("dns", 53, 5353))
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		svc := createService(s)
		Expect(svc.Spec.IPFamilies).To(Equal(bothFamilies))
		expectFamilies(svc.Spec.ClusterIPs, bothFamilies)
		setBackends(svc, pods, 1)
		client := startPods(ns, "client", nodes()[0])[0]
		Expect(client.IPs).To(HaveLen(2), "pod %s has an address of each family", client.Name)
		for i, ip := range svc.Spec.ClusterIPs {
			By(fmt.Sprintf("%s ClusterIP %s", svc.Spec.IPFamilies[i], ip))
			expectReachesAll(nodes()[0].NS, "tcp", addr(ip, 80), pods)
			a := expectReachesAll(client.NS, "tcp", addr(ip, 80), pods)
			// Local-traffic detection by the cluster CIDR of the family: a
			// pod's request keeps its source address.
			Expect(a.ClientIPs).To(HaveLen(1))
			Expect(a.ClientIPs).To(HaveKey(client.IPs[i]), "the backends saw %v, want the client pod's own %s address", a.ClientIPs, svc.Spec.IPFamilies[i])
			expectReachesAll(client.NS, "udp", addr(ip, 53), pods)
		}
	})

	It("serves a PreferDualStack NodePort on every node's IPv6 address to an outside client", func() {
		pods := startPods(ns, "pref", nodes()[0], nodes()[1])
		s := newService(ns, "pref", tcp("http", 80, 8080))
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		svc := createService(s)
		Expect(svc.Spec.IPFamilies).To(Equal(bothFamilies), "a dual-stack cluster gives PreferDualStack both families")
		setBackends(svc, pods, 1)
		port := svc.Spec.Ports[0].NodePort
		for _, n := range nodes() {
			Expect(n.IP6).NotTo(BeEmpty(), "node %s has an IPv6 address", n.Name)
			expectReachesAll(t.Client(), "tcp", addr(n.IP6, port), pods)
			expectReachesAll(t.Client(), "tcp", addr(n.IP, port), pods)
		}
	})

	It("serves a SingleStack IPv6 Service from every node and from a pod, in the IPv6 rules alone", func() {
		pods := startPods(ns, "six", nodes()[0], nodes()[1])
		s := newService(ns, "six", tcp("http", 80, 8080))
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		svc := createService(s)
		expectFamilies(svc.Spec.ClusterIPs, []corev1.IPFamily{corev1.IPv6Protocol})
		Expect(netip.MustParsePrefix(clusternet.ServiceCIDR6).Contains(netip.MustParseAddr(svc.Spec.ClusterIP))).To(BeTrue(),
			"ClusterIP %s from the IPv6 service range %s", svc.Spec.ClusterIP, clusternet.ServiceCIDR6)
		setBackends(svc, pods, 1)
		By("the EndpointSlice controller publishes the pods' IPv6 addresses only")
		want := map[string]bool{}
		for _, p := range pods {
			want[p.IPs[1]] = true
		}
		Eventually(func(g Gomega) {
			var list discoveryv1.EndpointSliceList
			g.Expect(t.API().List(background, &list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name})).To(Succeed())
			got := map[string]bool{}
			for _, sl := range list.Items {
				g.Expect(sl.AddressType).To(Equal(discoveryv1.AddressTypeIPv6), "slice %s", sl.Name)
				for _, e := range sl.Endpoints {
					got[e.Addresses[0]] = true
				}
			}
			g.Expect(got).To(Equal(want))
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
		target := addr(svc.Spec.ClusterIP, 80)
		for _, n := range nodes() {
			expectReachesAll(n.NS, "tcp", target, pods)
		}
		expectReachesAll(pods[0].NS, "tcp", target, pods)
		By("only the IPv6 rules of a node hold the Service")
		key := ns + "/six"
		for _, n := range nodes() {
			Expect(mentions(familyRuleDump(n, corev1.IPv6Protocol), key) || programs(familyRuleDump(n, corev1.IPv6Protocol), svc.Spec.ClusterIP)).
				To(BeTrue(), "the IPv6 rules of %s hold %s", n.Name, key)
			Expect(mentions(familyRuleDump(n, corev1.IPv4Protocol), key)).To(BeFalse(), "the IPv4 rules of %s name %s", n.Name, key)
		}
	})

	It("reports what each family programs in every ProxyNode's status", func() {
		By("the other specs' namespaces gone, the counts settled")
		waitOtherNamespacesGone(ns)
		base := settledCounts()
		pods := startPods(ns, "fam", nodes()[0], nodes()[1])
		// IPv6: 2 Service ports of six and 1 of dual, each with the 2 pods;
		// IPv4: 1 Service port of dual, with the 2 pods.
		s := newService(ns, "six", tcp("http", 80, 8080), udp("dns", 53, 5353))
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		six := createService(s)
		d := newService(ns, "dual", tcp("http", 80, 8080))
		d.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		dual := createService(d)
		setBackends(six, pods, 1)
		setBackends(dual, pods, 1)
		want := map[corev1.IPFamily]proxyv1alpha1.RuleCounts{
			corev1.IPv4Protocol: {Services: 1, Endpoints: 2},
			corev1.IPv6Protocol: {Services: 3, Endpoints: 6},
		}
		var last map[string]map[corev1.IPFamily]proxyv1alpha1.FamilyStatus
		Eventually(func(g Gomega) {
			last = map[string]map[corev1.IPFamily]proxyv1alpha1.FamilyStatus{}
			for _, n := range nodes() {
				pn := proxyNode(n.Name)
				fams := familiesOf(pn)
				last[n.Name] = fams
				var total proxyv1alpha1.RuleCounts
				for _, f := range bothFamilies {
					fs, ok := fams[f]
					g.Expect(ok).To(BeTrue(), "%s: no %s in status.families", n.Name, f)
					g.Expect(fs.Programmed).To(BeTrue(), "%s %s: %s", n.Name, f, fs.Message)
					g.Expect(fs.LastSync).NotTo(BeNil(), "%s %s: no lastSync", n.Name, f)
					g.Expect(fs.LastSync.Error).To(BeEmpty(), "%s %s", n.Name, f)
					g.Expect(fs.Counts.Rules).To(BeNumerically(">", 0), "%s %s: no rule counted", n.Name, f)
					b := base[n.Name][f]
					g.Expect(fs.Counts.Services-b.Services).To(Equal(want[f].Services), "%s %s: Service ports programmed, %d before the spec", n.Name, f, b.Services)
					g.Expect(fs.Counts.Endpoints-b.Endpoints).To(Equal(want[f].Endpoints), "%s %s: endpoints programmed, %d before the spec", n.Name, f, b.Endpoints)
					total.Services += fs.Counts.Services
					total.Endpoints += fs.Counts.Endpoints
					total.Rules += fs.Counts.Rules
				}
				g.Expect(pn.Status.Counts).To(Equal(total), "%s: status.counts is the sum over the families", n.Name)
			}
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
		for _, n := range nodes() {
			f4, f6 := last[n.Name][corev1.IPv4Protocol], last[n.Name][corev1.IPv6Protocol]
			AddReportEntry("ProxyNode "+n.Name+" families", fmt.Sprintf("IPv4 %+v (before %+v), IPv6 %+v (before %+v)",
				f4.Counts, base[n.Name][corev1.IPv4Protocol], f6.Counts, base[n.Name][corev1.IPv6Protocol]))
		}
	})
})

// A node of one family programs that family alone and says so: the process
// tier's nodes report only an IPv4 address.
var _ = Describe("[sig-network] Single-stack nodes", Label(tierProcess), func() {
	It("program IPv4 alone and say in ProxyNode status why IPv6 is not programmed", func() {
		Eventually(func(g Gomega) {
			for _, n := range nodes() {
				fams := familiesOf(proxyNode(n.Name))
				g.Expect(fams[corev1.IPv4Protocol].Programmed).To(BeTrue(), "%s IPv4", n.Name)
				f6, ok := fams[corev1.IPv6Protocol]
				g.Expect(ok).To(BeTrue(), "%s: no IPv6 in status.families", n.Name)
				g.Expect(f6.Programmed).To(BeFalse(), "%s IPv6", n.Name)
				g.Expect(f6.Message).To(ContainSubstring("no IPv6 address"), "%s IPv6", n.Name)
				g.Expect(f6.Counts).To(BeZero(), "%s IPv6", n.Name)
			}
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "%s IPv6: %s\n", nodes()[0].Name, familiesOf(proxyNode(nodes()[0].Name))[corev1.IPv6Protocol].Message)
	})
})

// expectFamilies checks that the addresses are of the families, in order.
func expectFamilies(ips []string, families []corev1.IPFamily) {
	GinkgoHelper()
	Expect(ips).To(HaveLen(len(families)), "addresses %v", ips)
	for i, ip := range ips {
		Expect(familyOf(ip)).To(Equal(families[i]), "address %s", ip)
	}
}

func familyOf(ip string) corev1.IPFamily {
	if netip.MustParseAddr(ip).Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// familyRuleDump is what a node's namespace holds for one family: the
// iptables (or ip6tables) rules, then nft's tables of that family.
func familyRuleDump(n *node, f corev1.IPFamily) string {
	GinkgoHelper()
	save, nft := "iptables-save", "ip"
	if f == corev1.IPv6Protocol {
		save, nft = "ip6tables-save", "ip6"
	}
	out, err := n.NS.Exec(save)
	Expect(err).NotTo(HaveOccurred())
	tables, err := n.NS.Exec("nft", "list", "ruleset", nft)
	Expect(err).NotTo(HaveOccurred())
	return out + tables
}

func familiesOf(pn *proxyv1alpha1.ProxyNode) map[corev1.IPFamily]proxyv1alpha1.FamilyStatus {
	out := map[corev1.IPFamily]proxyv1alpha1.FamilyStatus{}
	for _, f := range pn.Status.Families {
		out[f.Family] = f
	}
	return out
}

// waitOtherNamespacesGone waits until the namespace controller has deleted
// every spec namespace but keep, with its Services.
func waitOtherNamespacesGone(keep string) {
	GinkgoHelper()
	Eventually(func() []string {
		var list corev1.NamespaceList
		Expect(t.API().List(background, &list)).To(Succeed())
		var left []string
		for _, n := range list.Items {
			if strings.HasPrefix(n.Name, "e2e-") && n.Name != keep {
				left = append(left, n.Name)
			}
		}
		return left
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(BeEmpty())
}

// settledCounts returns every node's per-family counts once they read the
// same three times in a row, a second apart.
func settledCounts() map[string]map[corev1.IPFamily]proxyv1alpha1.RuleCounts {
	GinkgoHelper()
	read := func() map[string]map[corev1.IPFamily]proxyv1alpha1.RuleCounts {
		out := map[string]map[corev1.IPFamily]proxyv1alpha1.RuleCounts{}
		for _, n := range nodes() {
			out[n.Name] = map[corev1.IPFamily]proxyv1alpha1.RuleCounts{}
			for f, fs := range familiesOf(proxyNode(n.Name)) {
				out[n.Name][f] = fs.Counts
			}
		}
		return out
	}
	var prev map[string]map[corev1.IPFamily]proxyv1alpha1.RuleCounts
	same := 0
	Eventually(func() int {
		cur := read()
		if prev != nil && fmt.Sprint(cur) == fmt.Sprint(prev) {
			same++
		} else {
			same = 0
		}
		prev = cur
		return same
	}).WithTimeout(converge).WithPolling(time.Second).Should(BeNumerically(">=", 2))
	fmt.Fprintf(GinkgoWriter, "counts before the spec: %v\n", prev)
	return prev
}
