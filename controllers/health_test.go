package controllers

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestProxyNodeHealth(t *testing.T) {
	pn := func(obsGen int64, applied string, conds ...metav1.Condition) *proxyv1alpha1.ProxyNode {
		p := &proxyv1alpha1.ProxyNode{}
		p.Generation = 2
		p.Spec.Revision = "r2"
		p.Status.ObservedGeneration = obsGen
		p.Status.AppliedRevision = applied
		p.Status.Conditions = conds
		return p
	}
	cond := func(typ string, s metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, ObservedGeneration: gen}
	}
	ready := proxyv1alpha1.ConditionReady
	degraded := proxyv1alpha1.ConditionDegraded
	cases := []struct {
		name string
		pn   *proxyv1alpha1.ProxyNode
		want NodeHealth
	}{
		{"no report", pn(0, ""), NodePending},
		{"ready at current generation and revision", pn(2, "r2", cond(ready, metav1.ConditionTrue, proxyv1alpha1.ReasonSynced, 2)), NodeReady},
		{"ready at an old generation", pn(1, "r1", cond(ready, metav1.ConditionTrue, proxyv1alpha1.ReasonSynced, 1)), NodePending},
		{"ready but another revision applied", pn(2, "r1", cond(ready, metav1.ConditionTrue, proxyv1alpha1.ReasonSynced, 2)), NodePending},
		{"condition from an old generation", pn(2, "r2", cond(ready, metav1.ConditionTrue, proxyv1alpha1.ReasonSynced, 1)), NodePending},
		{"degraded", pn(2, "r1", cond(ready, metav1.ConditionFalse, proxyv1alpha1.ReasonSyncFailed, 2), cond(degraded, metav1.ConditionTrue, proxyv1alpha1.ReasonSyncFailed, 2)), NodeFailed},
		{"ready false with a failure reason", pn(2, "", cond(ready, metav1.ConditionFalse, proxyv1alpha1.ReasonRevisionInvalid, 2)), NodeFailed},
		{"ready false, revision not found yet", pn(2, "", cond(ready, metav1.ConditionFalse, proxyv1alpha1.ReasonRevisionNotFound, 2), cond(degraded, metav1.ConditionFalse, proxyv1alpha1.ReasonRevisionNotFound, 2)), NodePending},
		{"ready unknown", pn(2, "", cond(ready, metav1.ConditionUnknown, proxyv1alpha1.ReasonUnknown, 2)), NodePending},
		{"ready false, first sync not done", pn(2, "", cond(ready, metav1.ConditionFalse, proxyv1alpha1.ReasonSyncing, 2)), NodePending},
		{"ready false, no ProxyNode in the agent's cache yet", pn(2, "", cond(ready, metav1.ConditionFalse, proxyv1alpha1.ReasonNoProxyNode, 2)), NodePending},
		{"ready false with a reason outside the contract", pn(2, "", cond(ready, metav1.ConditionFalse, "Starting", 2)), NodeFailed},
	}
	for _, c := range cases {
		if got := ProxyNodeHealth(c.pn); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestRevisionIgnoresRolloutSettings(t *testing.T) {
	a := &proxyv1alpha1.GatewayConfigSpec{Mode: proxyv1alpha1.BackendModeAuto}
	b := a.DeepCopy()
	mu := intstr.FromString("50%")
	b.Rollout = &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual, ApprovedRevision: "x", MaxUnavailable: &mu}
	o := AgentOptions{Namespace: "ns", DefaultImage: "example.org/agent:1"}
	ra, err := RevisionFor("gc", a, o)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := RevisionFor("gc", b, o)
	if ra.Hash != rb.Hash || ra.Name != rb.Name || ra.Name != "gc-"+ra.Hash || ra.PodTemplateHash != rb.PodTemplateHash {
		t.Fatalf("rollout settings changed the revision: %s %s", ra.Name, rb.Name)
	}
	c := a.DeepCopy()
	c.Mode = proxyv1alpha1.BackendModeIPVS
	if rc, _ := RevisionFor("gc", c, o); rc.Hash == ra.Hash || rc.PodTemplateHash != ra.PodTemplateHash {
		t.Fatal("a config change kept the revision, or changed the agent pod template")
	}
	if b.Rollout == nil {
		t.Fatal("RevisionFor changed its input")
	}
}

func TestRevisionsToPrune(t *testing.T) {
	var revs []appsv1.ControllerRevision
	for i := 1; i <= 14; i++ {
		r := appsv1.ControllerRevision{Revision: int64(i)}
		r.Name = fmt.Sprintf("r%d", i)
		revs = append(revs, r)
	}
	got := revisionsToPrune(revs, map[string]bool{"r1": true, "r3": true}, 10)
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
	}
	if fmt.Sprint(names) != "[r2 r4 r5 r6]" {
		t.Fatalf("pruned %v, want [r2 r4 r5 r6]", names)
	}
	if got := revisionsToPrune(revs[:10], nil, 10); got != nil {
		t.Fatalf("pruned %v within the limit", got)
	}
}
