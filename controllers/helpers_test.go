package controllers_test

import (
	"fmt"
	"sort"
	"strings"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
)

func gcStatus(gc *proxyv1alpha1.GatewayConfig) string {
	return kstatusOf("GatewayConfig", gc)
}

// makeNodes creates n Nodes named prefix-0..n-1 with the given labels.
func makeNodes(prefix string, n int, labels map[string]string) []string {
	names := make([]string, 0, n)
	for i := 0; i < n; i++ {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Labels: labels}}
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		names = append(names, node.Name)
	}
	return names
}

// newGC returns a GatewayConfig that selects the nodes labelled key=true.
func newGC(name, key string, ro *proxyv1alpha1.RolloutSpec) *proxyv1alpha1.GatewayConfig {
	return &proxyv1alpha1.GatewayConfig{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: proxyv1alpha1.GatewayConfigSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{key: "true"}},
			Rollout:      ro,
		},
	}
}

func intOrStr(v intstr.IntOrString) *intstr.IntOrString { return &v }
func i32(v int32) *int32                                { return &v }
func boolp(v bool) *bool                                { return &v }

func getGC(name string) *proxyv1alpha1.GatewayConfig {
	gc := &proxyv1alpha1.GatewayConfig{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: name}, gc)).To(Succeed())
	return gc
}

func condition(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// assignments returns node -> assigned revision for the ProxyNodes of gc.
func assignments(gc string) map[string]string {
	var list proxyv1alpha1.ProxyNodeList
	ExpectWithOffset(1, k8sClient.List(ctx, &list)).To(Succeed())
	out := map[string]string{}
	for _, pn := range list.Items {
		if pn.Spec.GatewayConfig == gc {
			out[pn.Name] = pn.Spec.Revision
		}
	}
	return out
}

func nodesAt(a map[string]string, rev string) []string {
	var out []string
	for n, r := range a {
		if r == rev {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func revisionsOf(gc string) []appsv1.ControllerRevision {
	var list appsv1.ControllerRevisionList
	ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(operatorNamespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: gc})).To(Succeed())
	return list.Items
}

// monitor watches the ProxyNodes of the nodes with a prefix, from the API
// server's event stream, and records per revision: the nodes ever assigned
// it, in the order they were, and the most nodes ever assigned it and not
// Ready at it at once. Read it after stop.
type monitor struct {
	w           watch.Interface
	done        chan struct{}
	assignedSeq map[string][]string
	maxInflight map[string]int
}

func startMonitor(prefix string) *monitor {
	w, err := k8sClient.Watch(ctx, &proxyv1alpha1.ProxyNodeList{})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	m := &monitor{w: w, done: make(chan struct{}), assignedSeq: map[string][]string{}, maxInflight: map[string]int{}}
	go func() {
		defer close(m.done)
		state := map[string]*proxyv1alpha1.ProxyNode{}
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			pn, ok := ev.Object.(*proxyv1alpha1.ProxyNode)
			if !ok || !strings.HasPrefix(pn.Name, prefix) {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(state, pn.Name)
				continue
			}
			state[pn.Name] = pn
			rev := pn.Spec.Revision
			if !seen[rev+"/"+pn.Name] {
				seen[rev+"/"+pn.Name] = true
				m.assignedSeq[rev] = append(m.assignedSeq[rev], pn.Name)
			}
			inflight := map[string]int{}
			for _, s := range state {
				if controllers.ProxyNodeHealth(s) != controllers.NodeReady {
					inflight[s.Spec.Revision]++
				}
			}
			for r, n := range inflight {
				if n > m.maxInflight[r] {
					m.maxInflight[r] = n
				}
			}
		}
	}()
	return m
}

func (m *monitor) stop() {
	m.w.Stop()
	<-m.done
}
