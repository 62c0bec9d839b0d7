package controllers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
)

// daemonSetStandIn is a FAKE DaemonSet controller, which envtest lacks: for
// the nodes of one agent DaemonSet it keeps one agent pod per node, made
// from the DaemonSet's template as it is when the pod is made, and makes a
// new one whenever the operator deletes one (unless the node is held). It
// records the nodes whose pod was deleted, in order. Its pods are unbound
// (the node is named by node affinity, as the DaemonSet controller does
// before the scheduler binds), so that the API server deletes them at once,
// with no kubelet to confirm. After each change it has the simulated agent
// of the node report again, so that the agent reports the pod template of
// the pod now on its node. Everything else is the real API server and the
// real operator.
type daemonSetStandIn struct {
	ds string
	w  watch.Interface

	mu      sync.Mutex
	held    map[string]bool
	deleted []string
	done    chan struct{}
}

func startStandIn(gc string, nodes []string) *daemonSetStandIn {
	s := &daemonSetStandIn{ds: "synterix-agent-" + gc, held: map[string]bool{}, done: make(chan struct{})}
	// The agents' ServiceAccount, which config/agent ships.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: controllers.AgentServiceAccount}}
	if err := k8sClient.Create(ctx, sa); !apierrors.IsAlreadyExists(err) {
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
	}
	for _, n := range nodes {
		s.createPod(n)
	}
	w, err := k8sClient.Watch(ctx, &corev1.PodList{}, client.InNamespace(operatorNamespace),
		client.MatchingLabels{"app.kubernetes.io/instance": gc})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	s.w = w
	go func() {
		defer GinkgoRecover()
		defer close(s.done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type != watch.Deleted {
				continue
			}
			node := fakeagent.PodNode(p)
			s.mu.Lock()
			s.deleted = append(s.deleted, node)
			held := s.held[node]
			s.mu.Unlock()
			if !held {
				s.createPod(node)
			}
			fleet.Sync(node)
		}
	}()
	for _, n := range nodes {
		fleet.Sync(n)
	}
	return s
}

// createPod makes the agent pod of a node from the DaemonSet's template.
func (s *daemonSetStandIn) createPod(node string) {
	ds := &appsv1.DaemonSet{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: s.ds}, ds)).To(Succeed())
	t := ds.Spec.Template.DeepCopy()
	t.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}}}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: s.ds + "-", Namespace: operatorNamespace, Labels: t.Labels},
		Spec:       t.Spec,
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
}

// hold stops (or resumes, when false) re-creating the pod of a node; a
// resumed node gets its pod now if it has none.
func (s *daemonSetStandIn) hold(node string, held bool) {
	s.mu.Lock()
	s.held[node] = held
	s.mu.Unlock()
	if held {
		return
	}
	var pods corev1.PodList
	Expect(k8sClient.List(ctx, &pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"app.kubernetes.io/name": "synterix-agent"})).To(Succeed())
	for i := range pods.Items {
		if fakeagent.PodNode(&pods.Items[i]) == node {
			return
		}
	}
	s.createPod(node)
	fleet.Sync(node)
}

func (s *daemonSetStandIn) deletions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deleted)
}

func (s *daemonSetStandIn) stop() {
	s.w.Stop()
	<-s.done
}

// podTemplateOf returns the pod template hash a revision is labelled with;
// "" while the revision does not exist.
func podTemplateOf(rev string) string {
	cr := &appsv1.ControllerRevision{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: rev}, cr); apierrors.IsNotFound(err) {
		return ""
	} else {
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
	}
	return cr.Labels[proxyv1alpha1.PodTemplateHashLabel]
}

// reportTemplates waits until the agents of nodes report pod template hash.
func reportTemplates(hash string, nodes ...string) {
	EventuallyWithOffset(1, func(g Gomega) {
		for _, n := range nodes {
			pn := &proxyv1alpha1.ProxyNode{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: n}, pn)).To(Succeed())
			g.Expect(pn.Status.PodTemplateHash).To(Equal(hash), "node %s", n)
		}
	}, timeout, poll).Should(Succeed())
}

// agentDaemonSet returns a GatewayConfig's agent DaemonSet.
func agentDaemonSet(gc string) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "synterix-agent-" + gc}, ds)).To(Succeed())
	return ds
}

// poke changes an annotation of a GatewayConfig, so that the operator
// reconciles it again.
func poke(name string) {
	EventuallyWithOffset(1, func() error {
		gc := getGC(name)
		if gc.Annotations == nil {
			gc.Annotations = map[string]string{}
		}
		gc.Annotations["test/poke"] = time.Now().Format(time.RFC3339Nano)
		return k8sClient.Update(ctx, gc)
	}, timeout, poll).Should(Succeed())
}

var _ = Describe("Agent upgrades", func() {
	It("rolls a new agent image of spec.agent out node by node, replacing each agent pod in the rollout's order", func() {
		nodes := makeNodes("ua", 3, map[string]string{"ua": "true"})
		setBehavior("ua-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("ua", "ua", &proxyv1alpha1.RolloutSpec{
			MaxUnavailable: intOrStr(intstr.FromInt32(1)), Canary: &proxyv1alpha1.CanarySpec{Count: i32(1)},
		}))).To(Succeed())
		r1 := revisionOf("ua")
		rolledOut("ua", r1, 3)
		ds := agentDaemonSet("ua")
		Expect(ds.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteDaemonSetStrategyType))
		h1 := podTemplateOf(r1)
		Expect(h1).NotTo(BeEmpty())
		Expect(ds.Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel]).To(Equal(h1))
		Expect(ds.Spec.Template.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: proxyv1alpha1.PodTemplateHashEnv, Value: h1}))
		pods := startStandIn("ua", nodes)
		defer pods.stop()
		reportTemplates(h1, nodes...)

		By("a new image in spec.agent is a new revision with another pod template")
		pods.hold("ua-1", true)
		changeSpec("ua", func(s *proxyv1alpha1.GatewayConfigSpec) {
			s.Agent = &proxyv1alpha1.AgentSpec{Image: "example.org/synterix:v2"}
		})
		r2 := revisionOf("ua")
		Expect(r2).NotTo(Equal(r1))
		Eventually(func() string { return podTemplateOf(r2) }, timeout, poll).ShouldNot(Or(BeEmpty(), Equal(h1)))
		h2 := podTemplateOf(r2)
		Eventually(func() string { return agentDaemonSet("ua").Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel] }, timeout, poll).Should(Equal(h2))
		Expect(agentDaemonSet("ua").Spec.Template.Spec.Containers[0].Image).To(Equal("example.org/synterix:v2"))

		By("the canary's pod is replaced first; the next node's once the canary's agent runs the new pod template")
		reportTemplates(h2, "ua-0")
		Eventually(pods.deletions, timeout, poll).Should(Equal([]string{"ua-0", "ua-1"}))

		By("a node whose agent reports Ready at the new revision from the old pod template does not count as updated")
		Eventually(func(g Gomega) {
			pn := &proxyv1alpha1.ProxyNode{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "ua-1"}, pn)).To(Succeed())
			g.Expect(pn.Spec.Revision).To(Equal(r2))
			g.Expect(controllers.ProxyNodeHealth(pn)).To(Equal(controllers.NodeReady))
			g.Expect(pn.Status.PodTemplateHash).To(Equal(h1))
		}, timeout, poll).Should(Succeed())
		poke("ua")
		Consistently(func(g Gomega) {
			g.Expect(assignments("ua")["ua-2"]).To(Equal(r1))
			g.Expect(pods.deletions()).To(Equal([]string{"ua-0", "ua-1"}))
			g.Expect(getGC("ua").Status.ReadyNodes).To(BeNumerically("<", 3))
		}, 2*time.Second, poll).Should(Succeed())
		Expect(condition(getGC("ua").Status.Conditions, proxyv1alpha1.ConditionProgressing).Status).To(Equal(metav1.ConditionTrue))

		By("once the DaemonSet controller replaces it, the rollout moves on")
		pods.hold("ua-1", false)
		rolledOut("ua", r2, 3)
		Expect(pods.deletions()).To(Equal([]string{"ua-0", "ua-1", "ua-2"}))
		reportTemplates(h2, nodes...)
	})

	It("rolls a failed agent image back batch by batch, replacing at most maxUnavailable agent pods at once", func() {
		nodes := makeNodes("ub", 3, map[string]string{"ub": "true"})
		var failNow atomic.Bool
		var first atomic.Value // the first revision
		// ub-1's agent says nothing at a revision other than the first
		// until failNow, then fails there.
		behavior := func(node, rev string) fakeagent.Report {
			if r1, _ := first.Load().(string); node == "ub-1" && r1 != "" && rev != r1 {
				if failNow.Load() {
					return fakeagent.Report{Outcome: fakeagent.Fail}
				}
				return fakeagent.Report{Outcome: fakeagent.Hold}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		}
		setBehavior("ub-", behavior)
		Expect(k8sClient.Create(ctx, newGC("ub", "ub", &proxyv1alpha1.RolloutSpec{MaxUnavailable: intOrStr(intstr.FromInt32(1))}))).To(Succeed())
		r1 := revisionOf("ub")
		first.Store(r1)
		rolledOut("ub", r1, 3)
		pods := startStandIn("ub", nodes)
		defer pods.stop()
		h1 := podTemplateOf(r1)
		reportTemplates(h1, nodes...)

		By("a new image reaches the canary, then ub-1, whose new agent fails")
		changeSpec("ub", func(s *proxyv1alpha1.GatewayConfigSpec) {
			s.Agent = &proxyv1alpha1.AgentSpec{Image: "example.org/synterix:v2"}
		})
		Eventually(pods.deletions, timeout, poll).Should(Equal([]string{"ub-0", "ub-1"}))
		pods.hold("ub-0", true)
		failNow.Store(true)
		fleet.Sync("ub-1")

		By("the rollback replaces the new pods one node at a time")
		Eventually(func() string {
			return condition(getGC("ub").Status.Conditions, proxyv1alpha1.ConditionDegraded).Reason
		}, timeout, poll).Should(Equal(proxyv1alpha1.ReasonRolledBack))
		Eventually(pods.deletions, timeout, poll).Should(Equal([]string{"ub-0", "ub-1", "ub-0"}))
		Expect(agentDaemonSet("ub").Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel]).To(Equal(h1))
		poke("ub")
		Consistently(pods.deletions, 2*time.Second, poll).Should(Equal([]string{"ub-0", "ub-1", "ub-0"}))

		By("once ub-0 runs the old pod template again, ub-1's pod is replaced")
		pods.hold("ub-0", false)
		Eventually(pods.deletions, timeout, poll).Should(Equal([]string{"ub-0", "ub-1", "ub-0", "ub-1"}))
		reportTemplates(h1, nodes...)
		Eventually(func() int32 { return getGC("ub").Status.ReadyNodes }, timeout, poll).Should(BeEquivalentTo(3))
		Expect(getGC("ub").Status.CurrentRevision).To(Equal(r1))
	})

	It("makes a new revision when an operator upgrade changes the default agent image, and holds it under Manual until approved", func() {
		nodes := makeNodes("um", 2, map[string]string{"um": "true"})
		setBehavior("um-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("um", "um", &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual}))).To(Succeed())
		r1 := revisionOf("um")
		changeSpec("um", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r1 })
		rolledOut("um", r1, 2)
		pods := startStandIn("um", nodes)
		defer pods.stop()
		h1 := podTemplateOf(r1)
		reportTemplates(h1, nodes...)

		By("upgrading the operator to a release with another default agent image")
		DeferCleanup(func() { restartOperator(defaultAgent) })
		upgraded := defaultAgent
		upgraded.DefaultImage = "example.org/synterix:v2"
		restartOperator(upgraded)
		r2 := revisionOf("um")
		Expect(r2).NotTo(Equal(r1))
		Eventually(func(g Gomega) {
			gc := getGC("um")
			g.Expect(gc.Status.PendingRevision).To(Equal(r2))
			g.Expect(condition(gc.Status.Conditions, proxyv1alpha1.ConditionReady).Reason).To(Equal(proxyv1alpha1.ReasonAwaitingApproval))
		}, timeout, poll).Should(Succeed())
		h2 := podTemplateOf(r2)
		Expect(h2).NotTo(Equal(h1))

		By("nothing is replaced until the revision is approved")
		poke("um")
		Consistently(func(g Gomega) {
			g.Expect(pods.deletions()).To(BeEmpty())
			g.Expect(assignments("um")).To(Equal(map[string]string{"um-0": r1, "um-1": r1}))
			ds := agentDaemonSet("um")
			g.Expect(ds.Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel]).To(Equal(h1))
			g.Expect(ds.Spec.Template.Spec.Containers[0].Image).To(Equal("example.org/synterix:test"))
		}, 2*time.Second, poll).Should(Succeed())

		By("approved, it rolls out node by node")
		changeSpec("um", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r2 })
		rolledOut("um", r2, 2)
		Expect(pods.deletions()).To(Equal([]string{"um-0", "um-1"}))
		Expect(agentDaemonSet("um").Spec.Template.Spec.Containers[0].Image).To(Equal("example.org/synterix:v2"))
		reportTemplates(h2, nodes...)
	})

	It("adopts the pod template of a revision an earlier release wrote, restarting no agent", func() {
		stopOperator()
		DeferCleanup(func() { restartOperator(defaultAgent) })
		nodes := makeNodes("ul", 2, map[string]string{"ul": "true"})
		setBehavior("ul-", fakeagent.Always(fakeagent.Ready))
		gc := newGC("ul", "ul", &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual})
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		legacy := writeLegacyRelease(gc, nodes)
		pods := startStandIn("ul", nodes)
		defer pods.stop()
		reportTemplates("", nodes...)
		Eventually(func(g Gomega) {
			for _, n := range nodes {
				pn := &proxyv1alpha1.ProxyNode{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: n}, pn)).To(Succeed())
				g.Expect(controllers.ProxyNodeHealth(pn)).To(Equal(controllers.NodeReady))
			}
		}, timeout, poll).Should(Succeed())

		By("the upgraded operator records the running pod template on the old revision, and changes no pod")
		restartOperator(defaultAgent)
		Eventually(func(g Gomega) {
			cr := &appsv1.ControllerRevision{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: legacy}, cr)).To(Succeed())
			g.Expect(cr.Annotations).To(HaveKey(proxyv1alpha1.AdoptedPodTemplateAnnotation))
			g.Expect(cr.Labels[proxyv1alpha1.PodTemplateHashLabel]).NotTo(BeEmpty())
			ds := agentDaemonSet("ul")
			g.Expect(ds.Spec.UpdateStrategy.Type).To(Equal(appsv1.OnDeleteDaemonSetStrategyType))
			g.Expect(ds.Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel]).To(Equal(cr.Labels[proxyv1alpha1.PodTemplateHashLabel]))
		}, timeout, poll).Should(Succeed())
		r2 := revisionOf("ul")
		Expect(r2).NotTo(Equal(legacy))
		Eventually(func(g Gomega) {
			st := getGC("ul").Status
			g.Expect(st.CurrentRevision).To(Equal(legacy))
			g.Expect(st.PendingRevision).To(Equal(r2))
			g.Expect(st.ReadyNodes).To(BeEquivalentTo(2))
		}, timeout, poll).Should(Succeed())
		poke("ul")
		Consistently(func(g Gomega) {
			g.Expect(pods.deletions()).To(BeEmpty())
			g.Expect(assignments("ul")).To(Equal(map[string]string{"ul-0": legacy, "ul-1": legacy}))
		}, 2*time.Second, poll).Should(Succeed())

		By("the new release's revision, approved, replaces the agents node by node")
		changeSpec("ul", func(s *proxyv1alpha1.GatewayConfigSpec) { s.Rollout.ApprovedRevision = r2 })
		rolledOut("ul", r2, 2)
		Expect(pods.deletions()).To(Equal([]string{"ul-0", "ul-1"}))
		reportTemplates(podTemplateOf(r2), nodes...)
	})
})

// writeLegacyRelease writes what an operator release before revisions held
// an agent pod template left for gc: its revision (the spec only, named as
// that release named it), its agent DaemonSet (RollingUpdate, no pod
// template hash), the ProxyNodes assigned the revision, and a status that
// says it rolled out. It returns the revision's name.
func writeLegacyRelease(gc *proxyv1alpha1.GatewayConfig, nodes []string) string {
	data, err := proxyv1alpha1.EncodeRevision(controllers.RevisionSpec(&gc.Spec))
	Expect(err).NotTo(HaveOccurred())
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:5])
	rev := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: gc.Name + "-" + hash, Namespace: operatorNamespace, Labels: map[string]string{
			proxyv1alpha1.RevisionGatewayConfigLabel: gc.Name, proxyv1alpha1.RevisionHashLabel: hash}},
		Data: runtime.RawExtension{Raw: data}, Revision: 1,
	}
	Expect(controllerutil.SetControllerReference(gc, rev, k8sClient.Scheme())).To(Succeed())
	Expect(k8sClient.Create(ctx, rev)).To(Succeed())

	labels := map[string]string{"app.kubernetes.io/name": "synterix-agent", "app.kubernetes.io/instance": gc.Name,
		"app.kubernetes.io/managed-by": "synterix-operator", proxyv1alpha1.RevisionGatewayConfigLabel: gc.Name}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "synterix-agent-" + gc.Name, Namespace: operatorNamespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "synterix-agent", "app.kubernetes.io/instance": gc.Name}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1)), MaxSurge: ptr.To(intstr.FromInt32(0))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork: true, ServiceAccountName: controllers.AgentServiceAccount,
					Containers: []corev1.Container{{Name: "agent", Image: "example.org/synterix:test", Command: []string{"/agent"},
						Args: []string{"--node-name=$(NODE_NAME)"}}},
				},
			},
		},
	}
	Expect(controllerutil.SetControllerReference(gc, ds, k8sClient.Scheme())).To(Succeed())
	Expect(k8sClient.Create(ctx, ds)).To(Succeed())

	for _, n := range nodes {
		node := &corev1.Node{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: n}, node)).To(Succeed())
		pn := &proxyv1alpha1.ProxyNode{
			ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{proxyv1alpha1.RevisionGatewayConfigLabel: gc.Name},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n, UID: node.UID}}},
			Spec: proxyv1alpha1.ProxyNodeSpec{GatewayConfig: gc.Name, Revision: rev.Name},
		}
		Expect(k8sClient.Create(ctx, pn)).To(Succeed())
	}
	Eventually(func() error {
		cur := getGC(gc.Name)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Status.CurrentRevision, cur.Status.UpdatedRevision = rev.Name, rev.Name
		cur.Status.PendingRevision = ""
		return k8sClient.Status().Patch(ctx, cur, patch)
	}, timeout, poll).Should(Succeed())
	return rev.Name
}
