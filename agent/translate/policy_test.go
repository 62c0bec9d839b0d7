package translate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestPolicy(t *testing.T) {
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{"tier": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", Labels: map[string]string{"tier": "db"}}},
	}
	timeout := int32(60)
	port := int32(80)
	p := &v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
		Spec: v1alpha1.ProxyPolicySpec{
			TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "b"}, {Kind: "Service", Name: "x", Namespace: "other"},
				{Kind: "Deployment", Name: "y"}},
			Selector:        &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			Ports:           []v1alpha1.PolicyPort{{Name: "http"}, {Port: &port}},
			LoadBalancing:   &v1alpha1.LoadBalancingSpec{Algorithm: v1alpha1.AlgorithmSourceHash},
			SessionAffinity: &v1alpha1.SessionAffinitySpec{Type: v1alpha1.SessionAffinityClientIP, TimeoutSeconds: &timeout},
			SourceRanges:    []v1alpha1.CIDR{"10.0.0.0/8"},
		}}
	mp, err := Policy(p, svcs)
	if err != nil {
		t.Fatal(err)
	}
	if len(mp.Services) != 2 || mp.Services[0].Name != "a" || mp.Services[1].Name != "b" {
		t.Errorf("targets %v, want a (selector) and b (ref) only", mp.Services)
	}
	if mp.Algorithm != model.AlgorithmSourceHashing || mp.Affinity == nil || !mp.Affinity.ClientIP ||
		mp.Affinity.Timeout.Seconds() != 60 || len(mp.SourceRanges) != 1 || len(mp.Ports) != 2 || mp.Ports[1].Port != 80 {
		t.Errorf("converted %+v", mp)
	}
	// A policy that targets nothing the agent has converts to one with no
	// Services, which programs nothing.
	empty := &v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e"},
		Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Name: "absent"}}}}
	if mp, err := Policy(empty, svcs); err != nil || len(mp.Services) != 0 {
		t.Errorf("policy of an absent Service: %+v %v", mp, err)
	}
	bad := &v1alpha1.ProxyPolicy{Spec: v1alpha1.ProxyPolicySpec{Selector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}}}
	if _, err := Policy(bad, svcs); err == nil {
		t.Error("an invalid selector converted")
	}
}

// The agent programs exactly the Services the operator reports as the
// policy's targets: group "core" (which the API server refuses) names no
// Service on either side.
func TestPolicyTargetsAreTheOperators(t *testing.T) {
	svcs := []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}}
	for _, group := range []string{"", "core"} {
		p := &v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
			Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Group: group, Kind: "Service", Name: "web"}}}}
		mp, err := Policy(p, svcs)
		if err != nil {
			t.Fatal(err)
		}
		targets, _ := p.ResolveTargets(svcs)
		var got []string
		for _, s := range mp.Services {
			got = append(got, s.Name)
		}
		if len(got) != len(targets.Selected) || (len(got) == 1 && got[0] != targets.Selected[0]) {
			t.Errorf("group %q: agent programs %v, operator reports %v", group, got, targets.Selected)
		}
		if want := group == ""; (len(got) == 1) != want {
			t.Errorf("group %q: agent programs %v", group, got)
		}
	}
}
