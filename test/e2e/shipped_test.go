package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// Specs that need real pods, kubelet or containerd: the shipped tier only.
var _ = Describe("As shipped", Label(tierShipped), func() {
	It("serves a ClusterIP to a hostNetwork pod", func() {
		ns := newNamespace()
		pods := startPods(ns, "hn", nodes()[1], nodes()[2])
		svc := createService(newService(ns, "hn", tcp("http", 80, 8080)))
		setBackends(svc, pods, 1)
		n := nodes()[0]
		hp, err := sc.RunPods(background, ns, "hostnet", []*kubenode.Node{sc.Node(n.Name)},
			shipped.PodOptions{HostNetwork: true, HTTPPort: 19090})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(sc.DeletePod(background, hp[0])).To(Succeed()) })
		Expect(inode(hp[0].NS.Path())).To(Equal(inode(n.NS.Path())), "the hostNetwork pod runs in its node's network namespace")
		expectReachesAll(hp[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
	})

	It("says which permission an agent pod lacks, in its ProxyNode status and an Event, and keeps running", func() {
		n := nodes()[2]
		By("a config that asks for localhost NodePorts, which need net.ipv4.conf.all.route_localnet")
		patchGC(`{"spec":{"iptables":{"localhostNodePorts":true}}}`)
		DeferCleanup(func() {
			patchGC(`{"spec":{"iptables":null}}`)
			waitRolledOut()
		})
		waitRolledOut()
		ns := newNamespace()
		nodePortService(ns, "perm", startPods(ns, "perm", nodes()[0]))

		By("the agent DaemonSet leaves " + n.Name)
		old, err := sc.AgentPod(background, n.Name)
		Expect(err).NotTo(HaveOccurred())
		ds := agentDaemonSet()
		excludeNode(ds, n.Name)
		// Gone, not only terminating: its host ports are the new pod's.
		Eventually(func() error { return t.API().Get(background, client.ObjectKeyFromObject(old), &corev1.Pod{}) }).
			WithTimeout(2*time.Minute).WithPolling(poll).Should(MatchError(ContainSubstring("not found")), "the agent pod of %s is still there", n.Name)
		By("route_localnet back to the kernel's default, as after a reboot")
		_, err = n.NS.Exec("sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=0")
		Expect(err).NotTo(HaveOccurred())

		By("the operator's agent pod without the host's /proc/sys/net (and --sysctl-root)")
		p := withoutSysctls(ds, n.Name)
		Expect(t.API().Create(background, p)).To(Succeed())
		DeferCleanup(func() {
			// Gone before the DaemonSet comes back: never two agents on a node.
			Expect(client.IgnoreNotFound(t.API().Delete(background, p))).To(Succeed())
			Eventually(func() error { return t.API().Get(background, client.ObjectKeyFromObject(p), &corev1.Pod{}) }).
				WithTimeout(2 * time.Minute).WithPolling(poll).Should(MatchError(ContainSubstring("not found")))
		})
		var msg string
		Eventually(func(g Gomega) {
			pn := proxyNode(n.Name)
			c := meta.FindStatusCondition(pn.Status.Conditions, proxyv1alpha1.ConditionDegraded)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%+v", c)
			g.Expect(c.Reason).To(Equal(proxyv1alpha1.ReasonSyncFailed))
			g.Expect(c.Message).To(And(ContainSubstring("route_localnet"), ContainSubstring("read-only"), ContainSubstring("/proc/sys/net")))
			msg = c.Message
		}).WithTimeout(2 * time.Minute).WithPolling(poll).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "ProxyNode %s Degraded: %s\n", n.Name, msg)
		Eventually(func() []string { return events(n.Name, proxyv1alpha1.ReasonSyncFailed) }).
			WithTimeout(time.Minute).WithPolling(poll).Should(ContainElement(ContainSubstring("route_localnet")))
		By("it keeps running, unready, and says why; it does not crash-loop")
		Consistently(func(g Gomega) {
			var cur corev1.Pod
			g.Expect(t.API().Get(background, client.ObjectKeyFromObject(p), &cur)).To(Succeed())
			g.Expect(cur.Status.Phase).To(Equal(corev1.PodRunning))
			g.Expect(cur.Status.ContainerStatuses).To(HaveLen(1))
			s := cur.Status.ContainerStatuses[0]
			g.Expect(s.RestartCount).To(BeZero())
			g.Expect(s.Ready).To(BeFalse())
		}).WithTimeout(10 * time.Second).WithPolling(time.Second).Should(Succeed())
		AddReportEntry("agent pod without /proc/sys/net", msg)
	})
})

// agentDaemonSet returns the agent DaemonSet of the suite's GatewayConfig.
func agentDaemonSet() *appsv1.DaemonSet {
	GinkgoHelper()
	var list appsv1.DaemonSetList
	Expect(t.API().List(background, &list, client.InNamespace(shipped.OperatorNamespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: gcName})).To(Succeed())
	Expect(list.Items).To(HaveLen(1))
	return &list.Items[0]
}

// excludeNode keeps the DaemonSet's pods off node, and puts its affinity
// back when the spec ends (the operator rewrites a DaemonSet only when its
// own wish for it changes).
func excludeNode(ds *appsv1.DaemonSet, node string) {
	GinkgoHelper()
	orig := ds.Spec.Template.Spec.Affinity.DeepCopy()
	patch := client.MergeFrom(ds.DeepCopy())
	ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{node}}},
		}}},
	}}
	Expect(t.API().Patch(background, ds, patch)).To(Succeed())
	DeferCleanup(func() {
		var cur appsv1.DaemonSet
		Expect(t.API().Get(background, client.ObjectKeyFromObject(ds), &cur)).To(Succeed())
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Template.Spec.Affinity = orig
		Expect(t.API().Patch(background, &cur, patch)).To(Succeed())
		_, err := sc.WaitAgentsReady(background, 3*time.Minute)
		Expect(err).NotTo(HaveOccurred())
	})
}

// withoutSysctls is the DaemonSet's agent pod for node, less the host's
// /proc/sys/net mount and the --sysctl-root flag that points at it.
func withoutSysctls(ds *appsv1.DaemonSet, node string) *corev1.Pod {
	spec := ds.Spec.Template.Spec.DeepCopy()
	spec.NodeName, spec.Affinity = node, nil
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "proc-sys-net" })
	ctr := &spec.Containers[0]
	ctr.VolumeMounts = slices.DeleteFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "proc-sys-net" })
	ctr.Args = slices.DeleteFunc(ctr.Args, func(a string) bool { return strings.HasPrefix(a, "--sysctl-root") })
	return &corev1.Pod{
		// Not the DaemonSet's labels: it would adopt the pod.
		ObjectMeta: metav1.ObjectMeta{Namespace: ds.Namespace, Name: "agent-without-sysctls", Labels: map[string]string{"e2e": "no-sysctls"}},
		Spec:       *spec,
	}
}

func proxyNode(name string) *proxyv1alpha1.ProxyNode {
	GinkgoHelper()
	var pn proxyv1alpha1.ProxyNode
	Expect(t.API().Get(background, client.ObjectKey{Name: name}, &pn)).To(Succeed())
	return &pn
}

// events returns the messages of the Events about ProxyNode name with
// reason.
func events(name, reason string) []string {
	GinkgoHelper()
	var list corev1.EventList
	Expect(t.API().List(background, &list)).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "ProxyNode" && e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

func inode(path string) uint64 {
	GinkgoHelper()
	var st syscall.Stat_t
	Expect(syscall.Stat(path, &st)).To(Succeed())
	return st.Ino
}
