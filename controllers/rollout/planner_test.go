package rollout

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func node(name, assigned string, h Health) Node {
	return Node{Name: name, Assigned: assigned, Health: h, AssignedAt: now.Add(-time.Minute)}
}

func ptr(v intstr.IntOrString) *intstr.IntOrString { return &v }

func TestResolveMaxUnavailable(t *testing.T) {
	cases := []struct {
		v       *intstr.IntOrString
		desired int
		want    int
	}{
		{nil, 10, 1},
		{ptr(intstr.FromInt32(3)), 10, 3},
		{ptr(intstr.FromString("10%")), 1000, 100},
		{ptr(intstr.FromString("10%")), 19, 1},
		{ptr(intstr.FromString("10%")), 5, 1},
		{ptr(intstr.FromString("100%")), 7, 7},
		{ptr(intstr.FromString("bad")), 7, 1},
	}
	for _, c := range cases {
		if got := ResolveMaxUnavailable(c.v, c.desired); got != c.want {
			t.Errorf("ResolveMaxUnavailable(%v, %d) = %d, want %d", c.v, c.desired, got, c.want)
		}
	}
}

func TestCompute(t *testing.T) {
	edge := labels.SelectorFromSet(labels.Set{"edge": "true"})
	cases := []struct {
		name         string
		in           Input
		assign       map[string]string
		failed       []string
		targetFailed bool
		rolledBack   bool
		complete     bool
	}{{
		name:   "first rollout starts with one canary",
		in:     Input{Nodes: []Node{node("c", "", Pending), node("a", "", Pending), node("b", "", Pending)}, Target: "r1", MaxUnavailable: ptr(intstr.FromInt32(2))},
		assign: map[string]string{"a": "r1"},
	}, {
		name:   "canary pending holds the others",
		in:     Input{Nodes: []Node{node("a", "r1", Pending), node("b", "", Pending), node("c", "", Pending)}, Target: "r1", MaxUnavailable: ptr(intstr.FromInt32(2))},
		assign: map[string]string{},
	}, {
		name:   "canary ready opens a batch of maxUnavailable",
		in:     Input{Nodes: []Node{node("a", "r1", Ready), node("b", "", Pending), node("c", "", Pending), node("d", "", Pending)}, Target: "r1", MaxUnavailable: ptr(intstr.FromInt32(2))},
		assign: map[string]string{"b": "r1", "c": "r1"},
	}, {
		name:   "in-flight nodes use the budget",
		in:     Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r2", Pending), node("c", "r1", Ready), node("d", "r1", Ready)}, Target: "r2", LastGood: "r1", MaxUnavailable: ptr(intstr.FromInt32(2))},
		assign: map[string]string{"c": "r2"},
	}, {
		name:   "budget full assigns nothing",
		in:     Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r2", Pending), node("c", "r2", Pending), node("d", "r1", Ready)}, Target: "r2", LastGood: "r1", MaxUnavailable: ptr(intstr.FromInt32(2))},
		assign: map[string]string{},
	}, {
		name:   "canary count two, budget one: canaries one by one",
		in:     Input{Nodes: []Node{node("a", "r1", Ready), node("b", "r1", Ready), node("c", "r1", Ready)}, Target: "r2", LastGood: "r1", CanaryCount: 2},
		assign: map[string]string{"a": "r2"},
	}, {
		name:   "second canary before any other node",
		in:     Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r1", Ready), node("c", "r1", Ready)}, Target: "r2", LastGood: "r1", CanaryCount: 2, MaxUnavailable: ptr(intstr.FromInt32(5))},
		assign: map[string]string{"b": "r2"},
	}, {
		name: "canary selector",
		in: Input{Nodes: []Node{node("a", "r1", Ready), {Name: "z", Labels: map[string]string{"edge": "true"}, Assigned: "r1", Health: Ready}},
			Target: "r2", LastGood: "r1", CanarySelector: edge, MaxUnavailable: ptr(intstr.FromInt32(5))},
		assign: map[string]string{"z": "r2"},
	}, {
		name:   "canary selector matching nothing falls back to the first node",
		in:     Input{Nodes: []Node{node("b", "r1", Ready), node("a", "r1", Ready)}, Target: "r2", LastGood: "r1", CanarySelector: edge, MaxUnavailable: ptr(intstr.FromInt32(5))},
		assign: map[string]string{"a": "r2"},
	}, {
		name:   "nodes broken at the old revision go first",
		in:     Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r1", Ready), node("c", "r1", Pending)}, Target: "r2", LastGood: "r1"},
		assign: map[string]string{"c": "r2"},
		failed: nil,
	}, {
		name:     "every node ready at target is complete",
		in:       Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r2", Ready)}, Target: "r2", LastGood: "r1"},
		assign:   map[string]string{},
		complete: true,
	}, {
		name:   "a new node mid-rollout starts at the last good revision",
		in:     Input{Nodes: []Node{node("a", "r2", Pending), node("b", "r1", Ready), node("n", "", Pending)}, Target: "r2", LastGood: "r1"},
		assign: map[string]string{"n": "r1"},
	}, {
		name:         "failed canary stops the rollout and rolls back",
		in:           Input{Nodes: []Node{node("a", "r2", Failed), node("b", "r1", Ready), node("c", "r1", Ready)}, Target: "r2", LastGood: "r1", AutoRollback: true, MaxUnavailable: ptr(intstr.FromInt32(5))},
		assign:       map[string]string{"a": "r1"},
		failed:       []string{"a"},
		targetFailed: true,
		rolledBack:   true,
	}, {
		name:         "failed node without autoRollback holds",
		in:           Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r2", Failed), node("c", "r1", Ready)}, Target: "r2", LastGood: "r1", MaxUnavailable: ptr(intstr.FromInt32(5))},
		assign:       map[string]string{},
		failed:       []string{"b"},
		targetFailed: true,
	}, {
		name:         "rollback reassigns every node that got the bad revision",
		in:           Input{Nodes: []Node{node("a", "r2", Ready), node("b", "r2", Failed), node("c", "r1", Ready)}, Target: "r2", LastGood: "r1", AutoRollback: true},
		assign:       map[string]string{"a": "r1", "b": "r1"},
		failed:       []string{"b"},
		targetFailed: true,
		rolledBack:   true,
	}, {
		name:         "failed first rollout cannot roll back",
		in:           Input{Nodes: []Node{node("a", "r1", Failed), node("b", "", Pending)}, Target: "r1", AutoRollback: true},
		assign:       map[string]string{},
		failed:       []string{"a"},
		targetFailed: true,
	}, {
		name: "progress deadline fails a slow node",
		in: Input{Nodes: []Node{{Name: "a", Assigned: "r2", Health: Pending, AssignedAt: now.Add(-11 * time.Minute)}, node("b", "r1", Ready)},
			Target: "r2", LastGood: "r1", AutoRollback: true, ProgressDeadline: 10 * time.Minute, Now: now},
		assign:       map[string]string{"a": "r1"},
		failed:       []string{"a"},
		targetFailed: true,
		rolledBack:   true,
	}, {
		name:     "target is the last good revision: every node at once",
		in:       Input{Nodes: []Node{node("a", "r2", Failed), node("b", "r1", Ready), node("c", "", Pending)}, Target: "r1", LastGood: "r1"},
		assign:   map[string]string{"a": "r1", "c": "r1"},
		failed:   []string{"a"},
		complete: false,
	}, {
		name:   "no target: only new nodes get the last good revision",
		in:     Input{Nodes: []Node{node("a", "r1", Ready), node("c", "", Pending)}, LastGood: "r1"},
		assign: map[string]string{"c": "r1"},
	}, {
		name:   "no target, no last good: nothing",
		in:     Input{Nodes: []Node{node("c", "", Pending)}},
		assign: map[string]string{},
	}, {
		name:     "no nodes is complete",
		in:       Input{Target: "r1"},
		assign:   map[string]string{},
		complete: true,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.in.Now.IsZero() {
				c.in.Now = now
			}
			p := Compute(c.in)
			if !reflect.DeepEqual(p.Assign, c.assign) {
				t.Errorf("assign = %v, want %v", p.Assign, c.assign)
			}
			if !reflect.DeepEqual(p.Failed, c.failed) {
				t.Errorf("failed = %v, want %v", p.Failed, c.failed)
			}
			if p.TargetFailed != c.targetFailed || p.RolledBack != c.rolledBack || p.Complete != c.complete {
				t.Errorf("targetFailed, rolledBack, complete = %v, %v, %v; want %v, %v, %v",
					p.TargetFailed, p.RolledBack, p.Complete, c.targetFailed, c.rolledBack, c.complete)
			}
		})
	}
}

func TestDeadlineRequeue(t *testing.T) {
	p := Compute(Input{
		Nodes:  []Node{{Name: "a", Assigned: "r2", AssignedAt: now.Add(-4 * time.Minute)}, {Name: "b", Assigned: "r2", AssignedAt: now.Add(-8 * time.Minute)}},
		Target: "r2", LastGood: "r1", ProgressDeadline: 10 * time.Minute, Now: now, MaxUnavailable: ptr(intstr.FromInt32(2)),
	})
	if p.RequeueAfter != 2*time.Minute {
		t.Fatalf("RequeueAfter = %v, want 2m", p.RequeueAfter)
	}
}

// TestSimulatedRollout drives the planner to the end with nodes that become
// Ready one step after they are assigned, and checks the bounds at every step.
func TestSimulatedRollout(t *testing.T) {
	for _, total := range []int{1, 7, 100} {
		for _, maxU := range []intstr.IntOrString{intstr.FromInt32(1), intstr.FromInt32(3), intstr.FromString("10%")} {
			t.Run(fmt.Sprintf("%d nodes maxUnavailable %s", total, maxU.String()), func(t *testing.T) {
				nodes := make([]Node, total)
				for i := range nodes {
					nodes[i] = Node{Name: fmt.Sprintf("n%03d", i), Assigned: "r1", Health: Ready}
				}
				bound := ResolveMaxUnavailable(&maxU, total)
				for step := 0; step < 2*total+5; step++ {
					p := Compute(Input{Nodes: nodes, Target: "r2", LastGood: "r1", MaxUnavailable: &maxU, Now: now})
					if p.Complete {
						return
					}
					if step == 0 && (len(p.Assign) != 1 || p.Assign["n000"] != "r2") {
						t.Fatalf("first step assigns %v, want the canary n000 alone", p.Assign)
					}
					// Nodes assigned last step become Ready now.
					for i := range nodes {
						if nodes[i].Assigned == "r2" {
							nodes[i].Health = Ready
						}
						if rev, ok := p.Assign[nodes[i].Name]; ok {
							nodes[i].Assigned, nodes[i].Health = rev, Pending
						}
					}
					inflight := 0
					for _, n := range nodes {
						if n.Assigned == "r2" && n.Health != Ready {
							inflight++
						}
					}
					if inflight > bound {
						t.Fatalf("step %d: %d nodes in flight, bound %d", step, inflight, bound)
					}
				}
				t.Fatalf("rollout did not complete")
			})
		}
	}
}

// BenchmarkCompute1000 plans one step of a rollout over 1,000 nodes.
func BenchmarkCompute1000(b *testing.B) {
	nodes := make([]Node, 1000)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("node-%04d", i), Assigned: "r1", Health: Ready, AssignedAt: now}
		if i < 150 {
			nodes[i].Assigned = "r2"
		}
	}
	mu := intstr.FromString("10%")
	in := Input{Nodes: nodes, Target: "r2", LastGood: "r1", MaxUnavailable: &mu, Now: now, ProgressDeadline: time.Minute}
	b.ReportAllocs()
	for b.Loop() {
		Compute(in)
	}
}
