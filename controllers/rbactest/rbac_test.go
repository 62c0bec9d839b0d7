package rbactest

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestOperatorRollsOutWithShippedRBAC: with only the shipped RBAC, the
// operator rolls a GatewayConfig out and runs its agents as the shipped
// agent ServiceAccount.
func TestOperatorRollsOutWithShippedRBAC(t *testing.T) {
	defaultGC(t)
	ds := &appsv1.DaemonSet{}
	if err := fx.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "synterix-agent-default"}, ds); err != nil {
		t.Fatalf("agent DaemonSet: %v", err)
	}
	if sa := ds.Spec.Template.Spec.ServiceAccountName; sa != "synterix-agent" {
		t.Errorf("the agents run as ServiceAccount %q, want the shipped synterix-agent", sa)
	}
}

// TestOperatorFinalizesWithShippedRBAC: with only the shipped RBAC, the
// operator removes what a deleted GatewayConfig created and releases it.
func TestOperatorFinalizesWithShippedRBAC(t *testing.T) {
	ctx := context.Background()
	gc := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}, Spec: proxyv1alpha1.GatewayConfigSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "doomed"}}}}
	if err := fx.admin.Create(ctx, gc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GatewayConfig doomed rolled out", func() error {
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := fx.admin.Get(ctx, client.ObjectKey{Name: "doomed"}, cur); err != nil {
			return err
		}
		if cur.Status.ReadyNodes != 1 {
			return errors.New("not rolled out")
		}
		return fx.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "synterix-agent-doomed"}, &appsv1.DaemonSet{})
	})
	if err := fx.admin.Delete(ctx, gc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the operator, with only its shipped RBAC, finalizes a GatewayConfig", func() error {
		err := fx.admin.Get(ctx, client.ObjectKey{Name: "doomed"}, &proxyv1alpha1.GatewayConfig{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.New("still there")
	})
	if err := fx.admin.Get(ctx, client.ObjectKey{Name: "n-2"}, &proxyv1alpha1.ProxyNode{}); !apierrors.IsNotFound(err) {
		t.Errorf("ProxyNode n-2 left: %v", err)
	}
	if err := fx.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "synterix-agent-doomed"}, &appsv1.DaemonSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("DaemonSet left: %v", err)
	}
}

// TestApprovalPolicy installs the optional approval policy
// (config/admission): only approvers change spec.rollout.approvedRevision.
func TestApprovalPolicy(t *testing.T) {
	ctx := context.Background()
	objs, err := kustomize("config/admission")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := fx.admin.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	// alice may edit GatewayConfigs but not approve; bob may approve.
	if err := fx.admin.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "gwc-editor"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{proxyv1alpha1.GroupVersion.Group}, Resources: []string{"gatewayconfigs"}, Verbs: []string{"get", "list", "update", "patch", "create"}}},
	}); err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]string{"alice": "gwc-editor", "bob": "synterix-rollout-approver"} {
		if err := fx.admin.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	manual := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Spec: proxyv1alpha1.GatewayConfigSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"none": "true"}},
		Rollout:      &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual},
	}}
	// The policy is enforced once the API server has loaded it.
	eventually(t, "alice may create a GatewayConfig without approving", func() error {
		return client.IgnoreAlreadyExists(as(t, "alice").Create(ctx, manual.DeepCopy()))
	})
	update := func(c client.Client, mutate func(*proxyv1alpha1.GatewayConfig)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := &proxyv1alpha1.GatewayConfig{}
			if err := c.Get(ctx, client.ObjectKey{Name: "manual"}, cur); err != nil {
				return err
			}
			mutate(cur)
			return c.Update(ctx, cur)
		})
	}
	eventually(t, "alice's approval is denied", func() error {
		err := update(as(t, "alice"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "manual-0123456789" })
		if err == nil {
			// Denied only once the policy is loaded: undo and retry.
			_ = update(fx.admin, func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "" })
			return errors.New("alice could approve")
		}
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "approvedRevision") {
			t.Fatalf("alice's approval failed for another reason: %v", err)
		}
		return nil
	})
	if err := update(as(t, "alice"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Mode = proxyv1alpha1.BackendModeIPTables }); err != nil {
		t.Fatalf("alice may still edit the rest of the spec: %v", err)
	}
	if err := update(as(t, "bob"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "manual-0123456789" }); err != nil {
		t.Fatalf("bob, an approver, may approve: %v", err)
	}
}
