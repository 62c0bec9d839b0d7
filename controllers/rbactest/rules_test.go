package rbactest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
)

// perm is one verb on one resource ("resource/subresource"), cluster-wide
// (scope "") or in one namespace.
type perm struct{ group, resource, verb, scope string }

func (p perm) String() string {
	s := p.verb + " " + p.resource
	if p.group != "" {
		s += "." + p.group
	}
	if p.scope != "" {
		s += " in " + p.scope
	}
	return s
}

// unexercised are the permissions the operator's code needs on paths this
// test does not drive, each with where it is used.
var unexercised = map[perm]string{
	{"proxy.synterix.io", "gatewayconfigs/finalizers", "update", ""}: "setting blockOwnerDeletion on objects a GatewayConfig owns, when the OwnerReferencesPermissionEnforcement admission plugin is on (it is not in the test API server)",
	{"authentication.k8s.io", "tokenreviews", "create", ""}:          "the manager's secure metrics endpoint authenticates each scraper (cmd/manager; this test runs the operator without metrics)",
	{"authorization.k8s.io", "subjectaccessreviews", "create", ""}:   "the manager's secure metrics endpoint authorizes each scraper (cmd/manager; this test runs the operator without metrics)",
	{"events.k8s.io", "events", "patch", ""}:                         "the Event recorder patches an Event that repeats (a series) instead of creating another",
	{"", "events", "patch", ns}:                                      "leader election's Event recorder (core/v1, in the operator's namespace) patches an Event that repeats",
	{"apps", "controllerrevisions", "delete", ns}:                    "pruning config revisions beyond the history limit (RevisionHistoryLimit; controllers tests)",
	{"", "pods", "delete", ns}:                                       "replacing an agent pod that runs another pod template than its node's revision (OnDelete; controllers tests, where the test stands in for the DaemonSet controller, which this API server lacks)",
}

// impliedByWatch: get and list on what the operator may watch, in the same
// scope, show nothing a watch does not. The informers need list where the
// API server cannot stream the initial list (older versions), and a cache
// miss reads one object with get.
var impliedByWatch = map[string]bool{"get": true, "list": true}

// TestOperatorRulesAreUsed lists every rule of the RBAC config/rbac gives
// the operator and fails on any verb the code does not use (get and list
// count with watch, see impliedByWatch): the operator
// is driven through a rollout, a failed rollout and its rollback, a
// ProxyPolicy, a manual edit of its DaemonSet and a deletion, every request
// it makes is recorded, and each granted permission must have been used
// (in the namespace it is granted for, so that a ClusterRole that could be
// a Role is caught) or be in unexercised with the reason it is needed. The
// operator must also never have been refused.
func TestOperatorRulesAreUsed(t *testing.T) {
	driveOperator(t)
	granted, err := operatorGrants()
	if err != nil {
		t.Fatal(err)
	}
	used := map[perm]bool{}
	usedIn := map[perm]sets.Set[string]{} // cluster-wide key -> namespaces
	rif := &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}
	for _, r := range fx.requests.all() {
		req, err := http.NewRequest(r.method, r.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := rif.NewRequestInfo(req)
		if err != nil || !info.IsResourceRequest {
			continue
		}
		res := info.Resource
		if info.Subresource != "" {
			res += "/" + info.Subresource
		}
		if r.status == http.StatusForbidden {
			t.Errorf("the operator was refused: %s %s", r.method, r.url)
		}
		p := perm{info.APIGroup, res, info.Verb, info.Namespace}
		used[p] = true
		wide := perm{info.APIGroup, res, info.Verb, ""}
		if usedIn[wide] == nil {
			usedIn[wide] = sets.New[string]()
		}
		usedIn[wide].Insert(info.Namespace)
	}
	var unused, narrower []string
	for _, g := range granted {
		if why, ok := unexercised[g]; ok {
			t.Logf("granted, not exercised here: %s: %s", g, why)
			continue
		}
		if impliedByWatch[g.verb] {
			w := g
			w.verb = "watch"
			if slices.Contains(granted, w) {
				g = w // judged as the watch it goes with
			}
		}
		if g.scope != "" {
			if !used[g] {
				unused = append(unused, g.String())
			}
			continue
		}
		nss := usedIn[g]
		switch {
		case nss == nil:
			unused = append(unused, g.String())
		case !nss.Has("") && nss.Len() == 1 && nss.Has(ns):
			narrower = append(narrower, g.String())
		}
	}
	sort.Strings(unused)
	sort.Strings(narrower)
	if len(unused) > 0 {
		t.Errorf("granted to the operator by config/rbac but never used: %s", strings.Join(unused, "; "))
	}
	if len(narrower) > 0 {
		t.Errorf("granted cluster-wide but used only in %s (a Role would do): %s", ns, strings.Join(narrower, "; "))
	}
}

// operatorGrants expands every rule that config/rbac binds to the operator's
// ServiceAccount into perms. A wildcard fails the test.
func operatorGrants() ([]perm, error) {
	roles := map[string][]rbacv1.PolicyRule{} // "Kind/namespace/name"
	type binding struct {
		ref   rbacv1.RoleRef
		scope string
		subj  []rbacv1.Subject
	}
	var bindings []binding
	for _, o := range fx.shipped {
		raw, err := o.MarshalJSON()
		if err != nil {
			return nil, err
		}
		switch o.GetKind() {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := decode(raw, &r); err != nil {
				return nil, err
			}
			roles["ClusterRole//"+r.Name] = r.Rules
		case "Role":
			var r rbacv1.Role
			if err := decode(raw, &r); err != nil {
				return nil, err
			}
			roles["Role/"+r.Namespace+"/"+r.Name] = r.Rules
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := decode(raw, &b); err != nil {
				return nil, err
			}
			bindings = append(bindings, binding{b.RoleRef, "", b.Subjects})
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := decode(raw, &b); err != nil {
				return nil, err
			}
			bindings = append(bindings, binding{b.RoleRef, b.Namespace, b.Subjects})
		}
	}
	seen := map[perm]bool{}
	var out []perm
	for _, b := range bindings {
		if !boundToOperator(b.subj) {
			continue
		}
		key := b.ref.Kind + "//" + b.ref.Name
		if b.ref.Kind == "Role" {
			key = "Role/" + b.scope + "/" + b.ref.Name
		}
		rules, ok := roles[key]
		if !ok {
			return nil, fmt.Errorf("binding to %s, which config/ does not ship", key)
		}
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				return nil, fmt.Errorf("the operator is granted non-resource URLs %v", r.NonResourceURLs)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if g == "*" || res == "*" || v == "*" {
							return nil, fmt.Errorf("a wildcard rule: %+v", r)
						}
						p := perm{g, res, v, b.scope}
						if !seen[p] {
							seen[p] = true
							out = append(out, p)
						}
					}
				}
			}
		}
	}
	return out, nil
}

func boundToOperator(subjects []rbacv1.Subject) bool {
	for _, s := range subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == "synterix-operator" && s.Namespace == ns {
			return true
		}
	}
	return false
}

func decode(raw []byte, into runtime.Object) error { return json.Unmarshal(raw, into) }

// driveOperator takes a GatewayConfig on node n-3 through a rollout, a
// failed rollout and its rollback, a ProxyPolicy, a manual edit of its
// DaemonSet and its deletion.
func driveOperator(t *testing.T) {
	ctx := context.Background()
	const name = "least"
	gc := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: proxyv1alpha1.GatewayConfigSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "rbac"}},
		Mode:         proxyv1alpha1.BackendModeIPTables,
	}}
	if err := fx.admin.Create(ctx, gc); err != nil {
		t.Fatal(err)
	}
	current := func() *proxyv1alpha1.GatewayConfig {
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := fx.admin.Get(ctx, client.ObjectKey{Name: name}, cur); err != nil {
			t.Fatal(err)
		}
		return cur
	}
	eventually(t, "GatewayConfig least rolled out", func() error {
		if cur := current(); cur.Status.ReadyNodes != 1 || cur.Status.CurrentRevision == "" {
			return errors.New("not yet")
		}
		return nil
	})
	first := current().Status.CurrentRevision

	// A new revision fails on n-3 and is rolled back (the operator marks it).
	fx.agents.SetBehavior(func(node, rev string) fakeagent.Report {
		if node == "n-3" && rev != first {
			return fakeagent.Report{Outcome: fakeagent.Fail}
		}
		return fakeagent.Report{Outcome: fakeagent.Ready}
	})
	defer fx.agents.SetBehavior(fakeagent.Always(fakeagent.Ready))
	updateGC(t, name, func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Mode = proxyv1alpha1.BackendModeAuto })
	eventually(t, "the failed revision is rolled back and marked", func() error {
		var revs appsv1.ControllerRevisionList
		if err := fx.admin.List(ctx, &revs, client.InNamespace(ns), client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: name}); err != nil {
			return err
		}
		for _, r := range revs.Items {
			if r.Name != first && r.Annotations["proxy.synterix.io/rollout-failed"] != "" {
				return nil
			}
		}
		return errors.New("no revision marked failed")
	})

	// A ProxyPolicy on a Service.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if err := fx.admin.Create(ctx, svc); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	pp := &proxyv1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: proxyv1alpha1.ProxyPolicySpec{
		TargetRefs:    []proxyv1alpha1.PolicyTargetReference{{Kind: "Service", Name: "web"}},
		LoadBalancing: &proxyv1alpha1.LoadBalancingSpec{Algorithm: proxyv1alpha1.AlgorithmRandom}}}
	if err := fx.admin.Create(ctx, pp); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ProxyPolicy has a status", func() error {
		cur := &proxyv1alpha1.ProxyPolicy{}
		if err := fx.admin.Get(ctx, client.ObjectKeyFromObject(pp), cur); err != nil {
			return err
		}
		if len(cur.Status.Conditions) == 0 {
			return errors.New("no conditions")
		}
		return nil
	})

	// A manual edit of the DaemonSet, which the operator puts back.
	key := client.ObjectKey{Namespace: ns, Name: "synterix-agent-" + name}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ds := &appsv1.DaemonSet{}
		if err := fx.admin.Get(ctx, key, ds); err != nil {
			return err
		}
		ds.Spec.Template.Spec.Containers[0].Args = append(ds.Spec.Template.Spec.Containers[0].Args, "-v=9")
		return fx.admin.Update(ctx, ds)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the edit is reverted", func() error {
		ds := &appsv1.DaemonSet{}
		if err := fx.admin.Get(ctx, key, ds); err != nil {
			return err
		}
		for _, a := range ds.Spec.Template.Spec.Containers[0].Args {
			if a == "-v=9" {
				return errors.New("not reverted")
			}
		}
		return nil
	})

	// Deletion.
	if err := fx.admin.Delete(ctx, gc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GatewayConfig least finalized", func() error {
		if err := fx.admin.Get(ctx, client.ObjectKey{Name: name}, &proxyv1alpha1.GatewayConfig{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}
