package controllers_test

import (
	"fmt"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/gitops"
)

// The states of gitops.States, produced by the real operator (with the
// simulated agents), read as the API server returns them and computed by
// kstatus and Argo CD's Lua checks.

// rawGet returns an object as the API server serves it, which is what
// GitOps tools read (a typed object would drop a zero observedGeneration).
func rawGet(kind string, key client.ObjectKey) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(proxyv1alpha1.GroupVersion.WithKind(kind))
	ExpectWithOffset(1, k8sClient.Get(ctx, key, u)).To(Succeed())
	return u
}

// createRaw creates obj and returns the API server's answer.
func createRaw(kind string, obj client.Object) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(proxyv1alpha1.GroupVersion.WithKind(kind))
	ExpectWithOffset(1, k8sClient.Create(ctx, u)).To(Succeed())
	return u
}

// updateRawSpec sets one spec field of a GatewayConfig and returns the API
// server's answer to the update.
func updateRawSpec(name string, value any, field ...string) *unstructured.Unstructured {
	var out *unstructured.Unstructured
	EventuallyWithOffset(1, func() error {
		u := rawGet("GatewayConfig", client.ObjectKey{Name: name})
		if err := unstructured.SetNestedField(u.Object, value, append([]string{"spec"}, field...)...); err != nil {
			return err
		}
		if err := k8sClient.Update(ctx, u); err != nil {
			return err
		}
		out = u
		return nil
	}, timeout, poll).Should(Succeed())
	return out
}

// kstatusOf is kstatus's status of obj as the API server serves it now.
func kstatusOf(kind string, obj client.Object) string {
	s, _, err := gitops.Kstatus(rawGet(kind, client.ObjectKeyFromObject(obj)))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return s
}

var _ = Describe("GitOps health", Ordered, func() {
	covered := map[string]bool{}
	// ran counts the specs that went through, for AfterAll.
	ran := 0
	lookup := func(kind, state string) gitops.State {
		s, err := gitops.Lookup(kind, state)
		ExpectWithOffset(2, err).NotTo(HaveOccurred())
		ExpectWithOffset(2, s.Where).To(ContainElement(gitops.ByOperator), "%s %q", kind, state)
		return s
	}
	// is checks that u is in a state now.
	is := func(kind, state string, u *unstructured.Unstructured) {
		ExpectWithOffset(1, lookup(kind, state).Verify(u)).To(Succeed())
		covered[kind+"/"+state] = true
	}
	// reaches waits until the object named key is in a state.
	reaches := func(kind, state string, key client.ObjectKey) {
		s := lookup(kind, state)
		EventuallyWithOffset(1, func() error { return s.Verify(rawGet(kind, key)) }, timeout, poll).Should(Succeed())
		covered[kind+"/"+state] = true
	}
	gc := func(name string) client.ObjectKey { return client.ObjectKey{Name: name} }
	pn := gc

	It("GatewayConfig: new, rolling out, rolled out, changed, rolled back; its ProxyNodes", func() {
		makeNodes("gh-a", 3, map[string]string{"gh-a": "true"})
		setBehavior("gh-a-", fakeagent.Always(fakeagent.Hold))
		is("GatewayConfig", "created, not yet reconciled", createRaw("GatewayConfig", newGC("gh-a", "gh-a", nil)))
		reaches("GatewayConfig", "rolling out", gc("gh-a"))
		reaches("ProxyNode", "created, agent not yet reported", pn("gh-a-0"))

		setBehavior("gh-a-", fakeagent.Always(fakeagent.Ready))
		reaches("GatewayConfig", "rolled out", gc("gh-a"))
		reaches("ProxyNode", "synced", pn("gh-a-0"))
		r1 := revisionOf("gh-a")

		By("a change that the canary holds, then fails")
		setBehavior("gh-a-", (&releasable{good: r1}).behavior())
		is("GatewayConfig", "spec changed, not yet reconciled", updateRawSpec("gh-a", "45s", "syncPeriod"))
		reaches("ProxyNode", "new revision assigned, agent not yet reported", pn("gh-a-0"))
		setBehavior("gh-a-", func(_, rev string) fakeagent.Report {
			if rev != r1 {
				return fakeagent.Report{Outcome: fakeagent.Fail}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		reaches("GatewayConfig", "rollout failed and rolled back", gc("gh-a"))
		reaches("ProxyNode", "back at the last good revision after a rollback", pn("gh-a-0"))
		Expect(assignments("gh-a")["gh-a-0"]).To(Equal(r1))

		By("a younger GatewayConfig selecting the same nodes")
		young := newGC("gh-young", "gh-a", nil)
		young.Spec.Mode = proxyv1alpha1.BackendModeIPVS
		Expect(k8sClient.Create(ctx, young)).To(Succeed())
		reaches("GatewayConfig", "node conflict with an older GatewayConfig", gc("gh-young"))
		ran++
	})

	It("GatewayConfig: a failed rollout without autoRollback, nodes failing, an invalid spec", func() {
		makeNodes("gh-b", 2, map[string]string{"gh-b": "true"})
		setBehavior("gh-b-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("gh-b", "gh-b", &proxyv1alpha1.RolloutSpec{AutoRollback: boolp(false)}))).To(Succeed())
		reaches("GatewayConfig", "rolled out", gc("gh-b"))
		r1 := revisionOf("gh-b")
		setBehavior("gh-b-", func(_, rev string) fakeagent.Report {
			if rev != r1 {
				return fakeagent.Report{Outcome: fakeagent.Fail}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		updateRawSpec("gh-b", "50s", "syncPeriod")
		reaches("GatewayConfig", "rollout failed and stopped (no autoRollback)", gc("gh-b"))

		makeNodes("gh-c", 2, map[string]string{"gh-c": "true"})
		setBehavior("gh-c-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("gh-c", "gh-c", nil))).To(Succeed())
		reaches("GatewayConfig", "rolled out", gc("gh-c"))
		setBehavior("gh-c-", fakeagent.Always(fakeagent.Fail))
		reaches("GatewayConfig", "nodes failing at the current revision", gc("gh-c"))
		reaches("ProxyNode", "sync failed", pn("gh-c-0"))

		bad := newGC("gh-bad", "gh-bad", nil)
		bad.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Near"}}
		Expect(k8sClient.Create(ctx, bad)).To(Succeed())
		reaches("GatewayConfig", "invalid spec", gc("gh-bad"))
		ran++
	})

	It("Manual GatewayConfig and its ProxyPolicies: approval, programming, conflicts, failures", func() {
		const ns = "gh"
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))).To(Succeed())
		makeNodes("gh-m", 3, map[string]string{"gh-m": "true"})
		failed := []proxyv1alpha1.FailedPolicy{
			{Namespace: ns, Name: "unsupported", Reason: proxyv1alpha1.ReasonUnsupportedByBackend, Message: "no Maglev in iptables"},
			{Namespace: ns, Name: "nodefail", Reason: proxyv1alpha1.ReasonInvalid, Message: "cannot translate"},
		}
		setBehavior("gh-m-", func(node, _ string) fakeagent.Report {
			if node == "gh-m-2" {
				return fakeagent.Report{Outcome: fakeagent.Ready, FailedPolicies: failed}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		m := newGC("gh-m", "gh-m", &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual, MaxUnavailable: intOrStr(intstr.FromInt32(3))})
		m.Spec.ServiceProxyName = "gh-proxy"
		Expect(k8sClient.Create(ctx, m)).To(Succeed())
		reaches("GatewayConfig", "Manual, no revision approved yet", gc("gh-m"))
		r1 := revisionOf("gh-m")
		updateRawSpec("gh-m", r1, "rollout", "approvedRevision")
		reaches("GatewayConfig", "rolled out", gc("gh-m"))
		reaches("ProxyNode", "synced, some ProxyPolicies failed", pn("gh-m-2"))

		labelled := map[string]string{proxyv1alpha1.ServiceProxyNameLabel: "gh-proxy"}
		for _, name := range []string{"web", "db", "db2"} {
			Expect(k8sClient.Create(ctx, service(ns, name, labelled))).To(Succeed())
		}
		Expect(k8sClient.Create(ctx, service(ns, "far", map[string]string{proxyv1alpha1.ServiceProxyNameLabel: "nobody"}))).To(Succeed())
		key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

		By("a policy is new, then pending until the nodes sync after it, then programmed")
		// The nodes' last sync must be older than the policy, at the
		// resolution of one second of creationTimestamp and lastSync.
		time.Sleep(1100 * time.Millisecond)
		is("ProxyPolicy", "created, not yet reconciled", createRaw("ProxyPolicy", policy(ns, "fresh", "web")))
		reaches("ProxyPolicy", "being programmed on the nodes", key("fresh"))
		time.Sleep(1100 * time.Millisecond) // lastSync has a resolution of one second
		fleet.Sync("gh-m-")
		reaches("ProxyPolicy", "programmed on every node", key("fresh"))

		By("a new revision waits for approval; the policy stays programmed")
		updateRawSpec("gh-m", string(proxyv1alpha1.BackendModeIPTables), "mode")
		reaches("GatewayConfig", "Manual, a revision awaits approval", gc("gh-m"))
		reaches("ProxyPolicy", "programmed; its GatewayConfig awaits approval", key("fresh"))
		Expect(kstatusOf("GatewayConfig", getGC("gh-m"))).To(Equal("Current"))

		By("policies that cannot take effect")
		time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of one second
		Expect(k8sClient.Create(ctx, policy(ns, "younger", "web"))).To(Succeed())
		reaches("ProxyPolicy", "conflicted: an older policy has its targets", key("younger"))
		Expect(k8sClient.Create(ctx, policy(ns, "missing", "nope"))).To(Succeed())
		reaches("ProxyPolicy", "target Service not found", key("missing"))
		Expect(k8sClient.Create(ctx, policy(ns, "unsupported", "db"))).To(Succeed())
		reaches("ProxyPolicy", "a node's backend cannot run it", key("unsupported"))
		Expect(k8sClient.Create(ctx, policy(ns, "nodefail", "db2"))).To(Succeed())
		reaches("ProxyPolicy", "nodes failed to program it", key("nodefail"))
		Expect(k8sClient.Create(ctx, policy(ns, "inert", "far"))).To(Succeed())
		reaches("ProxyPolicy", "no node runs its targets", key("inert"))
		ran++
	})

	AfterAll(func() {
		if ran < 3 {
			return // a spec failed or was not selected: it says so itself
		}
		var missing []string
		for _, s := range gitops.States {
			if slices.Contains(s.Where, gitops.ByOperator) && !covered[s.Kind+"/"+s.Name] {
				missing = append(missing, fmt.Sprintf("%s %q", s.Kind, s.Name))
			}
		}
		Expect(missing).To(BeEmpty(), "states gitops.States says the operator suite checks, and it did not")
	})
})
