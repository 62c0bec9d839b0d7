package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// nodePortService creates a NodePort Service on port 80 backed by pods.
func nodePortService(ns, name string, pods []*pod) *corev1.Service {
	GinkgoHelper()
	s := newService(ns, name, tcp("http", 80, 8080))
	s.Spec.Type = corev1.ServiceTypeNodePort
	svc := createService(s)
	setBackends(svc, pods, 1)
	return svc
}

var _ = Describe("Disruption", func() {
	It("keeps every connection when an agent process is SIGKILLed and restarted", Label(tierProcess), func() {
		ns := newNamespace()
		pods := startPods(ns, "dis", nodes()[1], nodes()[2])
		svc := nodePortService(ns, "dis", pods)
		n := nodes()[0]
		tr := startTraffic(svc, n, nil)
		agent := pc.Node(n.Name).Agent
		By("SIGKILL the agent of " + n.Name)
		Expect(agent.Kill()).To(Succeed())
		tr.phase("agent killed")
		time.Sleep(2 * time.Second)
		By("restart it and wait until it is ready")
		tr.phase("agent restarting")
		restart := time.Now()
		Expect(pc.StartAgent(background, pc.Node(n.Name))).To(Succeed())
		ready := time.Since(restart)
		tr.phase("agent ready again")
		// A change made now must be programmed by the new agent.
		all := append(pods, startPods(ns, "dis", nodes()[2])...)
		setBackends(svc, all, 1)
		tr.phase("endpoint added")
		expectReachesAll(n.NS, "tcp", addr(svc.Spec.ClusterIP, 80), all)
		tr.finish(fmt.Sprintf("agent SIGKILL (ready again %s after its restart)", ready.Round(time.Millisecond)))
	})

	It("keeps every connection while the agent pod of a node is deleted and replaced", Label(tierShipped), func() {
		ns := newNamespace()
		pods := startPods(ns, "dis", nodes()[1], nodes()[2])
		client := startPods(ns, "dis-client", nodes()[0])[0]
		svc := nodePortService(ns, "dis", pods)
		n := nodes()[0]
		old, err := sc.AgentPod(background, n.Name)
		Expect(err).NotTo(HaveOccurred())
		tr := startTraffic(svc, n, client)

		By("kubectl delete pod " + old.Name + " (the agent of " + n.Name + ")")
		tr.phase("agent pod deleted")
		deleted := time.Now()
		Expect(t.API().Delete(background, old)).To(Succeed())
		agents, err := sc.WaitAgentsReady(background, 3*time.Minute, old.Name)
		Expect(err).NotTo(HaveOccurred())
		ready := time.Since(deleted)
		tr.phase("new agent pod " + agents[n.Name].Name + " ready")
		By("a change made now is programmed by the new agent pod")
		all := append(pods, startPods(ns, "dis", nodes()[2])...)
		setBackends(svc, all, 1)
		tr.phase("endpoint added")
		expectReachesAll(n.NS, "tcp", addr(svc.Spec.ClusterIP, 80), all)
		tr.finish(fmt.Sprintf("agent pod deleted (replacement %s ready %s after the delete)", agents[n.Name].Name, ready.Round(time.Millisecond)))
	})

	It("keeps every connection while a new agent config rolls out and restarts every agent pod", Label(tierShipped), func() {
		ns := newNamespace()
		pods := startPods(ns, "roll", nodes()[1], nodes()[2])
		client := startPods(ns, "roll-client", nodes()[0])[0]
		svc := nodePortService(ns, "roll", pods)
		before := waitRolledOut().Status.CurrentRevision
		var old []string
		agents, err := sc.WaitAgentsReady(background, time.Minute)
		Expect(err).NotTo(HaveOccurred())
		for _, p := range agents {
			old = append(old, p.Name)
		}
		DeferCleanup(func() {
			patchGC(`{"spec":{"agent":{"logVerbosity":null}}}`)
			waitRolledOut()
		})
		tr := startTraffic(svc, nodes()[0], client)

		By("spec.agent.logVerbosity 2: a new revision whose pod template differs")
		tr.phase("rollout of the new config")
		start := time.Now()
		patchGC(`{"spec":{"agent":{"logVerbosity":2}}}`)
		_, err = sc.WaitAgentsReady(background, 5*time.Minute, old...)
		Expect(err).NotTo(HaveOccurred())
		gc := waitRolledOut()
		Expect(gc.Status.CurrentRevision).NotTo(Equal(before))
		took := time.Since(start)
		tr.phase("rolled out")
		expectReachesAll(nodes()[0].NS, "tcp", addr(svc.Spec.ClusterIP, 80), pods)
		tr.finish(fmt.Sprintf("config rollout to %d nodes with every agent pod replaced (%s -> %s in %s)",
			len(nodes()), before, gc.Status.CurrentRevision, took.Round(time.Millisecond)))
	})

	It("keeps Service traffic already programmed while containerd and kubelet are killed and restarted", Label(tierShipped), func() {
		ns := newNamespace()
		pods := startPods(ns, "crash", nodes()[1], nodes()[2])
		client := startPods(ns, "crash-client", nodes()[0])[0]
		svc := nodePortService(ns, "crash", pods)
		agents, err := sc.WaitAgentsReady(background, time.Minute)
		Expect(err).NotTo(HaveOccurred())
		tr := startTraffic(svc, nodes()[0], client)
		// node-1 holds the clients, node-2 a backend.
		for _, n := range nodes()[:2] {
			kn := sc.Node(n.Name)
			By("SIGKILL containerd of " + n.Name + ", restart it 3s later")
			tr.phase("containerd of " + n.Name + " killed")
			Expect(kn.KillContainerd()).To(Succeed())
			time.Sleep(3 * time.Second)
			Expect(kn.RestartContainerd(background)).To(Succeed())
			tr.phase("containerd of " + n.Name + " back")
			By("SIGKILL kubelet of " + n.Name + ", restart it 3s later")
			tr.phase("kubelet of " + n.Name + " killed")
			Expect(kn.KillKubelet()).To(Succeed())
			time.Sleep(3 * time.Second)
			Expect(kn.RestartKubelet()).To(Succeed())
			tr.phase("kubelet of " + n.Name + " back")
		}
		Expect(sc.WaitNodesReady(background, 3*time.Minute)).To(Succeed())
		tr.phase("nodes Ready")
		time.Sleep(3 * time.Second)
		tr.finish("containerd and kubelet of node-1 and node-2 killed and restarted")
		for n, p := range agents {
			now, err := sc.AgentPod(background, n)
			Expect(err).NotTo(HaveOccurred())
			Expect(now.UID).To(Equal(p.UID), "the agent pod of %s was replaced", n)
		}
	})

	It("brings a rebooted node back on its own", Label(tierShipped), func() {
		ns := newNamespace()
		n := nodes()[2]
		pods := startPods(ns, "boot", nodes()[0], nodes()[1], n)
		svc := nodePortService(ns, "boot", pods)
		vip, nodePort := addr(svc.Spec.ClusterIP, 80), addr(n.IP, svc.Spec.Ports[0].NodePort)
		expectReachesAll(n.NS, "tcp", vip, pods)
		old, err := sc.AgentPod(background, n.Name)
		Expect(err).NotTo(HaveOccurred())

		By("power-cycle " + n.Name + ": every pod, containerd and kubelet killed, its network namespace made anew, then containerd and kubelet started")
		start := time.Now()
		Expect(sc.Node(n.Name).Reboot(background)).To(Succeed())
		booted := time.Since(start)
		By("nothing else is done: kubelet restarts the agent pod, which reaches the API server by the address of ConfigMap " + shipped.APIServerConfigMap)
		Expect(sc.WaitNodesReady(background, 3*time.Minute)).To(Succeed())
		var agent corev1.Pod
		Eventually(func(g Gomega) {
			g.Expect(t.API().Get(background, client.ObjectKeyFromObject(old), &agent)).To(Succeed())
			g.Expect(startedAfter(&agent, start)).To(BeTrue(), "agent container not started again since the reboot yet")
			g.Expect(isReady(&agent)).To(BeTrue(), "agent pod %s not ready", agent.Name)
		}).WithTimeout(3 * time.Minute).WithPolling(poll).Should(Succeed())
		agentReady := time.Since(start)
		gc := waitRolledOut()
		Expect(revisions()[n.Name]).To(Equal([2]string{gc.Status.CurrentRevision, gc.Status.CurrentRevision}))
		// The pod of the rebooted node comes back in a new sandbox, maybe at
		// another address: the EndpointSlice follows, and so must the rules.
		expectReachesAll(n.NS, "tcp", vip, pods)
		expectReachesAll(t.Client(), "tcp", nodePort, pods)
		served := time.Since(start)
		figures := fmt.Sprintf("%s: booted (containerd and kubelet up) in %s, agent pod ready after %s, the Service served from and through it after %s",
			n.Name, booted.Round(100*time.Millisecond), agentReady.Round(100*time.Millisecond), served.Round(100*time.Millisecond))
		fmt.Fprintln(GinkgoWriter, figures)
		AddReportEntry("node reboot", figures)
	})
})

// startedAfter reports whether every container of the pod runs and was
// started after t.
func startedAfter(p *corev1.Pod, t time.Time) bool {
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Running == nil || s.State.Running.StartedAt.Time.Before(t.Truncate(time.Second)) {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) > 0
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
