// Package rbactest checks the operator's shipped RBAC (config/rbac, rendered by
// kustomize) and the optional approval admission policy (config/admission)
// against a real kube-apiserver, which authorizes with RBAC: the operator runs
// impersonating its ServiceAccount, and only what config/rbac grants it works.
package rbactest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

const ns = "synterix-system"

// kustomize renders a kustomization folder of the repository into objects.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, dir)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func TestShippedRBACAndApprovalPolicy(t *testing.T) {
	logf.SetLogger(logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	scheme := controllers.NewScheme()
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	// The operator's RBAC as shipped, and the agent's ClusterRole: from
	// config/agent when it exists, else a stand-in of the same name (the
	// operator only binds it).
	objs := kustomize(t, "config/rbac")
	root, _ := testenv.RepoRoot()
	if _, err := os.Stat(filepath.Join(root, "config/agent/kustomization.yaml")); err == nil {
		for _, o := range kustomize(t, "config/agent") {
			if o.GetKind() == "ClusterRole" {
				objs = append(objs, o)
			}
		}
	} else {
		t.Log("config/agent is not there yet: using a stand-in ClusterRole synterix-agent")
		if err := admin.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: controllers.AgentClusterRole},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range objs {
		if o.GetNamespace() == "" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" {
			o.SetNamespace(ns)
		}
		if err := admin.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	// The operator, as its ServiceAccount.
	opCfg := rest.CopyConfig(cfg)
	opCfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":synterix-operator",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      controllers.CacheOptions(ns),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.AgentOptions{Namespace: ns, DefaultImage: "example.org/synterix:test"}); err != nil {
		t.Fatal(err)
	}
	mgrErr := make(chan error, 1)
	go func() { mgrErr <- mgr.Start(ctx) }()
	agents := fakeagent.New(admin, fakeagent.Always(fakeagent.Ready))
	if err := agents.Start(ctx, cfg, 2); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"n-0", "n-1"} {
		if err := admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	gc := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if err := admin.Create(ctx, gc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the operator, with only its shipped RBAC, rolls out", func() error {
		select {
		case err := <-mgrErr:
			t.Fatalf("manager stopped: %v", err)
		default:
		}
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "default"}, cur); err != nil {
			return err
		}
		if cur.Status.ReadyNodes != 2 || cur.Status.CurrentRevision == "" {
			return errors.New("not rolled out: " + cur.Status.CurrentRevision)
		}
		return admin.Get(ctx, client.ObjectKey{Name: "synterix-agent-default"}, &rbacv1.ClusterRoleBinding{})
	})
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "synterix-agent-default"}, &appsv1.DaemonSet{}); err != nil {
		t.Fatalf("agent DaemonSet: %v", err)
	}

	t.Run("deletion", func(t *testing.T) {
		if err := admin.Delete(ctx, gc); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the operator, with only its shipped RBAC, finalizes a GatewayConfig", func() error {
			err := admin.Get(ctx, client.ObjectKey{Name: "default"}, &proxyv1alpha1.GatewayConfig{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return errors.New("still there")
		})
		var pns proxyv1alpha1.ProxyNodeList
		if err := admin.List(ctx, &pns); err != nil || len(pns.Items) != 0 {
			t.Fatalf("ProxyNodes left: %v %v", len(pns.Items), err)
		}
	})

	t.Run("approval policy", func(t *testing.T) {
		for _, o := range kustomize(t, "config/admission") {
			if err := admin.Create(ctx, o); err != nil {
				t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
		// alice may edit GatewayConfigs but not approve; bob may approve.
		if err := admin.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "gwc-editor"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{proxyv1alpha1.GroupVersion.Group}, Resources: []string{"gatewayconfigs"}, Verbs: []string{"get", "list", "update", "patch", "create"}}},
		}); err != nil {
			t.Fatal(err)
		}
		for user, role := range map[string]string{"alice": "gwc-editor", "bob": "synterix-rollout-approver"} {
			if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: user},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
			}); err != nil {
				t.Fatal(err)
			}
		}
		as := func(user string) client.Client {
			c := rest.CopyConfig(cfg)
			c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
			cl, err := client.New(c, client.Options{Scheme: scheme})
			if err != nil {
				t.Fatal(err)
			}
			return cl
		}
		manual := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Spec: proxyv1alpha1.GatewayConfigSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"none": "true"}},
			Rollout:      &proxyv1alpha1.RolloutSpec{Strategy: proxyv1alpha1.RolloutManual},
		}}
		// The policy is enforced once the API server has loaded it.
		eventually(t, "alice may create a GatewayConfig without approving", func() error {
			return client.IgnoreAlreadyExists(as("alice").Create(ctx, manual.DeepCopy()))
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
			err := update(as("alice"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "manual-0123456789" })
			if err == nil {
				// Denied only once the policy is loaded: undo and retry.
				_ = update(admin, func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "" })
				return errors.New("alice could approve")
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "approvedRevision") {
				t.Fatalf("alice's approval failed for another reason: %v", err)
			}
			return nil
		})
		if err := update(as("alice"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Mode = proxyv1alpha1.BackendModeIPTables }); err != nil {
			t.Fatalf("alice may still edit the rest of the spec: %v", err)
		}
		if err := update(as("bob"), func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Rollout.ApprovedRevision = "manual-0123456789" }); err != nil {
			t.Fatalf("bob, an approver, may approve: %v", err)
		}
	})
}
