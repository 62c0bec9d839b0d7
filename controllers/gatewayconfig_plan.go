package controllers

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/rollout"
)

// rolloutPlan is what one step of a rollout decided: the revisions in play
// and the pure planner's assignments.
type rolloutPlan struct {
	rollout.Plan
	// desired is the revision of the current spec.
	desired string
	// target is the revision being rolled out: the desired one, or under the
	// Manual strategy the approved one; never one marked failed. Empty when
	// there is none.
	target string
	// pending, under the Manual strategy, is the revision waiting for approval.
	pending string
	// failedRev is a revision that failed and is not rolled out again: the
	// approved or desired one marked failed earlier, or the target when this
	// step rolls it back.
	failedRev string
	// lastGood is the last revision that reached every node, if it still exists.
	lastGood string
	// approved is spec.rollout.approvedRevision.
	approved string
	// health is each won node's state at the revision it is assigned.
	health map[string]rollout.Health
}

// planRollout picks the revisions in play and asks the pure planner
// (controllers/rollout) which node gets which revision next. It writes
// nothing; current is status.currentRevision.
func planRollout(gc *proxyv1alpha1.GatewayConfig, obs *observation, current string, now time.Time) (*rolloutPlan, error) {
	ro := gc.Spec.Rollout
	if ro == nil {
		ro = &proxyv1alpha1.RolloutSpec{}
	}
	pl := chooseRevisions(ro, obs, current)
	in, err := rolloutInput(ro, obs, pl, now)
	if err != nil {
		return nil, err
	}
	pl.Plan = rollout.Compute(in)
	if pl.TargetFailed && pl.RolledBack {
		// apply marks it, so that it is not rolled out again.
		pl.failedRev = pl.target
	}
	return pl, nil
}

// chooseRevisions picks the target, pending and failed revisions. A revision
// marked failed (RolloutFailedAnnotation) is never a target: the last good one
// runs instead.
func chooseRevisions(ro *proxyv1alpha1.RolloutSpec, obs *observation, current string) *rolloutPlan {
	pl := &rolloutPlan{desired: obs.desired, approved: ro.ApprovedRevision, lastGood: current}
	blocked := func(name string) bool {
		rev, ok := obs.revs[name]
		return ok && rev.Annotations[RolloutFailedAnnotation] != ""
	}
	if _, ok := obs.revs[pl.lastGood]; !ok {
		pl.lastGood = ""
	}
	if ro.Strategy != proxyv1alpha1.RolloutManual {
		pl.target = pl.desired
		if blocked(pl.desired) {
			pl.failedRev, pl.target = pl.desired, pl.lastGood
		}
		return pl
	}
	pl.target = pl.lastGood
	if _, ok := obs.revs[ro.ApprovedRevision]; ok {
		if blocked(ro.ApprovedRevision) {
			pl.failedRev = ro.ApprovedRevision
		} else {
			pl.target = ro.ApprovedRevision
		}
	}
	if pl.desired != pl.target && !blocked(pl.desired) {
		pl.pending = pl.desired
	}
	return pl
}

// rolloutInput is the planner's input: the rollout settings, and each won
// node with the revision it runs for this GatewayConfig and its health there.
// It also fills pl.health.
func rolloutInput(ro *proxyv1alpha1.RolloutSpec, obs *observation, pl *rolloutPlan, now time.Time) (rollout.Input, error) {
	in := rollout.Input{
		Target: pl.target, LastGood: pl.lastGood, Now: now,
		MaxUnavailable: ro.MaxUnavailable, AutoRollback: ro.AutoRollback == nil || *ro.AutoRollback,
		ProgressDeadline: 600 * time.Second,
	}
	if ro.ProgressDeadlineSeconds != nil {
		in.ProgressDeadline = time.Duration(*ro.ProgressDeadlineSeconds) * time.Second
	}
	if c := ro.Canary; c != nil {
		if c.NodeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(c.NodeSelector)
			if err != nil {
				return in, reconcile.TerminalError(fmt.Errorf("invalid canary node selector: %w", err))
			}
			in.CanarySelector = sel
		}
		if c.Count != nil {
			in.CanaryCount = int(*c.Count)
		}
	}
	pl.health = make(map[string]rollout.Health, len(obs.won))
	for _, n := range obs.won {
		rn := rollout.Node{Name: n.Name, Labels: n.Labels}
		if pn := obs.own(n.Name); pn != nil {
			rn.Assigned = pn.Spec.Revision
			if t, err := time.Parse(time.RFC3339, pn.Annotations[AssignedAtAnnotation]); err == nil {
				rn.AssignedAt = t
			}
			switch ProxyNodeHealth(pn) {
			case NodeReady:
				// Ready counts only from an agent that runs the revision's
				// pod template: a new image or pod setting must reach the
				// node before the rollout moves on.
				if obs.runsAssigned(pn) {
					rn.Health = rollout.Ready
				}
			case NodeFailed:
				rn.Health = rollout.Failed
			}
		}
		pl.health[n.Name] = rn.Health
		in.Nodes = append(in.Nodes, rn)
	}
	return in, nil
}
