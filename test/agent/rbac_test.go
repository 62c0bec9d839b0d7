package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"

	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// TestAgentRBAC runs the agent with the identity and RBAC config/agent
// ships (the ServiceAccount synterix-agent, the generated ClusterRole and
// Role synterix-agent and their bindings; the roles come from
// config/agent/rbac/role.yaml, generated from the markers in agent/), the
// way the operator deploys it: that must be enough for the watches (config
// revisions in the operator's namespace only), the status writes and the
// Events.
func TestAgentRBAC(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, "config", "agent")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/agent: %v", err)
	}
	sa := ""
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetNamespace() != "" && u.GetNamespace() != operatorNS {
			t.Fatalf("%s %s is in namespace %s, not the operator's", u.GetKind(), u.GetName(), u.GetNamespace())
		}
		if u.GetKind() == "ServiceAccount" {
			sa = u.GetName()
		}
		w.create(u)
	}
	if sa != "synterix-agent" {
		t.Fatalf("config/agent ships ServiceAccount %q, want synterix-agent", sa)
	}
	tok, err := w.cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(context.Background(), sa,
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
