package v1alpha1_test

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	. "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func TestResolveTargets(t *testing.T) {
	svc := func(ns, name string, labels map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	services := []*corev1.Service{
		svc("ns", "web", map[string]string{"tier": "web"}),
		svc("ns", "db", map[string]string{"tier": "db"}),
		svc("ns", "api", map[string]string{"tier": "web"}),
		svc("other", "cache", map[string]string{"tier": "web"}),
	}
	ref := func(group, kind, name, ns string) PolicyTargetReference {
		return PolicyTargetReference{Group: group, Kind: kind, Name: name, Namespace: ns}
	}
	notFound := func(name string) UnresolvedTarget {
		return UnresolvedTarget{Name: name, Reason: ReasonTargetNotFound, Message: "Service not found"}
	}
	for _, tc := range []struct {
		name       string
		refs       []PolicyTargetReference
		selector   *metav1.LabelSelector
		selected   []string
		unresolved []UnresolvedTarget // compared by name and reason
		wantErr    bool
	}{
		{name: "refs to existing Services, sorted", refs: []PolicyTargetReference{ref("", "Service", "web", ""), ref("", "", "db", "")},
			selected: []string{"db", "web"}},
		{name: "a ref to a missing Service", refs: []PolicyTargetReference{ref("", "Service", "web", ""), ref("", "Service", "gone", "")},
			selected: []string{"web"}, unresolved: []UnresolvedTarget{notFound("gone")}},
		{name: "a Service of another namespace is not found", refs: []PolicyTargetReference{ref("", "Service", "cache", "")},
			unresolved: []UnresolvedTarget{notFound("cache")}},
		{name: "the policy's own namespace may be spelled out", refs: []PolicyTargetReference{ref("", "Service", "web", "ns")},
			selected: []string{"web"}},
		{name: "group core is not the core group", refs: []PolicyTargetReference{ref("core", "Service", "web", "")},
			unresolved: []UnresolvedTarget{{Name: "web", Reason: ReasonInvalidTarget}}},
		{name: "another kind", refs: []PolicyTargetReference{ref("apps", "Deployment", "web", "")},
			unresolved: []UnresolvedTarget{{Name: "web", Reason: ReasonInvalidTarget}}},
		{name: "another namespace", refs: []PolicyTargetReference{ref("", "Service", "cache", "other")},
			unresolved: []UnresolvedTarget{{Name: "cache", Reason: ReasonInvalidTarget}}},
		{name: "a ref without a name", refs: []PolicyTargetReference{ref("", "Service", "", "")},
			unresolved: []UnresolvedTarget{{Name: "", Reason: ReasonInvalidTarget}}},
		{name: "the first ref of a name decides", refs: []PolicyTargetReference{ref("", "Service", "web", ""), ref("apps", "Deployment", "web", "")},
			selected: []string{"web"}},
		{name: "a selector matches in the policy's namespace only", selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			selected: []string{"api", "web"}},
		{name: "an empty selector matches every Service of the namespace", selector: &metav1.LabelSelector{},
			selected: []string{"api", "db", "web"}},
		{name: "an invalid selector selects nothing", selector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Bogus"}}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
				Spec: ProxyPolicySpec{TargetRefs: tc.refs, Selector: tc.selector}}
			got, err := p.ResolveTargets(services)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %t", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got.Selected, tc.selected) {
				t.Errorf("selected %v, want %v", got.Selected, tc.selected)
			}
			if len(got.Unresolved) != len(tc.unresolved) {
				t.Fatalf("unresolved %+v, want %+v", got.Unresolved, tc.unresolved)
			}
			for i, u := range got.Unresolved {
				want := tc.unresolved[i]
				if u.Name != want.Name || u.Reason != want.Reason || u.Message == "" || (want.Message != "" && u.Message != want.Message) {
					t.Errorf("unresolved[%d] = %+v, want %+v", i, u, want)
				}
			}
		})
	}
}
