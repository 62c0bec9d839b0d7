package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// traffic is load on one Service while something is disrupted: long-lived
// TCP streams that keep pinging, and new connections in loops, from a node,
// from a pod on that node and from the outside client to the node's
// NodePort. netns.Load keeps every failure with its time and the phase it
// fell in, to be matched against the logs of what was disrupted.
type traffic struct {
	load    *netns.Load
	streams []*netns.Stream
	start   time.Time
	hub     hubCounts
}

// startTraffic starts the load on svc (a NodePort Service) from node n,
// from pod (on n; nil for none) and from the client, once each path
// answers.
func startTraffic(svc *corev1.Service, n *node, from *pod) *traffic {
	GinkgoHelper()
	vip := addr(svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	nodePort := addr(n.IP, svc.Spec.Ports[0].NodePort)
	tr := &traffic{load: netns.NewLoad(), start: time.Now(), hub: readHub()}
	request := func(ns *netns.NS, target string) func() error {
		return func() error { _, err := ns.Request("tcp", target, netns.RequestOptions{}); return err }
	}
	type path struct {
		ns     *netns.NS
		what   string
		target string
	}
	paths := []path{{n.NS, n.Name, vip}, {t.Client(), "the client", nodePort}}
	if from != nil {
		paths = append(paths, path{from.NS, "pod " + from.Name, vip})
	}
	for _, p := range paths {
		Eventually(func() error { _, err := p.ns.Request("tcp", p.target, netns.RequestOptions{}); return err }).
			WithTimeout(converge).WithPolling(poll).Should(Succeed(), "%s -> %s before the disruption", p.what, p.target)
		if p.target == vip {
			s, err := p.ns.OpenStream(vip, netns.RequestOptions{})
			Expect(err).NotTo(HaveOccurred())
			tr.streams = append(tr.streams, s)
			tr.load.Run("pings", "stream ping from "+p.what+" to "+vip, loadPause, s.Ping)
		}
		tr.load.Run("conns", "new connection from "+p.what+" to "+p.target, loadPause, request(p.ns, p.target))
	}
	tr.phase("steady")
	time.Sleep(time.Second)
	return tr
}

// phase names what happens from now on.
func (tr *traffic) phase(p string) {
	tr.load.SetPhase(p)
	fmt.Fprintf(GinkgoWriter, "%s +%5.1fs phase: %s\n", time.Now().UTC().Format("15:04:05.000000"), time.Since(tr.start).Seconds(), p)
}

// finish stops the load, reports its figures under what and expects no
// failure: not one ping of a stream, not one new connection.
func (tr *traffic) finish(what string) {
	GinkgoHelper()
	tr.load.Stop()
	for _, s := range tr.streams {
		s.Close()
	}
	pings, pingFails := tr.load.Count("pings")
	conns, connFails := tr.load.Count("conns")
	hub := readHub()
	figures := fmt.Sprintf("stream pings ok=%d failed=%d, new connections ok=%d failed=%d; at the hub: %d packets to Service addresses (untranslated), %d ICMP net unreachable sent; over %s",
		pings, pingFails, conns, connFails, hub.escaped-tr.hub.escaped, hub.netUnreachable-tr.hub.netUnreachable,
		time.Since(tr.start).Round(100*time.Millisecond))
	fmt.Fprintf(GinkgoWriter, "%s: %s\n", what, figures)
	AddReportEntry(what, figures)
	detail := strings.Join(tr.load.Failures(), "\n")
	Expect(pings).To(BeNumerically(">", 0))
	Expect(pingFails).To(BeZero(), "first error: %v; failures (UTC):\n%s", tr.load.FirstError(), detail)
	Expect(connFails).To(BeZero(), "first error: %v; failures (UTC):\n%s", tr.load.FirstError(), detail)
}

// The hub counts, in its own raw table, the packets for Service addresses
// that reach it, and the ICMP net unreachable it sends. A node sends a
// packet for a Service address to the hub only when its rules did not
// translate it; the hub has no route for it (nor for any address outside
// the cluster network) and answers with ICMP net unreachable, which fails
// the sender's connect with ENETUNREACH. See docs/testing.md.
const (
	escapeRule      = "synx: Service address reached the hub untranslated"
	unreachableRule = "synx: ICMP net unreachable sent by the hub"
)

// countAtHub installs the counting rules in the hub, for both families
// (the IPv6 service range, and ICMPv6 "no route to destination", the hub's
// answer to an IPv6 address it has no route for).
func countAtHub() {
	GinkgoHelper()
	Expect(hub().Run(
		[]string{"iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-d", clusternet.ServiceCIDR, "-m", "comment", "--comment", escapeRule},
		[]string{"iptables", "-w", "-t", "raw", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "network-unreachable", "-m", "comment", "--comment", unreachableRule},
		[]string{"ip6tables", "-w", "-t", "raw", "-A", "PREROUTING", "-d", clusternet.ServiceCIDR6, "-m", "comment", "--comment", escapeRule},
		[]string{"ip6tables", "-w", "-t", "raw", "-A", "OUTPUT", "-p", "ipv6-icmp", "--icmpv6-type", "no-route", "-m", "comment", "--comment", unreachableRule},
	)).To(Succeed())
}

var counterRE = regexp.MustCompile(`^\[(\d+):\d+\]`)

// hubCounts are the hub's counters.
type hubCounts struct{ escaped, netUnreachable int64 }

// readHub sums the counters of both families.
func readHub() hubCounts {
	var c hubCounts
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := hub().Exec(save, "-c", "-t", "raw")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(out, "\n") {
			m := counterRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			n, _ := strconv.ParseInt(m[1], 10, 64)
			switch {
			case strings.Contains(l, escapeRule):
				c.escaped += n
			case strings.Contains(l, unreachableRule):
				c.netUnreachable += n
			}
		}
	}
	return c
}

func hub() *netns.NS {
	if sc != nil {
		return sc.Hub
	}
	return pc.Hub
}

// loadPause is the pause between two probes of one loop.
const loadPause = 20 * time.Millisecond
