package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

var objectSeq atomic.Int64

// object parses one manifest and gives it a unique name, so that the table's
// entries never collide.
func object(manifest string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(manifest), &u.Object)).To(Succeed())
	u.SetName(fmt.Sprintf("%s-%d", strings.ToLower(u.GetKind()), objectSeq.Add(1)))
	return u
}

const gatewayConfig = `
apiVersion: proxy.synterix.io/v1alpha1
kind: GatewayConfig
spec:
`

const proxyPolicy = `
apiVersion: proxy.synterix.io/v1alpha1
kind: ProxyPolicy
metadata:
  namespace: default
spec:
`

const proxyNode = `
apiVersion: proxy.synterix.io/v1alpha1
kind: ProxyNode
spec:
`

// indent puts a YAML fragment under the spec: of one of the headers above.
func indent(fragment string) string {
	lines := strings.Split(strings.Trim(fragment, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

var _ = Describe("Samples", func() {
	It("accepts every sample in config/samples through kubectl apply", func() {
		root, err := testenv.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		dir := filepath.Join(root, "config", "samples")
		kubectl := testEnv.ControlPlane.KubeCtl()

		stdout, stderr, err := kubectl.Run("apply", "--server-side", "-f", dir)
		Expect(err).NotTo(HaveOccurred(), "kubectl apply: %s", readAll(stderr))
		out := readAll(stdout)

		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal(data, &u.Object)).To(Succeed())
			Expect(out).To(ContainSubstring(u.GetName()+" serverside-applied"), "sample %s", f)

			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(u.GroupVersionKind())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
		}
	})
})

var _ = Describe("Validation", func() {
	DescribeTable("rejects an invalid object with a message that names the field and the fix",
		func(manifest string, want ...string) {
			obj := object(manifest)
			err := k8sClient.Create(ctx, obj)
			Expect(err).To(HaveOccurred(), "the API server accepted:\n%s", manifest)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			for _, w := range want {
				Expect(err.Error()).To(ContainSubstring(w))
			}
		},

		// GatewayConfig
		Entry("an unknown mode", gatewayConfig+indent(`mode: Fast`),
			`spec.mode: Unsupported value: "Fast"`, `"Auto", "IPTables", "IPVS"`),
		Entry("an unknown IPVS scheduler", gatewayConfig+indent("ipvs:\n  scheduler: fifo"),
			`spec.ipvs.scheduler: Unsupported value: "fifo"`, `"rr", "wrr"`),
		Entry("ipvs settings with the IPTables mode", gatewayConfig+indent("mode: IPTables\nipvs:\n  scheduler: rr"),
			"spec.ipvs applies only when spec.mode is Auto or IPVS"),
		Entry("ipvs settings with the NFTables mode", gatewayConfig+indent("mode: NFTables\nipvs:\n  scheduler: rr"),
			"spec.ipvs applies only when spec.mode is Auto or IPVS"),
		// The IPVS backend runs nine schedulers (agent/ipvs.Schedulers); the
		// locality-based ones were accepted and then failed every sync.
		Entry("the IPVS scheduler lblc, which the IPVS backend does not run", gatewayConfig+indent("ipvs:\n  scheduler: lblc"),
			`spec.ipvs.scheduler: Unsupported value: "lblc"`),
		Entry("the IPVS scheduler lblcr, which the IPVS backend does not run", gatewayConfig+indent("ipvs:\n  scheduler: lblcr"),
			`spec.ipvs.scheduler: Unsupported value: "lblcr"`),
		Entry("a masqueradeBit other than the default with the IPVS mode", gatewayConfig+indent("mode: IPVS\niptables:\n  masqueradeBit: 5"),
			"spec.iptables.masqueradeBit is not supported when spec.mode is IPVS"),
		Entry("minSyncPeriod above syncPeriod", gatewayConfig+indent("minSyncPeriod: 1m\nsyncPeriod: 30s"),
			"spec.minSyncPeriod must not be longer than spec.syncPeriod"),
		Entry("a syncPeriod under a second", gatewayConfig+indent("syncPeriod: 500ms"),
			"spec.syncPeriod", "must be at least 1s"),
		Entry("a syncPeriod that is not a duration", gatewayConfig+indent("syncPeriod: thirty seconds"),
			"spec.syncPeriod: Invalid value", "should match"),
		Entry("a bad excluded CIDR", gatewayConfig+indent("ipvs:\n  excludeCIDRs: [\"10.0.0.0/33\"]"),
			"spec.ipvs.excludeCIDRs[0]", "must be a CIDR such as 10.0.0.0/8"),
		Entry("a nodePortAddresses item that is neither a CIDR nor primary", gatewayConfig+indent(`nodePortAddresses: ["10.0.0.0/8", "eth0"]`),
			"spec.nodePortAddresses[1]", "or the word primary"),
		Entry("a masqueradeBit above 31", gatewayConfig+indent("iptables:\n  masqueradeBit: 32"),
			"spec.iptables.masqueradeBit", "less than or equal to 31"),
		Entry("a maxUnavailable of 0", gatewayConfig+indent("rollout:\n  maxUnavailable: 0"),
			"spec.rollout.maxUnavailable", "must be an integer of at least 1, or a percentage from 1% to 100%"),
		Entry("a maxUnavailable of 0%", gatewayConfig+indent(`rollout: {maxUnavailable: "0%"}`),
			"spec.rollout.maxUnavailable", "a percentage from 1% to 100%"),
		Entry("a maxUnavailable of 150%", gatewayConfig+indent(`rollout: {maxUnavailable: "150%"}`),
			"spec.rollout.maxUnavailable", "a percentage from 1% to 100%"),
		Entry("approvedRevision with an automatic rollout", gatewayConfig+indent("rollout:\n  approvedRevision: default-5d8f7c"),
			"spec.rollout.approvedRevision is only allowed when spec.rollout.strategy is Manual"),
		Entry("a canary with both a selector and a count", gatewayConfig+indent("rollout:\n  canary:\n    count: 1\n    nodeSelector: {matchLabels: {a: b}}"),
			"spec.rollout.canary needs exactly one of nodeSelector or count"),
		Entry("a canary count of 0", gatewayConfig+indent("rollout:\n  canary:\n    count: 0"),
			"spec.rollout.canary.count", "greater than or equal to 1"),
		Entry("a progress deadline of 5 seconds", gatewayConfig+indent("rollout:\n  progressDeadlineSeconds: 5"),
			"spec.rollout.progressDeadlineSeconds", "greater than or equal to 10"),
		Entry("ClusterCIDR detection without clusterCIDRs", gatewayConfig+indent("localTrafficDetection:\n  mode: ClusterCIDR"),
			"spec.localTrafficDetection.clusterCIDRs is required when mode is ClusterCIDR"),
		Entry("a bad cluster CIDR", gatewayConfig+indent("localTrafficDetection:\n  mode: ClusterCIDR\n  clusterCIDRs: [\"10.244.0.0\"]"),
			"spec.localTrafficDetection.clusterCIDRs[0]", "must be a CIDR"),
		Entry("a serviceProxyName that is not a DNS label", gatewayConfig+indent("serviceProxyName: Synterix_Proxy"),
			"spec.serviceProxyName: Invalid value", "should match"),
		Entry("a log verbosity of 11", gatewayConfig+indent("agent:\n  logVerbosity: 11"),
			"spec.agent.logVerbosity", "less than or equal to 10"),
		Entry("an unknown image pull policy", gatewayConfig+indent("agent:\n  imagePullPolicy: Sometimes"),
			`spec.agent.imagePullPolicy: Unsupported value: "Sometimes"`),

		// ProxyPolicy
		Entry("a targetRef of another kind", proxyPolicy+indent("targetRefs:\n- {group: apps, kind: Deployment, name: web}\nloadBalancing: {algorithm: Random}"),
			"spec.targetRefs[0]", `targetRefs may only name core Services: set group to "" and kind to Service`),
		// Policy attachment names the core group "", never "core" (Gateway
		// API's Group type says so too); the API server is the authority.
		Entry("a targetRef with group core", proxyPolicy+indent("targetRefs:\n- {group: core, kind: Service, name: web}\nloadBalancing: {algorithm: Random}"),
			"spec.targetRefs[0]", `targetRefs may only name core Services: set group to "" and kind to Service`),
		Entry("a targetRef in another namespace", proxyPolicy+indent("targetRefs:\n- {kind: Service, name: web, namespace: other}\nloadBalancing: {algorithm: Random}"),
			"spec.targetRefs[0]", "a ProxyPolicy attaches only to Services in its own namespace"),
		Entry("the same Service named twice", proxyPolicy+indent("targetRefs:\n- {name: web}\n- {name: web}\nloadBalancing: {algorithm: Random}"),
			"spec.targetRefs", "must not name the same Service twice"),
		Entry("both targetRefs and a selector", proxyPolicy+indent("targetRefs:\n- {name: web}\nselector: {matchLabels: {app: web}}\nloadBalancing: {algorithm: Random}"),
			"spec: Invalid value", "spec needs exactly one of targetRefs or selector"),
		Entry("neither targetRefs nor a selector", proxyPolicy+indent("loadBalancing: {algorithm: Random}"),
			"spec needs exactly one of targetRefs or selector"),
		Entry("a policy that sets nothing", proxyPolicy+indent("targetRefs:\n- {name: web}"),
			"spec must set at least one of loadBalancing, sessionAffinity or sourceRanges"),
		Entry("an unknown algorithm", proxyPolicy+indent("targetRefs:\n- {name: web}\nloadBalancing: {algorithm: Fastest}"),
			`spec.loadBalancing.algorithm: Unsupported value: "Fastest"`, `"Random", "RoundRobin"`),
		Entry("an affinity timeout of 0", proxyPolicy+indent("targetRefs:\n- {name: web}\nsessionAffinity: {type: ClientIP, timeoutSeconds: 0}"),
			"spec.sessionAffinity.timeoutSeconds", "greater than or equal to 1"),
		Entry("an affinity timeout over a day", proxyPolicy+indent("targetRefs:\n- {name: web}\nsessionAffinity: {type: ClientIP, timeoutSeconds: 86401}"),
			"spec.sessionAffinity.timeoutSeconds", "less than or equal to 86400"),
		Entry("an affinity timeout without ClientIP", proxyPolicy+indent("targetRefs:\n- {name: web}\nsessionAffinity: {type: None, timeoutSeconds: 60}"),
			"spec.sessionAffinity.timeoutSeconds is only allowed when type is ClientIP"),
		Entry("a bad source range", proxyPolicy+indent("targetRefs:\n- {name: web}\nsourceRanges: [\"10.1.2.3/40\"]"),
			"spec.sourceRanges[0]", "must be a CIDR"),
		Entry("a port with both a name and a number", proxyPolicy+indent("targetRefs:\n- {name: web}\nports:\n- {name: http, port: 80}\nloadBalancing: {algorithm: Random}"),
			"spec.ports[0]", "needs exactly one of name or port"),
		Entry("a port number out of range", proxyPolicy+indent("targetRefs:\n- {name: web}\nports:\n- {port: 70000}\nloadBalancing: {algorithm: Random}"),
			"spec.ports[0].port", "less than or equal to 65535"),

		// ProxyNode
		Entry("a ProxyNode without a revision", proxyNode+indent("gatewayConfig: default"),
			"spec.revision: Required value"),
		Entry("a ProxyNode with an empty GatewayConfig name", proxyNode+indent("gatewayConfig: \"\"\nrevision: default-1"),
			"spec.gatewayConfig", "at least 1 chars long"),
	)

	It("accepts interface and CIDR detection with every mode", func() {
		for _, m := range []string{"Auto", "IPTables", "NFTables", "IPVS"} {
			for _, d := range []string{"{mode: BridgeInterface, bridgeInterface: cbr0}", "{mode: InterfaceNamePrefix, interfaceNamePrefix: veth}"} {
				obj := object(gatewayConfig + indent("mode: "+m+"\nlocalTrafficDetection: "+d))
				Expect(k8sClient.Create(ctx, obj)).To(Succeed(), "mode %s, detection %s", m, d)
			}
		}
		for _, d := range []string{"{mode: NodeCIDR}", "{mode: ClusterCIDR, clusterCIDRs: [10.244.0.0/16]}"} {
			obj := object(gatewayConfig + indent("mode: IPVS\nlocalTrafficDetection: "+d))
			Expect(k8sClient.Create(ctx, obj)).To(Succeed(), "mode IPVS, detection %s", d)
		}
	})

	It("accepts the default masqueradeBit with mode IPVS, and any bit with the other modes", func() {
		Expect(k8sClient.Create(ctx, object(gatewayConfig+indent("mode: IPVS")))).To(Succeed())
		Expect(k8sClient.Create(ctx, object(gatewayConfig+indent("mode: IPVS\niptables: {masqueradeBit: 14}")))).To(Succeed())
		for _, m := range []string{"Auto", "IPTables", "NFTables"} {
			Expect(k8sClient.Create(ctx, object(gatewayConfig+indent("mode: "+m+"\niptables: {masqueradeBit: 5}")))).To(Succeed(), "mode %s", m)
		}
	})

	It("refuses a change of the immutable serviceProxyName, and allows other changes", func() {
		obj := object(gatewayConfig + indent("serviceProxyName: synterix"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())

		Expect(unstructured.SetNestedField(obj.Object, "other", "spec", "serviceProxyName")).To(Succeed())
		err := k8sClient.Update(ctx, obj)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.serviceProxyName is immutable: create a new GatewayConfig"))

		unstructured.RemoveNestedField(obj.Object, "spec", "serviceProxyName")
		err = k8sClient.Update(ctx, obj)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "removing the name must be refused too, got %v", err)

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		Expect(unstructured.SetNestedField(obj.Object, "IPVS", "spec", "mode")).To(Succeed())
		Expect(k8sClient.Update(ctx, obj)).To(Succeed())
	})
})

var _ = Describe("Defaults", func() {
	It("fills in the defaults of an empty GatewayConfig", func() {
		obj := object(gatewayConfig + indent("{}"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		spec := obj.Object["spec"].(map[string]any)
		Expect(spec).To(HaveKeyWithValue("mode", "Auto"))
		Expect(spec).To(HaveKeyWithValue("minSyncPeriod", "1s"))
		Expect(spec).To(HaveKeyWithValue("syncPeriod", "30s"))
		Expect(spec["iptables"]).To(Equal(map[string]any{"masqueradeBit": int64(14), "localhostNodePorts": true}))
		Expect(spec["agent"]).To(Equal(map[string]any{"priorityClassName": "system-node-critical"}))
		Expect(spec["rollout"]).To(Equal(map[string]any{
			"strategy": "Automatic", "maxUnavailable": int64(1), "autoRollback": true, "progressDeadlineSeconds": int64(600),
		}))
		Expect(spec).NotTo(HaveKey("ipvs"), "ipvs is only defaulted when present")
	})

	It("defaults the IPVS scheduler when ipvs is present", func() {
		obj := object(gatewayConfig + indent("ipvs: {}"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		v, _, _ := unstructured.NestedString(obj.Object, "spec", "ipvs", "scheduler")
		Expect(v).To(Equal("rr"))
	})

	It("defaults a targetRef to a core Service", func() {
		obj := object(proxyPolicy + indent("targetRefs:\n- {name: web}\nloadBalancing: {algorithm: Random}"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		refs, _, _ := unstructured.NestedSlice(obj.Object, "spec", "targetRefs")
		Expect(refs).To(Equal([]any{map[string]any{"group": "", "kind": "Service", "name": "web"}}))
	})
})

var _ = Describe("Status subresource", func() {
	It("keeps spec and status apart, and does not bump the generation on status writes", func() {
		obj := object(proxyNode + indent("gatewayConfig: default\nrevision: default-1"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		gen := obj.GetGeneration()

		status := map[string]any{
			"observedGeneration": gen,
			"backend":            "IPTables",
			"backendReason":      "the kernel has no IPVS (ip_vs is not loaded and cannot be)",
			"appliedRevision":    "default-1",
			"counts":             map[string]any{"services": int64(3), "endpoints": int64(9), "rules": int64(40)},
			"conditions": []any{map[string]any{
				"type": proxyv1alpha1.ConditionReady, "status": "True", "reason": proxyv1alpha1.ReasonSynced, "message": "rules are in sync",
				"lastTransitionTime": "2026-11-22T10:00:00Z", "observedGeneration": gen,
			}},
		}
		Expect(unstructured.SetNestedField(obj.Object, status, "status")).To(Succeed())
		// A write of the main resource drops status: what reads back is the
		// status the API server defaults for an object nobody reported on.
		Expect(k8sClient.Update(ctx, obj)).To(Succeed())
		Expect(obj.Object["status"]).To(Equal(map[string]any{"observedGeneration": int64(0)}))

		Expect(unstructured.SetNestedField(obj.Object, status, "status")).To(Succeed())
		Expect(k8sClient.Status().Update(ctx, obj)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		Expect(obj.GetGeneration()).To(Equal(gen))
		backend, _, _ := unstructured.NestedString(obj.Object, "status", "backend")
		Expect(backend).To(Equal("IPTables"))

		// A status write cannot change the spec.
		Expect(unstructured.SetNestedField(obj.Object, "default-2", "spec", "revision")).To(Succeed())
		Expect(k8sClient.Status().Update(ctx, obj)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		rev, _, _ := unstructured.NestedString(obj.Object, "spec", "revision")
		Expect(rev).To(Equal("default-1"))
	})

	It("bounds the failed policies a node can report", func() {
		obj := object(proxyNode + indent("gatewayConfig: default\nrevision: default-1"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		var failed []any
		for i := range 21 {
			failed = append(failed, map[string]any{"namespace": "default", "name": fmt.Sprintf("p%d", i), "reason": proxyv1alpha1.ReasonUnsupportedByBackend})
		}
		Expect(unstructured.SetNestedSlice(obj.Object, failed, "status", "failedPolicies")).To(Succeed())
		err := k8sClient.Status().Update(ctx, obj)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("status.failedPolicies: Too many: 21: must have at most 20 items"))
	})
})

var _ = Describe("Printer columns", func() {
	It("shows what matters in kubectl get", func() {
		node := object(proxyNode + indent("gatewayConfig: default\nrevision: default-7"))
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		Expect(unstructured.SetNestedField(node.Object, map[string]any{
			"backend": "IPVS", "appliedRevision": "default-6",
			"counts": map[string]any{"services": int64(12)},
			"conditions": []any{map[string]any{
				"type": proxyv1alpha1.ConditionReady, "status": "False", "reason": proxyv1alpha1.ReasonSyncing, "message": "applying default-7",
				"lastTransitionTime": "2026-11-22T10:00:00Z",
			}},
		}, "status")).To(Succeed())
		Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())

		kubectl := testEnv.ControlPlane.KubeCtl()
		stdout, stderr, err := kubectl.Run("get", "proxynodes", node.GetName())
		Expect(err).NotTo(HaveOccurred(), readAll(stderr))
		lines := strings.Split(strings.TrimSpace(readAll(stdout)), "\n")
		Expect(lines).To(HaveLen(2))
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "BACKEND", "READY", "REVISION", "APPLIED", "SERVICES", "AGE"}))
		Expect(strings.Fields(lines[1])[:6]).To(Equal([]string{node.GetName(), "IPVS", "False", "default-7", "default-6", "12"}))

		gc := object(gatewayConfig + indent("{}"))
		Expect(k8sClient.Create(ctx, gc)).To(Succeed())
		stdout, stderr, err = kubectl.Run("get", "gatewayconfigs")
		Expect(err).NotTo(HaveOccurred(), readAll(stderr))
		header := strings.Fields(strings.SplitN(readAll(stdout), "\n", 2)[0])
		Expect(header).To(Equal([]string{"NAME", "MODE", "DESIRED", "UPDATED", "READY", "REVISION", "PENDING", "STATUS", "AGE"}))

		// kubectl prints no header when there is nothing to list, and the
		// specs run in random order: make sure one policy exists.
		policy := object(proxyPolicy + indent("targetRefs:\n- {name: web}\nloadBalancing: {algorithm: Random}"))
		Expect(k8sClient.Create(ctx, policy)).To(Succeed())
		stdout, stderr, err = kubectl.Run("get", "proxypolicies", "-A")
		Expect(err).NotTo(HaveOccurred(), readAll(stderr))
		header = strings.Fields(strings.SplitN(readAll(stdout), "\n", 2)[0])
		Expect(header).To(Equal([]string{"NAMESPACE", "NAME", "ALGORITHM", "ACCEPTED", "PROGRAMMED", "NODES", "AGE"}))

		stdout, _, err = kubectl.Run("api-resources", "--categories=synterix", "-o", "name")
		Expect(err).NotTo(HaveOccurred())
		names := strings.Fields(readAll(stdout))
		sort.Strings(names)
		Expect(names).To(Equal([]string{"gatewayconfigs.proxy.synterix.io", "proxynodes.proxy.synterix.io", "proxypolicies.proxy.synterix.io"}))
	})
})
