package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
)

func getPolicy(ns, name string) *proxyv1alpha1.ProxyPolicy {
	p := &proxyv1alpha1.ProxyPolicy{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p)).To(Succeed())
	return p
}

func policyStatus(p *proxyv1alpha1.ProxyPolicy) string {
	return kstatusOf("ProxyPolicy", p)
}

func service(ns, name string, labels map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func policy(ns, name string, targets ...string) *proxyv1alpha1.ProxyPolicy {
	p := &proxyv1alpha1.ProxyPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: proxyv1alpha1.ProxyPolicySpec{
			LoadBalancing: &proxyv1alpha1.LoadBalancingSpec{Algorithm: proxyv1alpha1.AlgorithmMaglev},
		},
	}
	for _, t := range targets {
		p.Spec.TargetRefs = append(p.Spec.TargetRefs, proxyv1alpha1.PolicyTargetReference{Kind: "Service", Name: t})
	}
	return p
}

var _ = Describe("ProxyPolicy", func() {
	const ns = "pp"
	proxyName := map[string]string{proxyv1alpha1.ServiceProxyNameLabel: "pp-proxy"}

	BeforeEach(func() {
		err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil {
			Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
		}
	})

	It("resolves targets, decides conflicts by age and aggregates what the nodes report", func() {
		// Three nodes run a GatewayConfig that handles the Services labelled
		// with its service-proxy-name; pp-2's backend cannot run "unsupported".
		makeNodes("pp", 3, map[string]string{"pp": "true"})
		setBehavior("pp-", func(node, _ string) fakeagent.Report {
			rep := fakeagent.Report{Outcome: fakeagent.Ready}
			if node == "pp-2" {
				rep.FailedPolicies = []proxyv1alpha1.FailedPolicy{{Namespace: ns, Name: "unsupported", Reason: proxyv1alpha1.ReasonUnsupportedByBackend, Message: "iptables has no Maglev"}}
			}
			return rep
		})
		gc := newGC("pp", "pp", nil)
		gc.Spec.ServiceProxyName = "pp-proxy"
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		rolledOut("pp", revisionOf("pp"), 3)
		Expect(k8sClient.Create(ctx, service(ns, "web", proxyName))).To(Succeed())
		Expect(k8sClient.Create(ctx, service(ns, "db", proxyName))).To(Succeed())

		By("a policy on an existing Service is accepted and programmed on every node")
		Expect(k8sClient.Create(ctx, policy(ns, "older", "web"))).To(Succeed())
		// The agents sync when a policy changes; their syncs from before it
		// do not count.
		time.Sleep(1100 * time.Millisecond) // lastSync has a resolution of one second
		fleet.Sync("pp-")
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "older")
			g.Expect(condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(condition(p.Status.Conditions, proxyv1alpha1.ConditionProgrammed).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(p.Status.Nodes.Total).To(BeEquivalentTo(3))
			g.Expect(p.Status.Nodes.Programmed).To(BeEquivalentTo(3))
			g.Expect(p.Status.Targets).To(Equal([]proxyv1alpha1.ResolvedTarget{{Name: "web", Accepted: true}}))
			g.Expect(policyStatus(p)).To(Equal("Current"))
		}, timeout, poll).Should(Succeed())

		By("a younger policy on the same Service is Conflicted")
		time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of one second
		Expect(k8sClient.Create(ctx, policy(ns, "younger", "web"))).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "younger")
			a := condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted)
			g.Expect(a.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(a.Reason).To(Equal(proxyv1alpha1.ReasonConflicted))
			g.Expect(a.Message).To(ContainSubstring("older"))
			g.Expect(p.Status.Targets).To(HaveLen(1))
			g.Expect(p.Status.Targets[0].Accepted).To(BeFalse())
			g.Expect(policyStatus(p)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
		Expect(condition(getPolicy(ns, "older").Status.Conditions, proxyv1alpha1.ConditionAccepted).Status).To(Equal(metav1.ConditionTrue))

		By("a policy on a missing Service is TargetNotFound")
		Expect(k8sClient.Create(ctx, policy(ns, "missing", "nope"))).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "missing")
			g.Expect(condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted).Reason).To(Equal(proxyv1alpha1.ReasonTargetNotFound))
		}, timeout, poll).Should(Succeed())

		By("the Service appearing makes it accepted")
		Expect(k8sClient.Create(ctx, service(ns, "nope", proxyName))).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "missing")
			g.Expect(condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted).Status).To(Equal(metav1.ConditionTrue))
		}, timeout, poll).Should(Succeed())

		By("a policy a node's backend cannot run is UnsupportedByBackend, with the node counted as failed")
		p := policy(ns, "unsupported")
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: proxyName}
		p.Spec.TargetRefs = nil
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		time.Sleep(1100 * time.Millisecond)
		fleet.Sync("pp-")
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "unsupported")
			a := condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted)
			g.Expect(a.Reason).To(Equal(proxyv1alpha1.ReasonUnsupportedByBackend))
			g.Expect(p.Status.Nodes).To(Equal(proxyv1alpha1.PolicyNodeCounts{Total: 3, Programmed: 2, Failed: 1, FailedNodeNames: []string{"pp-2"}}))
			g.Expect(condition(p.Status.Conditions, proxyv1alpha1.ConditionProgrammed).Status).To(Equal(metav1.ConditionFalse))
			g.Expect(policyStatus(p)).To(Equal("Failed"))
			// The selector resolved to every labelled Service; web is taken by "older".
			g.Expect(p.Status.Targets).To(ContainElement(proxyv1alpha1.ResolvedTarget{Name: "db", Accepted: true}))
		}, timeout, poll).Should(Succeed())

		By("a policy whose selector is invalid is InvalidTarget, saying why")
		bad := policy(ns, "bad-selector")
		bad.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Near"}}}
		Expect(k8sClient.Create(ctx, bad)).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(ns, "bad-selector")
			a := condition(p.Status.Conditions, proxyv1alpha1.ConditionAccepted)
			g.Expect(a.Reason).To(Equal(proxyv1alpha1.ReasonInvalidTarget))
			g.Expect(a.Message).To(ContainSubstring("spec.selector is invalid"))
			g.Expect(p.Status.Targets).To(BeEmpty())
			g.Expect(policyStatus(p)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
	})
})
