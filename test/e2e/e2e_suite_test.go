// Package e2e is the end-to-end suite. One cluster serves the whole suite,
// on the tier E2E_TIER names (see tier_test.go):
//
//   - shipped (default, make test-e2e): real nodes with kubelet and
//     containerd and no kube-proxy, the product installed with
//     hack/deploy.sh from config/default and the images of make images; the
//     operator is a Deployment, the agents are its DaemonSet's pods, the
//     backends are echo pods whose EndpointSlices the real controller
//     writes (test/shipped);
//   - process (make test-e2e-process): the operator and the agents as
//     processes in network namespaces, pods as namespaces, EndpointSlices
//     written by the harness (test/cluster); fast, and the only tier that
//     sets endpoint conditions exactly.
//
// A plain "go test ./..." skips the suite; it needs E2E=1 and root.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

var (
	// t is the tier the suite runs on; pc and sc are its cluster (the
	// other is nil).
	t  tier
	pc *cluster.Cluster
	sc *shipped.Cluster
	// hostBefore is the host's state before the shipped tier's cluster, for
	// the leftover check.
	hostBefore *kubenode.HostState
)

func TestMain(m *testing.M) {
	cluster.RunHelperIfRequested()
	os.Exit(m.Run())
}

func TestE2E(tt *testing.T) {
	if os.Getenv("E2E") == "" {
		tt.Skip("SKIPPING E2E SUITE: it builds a cluster on this machine and needs root; run 'make test-e2e' (E2E=1)")
	}
	RegisterFailHandler(Fail)
	log.SetLogger(GinkgoLogr)
	suite, reporter := GinkgoConfiguration()
	// Specs of the other tier never run; a label filter given on the
	// command line narrows further.
	other := tierProcess
	if tierName() == tierProcess {
		other = tierShipped
	}
	if suite.LabelFilter == "" {
		suite.LabelFilter = "!" + other
	} else {
		suite.LabelFilter = "(" + suite.LabelFilter + ") && !" + other
	}
	RunSpecs(tt, "synterix e2e ("+tierName()+" tier)", suite, reporter)
}

var _ = BeforeSuite(func(ctx SpecContext) {
	start := time.Now()
	switch tierName() {
	case tierShipped:
		upShipped(ctx)
	case tierProcess:
		upProcess(ctx)
	default:
		Fail("E2E_TIER must be shipped or process, not " + tierName())
	}
	countAtHub()
	_, err := t.Kubectl("apply", "-f", manifest("e2e-gatewayconfig.yaml"))
	Expect(err).NotTo(HaveOccurred())
	if m := suiteMode(); m != "Auto" {
		patchGC(`{"spec":{"mode":"` + m + `"}}`)
	}
	if pc != nil {
		Expect(pc.StartAgents(ctx)).To(Succeed())
	}
	_, err = shipped.WaitRolledOut(ctx, t.API(), gcName, 3*time.Minute)
	Expect(err).NotTo(HaveOccurred())
	AddReportEntry("cluster up", fmt.Sprintf("%s tier, %d nodes, up and installed in %s; logs in %s",
		tierName(), len(t.Nodes()), time.Since(start).Round(100*time.Millisecond), t.Logs()))
}, NodeTimeout(10*time.Minute))

// suiteMode is the GatewayConfig mode the suite runs with: E2E_MODE
// (Auto, IPTables, NFTables), Auto by default.
func suiteMode() string {
	if m := os.Getenv("E2E_MODE"); m != "" {
		return m
	}
	return "Auto"
}

// upShipped brings up the real cluster, dual-stack with IPv4 primary, and
// installs the product as a user would (shipped.Install: the API server
// address ConfigMap, then hack/deploy.sh).
func upShipped(ctx context.Context) {
	var err error
	hostBefore, err = kubenode.TakeHostState()
	Expect(err).NotTo(HaveOccurred())
	sc, err = shipped.Up(ctx, shipped.Options{Nodes: 3, DualStack: true, Progress: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	t = newShippedTier(sc)
	Expect(sc.Install(ctx, GinkgoWriter)).To(Succeed())
}

func upProcess(ctx context.Context) {
	var err error
	pc, err = cluster.Up(ctx, cluster.Options{Nodes: 3, Progress: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	t = newProcessTier(pc)
	err = pc.InstallOperator(ctx)
	if cluster.IsMissing(err) {
		Skip(fmt.Sprintf("SKIPPING THE WHOLE E2E SUITE: %v", err))
	}
	Expect(err).NotTo(HaveOccurred())
}

// manifest is a file of test/cluster/manifests.
func manifest(name string) string {
	root := "."
	if pc != nil {
		root = pc.RepoRoot()
	} else if sc != nil {
		root = sc.RepoRoot()
	}
	return filepath.Join(root, "test", "cluster", "manifests", name)
}

// AfterSuite tears the cluster down (also after a failure or Ctrl-C:
// Ginkgo runs it on interrupt) and checks that nothing of it is left on
// the host.
var _ = AfterSuite(func() {
	switch {
	case sc != nil:
		fp := kubenode.CaptureFootprint(sc.ID)
		Expect(sc.Down()).To(Succeed())
		left, err := hostBefore.Leftovers(sc.ID, fp)
		Expect(err).NotTo(HaveOccurred())
		var bad []string
		for _, l := range left {
			if !strings.HasPrefix(l, "folder ") { // kept for its logs until the report
				bad = append(bad, l)
			}
		}
		Expect(bad).To(BeEmpty(), "left on the host by the cluster")
	case pc != nil:
		Expect(pc.Down()).To(Succeed())
		Expect(pc.Leftovers()).To(BeEmpty(), "namespaces left behind by teardown")
	}
})

var _ = ReportAfterSuite("logs", func(r Report) {
	switch {
	case r.SuiteSucceeded && sc != nil:
		_ = sc.RemoveDir()
	case r.SuiteSucceeded && pc != nil:
		pc.RemoveDir()
	case t != nil:
		fmt.Printf("E2E FAILED: the logs are in %s\n", t.Logs())
	}
})

// background is the context of helpers that outlive one poll.
var background = context.Background()
