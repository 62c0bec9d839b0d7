package upgrade

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/poll"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

const (
	// groupLabel puts each node under one GatewayConfig (the test labels
	// the Nodes, as their owner would).
	groupLabel = "upgrade.synterix.io/group"
	autoGC     = "auto"   // strategy Automatic
	manualGC   = "manual" // strategy Manual
	workNS     = "upgrade"
	// holdFor is how long the Manual GatewayConfig is watched, after the
	// Automatic one rolled out, for anything moving before its approval.
	holdFor = 15 * time.Second
)

// scenario is the state of one run.
type scenario struct {
	t          *testing.T
	sc         *shipped.Cluster
	prev, cur  shipped.Release
	autoNodes  []string // in rollout order: the canary (first by name), then by name
	manualNode []string
	vip        string
	backends   []*shipped.Pod
	rec        *recorder
	tr         *traffic
}

// TestUpgrade installs release N-1 on the real cluster with traffic, then
// upgrades the operator to N and downgrades it back to N-1, as a user
// would (hack/deploy.sh of each release over the other). See doc.go.
func TestUpgrade(t *testing.T) {
	if os.Getenv("E2E") == "" {
		t.Skip("SKIPPING THE UPGRADE TEST: it builds release N-1 and a real cluster on this machine and needs root; run 'make test-upgrade' (E2E=1)")
	}
	log.SetLogger(logr.Discard()) // controller-runtime's clients log nothing the test needs
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	commit, err := previousCommit(root)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	logf(t, "N-1 is %s; building its manager and agent images in a worktree", commit)
	prev, prevImages := buildPrevious(ctx, t, root, commit)
	imagesDir, cur := combineImages(t, root, prevImages)
	logf(t, "N-1 built in %s: %s, %s; N is %s, %s", time.Since(start).Round(time.Second), prev.Manager, prev.Agent, cur.Manager, cur.Agent)

	sc := upCluster(ctx, t, imagesDir, nodeCount(t))
	s := &scenario{t: t, sc: sc, prev: prev, cur: cur}
	for i, n := range sc.Nodes {
		if i < (len(sc.Nodes)+1)/2 {
			s.autoNodes = append(s.autoNodes, n.Name)
		} else {
			s.manualNode = append(s.manualNode, n.Name)
		}
	}
	s.install(ctx)
	s.upgrade(ctx)
	s.downgrade(ctx)
	s.tr.stop()
	s.rec.stop()
	total := s.tr.counts()
	logf(t, "whole run, traffic from before the upgrade to after the downgrade: %s over %s", total, time.Since(s.tr.start).Round(100*time.Millisecond))
	if total.pings == 0 || total.conns == 0 {
		t.Errorf("no traffic was counted: %s", total)
	}
	if total.pingFails+total.connFails > 0 {
		t.Errorf("failed connections (UTC):\n%s", s.tr.failures())
	}
	for _, e := range s.rec.errors() {
		t.Logf("recorder: %s", e)
	}
}

// install deploys N-1 with both GatewayConfigs (the Manual one approved
// once), the workload, the ProxyPolicy, starts the recorder and the
// traffic.
func (s *scenario) install(ctx context.Context) {
	t := s.t
	start := time.Now()
	must(t, s.sc.Deploy(ctx, logWriter{t}, s.prev))
	for _, n := range s.autoNodes {
		s.kubectl("label", "node", n, groupLabel+"="+autoGC)
	}
	for _, n := range s.manualNode {
		s.kubectl("label", "node", n, groupLabel+"="+manualGC)
	}
	s.apply(gatewayConfigs)
	_, err := shipped.WaitRolledOut(ctx, s.sc.Client, autoGC, 3*time.Minute)
	must(t, err)
	first := s.waitPending(ctx, manualGC, "")
	s.approve(manualGC, first)
	_, err = shipped.WaitRolledOut(ctx, s.sc.Client, manualGC, 3*time.Minute)
	must(t, err)
	s.workload(ctx)
	logf(t, "N-1 installed, both GatewayConfigs rolled out, workload and ProxyPolicy in place in %s", time.Since(start).Round(100*time.Millisecond))

	s.rec, err = startRecorder(ctx, s.sc.RESTConfig)
	must(t, err)
	t.Cleanup(s.rec.stop) // before the cluster's teardown, also after a failure
	var from []source
	for _, n := range s.sc.Nodes {
		from = append(from, source{n.Name, n.NS})
	}
	clientPod, err := s.sc.RunPods(ctx, workNS, "client", []*kubenode.Node{s.sc.Node(s.manualNode[0])}, shipped.PodOptions{TCP: []int{8080}})
	must(t, err)
	from = append(from, source{"pod " + clientPod[0].Name + " on " + s.manualNode[0], clientPod[0].NS})
	s.tr, err = startTraffic(s.sc.Hub, s.vip, from)
	must(t, err)
	t.Cleanup(s.tr.stop)
	stopCapture := s.tr.captureOnFailure(s.vip, from)
	t.Cleanup(func() {
		for _, c := range stopCapture() {
			t.Logf("failure, and its client's namespace right after:\n%s", c)
		}
	})
	time.Sleep(2 * time.Second)
	logf(t, "traffic running from %d places: %s", len(from), s.tr.counts())
}

// gatewayConfigs are the two GatewayConfigs, applied as a user would. The
// progress deadline is long: a node of this shared 2-core machine may take
// a while to start a new agent pod, which must not count as a failure.
const gatewayConfigs = `
apiVersion: proxy.synterix.io/v1alpha1
kind: GatewayConfig
metadata:
  name: auto
spec:
  nodeSelector:
    matchLabels: {"upgrade.synterix.io/group": auto}
  mode: Auto
  minSyncPeriod: 100ms
  localTrafficDetection: {mode: ClusterCIDR, clusterCIDRs: ["10.244.0.0/16"]}
  rollout: {strategy: Automatic, maxUnavailable: 1, canary: {count: 1}, autoRollback: true, progressDeadlineSeconds: 300}
---
apiVersion: proxy.synterix.io/v1alpha1
kind: GatewayConfig
metadata:
  name: manual
spec:
  nodeSelector:
    matchLabels: {"upgrade.synterix.io/group": manual}
  mode: Auto
  minSyncPeriod: 100ms
  localTrafficDetection: {mode: ClusterCIDR, clusterCIDRs: ["10.244.0.0/16"]}
  rollout: {strategy: Manual, maxUnavailable: 1, canary: {count: 1}, autoRollback: true, progressDeadlineSeconds: 300}
`

// workload runs one echo backend on the last node of each group behind a
// ClusterIP Service, checks every node reaches both, then attaches a
// ProxyPolicy (ClientIP session affinity) and checks it is Programmed on
// every node and in effect.
func (s *scenario) workload(ctx context.Context) {
	t := s.t
	must(t, client.IgnoreAlreadyExists(s.sc.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workNS}})))
	on := []*kubenode.Node{s.sc.Node(s.autoNodes[len(s.autoNodes)-1]), s.sc.Node(s.manualNode[len(s.manualNode)-1])}
	var err error
	s.backends, err = s.sc.RunPods(ctx, workNS, "web", on, shipped.PodOptions{TCP: []int{8080}, Labels: map[string]string{"app": "upgrade-web"}})
	must(t, err)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: workNS, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "upgrade-web"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	must(t, s.sc.Client.Create(ctx, svc))
	s.vip = svc.Spec.ClusterIP + ":80"
	for _, n := range s.sc.Nodes {
		must(t, poll.Until(ctx, 2*time.Minute, n.Name+" reaches both backends at "+s.vip, func(context.Context) (bool, string, error) {
			a := n.NS.Spread("tcp", s.vip, 12, netnsOpts)
			return a.Failures == 0 && len(a.Names()) == len(s.backends), a.String(), nil
		}))
	}
	s.apply(proxyPolicy)
	s.expectPolicy(ctx)
}

// proxyPolicy is the ProxyPolicy of the workload's Service.
const proxyPolicy = `
apiVersion: proxy.synterix.io/v1alpha1
kind: ProxyPolicy
metadata:
  name: sticky
  namespace: upgrade
spec:
  targetRefs: [{kind: Service, name: web}]
  sessionAffinity: {type: ClientIP}
`

// expectPolicy waits until the ProxyPolicy is Programmed on every node and
// each node sticks to one backend.
func (s *scenario) expectPolicy(ctx context.Context) {
	t := s.t
	must(t, poll.Until(ctx, 2*time.Minute, "ProxyPolicy sticky Programmed on every node", func(ctx context.Context) (bool, string, error) {
		var p proxyv1alpha1.ProxyPolicy
		if err := s.sc.Client.Get(ctx, client.ObjectKey{Namespace: workNS, Name: "sticky"}, &p); err != nil {
			return false, err.Error(), nil
		}
		n := p.Status.Nodes
		return p.Status.ObservedGeneration == p.Generation && int(n.Programmed) == len(s.sc.Nodes) && int(n.Total) == len(s.sc.Nodes),
			fmt.Sprintf("%+v", p.Status), nil
	}))
	for _, n := range s.sc.Nodes {
		must(t, poll.Until(ctx, 2*time.Minute, n.Name+" sticks to one backend", func(context.Context) (bool, string, error) {
			a := n.NS.Spread("tcp", s.vip, 10, netnsOpts)
			return a.Failures == 0 && len(a.Names()) == 1, a.String(), nil
		}))
	}
}

// kubectl runs kubectl as the admin and fails the test on error.
func (s *scenario) kubectl(args ...string) string {
	s.t.Helper()
	out, err := s.sc.Kubectl(args...)
	if err != nil {
		s.t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// apply applies YAML as a user would (kubectl apply).
func (s *scenario) apply(yaml string) {
	s.t.Helper()
	out, err := s.sc.KubectlInput([]byte(yaml), "apply", "-f", "-")
	if err != nil {
		s.t.Fatalf("kubectl apply: %v: %s", err, out)
	}
}

// approve sets the GatewayConfig's approvedRevision, as the operator on
// call would.
func (s *scenario) approve(gc, rev string) {
	s.t.Helper()
	logf(s.t, "approving %s on GatewayConfig %s", rev, gc)
	s.kubectl("patch", "gatewayconfig", gc, "--type=merge", "-p", fmt.Sprintf(`{"spec":{"rollout":{"approvedRevision":%q}}}`, rev))
}

// waitPending waits until the GatewayConfig names a pending revision other
// than not, and returns it.
func (s *scenario) waitPending(ctx context.Context, name, not string) string {
	s.t.Helper()
	var pending string
	must(s.t, poll.Until(ctx, 3*time.Minute, "GatewayConfig "+name+" awaiting approval", func(ctx context.Context) (bool, string, error) {
		gc, err := s.gc(ctx, name)
		if err != nil {
			return false, err.Error(), nil
		}
		pending = gc.Status.PendingRevision
		return pending != "" && pending != not, fmt.Sprintf("pending %q current %q", pending, gc.Status.CurrentRevision), nil
	}))
	return pending
}

func (s *scenario) gc(ctx context.Context, name string) (*proxyv1alpha1.GatewayConfig, error) {
	var gc proxyv1alpha1.GatewayConfig
	err := s.sc.Client.Get(ctx, client.ObjectKey{Name: name}, &gc)
	return &gc, err
}

// agentPods returns the UID of the agent pod of every node.
func (s *scenario) agentPods(ctx context.Context) map[string]string {
	s.t.Helper()
	out := map[string]string{}
	for _, n := range s.sc.Nodes {
		p, err := s.sc.AgentPod(ctx, n.Name)
		must(s.t, err)
		out[n.Name] = string(p.UID)
	}
	return out
}

// templateHash returns the pod template hash label of a config revision.
func (s *scenario) templateHash(ctx context.Context, rev string) string {
	s.t.Helper()
	var cr appsv1.ControllerRevision
	must(s.t, s.sc.Client.Get(ctx, client.ObjectKey{Namespace: shipped.OperatorNamespace, Name: rev}, &cr))
	return cr.Labels[proxyv1alpha1.PodTemplateHashLabel]
}

// now returns the API server's current resourceVersion: events after it
// happened after this call.
func (s *scenario) now(ctx context.Context) int64 {
	s.t.Helper()
	var list proxyv1alpha1.ProxyNodeList
	must(s.t, s.sc.Client.List(ctx, &list))
	return parseRV(list.ResourceVersion)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
