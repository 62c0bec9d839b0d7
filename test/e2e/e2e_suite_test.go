// Package e2e is the end-to-end suite: one cluster of network namespaces for
// the whole suite (test/cluster), with the real kube-apiserver and etcd, the
// operator and one agent per node as processes, and traffic checked from
// clients. Run it with "make test-e2e" (E2E=1, root); a plain "go test ./..."
// skips it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/synterix/synterix-kube-proxy/test/cluster"
)

var (
	c         *cluster.Cluster
	suiteDone bool
)

func TestMain(m *testing.M) {
	cluster.RunHelperIfRequested()
	os.Exit(m.Run())
}

func TestE2E(t *testing.T) {
	if os.Getenv("E2E") == "" {
		t.Skip("SKIPPING E2E SUITE: it builds a cluster of network namespaces and needs root; run 'make test-e2e' (E2E=1)")
	}
	RegisterFailHandler(Fail)
	log.SetLogger(GinkgoLogr)
	RunSpecs(t, "synterix e2e")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	start := time.Now()
	var err error
	c, err = cluster.Up(ctx, cluster.Options{Nodes: 3, Progress: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	err = c.InstallOperator(ctx)
	if cluster.IsMissing(err) {
		Skip(fmt.Sprintf("SKIPPING THE WHOLE E2E SUITE: %v", err))
	}
	Expect(err).NotTo(HaveOccurred())
	_, err = c.Kubectl("apply", "-f", filepath.Join(c.RepoRoot(), "test", "cluster", "manifests", "e2e-gatewayconfig.yaml"))
	Expect(err).NotTo(HaveOccurred())
	err = c.StartAgents(ctx)
	if cluster.IsMissing(err) {
		Skip(fmt.Sprintf("SKIPPING THE WHOLE E2E SUITE: %v", err))
	}
	Expect(err).NotTo(HaveOccurred())
	_, err = c.WaitGatewayConfigRolledOut(ctx, "e2e", 3*time.Minute)
	Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(GinkgoWriter, "cluster %s up in %.1fs; logs in %s\n", c.ID, time.Since(start).Seconds(), c.LogDir)
}, NodeTimeout(5*time.Minute))

var _ = AfterSuite(func() {
	if c == nil {
		return
	}
	Expect(c.Down()).To(Succeed())
	Expect(c.Leftovers()).To(BeEmpty(), "namespaces left behind by teardown")
})

var _ = ReportAfterSuite("logs", func(r Report) {
	if c == nil {
		return
	}
	if r.SuiteSucceeded {
		c.RemoveDir()
		return
	}
	fmt.Printf("E2E FAILED: the logs of every process are in %s\n", c.LogDir)
})

// background is the context of helpers that outlive one poll.
var background = context.Background()
