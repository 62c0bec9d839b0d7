package backend

import (
	"reflect"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

func TestFeatureTableCheck(t *testing.T) {
	table := FeatureTable{
		{Feature: AlgorithmFeature(model.AlgorithmRandom), Supported: true},
		{Feature: AlgorithmFeature(model.AlgorithmMaglev), Supported: false, Note: "no"},
		{Feature: FeatureClientIPAffinity, Supported: true},
	}
	cases := []struct {
		name string
		p    model.Policy
		want []string // nil = supported
	}{
		{"defaults", model.Policy{}, nil},
		{"supported algorithm and affinity", model.Policy{Algorithm: model.AlgorithmRandom, Affinity: &model.Affinity{ClientIP: true}}, nil},
		{"affinity off needs nothing", model.Policy{Affinity: &model.Affinity{}}, nil},
		{"unsupported algorithm", model.Policy{Algorithm: model.AlgorithmMaglev}, []string{"Algorithm/Maglev"}},
		{"unknown row is unsupported", model.Policy{Algorithm: model.AlgorithmRoundRobin, SourceRanges: []string{"10.0.0.0/8"}},
			[]string{"Algorithm/RoundRobin", "SourceRanges"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Namespace, tc.p.Name = "ns", "p"
			err := table.Check("test", tc.p)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			ue, ok := err.(*UnsupportedError)
			if !ok {
				t.Fatalf("error %v (%T), want *UnsupportedError", err, err)
			}
			if !reflect.DeepEqual(ue.Features, tc.want) || ue.Backend != "test" || ue.Policy != "ns/p" {
				t.Errorf("got %+v, want features %v", ue, tc.want)
			}
			if ue.Error() == "" {
				t.Error("empty message")
			}
		})
	}
}
