package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// TestAgentRBAC runs the agent as a ServiceAccount bound to the generated
// ClusterRole synterix-agent (config/agent/rbac/role.yaml), the way the
// operator deploys it: the role must be enough for the watches, the status
// writes and the Events.
func TestAgentRBAC(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "agent", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		t.Fatal(err)
	}
	if role.Name != "synterix-agent" {
		t.Fatalf("ClusterRole is named %q, want synterix-agent", role.Name)
	}
	w.create(role)
	w.create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "agent"}})
	w.create(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "synterix-agent-test"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "synterix-agent"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: operatorNS, Name: "agent"}}})
	tok, err := w.cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(context.Background(), "agent",
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: w.cfg.Host, BearerToken: tok.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: w.cfg.CAData}}

	p := w.startAgentAs(cfg)
	w.waitServing("rev-1")
	if n := p.metric(t, "synterix_status_writes_total"); n == 0 {
		t.Error("no status write counted")
	}
	// Forbidden calls would show as write errors.
	mfs, _ := p.m.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "synterix_status_writes_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == "error" && m.GetCounter().GetValue() > 0 {
						t.Errorf("%v status writes failed", m.GetCounter().GetValue())
					}
				}
			}
		}
	}
}
