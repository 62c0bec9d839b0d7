package upgrade

import (
	"strings"
	"testing"
)

// The checkers of the upgrade test run on event lists written here, so that
// each is seen to fail on the history it must reject (these run in make
// test; the upgrade test itself needs E2E=1).

func rollout(steps ...event) []event {
	for i := range steps {
		steps[i].rv = int64(i + 1)
	}
	return steps
}

var (
	old2     = map[string]string{"node-1": "a1", "node-2": "a2"}
	goodRoll = []event{
		{kind: evAssigned, node: "node-1", revision: "r2"},
		{kind: evPodDeleting, node: "node-1", uid: "a1"},
		{kind: evPodReady, node: "node-1", uid: "b1"},
		{kind: evNodeReady, node: "node-1", revision: "r2", hash: "h2"},
		{kind: evAssigned, node: "node-2", revision: "r2"},
		{kind: evPodDeleting, node: "node-2", uid: "a2"},
		{kind: evPodReady, node: "node-2", uid: "b2"},
		{kind: evNodeReady, node: "node-2", revision: "r2", hash: "h2"},
	}
)

func TestCheckRolloutAcceptsTheRolloutsOrder(t *testing.T) {
	order, problems := checkRollout(rollout(append([]event(nil), goodRoll...)...), []string{"node-1", "node-2"}, "r2", "h2", old2)
	if len(problems) > 0 || strings.Join(order, ",") != "node-1,node-2" {
		t.Fatalf("order %v, problems %v", order, problems)
	}
	if d := maxDown(rollout(append([]event(nil), goodRoll...)...), []string{"node-1", "node-2"}); d != 1 {
		t.Fatalf("maxDown %d, want 1", d)
	}
}

func TestCheckRolloutRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		events []event
		want   string
	}{
		"a pod deleted before its node was assigned": {
			rollout(append([]event{{kind: evPodDeleting, node: "node-2", uid: "a2"}}, goodRoll...)...), "before the rollout assigned",
		},
		"the second node assigned before the canary was ready": {
			rollout(goodRoll[0], goodRoll[1], goodRoll[4], goodRoll[2], goodRoll[3], goodRoll[5], goodRoll[6], goodRoll[7]), "before node-1 was Ready",
		},
		"a node ready only at another pod template": {
			rollout(goodRoll[0], goodRoll[1], goodRoll[2], event{kind: evNodeReady, node: "node-1", revision: "r2", hash: "old"},
				goodRoll[4], goodRoll[5], goodRoll[6], goodRoll[7]), "node-1 never reported Ready",
		},
		"a node whose agent was replaced twice": {
			rollout(append(append([]event(nil), goodRoll...), event{kind: evPodDeleting, node: "node-2", uid: "b2"})...), "2 agent pods deleted",
		},
		"a node never replaced": {rollout(goodRoll[:4]...), "node-2 was never assigned"},
	} {
		t.Run(name, func(t *testing.T) {
			_, problems := checkRollout(tc.events, []string{"node-1", "node-2"}, "r2", "h2", old2)
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Fatalf("problems %q, want one with %q", problems, tc.want)
			}
		})
	}
}

func TestCheckHeld(t *testing.T) {
	if p := checkHeld(rollout(goodRoll...), []string{"node-3"}); len(p) != 0 {
		t.Fatalf("nothing happened on node-3, got %v", p)
	}
	if p := checkHeld(rollout(goodRoll...), []string{"node-2"}); len(p) != 2 {
		t.Fatalf("node-2 was assigned and its pod deleted, got %v", p)
	}
}

func TestCheckReplacedOnce(t *testing.T) {
	events := rollout(
		event{kind: evPodDeleting, node: "node-2", uid: "a2"},
		event{kind: evPodReady, node: "node-2", uid: "b2", image: "img:old"},
		event{kind: evPodDeleting, node: "node-1", uid: "a1"},
		event{kind: evPodReady, node: "node-1", uid: "b1", image: "img:old"},
	)
	order, problems := checkReplacedOnce(events, []string{"node-1", "node-2"}, old2, "img:old")
	if len(problems) > 0 || strings.Join(order, ",") != "node-2,node-1" {
		t.Fatalf("order %v, problems %v", order, problems)
	}
	if _, problems := checkReplacedOnce(events, []string{"node-1", "node-2"}, old2, "img:new"); len(problems) != 2 {
		t.Fatalf("no pod of img:new became ready: %v", problems)
	}
	if d := maxDown(events, []string{"node-1", "node-2"}); d != 1 {
		t.Fatalf("maxDown %d, want 1", d)
	}
}

func TestCompareFindsLostAndRewrittenObjects(t *testing.T) {
	before := snapshot{
		"GatewayConfig /auto":     {kind: "GatewayConfig", uid: "u1", generation: 1, spec: map[string]any{"mode": "Auto"}},
		"ProxyPolicy upgrade/p":   {kind: "ProxyPolicy", uid: "u2", generation: 1, spec: map[string]any{"x": 1.0}},
		"ControllerRevision auto": {kind: "ControllerRevision", uid: "u3", generation: 1, data: map[string]any{"spec": map[string]any{}}},
	}
	after := snapshot{
		"GatewayConfig /auto":     {kind: "GatewayConfig", uid: "u1", generation: 2, spec: map[string]any{"mode": "IPVS"}},
		"ControllerRevision auto": {kind: "ControllerRevision", uid: "u3", generation: 1, data: map[string]any{"spec": map[string]any{}}, labels: map[string]string{"l": "v"}},
	}
	problems, changes := compare(before, after)
	if len(problems) != 2 || !strings.Contains(problems[0], "rewritten") || !strings.Contains(problems[1], "lost") {
		t.Fatalf("problems %q", problems)
	}
	if len(changes) != 1 || !strings.Contains(changes[0], "metadata") {
		t.Fatalf("changes %q", changes)
	}
	if p, _ := compare(before.approved("auto", "r"), before); len(p) != 1 {
		t.Fatalf("an approval not made must show: %q", p)
	}
}

func TestReadBackFindsWhatTheTypesDrop(t *testing.T) {
	s := snapshot{
		"GatewayConfig /a": {kind: "GatewayConfig", spec: map[string]any{"mode": "Auto", "minSyncPeriod": "100ms"}},
		"GatewayConfig /b": {kind: "GatewayConfig", spec: map[string]any{"mode": "Auto", "noSuchField": true}},
	}
	problems := readBack(s)
	if len(problems) != 1 || !strings.HasPrefix(problems[0], "GatewayConfig /b") {
		t.Fatalf("problems %q", problems)
	}
}
