package status

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func report(at time.Time) Report {
	ms := int32(12)
	return Report{
		Generation: 3, Backend: v1alpha1.BackendIPTables, BackendReason: "mode Auto",
		AppliedRevision: "rev-1",
		LastSync:        &v1alpha1.SyncStatus{Time: &metav1.Time{Time: at}, DurationMilliseconds: &ms, Type: v1alpha1.SyncPartial},
		Ready:           Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSynced, Message: "ok"},
		Degraded:        Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonAsExpected},
		Families: []v1alpha1.FamilyStatus{
			{Family: "IPv4", Programmed: true, LastSync: &v1alpha1.SyncStatus{Time: &metav1.Time{Time: at}, DurationMilliseconds: &ms, Type: v1alpha1.SyncFull}},
			{Family: "IPv6", Programmed: true, LastSync: &v1alpha1.SyncStatus{Time: &metav1.Time{Time: at}, DurationMilliseconds: &ms, Type: v1alpha1.SyncFull}},
		},
	}
}

func TestBuildBoundsFailedPolicies(t *testing.T) {
	r := report(time.Now())
	for i := 0; i < 57; i++ {
		r.FailedPolicies = append(r.FailedPolicies, v1alpha1.FailedPolicy{Namespace: "ns", Name: fmt.Sprintf("p%d", i), Reason: v1alpha1.ReasonUnsupportedByBackend})
	}
	s := Build(v1alpha1.ProxyNodeStatus{}, r, time.Now())
	if len(s.FailedPolicies) != v1alpha1.MaxFailedPolicies || s.FailedPolicyCount != 57 {
		t.Errorf("failedPolicies %d count %d, want %d and 57", len(s.FailedPolicies), s.FailedPolicyCount, v1alpha1.MaxFailedPolicies)
	}
	if s.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d", s.ObservedGeneration)
	}
	if c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v", c)
	}
}

// A report whose only change is the sync time is written at most once per
// heartbeat; any other change is written at once.
func TestDueHeartbeat(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cur := Build(v1alpha1.ProxyNodeStatus{}, report(t0), t0)
	later := t0.Add(10 * time.Second)
	if Due(cur, Build(cur, report(later), later), later, time.Minute) {
		t.Error("a sync-time-only change within the heartbeat is due")
	}
	much := t0.Add(61 * time.Second)
	if !Due(cur, Build(cur, report(much), much), much, time.Minute) {
		t.Error("heartbeat not due after 61s")
	}
	r := report(later)
	r.Counts.Services = 5
	if !Due(cur, Build(cur, r, later), later, time.Minute) {
		t.Error("a change of counts is not due")
	}
	r = report(later)
	r.Families[1].LastSync.Error = "IPv6: boom"
	if !Due(cur, Build(cur, r, later), later, time.Minute) {
		t.Error("a family's sync error is not due")
	}
	r = report(later)
	r.Ready = Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonSyncFailed, Message: "x"}
	if !Due(cur, Build(cur, r, later), later, time.Minute) {
		t.Error("a condition change is not due")
	}
	// Unchanged conditions keep their transition time.
	b := Build(cur, report(much), much)
	if c := meta.FindStatusCondition(b.Conditions, v1alpha1.ConditionReady); !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready transition time moved to %v", c.LastTransitionTime)
	}
}

func TestAssemble(t *testing.T) {
	pn := &v1alpha1.ProxyNode{Spec: v1alpha1.ProxyNodeSpec{Revision: "r2"}}
	pn.Generation = 4
	inKernel := &Applied{Revision: "r1", Generation: 3, Backend: v1alpha1.BackendIPTables, BackendReason: "Auto"}
	cases := map[string]struct {
		rev      RevisionFacts
		sync     SyncFacts
		ready    string // status/reason
		degraded string
		gen      int64
		reason   string // backendReason
	}{
		"waiting for the first sync": {ready: "False/Syncing", degraded: "False/AsExpected"},
		"assigned revision in the kernel": {sync: SyncFacts{Applied: &Applied{Revision: "r2", Generation: 4, Backend: "IPTables", BackendReason: "Auto"}},
			ready: "True/Synced", degraded: "False/AsExpected", gen: 4, reason: "Auto"},
		"old revision in the kernel": {sync: SyncFacts{Applied: inKernel},
			ready: "False/Syncing", degraded: "False/AsExpected", reason: "Auto"},
		"refused at this generation": {rev: RevisionFacts{Reason: v1alpha1.ReasonBackendUnavailable, Message: "no IPVS", Generation: 4},
			ready: "False/BackendUnavailable", degraded: "True/BackendUnavailable", gen: 4, reason: "no IPVS"},
		"refused, older backend kept": {rev: RevisionFacts{Reason: v1alpha1.ReasonBackendUnavailable, Message: "no IPVS", Generation: 4},
			sync: SyncFacts{Applied: inKernel}, ready: "False/BackendUnavailable", degraded: "True/BackendUnavailable", gen: 4, reason: "Auto"},
		"refused at an older generation": {rev: RevisionFacts{Reason: "RevisionInvalid", Message: "bad", Generation: 3},
			ready: "False/RevisionInvalid", degraded: "True/RevisionInvalid"},
		"revision not in the cache yet": {rev: RevisionFacts{Reason: v1alpha1.ReasonRevisionNotFound, Message: "not found", Generation: 4},
			ready: "False/RevisionNotFound", degraded: "False/RevisionNotFound", gen: 4},
		"sync failed": {sync: SyncFacts{Applied: inKernel, Error: "restore failed"},
			ready: "False/SyncFailed", degraded: "True/SyncFailed", reason: "Auto"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := Assemble(Static{}, c.rev, c.sync, pn)
			got := fmt.Sprintf("%s/%s %s/%s gen=%d reason=%q", r.Ready.Status, r.Ready.Reason, r.Degraded.Status, r.Degraded.Reason, r.Generation, r.BackendReason)
			want := fmt.Sprintf("%s %s gen=%d reason=%q", c.ready, c.degraded, c.gen, c.reason)
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// A report without a condition still writes a valid one: Unknown, with the
// reason the operator reads as "not yet".
func TestBuildFillsAnEmptyCondition(t *testing.T) {
	r := report(time.Now())
	r.Ready = Condition{}
	s := Build(v1alpha1.ProxyNodeStatus{}, r, time.Now())
	c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionUnknown || c.Reason != v1alpha1.ReasonUnknown {
		t.Errorf("Ready of an empty report: %+v", c)
	}
}
