package v1alpha1

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// PolicyTargets is what a ProxyPolicy's targetRefs and selector resolve to
// against the Services of its namespace. The operator reports it in the
// policy's status and the agent programs Selected; both get it from
// ProxyPolicy.ResolveTargets, so that they never disagree.
// +kubebuilder:object:generate=false
type PolicyTargets struct {
	// Selected names, sorted, the Services the policy attaches to: those the
	// targetRefs name and that exist, and those the selector matches.
	Selected []string
	// Unresolved lists, sorted by name, the targetRefs that name no usable
	// Service.
	Unresolved []UnresolvedTarget
}

// UnresolvedTarget is a targetRef that names no usable Service.
// +kubebuilder:object:generate=false
type UnresolvedTarget struct {
	// Name is the targetRef's name.
	Name string
	// Reason is ReasonTargetNotFound when no such Service exists, or
	// ReasonInvalidTarget when the ref cannot name a Service of the policy.
	Reason string
	// Message says why, in words.
	Message string
}

// ResolveTargets resolves the policy's targetRefs and selector against
// services; Services of other namespaces are ignored.
//
// A targetRef names a Service when its group is "" (the core group, as in
// Gateway API policy attachment: "core" is not a group name, and the API
// server refuses it), its kind is Service (or empty, which the API server
// defaults to Service) and its namespace is empty or the policy's own. The
// first targetRef of a name decides for that name.
//
// The error reports a selector that is not a valid label selector; it then
// selects nothing, and the targetRefs are resolved as usual.
func (p *ProxyPolicy) ResolveTargets(services []*corev1.Service) (PolicyTargets, error) {
	var out PolicyTargets
	refs := map[string]bool{} // usable targetRef names; true once found
	decided := map[string]bool{}
	for _, ref := range p.Spec.TargetRefs {
		if decided[ref.Name] {
			continue
		}
		decided[ref.Name] = true
		if why := p.unusableRef(ref); why != "" {
			out.Unresolved = append(out.Unresolved, UnresolvedTarget{Name: ref.Name, Reason: ReasonInvalidTarget, Message: why})
			continue
		}
		refs[ref.Name] = false
	}
	var sel labels.Selector
	var selErr error
	if p.Spec.Selector != nil {
		if sel, selErr = metav1.LabelSelectorAsSelector(p.Spec.Selector); selErr != nil {
			sel, selErr = nil, fmt.Errorf("spec.selector is invalid: %w", selErr)
		}
	}
	seen := map[string]bool{}
	for _, s := range services {
		if s.Namespace != p.Namespace || seen[s.Name] {
			continue
		}
		_, named := refs[s.Name]
		if named {
			refs[s.Name] = true
		}
		if named || (sel != nil && sel.Matches(labels.Set(s.Labels))) {
			seen[s.Name] = true
			out.Selected = append(out.Selected, s.Name)
		}
	}
	for name, found := range refs {
		if !found {
			out.Unresolved = append(out.Unresolved, UnresolvedTarget{Name: name, Reason: ReasonTargetNotFound, Message: "Service not found"})
		}
	}
	sort.Strings(out.Selected)
	sort.Slice(out.Unresolved, func(i, j int) bool { return out.Unresolved[i].Name < out.Unresolved[j].Name })
	return out, selErr
}

// unusableRef says why a targetRef cannot name a Service of the policy, or
// returns "" when it can.
func (p *ProxyPolicy) unusableRef(ref PolicyTargetReference) string {
	switch {
	case ref.Name == "":
		return "a targetRef needs the name of a Service"
	case ref.Group != "" || (ref.Kind != "" && ref.Kind != "Service"):
		return fmt.Sprintf("only Services (group \"\", kind Service) can be targets, not %s/%s", ref.Group, ref.Kind)
	case ref.Namespace != "" && ref.Namespace != p.Namespace:
		return fmt.Sprintf("targets must be in the policy's namespace %s, not %s", p.Namespace, ref.Namespace)
	}
	return ""
}
