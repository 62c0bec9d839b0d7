package e2e

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

var _ = Describe("Disruption", func() {
	It("keeps every connection when an agent is SIGKILLed and restarted", func() {
		ns := newNamespace()
		pods := startPods("dis", c.Nodes[1], c.Nodes[2])
		s := newService(ns, "dis", tcp("http", 80, 8080))
		s.Spec.Type = corev1.ServiceTypeNodePort
		svc := createService(s)
		setEndpoints(svc, cluster.Ready(pods...), 1)
		node := c.Nodes[0]
		vip := addr(svc.Spec.ClusterIP, 80)
		nodePort := addr(node.IP, svc.Spec.Ports[0].NodePort)
		expectReachesAll(node.NS, "tcp", vip, pods)
		expectReachesAll(c.ClientNS, "tcp", nodePort, pods)

		stream, err := node.NS.OpenStream(vip, netns.RequestOptions{})
		Expect(err).NotTo(HaveOccurred())
		defer stream.Close()

		// Every failure is kept with its time and the phase it fell in, to
		// be matched against the agents' logs when this spec fails.
		load := netns.NewLoad()
		request := func(from *netns.NS, target string) func() error {
			return func() error { _, err := from.Request("tcp", target, netns.RequestOptions{}); return err }
		}
		setPhase := func(p string) {
			load.SetPhase(p)
			fmt.Fprintf(GinkgoWriter, "%s phase: %s\n", time.Now().UTC().Format("15:04:05.000000"), p)
		}
		setPhase("agent running")
		load.Run("pings", "stream ping "+vip, 20*time.Millisecond, stream.Ping)
		load.Run("conns", "new connection to "+vip+" from "+node.Name, 20*time.Millisecond, request(node.NS, vip))
		load.Run("conns", "new connection to "+nodePort+" from the client", 20*time.Millisecond, request(c.ClientNS, nodePort))

		time.Sleep(time.Second)
		By("SIGKILL the agent of " + node.Name)
		Expect(node.Agent.Kill()).To(Succeed())
		setPhase("agent killed")
		time.Sleep(2 * time.Second)
		By("restart it and wait until it is ready")
		restart := time.Now()
		setPhase("agent restarting")
		Expect(c.StartAgent(background, node)).To(Succeed())
		ready := time.Since(restart)
		setPhase("agent ready again")
		// A change made now must be programmed by the new agent.
		extra := startPods("dis", c.Nodes[2])
		setEndpoints(svc, cluster.Ready(append(pods, extra...)...), 1)
		setPhase("endpoint added")
		expectReachesAll(node.NS, "tcp", vip, append(pods, extra...))
		load.Stop()
		pings, pingFails := load.Count("pings")
		conns, connFails := load.Count("conns")
		detail := strings.Join(load.Failures(), "\n")
		fmt.Fprintf(GinkgoWriter, "agent restart: ready again in %s; stream pings ok=%d failed=%d; new connections ok=%d failed=%d\n",
			ready.Round(time.Millisecond), pings, pingFails, conns, connFails)
		AddReportEntry("agent SIGKILL figures", fmt.Sprintf("stream pings ok=%d failed=%d, new connections ok=%d failed=%d, agent ready after restart in %s",
			pings, pingFails, conns, connFails, ready.Round(time.Millisecond)))
		Expect(pingFails).To(BeZero(), "first error: %v; failures (UTC):\n%s", load.FirstError(), detail)
		Expect(connFails).To(BeZero(), "first error: %v; failures (UTC):\n%s", load.FirstError(), detail)
		Expect(pings).To(BeNumerically(">", 0))
	})
})
