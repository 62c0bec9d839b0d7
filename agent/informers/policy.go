package informers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// algorithms maps the API's algorithm names to the model's. An algorithm
// missing here passes through unchanged, and the backend's feature table
// reports it as unsupported.
var algorithms = map[v1alpha1.LoadBalancingAlgorithm]model.Algorithm{
	v1alpha1.AlgorithmRandom:                   model.AlgorithmRandom,
	v1alpha1.AlgorithmRoundRobin:               model.AlgorithmRoundRobin,
	v1alpha1.AlgorithmWeightedRoundRobin:       model.AlgorithmWeightedRoundRobin,
	v1alpha1.AlgorithmLeastConnections:         model.AlgorithmLeastConnections,
	v1alpha1.AlgorithmWeightedLeastConnections: model.AlgorithmWeightedLeastConnections,
	v1alpha1.AlgorithmSourceHash:               model.AlgorithmSourceHashing,
	v1alpha1.AlgorithmDestinationHash:          model.AlgorithmDestinationHashing,
	v1alpha1.AlgorithmMaglev:                   model.AlgorithmMaglev,
	v1alpha1.AlgorithmShortestExpectedDelay:    model.AlgorithmShortestExpectedDelay,
	v1alpha1.AlgorithmNeverQueue:               model.AlgorithmNeverQueue,
}

// Policy converts a ProxyPolicy into a model policy, resolving its
// targetRefs and selector against the Services of its namespace (the ones
// this agent handles). A policy that targets nothing converts to a policy
// with no Services, which changes nothing. The error reports a policy that
// cannot be converted at all; the policy is then left out.
func Policy(p *v1alpha1.ProxyPolicy, services []*corev1.Service) (model.Policy, error) {
	out := model.Policy{Namespace: p.Namespace, Name: p.Name, Created: p.CreationTimestamp.Time}
	seen := map[string]bool{}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out.Services = append(out.Services, model.ServiceRef{Namespace: p.Namespace, Name: name})
		}
	}
	for _, r := range p.Spec.TargetRefs {
		if (r.Group != "" && r.Group != "core") || (r.Kind != "" && r.Kind != "Service") ||
			(r.Namespace != "" && r.Namespace != p.Namespace) || r.Name == "" {
			continue // the operator reports these on the policy
		}
		add(r.Name)
	}
	if p.Spec.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			return model.Policy{}, fmt.Errorf("invalid selector: %w", err)
		}
		if !sel.Empty() || len(p.Spec.TargetRefs) == 0 {
			for _, s := range services {
				if s.Namespace == p.Namespace && sel.Matches(labels.Set(s.Labels)) {
					add(s.Name)
				}
			}
		}
	}
	for _, pp := range p.Spec.Ports {
		mp := model.PolicyPort{Name: pp.Name}
		if pp.Port != nil {
			mp.Port = *pp.Port
		}
		out.Ports = append(out.Ports, mp)
	}
	if lb := p.Spec.LoadBalancing; lb != nil && lb.Algorithm != "" {
		if a, ok := algorithms[lb.Algorithm]; ok {
			out.Algorithm = a
		} else {
			out.Algorithm = model.Algorithm(lb.Algorithm)
		}
	}
	if sa := p.Spec.SessionAffinity; sa != nil {
		aff := &model.Affinity{ClientIP: sa.Type == "ClientIP", Timeout: model.DefaultAffinityTimeout}
		if sa.TimeoutSeconds != nil && *sa.TimeoutSeconds > 0 {
			aff.Timeout = time.Duration(*sa.TimeoutSeconds) * time.Second
		}
		out.Affinity = aff
	}
	if p.Spec.SourceRanges != nil {
		out.SourceRanges = make([]string, 0, len(p.Spec.SourceRanges))
		for _, r := range p.Spec.SourceRanges {
			out.SourceRanges = append(out.SourceRanges, string(r))
		}
	}
	return out, nil
}
