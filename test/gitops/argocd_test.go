package gitops_test

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/synterix/synterix-kube-proxy/test/gitops"
)

// healthKeys are the argocd-cm keys of the checks, and their scripts.
func healthKeys(t *testing.T) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for _, kind := range []string{"GatewayConfig", "ProxyPolicy", "ProxyNode"} {
		script, err := os.ReadFile(gitops.ScriptPath(kind))
		if err != nil {
			t.Fatal(err)
		}
		keys["resource.customizations.health.proxy.synterix.io_"+kind] = string(script)
	}
	return keys
}

// config/argocd/argocd-cm-patch.yaml is the scripts as they are.
func TestArgoCDConfigMapPatch(t *testing.T) {
	cm := corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "argocd-cm", Namespace: "argocd"},
		Data:       healthKeys(t),
	}
	out, err := yaml.Marshal(cm)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Generated from config/argocd/health by go test ./test/gitops -update; do not edit.\n" + string(out)
	path := filepath.Join(gitops.Root(), "config", "argocd", "argocd-cm-patch.yaml")
	got, _ := os.ReadFile(path)
	if string(got) == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is stale: run go test ./test/gitops -update", path)
}

// The Component merges the checks into an Argo CD installation's argocd-cm
// and keeps its other keys.
func TestArgoCDComponent(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("argocd-cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\ndata:\n  url: https://argocd.example\n")
	// kustomize takes a component's path relative to the kustomization.
	rel, err := filepath.Rel(dir, filepath.Join(gitops.Root(), "config", "argocd"))
	if err != nil {
		t.Fatal(err)
	}
	write("kustomization.yaml", "resources:\n- argocd-cm.yaml\ncomponents:\n- "+rel+"\n")
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size() != 1 {
		t.Fatalf("rendered %d objects, want argocd-cm alone", res.Size())
	}
	out, err := res.Resources()[0].AsYAML()
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(out, &cm); err != nil {
		t.Fatal(err)
	}
	want := healthKeys(t)
	want["url"] = "https://argocd.example"
	if len(cm.Data) != len(want) {
		t.Errorf("argocd-cm has keys %d keys, want %d", len(cm.Data), len(want))
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("argocd-cm key %s: got %q", k, cm.Data[k])
		}
	}
	if cm.Name != "argocd-cm" || cm.Namespace != "argocd" {
		t.Errorf("the component renamed the ConfigMap: %s/%s", cm.Namespace, cm.Name)
	}
}
