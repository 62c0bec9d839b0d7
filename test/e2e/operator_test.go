package e2e

import (
	"fmt"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

const gcName = "e2e"

func patchGC(patch string) {
	GinkgoHelper()
	_, err := t.Kubectl("patch", "gatewayconfig", gcName, "--type=merge", "-p", patch)
	Expect(err).NotTo(HaveOccurred())
}

func getGC() *proxyv1alpha1.GatewayConfig {
	GinkgoHelper()
	var gc proxyv1alpha1.GatewayConfig
	Expect(t.API().Get(background, client.ObjectKey{Name: gcName}, &gc)).To(Succeed())
	return &gc
}

func waitRolledOut() *proxyv1alpha1.GatewayConfig {
	GinkgoHelper()
	gc, err := shipped.WaitRolledOut(background, t.API(), gcName, 3*time.Minute)
	Expect(err).NotTo(HaveOccurred())
	return gc
}

// revisions returns each node's assigned and applied revision.
func revisions() map[string][2]string {
	GinkgoHelper()
	pns, err := shipped.ProxyNodes(background, t.API())
	Expect(err).NotTo(HaveOccurred())
	out := map[string][2]string{}
	for n, pn := range pns {
		out[n] = [2]string{pn.Spec.Revision, pn.Status.AppliedRevision}
	}
	return out
}

// webService starts one pod per node behind a new ClusterIP Service and
// waits until every node reaches all of them. It returns the Service's
// namespace and name, its ClusterIP:80 and the pods.
func webService(prefix string) (string, string, string, []*pod) {
	GinkgoHelper()
	ns := newNamespace()
	pods := startPods(ns, prefix, nodes()...)
	svc := createService(newService(ns, prefix, tcp("http", 80, 8080)))
	setBackends(svc, pods, 1)
	target := addr(svc.Spec.ClusterIP, 80)
	for _, n := range nodes() {
		expectReachesAll(n.NS, "tcp", target, pods)
	}
	return ns, svc.Name, target, pods
}

// createPolicy creates a ProxyPolicy with spec that targets Service service,
// and deletes it when the spec ends.
func createPolicy(ns, name, service string, spec proxyv1alpha1.ProxyPolicySpec) *proxyv1alpha1.ProxyPolicy {
	GinkgoHelper()
	spec.TargetRefs = []proxyv1alpha1.PolicyTargetReference{{Kind: "Service", Name: service}}
	p := &proxyv1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	Expect(t.API().Create(background, p)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(t.API().Delete(background, p))).To(Succeed()) })
	return p
}

// getPolicy reads a ProxyPolicy.
func getPolicy(ns, name string) *proxyv1alpha1.ProxyPolicy {
	GinkgoHelper()
	var p proxyv1alpha1.ProxyPolicy
	Expect(t.API().Get(background, client.ObjectKey{Namespace: ns, Name: name}, &p)).To(Succeed())
	return &p
}

var _ = Describe("Operator", func() {
	It("stops a rollout whose canary fails and rolls it back", func() {
		_, _, target, pods := webService("rb")
		good := waitRolledOut().Status.CurrentRevision
		DeferCleanup(func() {
			patchGC(`{"spec":{"mode":"Auto"}}`)
			waitRolledOut()
		})

		By("mode IPVS on a kernel without IPVS: the canary cannot run it")
		patchGC(`{"spec":{"mode":"IPVS"}}`)
		var bad string
		touched := map[string]bool{}
		Eventually(func(g Gomega) {
			gc := getGC()
			if bad == "" && gc.Status.UpdatedRevision != good {
				bad = gc.Status.UpdatedRevision
			}
			if bad == "" {
				bad = failedRevision()
			}
			for n, r := range revisions() {
				if bad != "" && r[0] == bad {
					touched[n] = true
				}
			}
			g.Expect(bad).NotTo(BeEmpty(), "no new revision yet")
			g.Expect(meta.IsStatusConditionTrue(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded)).To(BeTrue(), "Degraded: %+v", gc.Status.Conditions)
			for n, r := range revisions() {
				g.Expect(r[0]).To(Equal(good), "node %s still assigned %s", n, r[0])
			}
		}).WithTimeout(3 * time.Minute).WithPolling(250 * time.Millisecond).Should(Succeed())
		gc := getGC()
		ready := meta.FindStatusCondition(gc.Status.Conditions, proxyv1alpha1.ConditionReady)
		fmt.Fprintf(GinkgoWriter, "rollout of %s stopped; nodes that ever got it: %v; Ready: %+v\n", bad, keys(touched), ready)
		Expect(len(touched)).To(BeNumerically("<=", 1), "only the canary may take the failing revision")

		By("every node back at the good revision and still serving")
		Eventually(func(g Gomega) {
			for n, r := range revisions() {
				g.Expect(r).To(Equal([2]string{good, good}), "node %s", n)
			}
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
		for _, n := range nodes() {
			expectReachesAll(n.NS, "tcp", target, pods)
		}
	})

	It("holds a Manual rollout until it is approved, then rolls it out", func() {
		waitRolledOut()
		DeferCleanup(func() {
			patchGC(`{"spec":{"minSyncPeriod":"100ms","rollout":{"strategy":"Automatic","approvedRevision":null}}}`)
			waitRolledOut()
		})
		patchGC(`{"spec":{"rollout":{"strategy":"Manual"}}}`)
		before := waitRolledOut().Status.CurrentRevision
		patchGC(`{"spec":{"minSyncPeriod":"200ms"}}`)
		var pending string
		Eventually(func() string { pending = getGC().Status.PendingRevision; return pending }).
			WithTimeout(converge).WithPolling(poll).ShouldNot(BeEmpty())
		Expect(pending).NotTo(Equal(before))
		Consistently(func(g Gomega) {
			for n, r := range revisions() {
				g.Expect(r[0]).To(Equal(before), "node %s moved before approval", n)
			}
		}).WithTimeout(3 * time.Second).WithPolling(poll).Should(Succeed())

		By("approving " + pending)
		patchGC(fmt.Sprintf(`{"spec":{"rollout":{"approvedRevision":%q}}}`, pending))
		gc := waitRolledOut()
		Expect(gc.Status.CurrentRevision).To(Equal(pending))
		Expect(gc.Status.PendingRevision).To(BeEmpty())
		for n, r := range revisions() {
			Expect(r).To(Equal([2]string{pending, pending}), "node %s", n)
		}
	})

	It("reports a ProxyPolicy Programmed on every node with its effect on traffic, and one its backend cannot run as failed", func() {
		ns, name, target, pods := webService("pol")
		sticky := createPolicy(ns, "sticky", name, proxyv1alpha1.ProxyPolicySpec{
			SessionAffinity: &proxyv1alpha1.SessionAffinitySpec{Type: "ClientIP"}})
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "sticky")
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			g.Expect(meta.IsStatusConditionTrue(p.Status.Conditions, proxyv1alpha1.ConditionAccepted)).To(BeTrue(), "%+v", p.Status)
			g.Expect(meta.IsStatusConditionTrue(p.Status.Conditions, proxyv1alpha1.ConditionProgrammed)).To(BeTrue(), "%+v", p.Status)
			g.Expect(p.Status.Nodes.Programmed).To(BeEquivalentTo(len(nodes())))
			g.Expect(p.Status.Nodes.Total).To(BeEquivalentTo(len(nodes())))
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
		for _, n := range nodes() {
			Eventually(func() []string { return answering(n.NS, target, 20) }).
				WithTimeout(converge).WithPolling(poll).Should(HaveLen(1), "node %s sticks to one of %d pods", n.Name, len(pods))
		}

		By("RoundRobin (iptables: statistic nth) rotates strictly: from one node every pod answers equally often")
		Expect(t.API().Delete(background, sticky)).To(Succeed())
		createPolicy(ns, "rotate", name, proxyv1alpha1.ProxyPolicySpec{
			LoadBalancing: &proxyv1alpha1.LoadBalancingSpec{Algorithm: proxyv1alpha1.AlgorithmRoundRobin}})
		Eventually(func(g Gomega) {
			a := nodes()[0].NS.Spread("tcp", target, 4*len(pods), netns.RequestOptions{})
			g.Expect(a.Failures).To(BeZero())
			for _, p := range pods {
				g.Expect(a.Servers).To(HaveKeyWithValue(p.Name, 4), "%s", a)
			}
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())

		By("WeightedRoundRobin needs IPVS: the iptables nodes report it failed")
		ns2, name2, _, _ := webService("wrr")
		createPolicy(ns2, "wrr", name2, proxyv1alpha1.ProxyPolicySpec{
			LoadBalancing: &proxyv1alpha1.LoadBalancingSpec{Algorithm: proxyv1alpha1.AlgorithmWeightedRoundRobin}})
		Eventually(func(g Gomega) {
			p := getPolicy(ns2, "wrr")
			prog := meta.FindStatusCondition(p.Status.Conditions, proxyv1alpha1.ConditionProgrammed)
			g.Expect(prog).NotTo(BeNil())
			g.Expect(prog.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(prog.Reason).To(Equal(proxyv1alpha1.ReasonUnsupportedByBackend))
			g.Expect(p.Status.Nodes.Failed).To(BeEquivalentTo(len(nodes())))
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
	})

	It("drops a removed node from the rollout", Label(tierProcess), func() {
		n, err := pc.AddNode(background)
		Expect(err).NotTo(HaveOccurred())
		t.(*processTier).sync()
		Expect(pc.StartAgent(background, n)).To(Succeed())
		expectNodesRolledOut(len(nodes()))
		_, _, target, pods := webService("rm")
		expectReachesAll(n.NS, "tcp", target, pods)

		Expect(pc.DeleteNode(background, n.Name)).To(Succeed())
		t.(*processTier).sync()
		Eventually(func() bool {
			_, ok := revisions()[n.Name]
			return ok
		}).WithTimeout(converge).WithPolling(poll).Should(BeFalse(), "ProxyNode %s not deleted", n.Name)
		expectNodesRolledOut(len(nodes()))
	})
})

// failedRevision returns the name of a config revision of the GatewayConfig
// that the operator marked failed, or "".
func failedRevision() string {
	var list appsv1.ControllerRevisionList
	Expect(t.API().List(background, &list, client.InNamespace(t.OperatorNamespace()),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: gcName})).To(Succeed())
	for _, r := range list.Items {
		if _, ok := r.Annotations["proxy.synterix.io/rollout-failed"]; ok {
			return r.Name
		}
	}
	return ""
}

// expectNodesRolledOut waits until the GatewayConfig counts nodes selected
// nodes, all ready at its current revision.
func expectNodesRolledOut(nodes int) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		gc := getGC()
		s := gc.Status
		g.Expect(s.ObservedGeneration).To(Equal(gc.Generation))
		g.Expect(s.DesiredNodes).To(BeEquivalentTo(nodes), "%+v", s)
		g.Expect(s.ReadyNodes).To(BeEquivalentTo(nodes), "%+v", s)
		g.Expect(meta.IsStatusConditionTrue(s.Conditions, proxyv1alpha1.ConditionReady)).To(BeTrue(), "%+v", s.Conditions)
	}).WithTimeout(3 * time.Minute).WithPolling(poll).Should(Succeed())
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
