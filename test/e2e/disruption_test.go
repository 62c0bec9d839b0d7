package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/test/cluster"
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

		stream, err := node.NS.OpenStream(vip)
		Expect(err).NotTo(HaveOccurred())
		defer stream.Close()

		var pings, pingFails, conns, connFails atomic.Int64
		var firstErr atomic.Value
		// Every failure is kept with its time and the phase it fell in, to
		// be matched against the agents' logs when this spec fails.
		var phase atomic.Value
		phase.Store("agent running")
		var failMu sync.Mutex
		var failures []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		loop := func(name string, fn func() error, ok, bad *atomic.Int64) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(); err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s (%s): %v",
						time.Now().UTC().Format("15:04:05.000000"), name, phase.Load(), err))
					failMu.Unlock()
				} else {
					ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		setPhase := func(p string) {
			phase.Store(p)
			fmt.Fprintf(GinkgoWriter, "%s phase: %s\n", time.Now().UTC().Format("15:04:05.000000"), p)
		}
		wg.Add(3)
		go loop("stream ping "+vip, stream.Ping, &pings, &pingFails)
		go loop("new connection to "+vip+" from "+node.Name, func() error { _, err := node.NS.Request("tcp", vip); return err }, &conns, &connFails)
		go loop("new connection to "+nodePort+" from the client", func() error { _, err := c.ClientNS.Request("tcp", nodePort); return err }, &conns, &connFails)

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
		close(stop)
		wg.Wait()
		failMu.Lock()
		detail := strings.Join(failures, "\n")
		failMu.Unlock()
		fmt.Fprintf(GinkgoWriter, "agent restart: ready again in %s; stream pings ok=%d failed=%d; new connections ok=%d failed=%d\n",
			ready.Round(time.Millisecond), pings.Load(), pingFails.Load(), conns.Load(), connFails.Load())
		AddReportEntry("agent SIGKILL figures", fmt.Sprintf("stream pings ok=%d failed=%d, new connections ok=%d failed=%d, agent ready after restart in %s",
			pings.Load(), pingFails.Load(), conns.Load(), connFails.Load(), ready.Round(time.Millisecond)))
		Expect(pingFails.Load()).To(BeZero(), "first error: %v; failures (UTC):\n%s", firstErr.Load(), detail)
		Expect(connFails.Load()).To(BeZero(), "first error: %v; failures (UTC):\n%s", firstErr.Load(), detail)
		Expect(pings.Load()).To(BeNumerically(">", 0))
	})
})
