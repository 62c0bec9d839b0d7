package upgrade

import (
	"fmt"
	"slices"
	"sort"
)

// nodeFacts is what happened to one node in one phase.
type nodeFacts struct {
	assigned, deleted, ready *event
	deletions                int
}

// checkRollout checks one GatewayConfig's nodes in one phase, listed in
// the order its rollout must take them (the canary, the first node by
// name, then one at a time: maxUnavailable 1): each node's old agent pod
// (old: UID by node) is deleted exactly once, and only after the node was
// assigned target (the rollout replaced it, not the DaemonSet controller
// nor anyone else); a node is assigned, and its pod deleted, only once the
// node before it is Ready at target with target's pod template hash. It
// returns the order in which the pods were replaced and the problems.
func checkRollout(events []event, nodes []string, target, hash string, old map[string]string) (order, problems []string) {
	facts := map[string]*nodeFacts{}
	for _, n := range nodes {
		facts[n] = &nodeFacts{}
	}
	for i := range events {
		e := &events[i]
		f := facts[e.node]
		if f == nil {
			continue
		}
		switch e.kind {
		case evAssigned:
			if e.revision == target && f.assigned == nil {
				f.assigned = e
			}
		case evPodDeleting:
			f.deletions++
			if e.uid == old[e.node] && f.deleted == nil {
				f.deleted = e
			}
		case evNodeReady:
			if e.revision == target && e.hash == hash && f.ready == nil {
				f.ready = e
			}
		}
	}
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var prev *nodeFacts
	for i, n := range nodes {
		f := facts[n]
		switch {
		case f.assigned == nil:
			bad("%s was never assigned %s", n, target)
		case f.deleted == nil:
			bad("the old agent pod of %s (UID %s) was never deleted", n, old[n])
		case f.deleted.rv < f.assigned.rv:
			bad("the agent pod %s of %s was deleted (rv %d) before the rollout assigned the node %s (rv %d)", f.deleted.pod, n, f.deleted.rv, target, f.assigned.rv)
		}
		if f.deletions != 1 {
			bad("%s: %d agent pods deleted, want exactly 1", n, f.deletions)
		}
		if f.ready == nil {
			bad("%s never reported Ready at %s with pod template %s", n, target, hash)
		}
		if i > 0 && prev.ready != nil {
			if f.assigned != nil && f.assigned.rv < prev.ready.rv {
				bad("%s was assigned %s (rv %d) before %s was Ready at it (rv %d)", n, target, f.assigned.rv, nodes[i-1], prev.ready.rv)
			}
			if f.deleted != nil && f.deleted.rv < prev.ready.rv {
				bad("the agent pod of %s was deleted (rv %d) before %s was Ready at %s (rv %d)", n, f.deleted.rv, nodes[i-1], target, prev.ready.rv)
			}
		}
		prev = f
	}
	order = deletionOrder(facts)
	if len(problems) == 0 && !slices.Equal(order, nodes) {
		bad("agent pods replaced in the order %v, want the rollout's %v", order, nodes)
	}
	return order, problems
}

// deletionOrder lists the nodes whose old pod was deleted, in the order
// of the deletions.
func deletionOrder(facts map[string]*nodeFacts) []string {
	var order []string
	for n, f := range facts {
		if f.deleted != nil {
			order = append(order, n)
		}
	}
	sort.Slice(order, func(i, j int) bool { return facts[order[i]].deleted.rv < facts[order[j]].deleted.rv })
	return order
}

// checkHeld returns a problem for every agent pod deleted and every node
// assigned a revision among events, on the nodes given: under Manual,
// nothing may move before the approval.
func checkHeld(events []event, nodes []string) []string {
	var problems []string
	for _, e := range events {
		if !slices.Contains(nodes, e.node) {
			continue
		}
		switch e.kind {
		case evPodDeleting:
			problems = append(problems, fmt.Sprintf("the agent pod %s of %s was deleted (rv %d) before the approval", e.pod, e.node, e.rv))
		case evAssigned:
			problems = append(problems, fmt.Sprintf("%s was assigned %s (rv %d) before the approval", e.node, e.revision, e.rv))
		}
	}
	return problems
}

// checkReplacedOnce checks that each node's old agent pod (old: UID by
// node) was deleted and that exactly one agent pod was deleted there, and
// that each node ended with a Ready agent pod of image. It returns the
// order of the deletions and the problems.
func checkReplacedOnce(events []event, nodes []string, old map[string]string, image string) (order, problems []string) {
	facts := map[string]*nodeFacts{}
	readyNew := map[string]bool{}
	for _, n := range nodes {
		facts[n] = &nodeFacts{}
	}
	for i := range events {
		e := &events[i]
		f := facts[e.node]
		if f == nil {
			continue
		}
		switch e.kind {
		case evPodDeleting:
			f.deletions++
			if e.uid == old[e.node] && f.deleted == nil {
				f.deleted = e
			}
		case evPodReady:
			if e.image == image {
				readyNew[e.node] = true
			}
		}
	}
	for _, n := range nodes {
		f := facts[n]
		if f.deleted == nil {
			problems = append(problems, fmt.Sprintf("the old agent pod of %s (UID %s) was never deleted", n, old[n]))
		}
		if f.deletions != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d agent pods deleted, want exactly 1", n, f.deletions))
		}
		if !readyNew[n] {
			problems = append(problems, fmt.Sprintf("%s: no agent pod of %s became Ready", n, image))
		}
	}
	return deletionOrder(facts), problems
}

// maxDown is the largest number of the nodes that were, at one moment,
// without a Ready agent pod that is not being deleted, starting from every
// node having one.
func maxDown(events []event, nodes []string) int {
	current := map[string]string{} // node -> UID of its Ready, live agent pod ("" none)
	for _, n := range nodes {
		current[n] = "?" // the pod it had at the start
	}
	down, most := 0, 0
	for _, e := range events {
		cur, ok := current[e.node]
		if !ok {
			continue
		}
		switch {
		case e.kind == evPodDeleting && cur != "" && (cur == "?" || cur == e.uid):
			current[e.node] = ""
			down++
		case e.kind == evPodReady && cur == "":
			current[e.node] = e.uid
			down--
		}
		most = max(most, down)
	}
	return most
}
