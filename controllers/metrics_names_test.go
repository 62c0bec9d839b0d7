package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/observability"
)

// The alerts of config/prometheus and the dashboard of config/grafana use
// only metrics the binaries serve: the operator's, from the registry the
// manager serves after this suite's operator rolled out and rolled back, and
// the agent's, from its real registry.
var _ = Describe("Monitoring artefacts", func() {
	It("use only metric names the operator and the agents serve", func() {
		makeNodes("mx", 2, map[string]string{"mx": "true"})
		setBehavior("mx-", fakeagent.Always(fakeagent.Ready))
		Expect(k8sClient.Create(ctx, newGC("mx", "mx", nil))).To(Succeed())
		r1 := revisionOf("mx")
		rolledOut("mx", r1, 2)
		setBehavior("mx-", func(_, rev string) fakeagent.Report {
			if rev != r1 {
				return fakeagent.Report{Outcome: fakeagent.Fail}
			}
			return fakeagent.Report{Outcome: fakeagent.Ready}
		})
		changeSpec("mx", func(s *proxyv1alpha1.GatewayConfigSpec) { s.NodePortAddresses = []string{"primary"} })
		Eventually(func() string {
			return condition(getGC("mx").Status.Conditions, proxyv1alpha1.ConditionDegraded).Reason
		}, timeout, poll).Should(Equal(proxyv1alpha1.ReasonRolledBack))
		Expect(condition(getGC("mx").Status.Conditions, proxyv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))

		operator, err := observability.Served(ctrlmetrics.Registry)
		Expect(err).NotTo(HaveOccurred())
		for _, n := range []string{"synterix_operator_rollout_nodes", "synterix_operator_rollbacks_total", "controller_runtime_reconcile_time_seconds_bucket"} {
			Expect(operator).To(HaveKey(n), "the operator's registry lacks %s after a rollout and a rollback", n)
		}
		agent, err := observability.AgentServed()
		Expect(err).NotTo(HaveOccurred())
		exprs, err := observability.Expressions()
		Expect(err).NotTo(HaveOccurred())
		Expect(exprs).NotTo(BeEmpty())
		Expect(observability.Unserved(exprs, operator, agent)).To(BeEmpty())
	})
})
