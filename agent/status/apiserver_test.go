package status

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// syncFacts says revision r1 of ProxyNode n1 (generation 1) is in the
// kernel.
func syncFacts(at time.Time) SyncFacts {
	ms := int32(12)
	return SyncFacts{
		Applied:  &Applied{Revision: "r1", Generation: 1, Backend: v1alpha1.BackendIPTables, BackendReason: "mode Auto"},
		LastSync: &v1alpha1.SyncStatus{Time: &metav1.Time{Time: at}, DurationMilliseconds: &ms, Type: v1alpha1.SyncPartial},
	}
}

// TestWriterAgainstAPIServer writes through the real status subresource:
// a stale cached object (someone else wrote meanwhile) is a conflict that
// the writer retries on a fresh read; the agent's field manager owns the
// status; an unchanged report writes nothing.
func TestWriterAgainstAPIServer(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Skipf("SKIPPING: no test control plane: %v", err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pn := &v1alpha1.ProxyNode{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: "gc", Revision: "r1"}}
	if err := c.Create(ctx, pn); err != nil {
		t.Fatal(err)
	}
	stale := pn.DeepCopy()
	// Someone else changes the object: our cached copy is now stale.
	pn.Labels = map[string]string{"touched": "yes"}
	if err := c.Update(ctx, pn); err != nil {
		t.Fatal(err)
	}
	rc, err := informers.NewProxyClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	w := New(rc, "n1", Static{AgentVersion: "test", PodTemplateHash: "0123abcd"}, func() *v1alpha1.ProxyNode { return stale },
		func(r string) { results = append(results, r) })
	w.SetSync(syncFacts(time.Now()))
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if len(results) != 2 || results[0] != "conflict" || results[1] != "ok" {
		t.Errorf("write results %v, want a conflict then ok", results)
	}
	got := &v1alpha1.ProxyNode{}
	if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.AppliedRevision != "r1" || got.Labels["touched"] != "yes" || got.Status.PodTemplateHash != "0123abcd" ||
		!meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionReady) {
		t.Errorf("status %+v labels %v", got.Status, got.Labels)
	}
	owner := ""
	for _, mf := range got.ManagedFields {
		if mf.Subresource == "status" {
			owner = mf.Manager
		}
	}
	if owner != FieldManager {
		t.Errorf("status field manager %q, want %q", owner, FieldManager)
	}
	// The same report again: nothing to write.
	stale = got
	results = nil
	w.SetSync(syncFacts(time.Now()))
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(results) != 0 {
		t.Errorf("unchanged report wrote %v", results)
	}
}
