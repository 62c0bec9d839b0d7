// Package translate turns the API's objects into the agent model's input. It
// holds no state and watches nothing: agent/informers watches, this package
// converts, agent/model decides.
package translate

import (
	"time"

	corev1 "k8s.io/api/core/v1"

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

// Policy converts a ProxyPolicy into a model policy. Its targets are resolved
// by ProxyPolicy.ResolveTargets against services (the Services of its
// namespace that this agent handles), exactly as the operator resolves them
// for the policy's status; targetRefs that resolve to nothing are left out,
// and a policy that targets nothing converts to a policy with no Services,
// which changes nothing. The error reports a policy that cannot be converted
// at all (an invalid selector); the agent then leaves the policy out and
// reports it as failed.
func Policy(p *v1alpha1.ProxyPolicy, services []*corev1.Service) (model.Policy, error) {
	targets, err := p.ResolveTargets(services)
	if err != nil {
		return model.Policy{}, err
	}
	out := model.Policy{Namespace: p.Namespace, Name: p.Name, Created: p.CreationTimestamp.Time}
	for _, name := range targets.Selected {
		out.Services = append(out.Services, model.ServiceRef{Namespace: p.Namespace, Name: name})
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
		aff := &model.Affinity{ClientIP: sa.Type == v1alpha1.SessionAffinityClientIP, Timeout: model.DefaultAffinityTimeout}
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
