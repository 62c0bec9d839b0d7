package upgrade

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

var netnsOpts = netns.RequestOptions{}

// phase is what one upgrade or downgrade starts from.
type phase struct {
	name   string
	start  time.Time
	from   int64 // resourceVersion at the start
	before snapshot
	old    map[string]string // agent pod UID by node
	load   counts
	// current revisions of both GatewayConfigs at the start.
	autoRev, manualRev string
}

// begin records the state a phase starts from.
func (s *scenario) begin(ctx context.Context, name string) *phase {
	t := s.t
	p := &phase{name: name, old: s.agentPods(ctx), load: s.tr.counts()}
	var err error
	p.before, err = takeSnapshot(ctx, s.sc.Client)
	must(t, err)
	a, err := s.gc(ctx, autoGC)
	must(t, err)
	m, err := s.gc(ctx, manualGC)
	must(t, err)
	p.autoRev, p.manualRev = a.Status.CurrentRevision, m.Status.CurrentRevision
	p.from = s.now(ctx)
	p.start = time.Now()
	s.tr.phase(name)
	logf(t, "%s: starts at rv %d; auto at %s, manual at %s; traffic so far: %s", name, p.from, p.autoRev, p.manualRev, p.load)
	return p
}

// upgrade deploys N over N-1 and checks: the Automatic GatewayConfig's
// agents replaced by the rollout only, canary first, one node at a time;
// the Manual one's held (no pod replaced, no node assigned) until the
// test approves, then replaced the same way; no CR lost or rewritten, and
// every object N-1 stored read back unchanged by N's types.
func (s *scenario) upgrade(ctx context.Context) {
	t := s.t
	p := s.begin(ctx, "upgrade to N")
	must(t, s.sc.Deploy(ctx, logWriter{t}, s.cur))
	logf(t, "N's operator rolled out %s after the start", time.Since(p.start).Round(100*time.Millisecond))
	autoTarget := s.waitRolledOutTo(ctx, autoGC, p.autoRev)
	pending := s.waitPending(ctx, manualGC, p.manualRev)
	logf(t, "auto rolled out to %s at +%s; manual awaits approval of %s; holding %s", autoTarget,
		time.Since(p.start).Round(100*time.Millisecond), pending, holdFor)
	time.Sleep(holdFor)

	held := s.now(ctx)
	mid, err := takeSnapshot(ctx, s.sc.Client)
	must(t, err)
	s.expectKept(p.before, mid, "before the approval")
	s.expectReadBack(p.before, mid)
	for _, problem := range checkHeld(s.rec.since(p.from), s.manualNode) {
		t.Errorf("upgrade, Manual: %s", problem)
	}
	s.approve(manualGC, pending)
	approvedAt := time.Now()
	s.tr.phase("upgrade to N, manual approved")
	if got := s.waitRolledOutTo(ctx, manualGC, p.manualRev); got != pending {
		t.Errorf("manual rolled out to %s, approved %s", got, pending)
	}
	s.waitAgents(ctx, s.cur.Agent)

	events := s.rec.since(p.from)
	s.expectRollout(ctx, p, "auto", events, s.autoNodes, autoTarget)
	s.expectRollout(ctx, p, "manual", s.rec.since(held), s.manualNode, pending)
	after, err := takeSnapshot(ctx, s.sc.Client)
	must(t, err)
	s.expectKept(p.before.approved(manualGC, pending), after, "after the approval")
	s.expectPolicy(ctx)
	s.end(p, events, fmt.Sprintf("manual approved at +%s", approvedAt.Sub(p.start).Round(100*time.Millisecond)))
}

// downgrade deploys N-1 over N. N-1's agent DaemonSets are RollingUpdate:
// its operator cannot hold an agent image change for approval nor move it
// by the rollout (what the upgrade merge added), so the DaemonSet
// controller replaces the agents. What must hold all the same: each
// node's agent replaced exactly once (no fight between the two operators)
// by a Ready N-1 agent, no failed connection, no CR lost or rewritten; the
// Manual GatewayConfig's config revision still waits for its approval.
func (s *scenario) downgrade(ctx context.Context) {
	t := s.t
	p := s.begin(ctx, "downgrade to N-1")
	must(t, s.sc.Deploy(ctx, logWriter{t}, s.prev))
	logf(t, "N-1's operator rolled out %s after the start", time.Since(p.start).Round(100*time.Millisecond))
	s.waitAgents(ctx, s.prev.Agent)
	autoTarget := s.waitRolledOutTo(ctx, autoGC, p.autoRev)
	logf(t, "auto back at %s, every agent pod N-1's at +%s", autoTarget, time.Since(p.start).Round(100*time.Millisecond))
	pending := s.waitPending(ctx, manualGC, p.manualRev)
	held := checkHeld(filter(s.rec.since(p.from), evAssigned), s.manualNode)
	for _, problem := range held {
		t.Errorf("downgrade, Manual: config revision moved before its approval: %s", problem)
	}
	s.approve(manualGC, pending)
	s.tr.phase("downgrade to N-1, manual approved")
	if got := s.waitRolledOutTo(ctx, manualGC, p.manualRev); got != pending {
		t.Errorf("manual rolled out to %s, approved %s", got, pending)
	}
	events := s.rec.since(p.from)
	all := append(slices.Clone(s.autoNodes), s.manualNode...)
	order, problems := checkReplacedOnce(events, all, p.old, s.prev.Agent)
	for _, problem := range problems {
		t.Errorf("downgrade: %s", problem)
	}
	logf(t, "downgrade: agent pods replaced by N-1's DaemonSet controller in the order %v; at most %d auto and %d manual nodes without a Ready agent at once",
		order, maxDown(events, s.autoNodes), maxDown(events, s.manualNode))
	after, err := takeSnapshot(ctx, s.sc.Client)
	must(t, err)
	s.expectKept(p.before.approved(manualGC, pending), after, "after the downgrade")
	s.expectPolicy(ctx)
	s.end(p, events, "")
}

// waitRolledOutTo waits until the GatewayConfig has rolled out a revision
// other than not ("" for any) and returns it.
func (s *scenario) waitRolledOutTo(ctx context.Context, name, not string) string {
	s.t.Helper()
	var rev string
	must(s.t, poll.Until(ctx, 5*time.Minute, "GatewayConfig "+name+" rolled out to a revision other than "+not, func(ctx context.Context) (bool, string, error) {
		gc, err := shipped.WaitRolledOut(ctx, s.sc.Client, name, 5*time.Second)
		if err != nil {
			return false, err.Error(), nil
		}
		rev = gc.Status.CurrentRevision
		return rev != not, "at " + rev, nil
	}))
	return rev
}

// waitAgents waits until every node runs one Ready agent pod of image.
func (s *scenario) waitAgents(ctx context.Context, image string) {
	s.t.Helper()
	must(s.t, poll.Until(ctx, 5*time.Minute, "an agent pod of "+image+" ready on every node", func(ctx context.Context) (bool, string, error) {
		var bad []string
		for _, n := range s.sc.Nodes {
			p, err := s.sc.AgentPod(ctx, n.Name)
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case agentImage(p) != image || !isReady(p):
				bad = append(bad, fmt.Sprintf("%s: %s %s ready=%t", n.Name, p.Name, agentImage(p), isReady(p)))
			}
		}
		return len(bad) == 0, fmt.Sprint(bad), nil
	}))
}

// expectRollout checks one GatewayConfig's replacements in an upgrade
// (checkRollout) and logs them.
func (s *scenario) expectRollout(ctx context.Context, p *phase, what string, events []event, nodes []string, target string) {
	t := s.t
	hash := s.templateHash(ctx, target)
	order, problems := checkRollout(events, nodes, target, hash, p.old)
	for _, problem := range problems {
		t.Errorf("%s, %s: %s", p.name, what, problem)
	}
	// The rollout moves on when a node's agent reports the target's pod
	// template (checkRollout checks that); kubelet marks the pod Ready at
	// its next readiness probe, which may come after that: the count of
	// pods not Ready at once is a figure, not the rollout's bound.
	logf(t, "%s, %s: agent pods replaced in the order %v (rollout of %s, pod template %s); at most %d agent pods not Ready (kubelet's probe) at once",
		p.name, what, order, target, hash, maxDown(events, nodes))
}

// expectKept fails the test for every CR lost or rewritten between before
// and after, and logs the changes the operator may make.
func (s *scenario) expectKept(before, after snapshot, when string) {
	problems, changes := compare(before, after)
	for _, c := range changes {
		logf(s.t, "changed %s: %s", when, c)
	}
	for _, problem := range problems {
		s.t.Errorf("%s: %s", when, problem)
	}
	logf(s.t, "%d objects compared %s, %d lost or rewritten", len(before), when, len(problems))
}

// expectReadBack checks that N's types read every object of before (stored
// by N-1) as stored, in its state under N (mid).
func (s *scenario) expectReadBack(before, mid snapshot) {
	written := snapshot{}
	for k, v := range mid {
		if _, ok := before[k]; ok {
			written[k] = v
		}
	}
	for _, problem := range readBack(written) {
		s.t.Errorf("stored by N-1, read by N: %s", problem)
	}
	logf(s.t, "%d objects stored by N-1 read back by N's types", len(written))
}

// end logs a phase's timeline and traffic and fails on any failure.
func (s *scenario) end(p *phase, events []event, note string) {
	t := s.t
	load := s.tr.counts().minus(p.load)
	logf(t, "%s: done in %s %s; traffic in the phase: %s; timeline:\n%s", p.name, time.Since(p.start).Round(100*time.Millisecond), note,
		load, timeline(filter(events, evAssigned, evNodeReady, evPodDeleting, evPodReady), p.start, nil))
	if load.pings == 0 || load.conns == 0 {
		t.Errorf("%s: no traffic counted: %s", p.name, load)
	}
	if load.pingFails+load.connFails > 0 {
		t.Errorf("%s: %s; failures so far (UTC):\n%s", p.name, load, s.tr.failures())
	}
}

// filter keeps the events of the kinds given.
func filter(events []event, kinds ...string) []event {
	var out []event
	for _, e := range events {
		if slices.Contains(kinds, e.kind) {
			out = append(out, e)
		}
	}
	return out
}
