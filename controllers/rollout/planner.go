// Package rollout is the pure rollout planner of the operator: given the nodes
// of one GatewayConfig, what each node reports, and the rollout settings, it
// decides which config revision each node is assigned next. It talks to no API
// server; the GatewayConfig reconciler feeds it and writes its decisions.
package rollout

import (
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Health is the state of a node at the revision it is assigned.
type Health int

const (
	// Pending: the node has not yet reported Ready nor a failure at its
	// assigned revision.
	Pending Health = iota
	// Ready: the node reports Ready at its assigned revision and generation.
	Ready
	// Failed: the node reports a failure at its assigned revision.
	Failed
)

// Node is one node as the planner sees it.
type Node struct {
	// Name is the node's name.
	Name string
	// Labels are the node's labels, matched by a canary selector.
	Labels map[string]string
	// Assigned is the revision the node is assigned now; empty when none.
	Assigned string
	// AssignedAt is when Assigned was assigned; zero when unknown.
	AssignedAt time.Time
	// Health is the node's state at Assigned.
	Health Health
}

// Input is everything the planner decides from.
type Input struct {
	// Nodes are the nodes the GatewayConfig runs on.
	Nodes []Node
	// Target is the revision to roll out. Empty means none: only nodes that
	// have nothing get LastGood.
	Target string
	// LastGood is the last revision that reached every node; empty when no
	// revision ever did.
	LastGood string
	// CanarySelector, when not nil, picks the canary nodes by label. When it
	// matches no node, the first node by name is the canary.
	CanarySelector labels.Selector
	// CanaryCount is how many nodes, the first by name, are canaries when
	// CanarySelector is nil. Less than 1 means 1.
	CanaryCount int
	// MaxUnavailable bounds the nodes assigned Target and not yet Ready at it.
	// Nil means 1.
	MaxUnavailable *intstr.IntOrString
	// AutoRollback reassigns LastGood to the nodes that got Target when the
	// rollout fails.
	AutoRollback bool
	// ProgressDeadline is how long a node may take to report Ready at Target;
	// zero means no deadline.
	ProgressDeadline time.Duration
	// Now is the current time.
	Now time.Time
}

// Plan is what the planner decided.
type Plan struct {
	// Assign maps the nodes whose revision changes to their new revision.
	Assign map[string]string
	// Failed names, sorted, the nodes that failed at their assigned revision,
	// including those past the progress deadline.
	Failed []string
	// TargetFailed is true when at least one node failed at Target (and Target
	// is not LastGood): the rollout is stopped.
	TargetFailed bool
	// RolledBack is true when the plan reassigns LastGood to the nodes that got
	// Target because the rollout failed.
	RolledBack bool
	// Complete is true when every node is Ready at Target.
	Complete bool
	// Canaries names, sorted, the canary nodes of this rollout.
	Canaries []string
	// MaxUnavailable is the resolved bound.
	MaxUnavailable int
	// RequeueAfter, when positive, is when the next progress deadline passes.
	RequeueAfter time.Duration
}

// ResolveMaxUnavailable turns maxUnavailable into a node count: an integer as
// is, a percentage of desired rounded down; at least 1 either way.
func ResolveMaxUnavailable(v *intstr.IntOrString, desired int) int {
	n := 1
	if v != nil {
		if got, err := intstr.GetScaledValueFromIntOrPercent(v, desired, false); err == nil {
			n = got
		}
	}
	if n < 1 {
		n = 1
	}
	return n
}

// Compute plans the next step of the rollout. It is deterministic: the same
// input gives the same plan. It judges every node's health first (a node past
// its progress deadline has failed), then takes the one step that applies:
// nothing to roll out, roll back, converge on a known-good target, or advance
// a new target through canaries and batches.
func Compute(in Input) Plan {
	nodes := append([]Node(nil), in.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })

	p := Plan{Assign: map[string]string{}, MaxUnavailable: ResolveMaxUnavailable(in.MaxUnavailable, len(nodes))}
	health := p.judge(nodes, in)
	switch {
	case in.Target == "":
		// Nothing to roll out: nodes that have nothing get the last good revision.
		p.startNew(nodes, in)
	case p.TargetFailed:
		p.stop(nodes, in)
	case in.Target == in.LastGood:
		p.converge(nodes, in, health)
	default:
		p.advance(nodes, in, health)
	}
	return p
}

// judge returns each node's health at its assigned revision, counting a node
// not Ready at a new target within the progress deadline as failed. It fills
// Failed, TargetFailed and RequeueAfter (the next deadline).
func (p *Plan) judge(nodes []Node, in Input) map[string]Health {
	health := make(map[string]Health, len(nodes))
	for _, n := range nodes {
		h := n.Health
		if h == Pending && n.Assigned != "" && n.Assigned == in.Target && in.Target != in.LastGood &&
			in.ProgressDeadline > 0 && !n.AssignedAt.IsZero() {
			deadline := n.AssignedAt.Add(in.ProgressDeadline)
			if !in.Now.Before(deadline) {
				h = Failed
			} else if d := deadline.Sub(in.Now); p.RequeueAfter == 0 || d < p.RequeueAfter {
				p.RequeueAfter = d
			}
		}
		if n.Assigned == "" {
			h = Pending
		}
		health[n.Name] = h
		if h == Failed {
			p.Failed = append(p.Failed, n.Name)
			if n.Assigned == in.Target && in.Target != "" && in.Target != in.LastGood {
				p.TargetFailed = true
			}
		}
	}
	return health
}

// startNew gives the last good revision to the nodes that have none.
func (p *Plan) startNew(nodes []Node, in Input) {
	for _, n := range nodes {
		if n.Assigned == "" && in.LastGood != "" {
			p.Assign[n.Name] = in.LastGood
		}
	}
}

// stop handles a failed rollout: no node gets the target any more, and the
// nodes that got it go back to the last good revision when asked to and
// possible.
func (p *Plan) stop(nodes []Node, in Input) {
	p.RequeueAfter = 0
	for _, n := range nodes {
		switch {
		case in.AutoRollback && in.LastGood != "" && n.Assigned == in.Target:
			p.Assign[n.Name] = in.LastGood
			p.RolledBack = true
		case n.Assigned == "" && in.LastGood != "":
			p.Assign[n.Name] = in.LastGood
		}
	}
}

// converge rolls out a target that is the last good revision (steady state,
// or a rollback that already happened): it is known to work, so every node
// gets it at once.
func (p *Plan) converge(nodes []Node, in Input, health map[string]Health) {
	complete := true
	for _, n := range nodes {
		if n.Assigned != in.Target {
			p.Assign[n.Name] = in.Target
			complete = false
		} else if health[n.Name] != Ready {
			complete = false
		}
	}
	p.Complete = complete
}

// advance rolls a new revision out: canaries first, then batches bounded by
// maxUnavailable, each started only once the nodes before it are Ready.
func (p *Plan) advance(nodes []Node, in Input, health map[string]Health) {
	canary := canaries(nodes, in)
	canariesDone := true
	for _, n := range nodes {
		if canary[n.Name] {
			p.Canaries = append(p.Canaries, n.Name)
			if n.Assigned != in.Target || health[n.Name] != Ready {
				canariesDone = false
			}
		}
	}
	inflight, done := 0, 0
	for _, n := range nodes {
		switch {
		case n.Assigned != in.Target:
			if n.Assigned == "" && in.LastGood != "" {
				// A node that joined mid-rollout starts at the last good
				// revision and is updated in its turn.
				p.Assign[n.Name] = in.LastGood
			}
		case health[n.Name] == Ready:
			done++
		default:
			inflight++
		}
	}
	if done == len(nodes) {
		p.Complete = true
		return
	}
	budget := p.MaxUnavailable - inflight
	for _, n := range updateOrder(nodes, in.Target, health) {
		if budget <= 0 {
			break
		}
		if !canariesDone && !canary[n.Name] {
			continue
		}
		p.Assign[n.Name] = in.Target
		budget--
	}
}

// updateOrder returns the nodes still to update to target, in the order they
// get it: those not Ready at their current revision first (updating them takes
// nothing more away), then the new and the Ready ones, by name.
func updateOrder(nodes []Node, target string, health map[string]Health) []Node {
	order := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Assigned != target && n.Assigned != "" && health[n.Name] != Ready {
			order = append(order, n)
		}
	}
	for _, n := range nodes {
		if n.Assigned == "" || (n.Assigned != target && health[n.Name] == Ready) {
			order = append(order, n)
		}
	}
	return order
}

// canaries returns the canary nodes of a rollout.
func canaries(nodes []Node, in Input) map[string]bool {
	c := map[string]bool{}
	if in.CanarySelector != nil {
		for _, n := range nodes {
			if in.CanarySelector.Matches(labels.Set(n.Labels)) {
				c[n.Name] = true
			}
		}
		if len(c) > 0 {
			return c
		}
	}
	count := in.CanaryCount
	if count < 1 || in.CanarySelector != nil {
		count = 1
	}
	for i := 0; i < count && i < len(nodes); i++ {
		c[nodes[i].Name] = true
	}
	return c
}
