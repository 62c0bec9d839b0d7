package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/tracetest"
	"github.com/synterix/synterix-kube-proxy/test/controlplane"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// The kubectl plugin against the cluster: built from the repository, found
// by kubectl's plugin discovery, run as the admin in the control-plane
// namespace after config/explain is applied. On the shipped tier the
// agents are pods and the plugin goes through the API server's pods/proxy;
// on the process tier (no agent pod) it connects to the nodes' addresses
// (--direct).
var _ = Describe("[sig-cli] kubectl synterix", Ordered, func() {
	var (
		pluginDir string
		extra     []string
	)
	BeforeAll(func() {
		pluginDir = GinkgoT().TempDir()
		build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-synterix"), "./cmd/kubectl-synterix")
		build.Dir = repoRoot()
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "build the plugin: %s", out)
		_, err = t.Kubectl("apply", "-k", filepath.Join(repoRoot(), "config", "explain"))
		Expect(err).NotTo(HaveOccurred())
		pods, err := controlPlane().Kube.CoreV1().Pods(t.OperatorNamespace()).List(background,
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=synterix-agent"})
		Expect(err).NotTo(HaveOccurred())
		if len(pods.Items) == 0 {
			extra = []string{"--direct"}
		}
		fmt.Fprintf(GinkgoWriter, "agent pods: %d; plugin flags %v\n", len(pods.Items), extra)
	})

	// synterix runs "kubectl synterix args..." and returns its output and
	// whether it exited 0.
	synterix := func(args ...string) (string, bool) {
		cp := controlPlane()
		full := append([]string{"env", "PATH=" + pluginDir + ":" + os.Getenv("PATH"), filepath.Join(cp.Bin, "kubectl"), "synterix",
			"--kubeconfig", cp.AdminKubeconfig, "--operator-namespace", t.OperatorNamespace()}, append(extra, args...)...)
		out, err := cp.NS.Exec(full...)
		fmt.Fprintf(GinkgoWriter, "$ kubectl synterix %s\n%s\n", strings.Join(args, " "), out)
		return out, err == nil
	}

	It("shows every node Ready at the rolled-out revision, without drift", func() {
		Eventually(func(g Gomega) {
			out, ok := synterix("status")
			g.Expect(ok).To(BeTrue())
			for _, n := range nodes() {
				g.Expect(out).To(ContainSubstring(n.Name))
			}
			g.Expect(out).To(ContainSubstring("True (Synced)"))
			if strings.Contains(out, "difference") {
				// Say what differs, for whoever reads the failure.
				for _, n := range nodes() {
					diff, _ := synterix("diff", "--node", n.Name)
					out += "\n" + diff
				}
			}
			g.Expect(out).NotTo(ContainSubstring("difference"))
			g.Expect(out).To(ContainSubstring("done"))
		}).WithTimeout(converge).WithPolling(poll).Should(Succeed())
	})

	It("explains a Service with endpoints and one without, on a node", func() {
		ns := newNamespace()
		pods := startPods(ns, "explain", nodes()[0], nodes()[1])
		web := createService(newService(ns, "web", tcp("http", 80, 8080)))
		setBackends(web, pods, 1)
		empty := createService(newService(ns, "empty", tcp("http", 80, 8080)))
		expectReachesAll(nodes()[0].NS, "tcp", addr(web.Spec.ClusterIP, 80), pods)
		node := nodes()[0].Name
		out, ok := synterix("-n", ns, "explain", "service", "web", "--node", node)
		Expect(ok).To(BeTrue())
		Expect(out).To(ContainSubstring("Verdict: OK"))
		for _, p := range pods {
			Expect(out).To(ContainSubstring(p.IP + ":8080"))
		}
		Eventually(func() string { out, _ = synterix("-n", ns, "explain", "service", "empty", "--node", node); return out }).
			WithTimeout(converge).WithPolling(poll).Should(ContainSubstring("no endpoints: connections to ClusterIP " + empty.Spec.ClusterIP + ":80 are rejected"))
	})

	It("traces a packet as it really goes", func() {
		ns := newNamespace()
		pods := startPods(ns, "trace", nodes()[1], nodes()[2])
		web := createService(newService(ns, "web", tcp("http", 80, 8080)))
		setBackends(web, pods, 1)
		target := addr(web.Spec.ClusterIP, 80)
		from := nodes()[0]
		expectReachesAll(from.NS, "tcp", target, pods)
		out, ok := synterix("trace", "--node", from.Name, "--from", from.IP, "--to", target, "-o", "json")
		Expect(ok).To(BeTrue())
		var tr report.Trace
		Expect(json.Unmarshal([]byte(out), &tr)).To(Succeed())
		eps := tr.Result.Endpoints()
		Expect(eps).To(HaveLen(len(pods)), "trace %s", tr.Summary)
		for _, p := range pods {
			Expect(eps).To(HaveKey(p.IP + ":8080"))
		}
		Expect(tr.Result.Packet.FromNode).To(BeTrue())
		Expect(tr.Result.Packet.Src).To(Equal(netip.MustParseAddr(from.IP)))
		Expect(tr.Result.Verdicts()).To(ConsistOf(trace.VerdictDNAT))
		// The node's own request goes where the trace says.
		r, err := from.NS.Request("tcp", target, netns.RequestOptions{Local: from.IP})
		Expect(err).NotTo(HaveOccurred())
		ok, why := tracetest.Agrees(tr.Result, tracetest.Outcome{Kind: "ok", Server: podAddr(pods, r.Server), ClientIP: r.ClientIP()})
		Expect(ok).To(BeTrue(), why)
	})

	It("shows the drift of a rule deleted behind the agent's back, until the agent repairs it", func() {
		ns := newNamespace()
		pods := startPods(ns, "drift", nodes()[0], nodes()[1])
		web := createService(newService(ns, "web", tcp("http", 80, 8080)))
		setBackends(web, pods, 1)
		n := nodes()[2]
		expectReachesAll(n.NS, "tcp", addr(web.Spec.ClusterIP, 80), pods)
		// What is deleted, and how diff names it, depends on the backend.
		drifted := "chain nat " + iptables.ServiceChains(ns + "/web:http/TCP")[0]
		del := []string{"iptables", "-w", "-t", "nat", "-D", strings.TrimPrefix(drifted, "chain nat "), "2"}
		if suiteMode() == "NFTables" {
			drifted = "set " + nftables.MapServices
			del = []string{"nft", "delete", "element", "ip", nftables.DefaultTable, nftables.MapServices,
				"{ " + web.Spec.ClusterIP + " . tcp . 80 }"}
		}
		_, err := n.NS.Exec(del...)
		Expect(err).NotTo(HaveOccurred())
		out, ok := synterix("diff", "--node", n.Name)
		Expect(ok).To(BeFalse(), "diff exits non-zero on drift")
		Expect(out).To(ContainSubstring(drifted))
		// The agent puts it back at its next full sync (syncPeriod 30s).
		Eventually(func() bool { _, ok := synterix("diff", "--node", n.Name); return ok }).
			WithTimeout(converge).WithPolling(poll).Should(BeTrue())
	})
})

// controlPlane is the cluster's control plane, on either tier.
func controlPlane() *controlplane.ControlPlane {
	if pc != nil {
		return pc.Plane
	}
	return sc.ControlPlane
}

func repoRoot() string {
	if pc != nil {
		return pc.RepoRoot()
	}
	return sc.RepoRoot()
}

// podAddr is the endpoint address of the pod that answered.
func podAddr(pods []*pod, name string) string {
	for _, p := range pods {
		if p.Name == name {
			return p.IP + ":8080"
		}
	}
	return name
}
