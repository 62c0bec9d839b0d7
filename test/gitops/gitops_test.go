package gitops_test

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	agentstatus "github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/gitops"
)

var update = flag.Bool("update", false, "rewrite docs/operator.md's table and config/argocd/argocd-cm-patch.yaml")

// agentNode returns the ProxyNode, at generation 2 and assigned r2, whose
// status the agent's real status builder writes from the given facts over
// the status cur.
func agentNode(t *testing.T, cur v1alpha1.ProxyNodeStatus, rev agentstatus.RevisionFacts, sy agentstatus.SyncFacts) *unstructured.Unstructured {
	t.Helper()
	pn := &v1alpha1.ProxyNode{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ProxyNode"},
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", Generation: 2},
		Spec:       v1alpha1.ProxyNodeSpec{GatewayConfig: "default", Revision: "r2"},
		Status:     cur,
	}
	rep := agentstatus.Assemble(agentstatus.Static{AgentVersion: "test"}, rev, sy, pn)
	pn.Status = agentstatus.Build(cur, rep, time.Unix(1700000000, 0))
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pn)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: obj}
}

// The agent's states, as its real status builder writes them, read by
// kstatus and the Lua check as gitops.States says.
func TestAgentStates(t *testing.T) {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	applied := func(rev string, gen int64) *agentstatus.Applied {
		return &agentstatus.Applied{Revision: rev, Generation: gen, Backend: v1alpha1.BackendIPTables}
	}
	good := agentstatus.SyncFacts{Applied: applied("r2", 2), LastSync: &v1alpha1.SyncStatus{Time: &now, Type: v1alpha1.SyncFull}}
	// synced is the status of a node that synced r2 at generation 2.
	synced := agentNode(t, v1alpha1.ProxyNodeStatus{}, agentstatus.RevisionFacts{}, good)
	var syncedStatus v1alpha1.ProxyNodeStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(synced.Object["status"].(map[string]any), &syncedStatus); err != nil {
		t.Fatal(err)
	}
	// atR1 is the status of a node that synced r1 at generation 1.
	atR1 := syncedStatus.DeepCopy()
	atR1.ObservedGeneration, atR1.AppliedRevision = 1, "r1"
	failedPolicies := good
	failedPolicies.FailedPolicies = []v1alpha1.FailedPolicy{{Namespace: "web", Name: "maglev", Reason: v1alpha1.ReasonUnsupportedByBackend, Message: "no Maglev in iptables"}}
	failedSync := good
	failedSync.Error = "iptables-restore: exit status 1"

	cases := map[string]*unstructured.Unstructured{
		"new revision assigned, agent not yet reported": agentNode(t, *atR1, agentstatus.RevisionFacts{}, agentstatus.SyncFacts{Applied: applied("r1", 1)}),
		"agent restarted, first sync not done":          agentNode(t, syncedStatus, agentstatus.RevisionFacts{}, agentstatus.SyncFacts{}),
		"revision not yet in the agent's cache": agentNode(t, *atR1, agentstatus.RevisionFacts{
			Reason: v1alpha1.ReasonRevisionNotFound, Message: "ControllerRevision r2 not found", Generation: 2}, agentstatus.SyncFacts{Applied: applied("r1", 1)}),
		"synced":                            synced,
		"synced, some ProxyPolicies failed": agentNode(t, v1alpha1.ProxyNodeStatus{}, agentstatus.RevisionFacts{}, failedPolicies),
		"sync failed":                       agentNode(t, syncedStatus, agentstatus.RevisionFacts{}, failedSync),
		"revision refused by the node": agentNode(t, *atR1, agentstatus.RevisionFacts{
			Reason: v1alpha1.ReasonBackendUnavailable, Message: "IPVS is not available", Generation: 2}, agentstatus.SyncFacts{Applied: applied("r1", 1)}),
	}
	for _, s := range gitops.States {
		if !slices.Contains(s.Where, gitops.ByAgent) {
			continue
		}
		u, ok := cases[s.Name]
		if !ok {
			t.Errorf("state %q of %s says the agent's tests produce it, and they do not", s.Name, s.Kind)
			continue
		}
		delete(cases, s.Name)
		if err := s.Verify(u); err != nil {
			t.Error(err)
		}
	}
	for name := range cases {
		t.Errorf("agent state %q is not in gitops.States", name)
	}
}

// A status the tools must refuse or see through: the Lua check must not
// fail on a condition without a message, nor return a status Argo CD does
// not know.
func TestLuaChecksAreTotal(t *testing.T) {
	for _, kind := range []string{"GatewayConfig", "ProxyPolicy", "ProxyNode"} {
		for name, status := range map[string]map[string]any{
			"no status":          nil,
			"empty conditions":   {"observedGeneration": int64(1), "conditions": []any{}},
			"condition, no text": {"observedGeneration": int64(1), "conditions": []any{map[string]any{"type": "Stalled", "status": "True"}}},
			"unknown ready":      {"observedGeneration": int64(1), "conditions": []any{map[string]any{"type": "Ready", "status": "Unknown", "reason": "Unknown", "message": ""}}},
		} {
			obj := map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(), "kind": kind,
				"metadata": map[string]any{"name": "x", "generation": int64(1)},
				"spec":     map[string]any{"revision": "r1"},
			}
			if status != nil {
				obj["status"] = status
			}
			h, err := gitops.ArgoHealth(&unstructured.Unstructured{Object: obj})
			if err != nil {
				t.Errorf("%s, %s: %v", kind, name, err)
				continue
			}
			if h.Status == "Healthy" || h.Message == "" {
				t.Errorf("%s, %s: %+v; want a status other than Healthy, with a message", kind, name, h)
			}
		}
	}
}

// Argo CD opens no string library for health checks: a script that uses one
// fails here as it would there.
func TestLuaRuntimeIsArgoCDs(t *testing.T) {
	if _, err := gitops.RunLua(`return {status = string.upper("healthy")}`, map[string]any{}); err == nil {
		t.Fatal("the string library is open; Argo CD does not open it")
	}
	h, err := gitops.RunLua(`local t = {} table.insert(t, "a") return {status = "Healthy", message = t[1] .. tostring(#t)}`, map[string]any{})
	if err != nil || h != (gitops.Health{Status: "Healthy", Message: "a1"}) {
		t.Fatalf("base and table libraries: %+v, %v", h, err)
	}
}

// docs/operator.md shows gitops.States between its markers.
func TestDocsTable(t *testing.T) {
	path := filepath.Join(gitops.Root(), "docs", "operator.md")
	checkBetween(t, path, "<!-- gitops-health-table: generated by go test ./test/gitops -update -->\n", "<!-- end gitops-health-table -->", gitops.Table())
}

// checkBetween checks that the text of path between begin and end is want,
// or rewrites it with -update.
func checkBetween(t *testing.T, path, begin, end, want string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q ... %q", path, begin, end)
	}
	got := doc[i+len(begin) : j]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is stale: run go test ./test/gitops -update\ngot:\n%s\nwant:\n%s", path, got, want)
}
