package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
)

const (
	timeout = 60 * time.Second
	poll    = 100 * time.Millisecond
)

// revisionOf returns the revision name of a GatewayConfig's spec as the API
// server stored it (with its defaults).
func revisionOf(name string) string {
	gc := getGC(name)
	rev, err := controllers.RevisionFor(gc.Name, &gc.Spec, operatorAgent())
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return rev.Name
}

// changeSpec applies mutate to a GatewayConfig's spec, retrying on conflicts.
func changeSpec(name string, mutate func(*proxyv1alpha1.GatewayConfigSpec)) {
	EventuallyWithOffset(1, func() error {
		gc := getGC(name)
		mutate(&gc.Spec)
		return k8sClient.Update(ctx, gc)
	}, timeout, poll).Should(Succeed())
}

// rolledOut waits until every node of a GatewayConfig runs rev and the
// GatewayConfig is Current.
func rolledOut(name, rev string, nodes int) {
	EventuallyWithOffset(1, func(g Gomega) {
		gc := getGC(name)
		g.Expect(gc.Status.CurrentRevision).To(Equal(rev))
		g.Expect(gc.Status.ReadyNodes).To(BeEquivalentTo(nodes))
		g.Expect(condition(gc.Status.Conditions, proxyv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(gcStatus(gc)).To(Equal("Current"))
	}, timeout, poll).Should(Succeed())
}

// releasable is a behaviour that reports Ready at revision good, and at other
// revisions only on the released nodes.
type releasable struct {
	good     string
	released map[string]bool
}

func (r *releasable) behavior() fakeagent.Behavior {
	released := map[string]bool{}
	for k, v := range r.released {
		released[k] = v
	}
	return func(node, rev string) fakeagent.Report {
		if rev != r.good && !released[node] {
			return fakeagent.Report{Outcome: fakeagent.Hold}
		}
		return fakeagent.Report{Outcome: fakeagent.Ready}
	}
}

var _ = Describe("GatewayConfig rollout", func() {
	It("rolls a change out canary first, in batches of maxUnavailable, each after the last is Ready", func() {
		nodes := makeNodes("rb", 6, map[string]string{"rb": "true"})
		setBehavior("rb-", fakeagent.Always(fakeagent.Ready))
		gc := newGC("rb", "rb", &proxyv1alpha1.RolloutSpec{MaxUnavailable: intOrStr(intstr.FromInt32(2)), Canary: &proxyv1alpha1.CanarySpec{Count: i32(1)}})
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		r1 := revisionOf("rb")
		rolledOut("rb", r1, len(nodes))

		By("changing the config while the simulated agents hold the new revision")
		rel := &releasable{good: r1, released: map[string]bool{}}
		setBehavior("rb-", rel.behavior())
		mon := startMonitor("rb-")
		changeSpec("rb", func(s *proxyv1alpha1.GatewayConfigSpec) { s.SyncPeriod = &metav1.Duration{Duration: 45 * time.Second} })
		r2 := revisionOf("rb")
		Expect(r2).NotTo(Equal(r1))

		expectUpdated := func(want []string) {
			EventuallyWithOffset(1, func(g Gomega) {
				st := getGC("rb").Status
				g.Expect(st.UpdatedRevision).To(Equal(r2))
				g.Expect(st.UpdatedNodes).To(BeEquivalentTo(len(want)))
			}, timeout, poll).Should(Succeed())
			ExpectWithOffset(1, nodesAt(assignments("rb"), r2)).To(Equal(want))
			gc := getGC("rb")
			ExpectWithOffset(1, gcStatus(gc)).To(Equal("InProgress"))
			ExpectWithOffset(1, condition(gc.Status.Conditions, proxyv1alpha1.ConditionProgressing).Status).To(Equal(metav1.ConditionTrue))
		}
		By("the canary alone first")
		expectUpdated([]string{"rb-0"})
		By("then a batch of two once the canary is Ready")
		rel.released["rb-0"] = true
		setBehavior("rb-", rel.behavior())
		expectUpdated([]string{"rb-0", "rb-1", "rb-2"})
		By("then one more when only one of the batch is Ready")
		rel.released["rb-1"] = true
		setBehavior("rb-", rel.behavior())
		expectUpdated([]string{"rb-0", "rb-1", "rb-2", "rb-3"})
		By("then the rest")
		for _, n := range nodes {
			rel.released[n] = true
		}
		setBehavior("rb-", rel.behavior())
		rolledOut("rb", r2, len(nodes))
		mon.stop()
		Expect(mon.assignedSeq[r2][0]).To(Equal("rb-0"))
		Expect(mon.assignedSeq[r2]).To(HaveLen(len(nodes)))
		Expect(mon.maxInflight[r2]).To(BeNumerically("<=", 2))
		Expect(mon.maxInflight[r2]).To(BeNumerically(">=", 1))

		By("changing only rollout settings: no new revision, no DaemonSet change")
		ds := &appsv1.DaemonSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-rb"}, ds)).To(Succeed())
		template := ds.Spec.Template.DeepCopy()
		revs := len(revisionsOf("rb"))
		changeSpec("rb", func(s *proxyv1alpha1.GatewayConfigSpec) {
			s.Rollout.MaxUnavailable = intOrStr(intstr.FromString("50%"))
		})
		Eventually(func() int64 { return getGC("rb").Status.ObservedGeneration }, timeout, poll).Should(Equal(getGC("rb").Generation))
		Expect(revisionsOf("rb")).To(HaveLen(revs))
		Expect(getGC("rb").Status.CurrentRevision).To(Equal(r2))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-rb"}, ds)).To(Succeed())
		Expect(ds.Spec.Template).To(Equal(*template))
	})

	It("stops at a failing canary and rolls back to the last good revision", func() {
		nodes := makeNodes("fr", 4, map[string]string{"fr": "true"})
		setBehavior("fr-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("fr", "fr", &proxyv1alpha1.RolloutSpec{
			MaxUnavailable: intOrStr(intstr.FromInt32(3)), AutoRollback: boolp(true),
		}))).To(Succeed())
		r1 := revisionOf("fr")
		rolledOut("fr", r1, len(nodes))

		// Every revision but r1 fails, from before the change is made.
		setBehavior("fr-", func(_, rev string) fakeagent.Report {
			if rev != r1 {
				return fakeagent.Report{Outcome: fakeagent.Fail}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		mon := startMonitor("fr-")
		changeSpec("fr", func(s *proxyv1alpha1.GatewayConfigSpec) { s.NodePortAddresses = []string{"primary"} })
		r2 := revisionOf("fr")
		Eventually(func(g Gomega) {
			gc := getGC("fr")
			d := condition(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded)
			g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(d.Reason).To(Equal(proxyv1alpha1.ReasonRolledBack))
			g.Expect(gc.Status.CurrentRevision).To(Equal(r1))
			g.Expect(gc.Status.ReadyNodes).To(BeEquivalentTo(len(nodes)))
			g.Expect(nodesAt(assignments("fr"), r1)).To(HaveLen(len(nodes)))
			g.Expect(gcStatus(gc)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
		mon.stop()
		Expect(mon.assignedSeq[r2]).To(Equal([]string{"fr-0"}), "only the canary may ever get the failing revision")
		rev := &appsv1.ControllerRevision{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: r2}, rev)).To(Succeed())
		Expect(rev.Annotations).To(HaveKey(controllers.RolloutFailedAnnotation))

		By("a fixed spec rolls out and clears Degraded")
		setBehavior("fr-", fakeagent.Always(fakeagent.Ready))
		changeSpec("fr", func(s *proxyv1alpha1.GatewayConfigSpec) { s.NodePortAddresses = []string{"10.0.0.0/8"} })
		r3 := revisionOf("fr")
		rolledOut("fr", r3, len(nodes))
		Expect(condition(getGC("fr").Status.Conditions, proxyv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
	})

	It("holds a failed rollout where it stopped without autoRollback", func() {
		nodes := makeNodes("fh", 3, map[string]string{"fh": "true"})
		setBehavior("fh-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("fh", "fh", &proxyv1alpha1.RolloutSpec{AutoRollback: boolp(false)}))).To(Succeed())
		r1 := revisionOf("fh")
		rolledOut("fh", r1, len(nodes))
		setBehavior("fh-", func(_, rev string) fakeagent.Report {
			if rev != r1 {
				return fakeagent.Report{Outcome: fakeagent.Fail}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		changeSpec("fh", func(s *proxyv1alpha1.GatewayConfigSpec) { s.SyncPeriod = &metav1.Duration{Duration: time.Minute} })
		r2 := revisionOf("fh")
		Eventually(func(g Gomega) {
			gc := getGC("fh")
			d := condition(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded)
			g.Expect(d.Reason).To(Equal(proxyv1alpha1.ReasonRolloutFailed))
			g.Expect(gc.Status.FailedNodeNames).To(Equal([]string{"fh-0"}))
			g.Expect(gcStatus(gc)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
		Expect(assignments("fh")).To(Equal(map[string]string{"fh-0": r2, "fh-1": r1, "fh-2": r1}))
		Expect(getGC("fh").Status.CurrentRevision).To(Equal(r1))
	})

	It("takes the canaries from the canary node selector", func() {
		makeNodes("cs", 3, map[string]string{"cs": "true"})
		Expect(k8sClient.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cs-z", Labels: map[string]string{"cs": "true", "canary": "yes"}}})).To(Succeed())
		// Nothing reports: the rollout stays at its canary.
		setBehavior("cs-", fakeagent.Always(fakeagent.Hold))
		Expect(k8sClient.Create(ctx, newGC("cs", "cs", &proxyv1alpha1.RolloutSpec{
			MaxUnavailable: intOrStr(intstr.FromInt32(5)),
			Canary:         &proxyv1alpha1.CanarySpec{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"canary": "yes"}}},
		}))).To(Succeed())
		r1 := revisionOf("cs")
		Eventually(func() int32 { return getGC("cs").Status.UpdatedNodes }, timeout, poll).Should(BeEquivalentTo(1))
		Expect(assignments("cs")).To(Equal(map[string]string{"cs-z": r1}))
		By("once the canary is Ready, the others follow")
		setBehavior("cs-", fakeagent.Always(fakeagent.Ready))
		rolledOut("cs", r1, 4)
	})

	It("fails a canary that stays silent past the progress deadline, and rolls back", func() {
		nodes := makeNodes("pd", 2, map[string]string{"pd": "true"})
		setBehavior("pd-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("pd", "pd", &proxyv1alpha1.RolloutSpec{ProgressDeadlineSeconds: i32(10)}))).To(Succeed())
		r1 := revisionOf("pd")
		rolledOut("pd", r1, len(nodes))
		// Every revision but r1 is held: the canary never reports.
		setBehavior("pd-", (&releasable{good: r1, released: map[string]bool{}}).behavior())
		changeSpec("pd", func(s *proxyv1alpha1.GatewayConfigSpec) { s.SyncPeriod = &metav1.Duration{Duration: 50 * time.Second} })
		r2 := revisionOf("pd")
		Eventually(func() []string { return nodesAt(assignments("pd"), r2) }, timeout, poll).Should(Equal([]string{"pd-0"}))
		Eventually(func(g Gomega) {
			gc := getGC("pd")
			g.Expect(condition(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded).Reason).To(Equal(proxyv1alpha1.ReasonRolledBack))
			g.Expect(nodesAt(assignments("pd"), r1)).To(HaveLen(len(nodes)))
		}, timeout, poll).Should(Succeed())
	})

	It("holds a revision under the Manual strategy until it is approved", func() {
		nodes := makeNodes("ap", 3, map[string]string{"ap": "true"})
		setBehavior("ap-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("ap", "ap", &proxyv1alpha1.RolloutSpec{
			Strategy: proxyv1alpha1.RolloutManual, MaxUnavailable: intOrStr(intstr.FromInt32(3)),
		}))).To(Succeed())
		r1 := revisionOf("ap")
		Eventually(func(g Gomega) {
			gc := getGC("ap")
			g.Expect(gc.Status.PendingRevision).To(Equal(r1))
			g.Expect(gc.Status.ObservedGeneration).To(Equal(gc.Generation))
			g.Expect(condition(gc.Status.Conditions, proxyv1alpha1.ConditionReady).Reason).To(Equal(proxyv1alpha1.ReasonNoApprovedRevision))
		}, timeout, poll).Should(Succeed())
		Expect(assignments("ap")).To(BeEmpty())

		By("approving the first revision")
		changeSpec("ap", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r1 })
		rolledOut("ap", r1, len(nodes))
		Expect(getGC("ap").Status.PendingRevision).To(BeEmpty())

		By("changing the config: the new revision waits")
		changeSpec("ap", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Mode = proxyv1alpha1.BackendModeIPTables })
		r2 := revisionOf("ap")
		Eventually(func(g Gomega) {
			gc := getGC("ap")
			g.Expect(gc.Status.PendingRevision).To(Equal(r2))
			g.Expect(gc.Status.ObservedGeneration).To(Equal(gc.Generation))
			g.Expect(condition(gc.Status.Conditions, proxyv1alpha1.ConditionReady).Reason).To(Equal(proxyv1alpha1.ReasonAwaitingApproval))
		}, timeout, poll).Should(Succeed())
		Expect(nodesAt(assignments("ap"), r1)).To(HaveLen(len(nodes)))
		Expect(getGC("ap").Status.UpdatedRevision).To(Equal(r1))

		By("approving it rolls it out")
		changeSpec("ap", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r2 })
		rolledOut("ap", r2, len(nodes))
		Expect(getGC("ap").Status.PendingRevision).To(BeEmpty())

		By("a new agent image waits for approval too: the DaemonSet runs the approved revision's")
		image := func() string {
			ds := &appsv1.DaemonSet{}
			ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-ap"}, ds)).To(Succeed())
			return ds.Spec.Template.Spec.Containers[0].Image
		}
		Expect(image()).To(Equal("example.org/synterix:test"))
		changeSpec("ap", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Agent.Image = "example.org/synterix:v2" })
		r3 := revisionOf("ap")
		Eventually(func() string { return getGC("ap").Status.PendingRevision }, timeout, poll).Should(Equal(r3))
		Expect(image()).To(Equal("example.org/synterix:test"))
		changeSpec("ap", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r3 })
		Eventually(image, timeout, poll).Should(Equal("example.org/synterix:v2"))
		rolledOut("ap", r3, len(nodes))
	})
})

var _ = Describe("GatewayConfig node selection and lifecycle", func() {
	It("reports a spec it cannot act on as Degraded, for that generation", func() {
		gc := newGC("bad", "bad", nil)
		gc.Spec.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Near"}}
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		Eventually(func(g Gomega) {
			gc := getGC("bad")
			d := condition(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded)
			g.Expect(d.Reason).To(Equal(proxyv1alpha1.ReasonInvalidSpec))
			g.Expect(d.Message).To(ContainSubstring("Near"))
			g.Expect(gcStatus(gc)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
		By("fixing it")
		changeSpec("bad", func(s *proxyv1alpha1.GatewayConfigSpec) { s.NodeSelector.MatchExpressions = nil })
		Eventually(func(g Gomega) {
			g.Expect(condition(getGC("bad").Status.Conditions, proxyv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
		}, timeout, poll).Should(Succeed())
		Expect(k8sClient.Delete(ctx, getGC("bad"))).To(Succeed())
	})

	It("gives a node selected by two GatewayConfigs to the older one", func() {
		makeNodes("cf", 3, map[string]string{"cf": "true"})
		setBehavior("cf-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("cf-old", "cf", nil))).To(Succeed())
		rolledOut("cf-old", revisionOf("cf-old"), 3)
		// Creation timestamps have a resolution of one second.
		time.Sleep(1100 * time.Millisecond)
		young := newGC("cf-young", "cf", nil)
		young.Spec.Mode = proxyv1alpha1.BackendModeIPVS
		Expect(k8sClient.Create(ctx, young)).To(Succeed())
		Eventually(func(g Gomega) {
			gc := getGC("cf-young")
			d := condition(gc.Status.Conditions, proxyv1alpha1.ConditionDegraded)
			g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(d.Reason).To(Equal(proxyv1alpha1.ReasonNodeConflict))
			g.Expect(d.Message).To(ContainSubstring("cf-old"))
			g.Expect(d.Message).To(ContainSubstring("cf-0, cf-1, cf-2"))
			g.Expect(gc.Status.DesiredNodes).To(BeZero())
			g.Expect(gcStatus(gc)).To(Equal("Failed"))
		}, timeout, poll).Should(Succeed())
		Expect(assignments("cf-old")).To(HaveLen(3))
		Expect(assignments("cf-young")).To(BeEmpty())
		ds := &appsv1.DaemonSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-cf-young"}, ds)).To(Succeed())
		term := ds.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0]
		Expect(term.MatchFields).To(HaveLen(3))
		Expect(term.MatchFields[0].Operator).To(Equal(corev1.NodeSelectorOpNotIn))
		Expect(condition(getGC("cf-old").Status.Conditions, proxyv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))

		By("deleting the older one hands the nodes over")
		Expect(k8sClient.Delete(ctx, getGC("cf-old"))).To(Succeed())
		rolledOut("cf-young", revisionOf("cf-young"), 3)
	})

	It("creates the agent's DaemonSet, running as the shipped ServiceAccount, owns ProxyNodes by Node, and cleans up", func() {
		makeNodes("lc", 2, map[string]string{"lc": "true"})
		setBehavior("lc-", fakeagent.Always(fakeagent.Ready))
		gc := newGC("lc", "lc", nil)
		gc.Spec.Agent = &proxyv1alpha1.AgentSpec{LogVerbosity: i32(4)}
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		rolledOut("lc", revisionOf("lc"), 2)

		ds := &appsv1.DaemonSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-lc"}, ds)).To(Succeed())
		pod := ds.Spec.Template.Spec
		Expect(pod.HostNetwork).To(BeTrue())
		Expect(pod.ServiceAccountName).To(Equal(controllers.AgentServiceAccount))
		c := pod.Containers[0]
		Expect(c.Image).To(Equal("example.org/synterix:test"))
		Expect(c.Command).To(Equal([]string{"/agent"}))
		Expect(c.Args).To(ContainElements("--node-name=$(NODE_NAME)", "-v=4", "--metrics-secure"))
		Expect(c.SecurityContext.Capabilities.Add).To(ConsistOf(corev1.Capability("NET_ADMIN"), corev1.Capability("NET_RAW")))
		Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		// The rollout replaces agent pods; the DaemonSet controller never does.
		Expect(ds.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteDaemonSetStrategyType))
		Expect(metav1.IsControlledBy(ds, getGC("lc"))).To(BeTrue())

		By("the ProxyNode is owned by its Node")
		node := &corev1.Node{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "lc-0"}, node)).To(Succeed())
		pn := &proxyv1alpha1.ProxyNode{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "lc-0"}, pn)).To(Succeed())
		Expect(pn.OwnerReferences).To(ConsistOf(metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: "lc-0", UID: node.UID}))

		By("deleting a Node: envtest has no garbage collector, so the operator's ProxyNode reconciler removes the ProxyNode itself")
		Expect(k8sClient.Delete(ctx, node)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: "lc-0"}, &proxyv1alpha1.ProxyNode{}))
		}, timeout, poll).Should(BeTrue())
		Eventually(func() int32 { return getGC("lc").Status.DesiredNodes }, timeout, poll).Should(BeEquivalentTo(1))

		By("deleting the GatewayConfig removes its DaemonSet and ProxyNodes, then the GatewayConfig")
		Expect(k8sClient.Delete(ctx, getGC("lc"))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: "lc"}, &proxyv1alpha1.GatewayConfig{}))
		}, timeout, poll).Should(BeTrue())
		Expect(assignments("lc")).To(BeEmpty())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-lc"}, &appsv1.DaemonSet{}))).To(BeTrue())
		Expect(revisionsOf("lc")).To(BeEmpty())
	})

	It("never writes the spec a human owns, and writes status only when it changes", func() {
		makeNodes("go", 2, map[string]string{"go": "true"})
		setBehavior("go-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("go", "go", nil))).To(Succeed())
		rolledOut("go", revisionOf("go"), 2)
		gc := getGC("go")
		for _, mf := range gc.ManagedFields {
			if mf.Manager == "synterix-operator" {
				Expect(mf.Subresource == "status" || !containsSpec(mf)).To(BeTrue(), "the operator manages spec fields: %s", mf.FieldsV1.String())
			}
		}
		rv := gc.ResourceVersion
		ds := &appsv1.DaemonSet{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-go"}, ds)).To(Succeed())
		dsRV := ds.ResourceVersion

		By("a node report that changes nothing: the GatewayConfig is reconciled and not written, nor its DaemonSet")
		// lastSync.time has a resolution of one second: let it change.
		time.Sleep(1100 * time.Millisecond)
		before := reconcileCount("gatewayconfig")
		pn := &proxyv1alpha1.ProxyNode{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "go-0"}, pn)).To(Succeed())
		Expect(fakeagent.Write(ctx, k8sClient, pn, fakeagent.Report{Outcome: fakeagent.Ready, PodTemplateHash: pn.Status.PodTemplateHash})).To(Succeed())
		Eventually(func() float64 { return reconcileCount("gatewayconfig") }, timeout, poll).Should(BeNumerically(">", before))
		Expect(getGC("go").ResourceVersion).To(Equal(rv))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-go"}, ds)).To(Succeed())
		Expect(ds.ResourceVersion).To(Equal(dsRV), "the agent DaemonSet was written again though nothing changed")

		By("a node report that changes the counts is written")
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "go-0"}, pn)).To(Succeed())
		setBehavior("go-", func(string, string) fakeagent.Report {
			return fakeagent.Report{Outcome: fakeagent.Ready, Backend: proxyv1alpha1.BackendIPVS}
		})
		Eventually(func() []proxyv1alpha1.BackendCount { return getGC("go").Status.Backends }, timeout, poll).Should(
			Equal([]proxyv1alpha1.BackendCount{{Backend: proxyv1alpha1.BackendIPVS, Nodes: 2}}))
	})
})

// reconcileCount reads controller-runtime's reconcile counter of a controller
// from the in-process metrics registry.
func reconcileCount(controller string) float64 {
	mfs, err := ctrlmetrics.Registry.Gather()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func containsSpec(mf metav1.ManagedFieldsEntry) bool {
	return mf.FieldsV1 != nil && len(mf.FieldsV1.Raw) > 0 && contains(string(mf.FieldsV1.Raw), `"f:spec"`)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
