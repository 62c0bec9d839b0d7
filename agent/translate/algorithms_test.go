package translate

import (
	"slices"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Every algorithm the API accepts must reach the model as one it knows, or a
// valid policy would be reported as unsupported by every backend.
func TestEveryAPIAlgorithmMapsToAModelAlgorithm(t *testing.T) {
	api := []v1alpha1.LoadBalancingAlgorithm{
		v1alpha1.AlgorithmRandom, v1alpha1.AlgorithmRoundRobin, v1alpha1.AlgorithmWeightedRoundRobin,
		v1alpha1.AlgorithmLeastConnections, v1alpha1.AlgorithmWeightedLeastConnections,
		v1alpha1.AlgorithmSourceHash, v1alpha1.AlgorithmDestinationHash, v1alpha1.AlgorithmMaglev,
		v1alpha1.AlgorithmShortestExpectedDelay, v1alpha1.AlgorithmNeverQueue,
	}
	if len(algorithms) != len(api) {
		t.Errorf("the conversion table has %d algorithms, the API %d", len(algorithms), len(api))
	}
	for _, a := range api {
		m, ok := algorithms[a]
		if !ok {
			t.Errorf("API algorithm %s has no model algorithm", a)
			continue
		}
		if !slices.Contains(model.KnownAlgorithms, m) {
			t.Errorf("API algorithm %s maps to %s, which the model does not know", a, m)
		}
	}
}
