package selection

import (
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

func TestAssign(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	all := labels.Everything()
	edge := labels.SelectorFromSet(labels.Set{"edge": "true"})
	nodes := []Node{{Name: "n2", Labels: map[string]string{"edge": "true"}}, {Name: "n1"}, {Name: "n3", Labels: map[string]string{"edge": "true"}}}

	got := Assign([]Config{
		{Name: "edge", Created: t0, Selector: edge},
		{Name: "all", Created: t0.Add(time.Second), Selector: all},
	}, nodes)
	if !reflect.DeepEqual(got["edge"].Won, []string{"n2", "n3"}) || got["edge"].Lost != nil {
		t.Errorf("edge = %+v", got["edge"])
	}
	if !reflect.DeepEqual(got["all"].Won, []string{"n1"}) ||
		!reflect.DeepEqual(got["all"].Lost, []Lost{{"n2", "edge"}, {"n3", "edge"}}) {
		t.Errorf("all = %+v", got["all"])
	}

	// Same creation time: the smaller name wins.
	got = Assign([]Config{{Name: "b", Created: t0, Selector: all}, {Name: "a", Created: t0, Selector: all}}, nodes)
	if len(got["a"].Won) != 3 || len(got["b"].Won) != 0 || len(got["b"].Lost) != 3 {
		t.Errorf("tie: a = %+v, b = %+v", got["a"], got["b"])
	}

	// A deleting config gives its nodes up.
	got = Assign([]Config{{Name: "a", Created: t0, Selector: all, Deleting: true}, {Name: "b", Created: t0.Add(time.Hour), Selector: all}}, nodes)
	if len(got["a"].Won) != 0 || len(got["b"].Won) != 3 {
		t.Errorf("deleting: a = %+v, b = %+v", got["a"], got["b"])
	}
}

func TestSelector(t *testing.T) {
	s, err := Selector(nil)
	if err != nil || !s.Matches(labels.Set{"x": "y"}) {
		t.Fatalf("nil selector must select everything: %v %v", s, err)
	}
}
