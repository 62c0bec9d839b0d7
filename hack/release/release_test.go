package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const root = "../.."

func release(t *testing.T) Release {
	t.Helper()
	r, err := loadRelease(filepath.Join(root, "hack", "release", "release.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// bundle/, bundle.Dockerfile, dist/install.yaml and dist/chart are what the
// generator makes of config/ now: make test fails when one is stale.
func TestArtefactsAreUpToDate(t *testing.T) {
	want, err := generate(root, release(t), []string{"bundle", "installer"})
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range want {
		got, err := os.ReadFile(filepath.Join(root, path))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s is stale (%v): run make bundle build-installer", path, err)
		}
	}
	for _, dir := range owned([]string{"bundle", "installer"}) {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				if _, ok := want[rel]; !ok {
					t.Errorf("%s is not generated any more: run make bundle build-installer", rel)
				}
			}
			return nil
		})
	}
}

// explained are the validators' warnings we accept, by a part of their
// text, with why.
var explained = map[string]string{
	"Kind=ProxyNode: provided API should have an example annotation": "ProxyNodes are made by the operator, one per node, " +
		"and written by the agents; the CSV lists them as internal objects, and an example would invite users to create one",
	"were deprecated and removed in v1.25. More info: https://kubernetes.io/docs/reference/using-api/deprecation-guide/#v1-25. Migrate the API(s) for": "" +
		"a false positive: RBAC rules name resources, not versions. The operator writes events.k8s.io/v1 Events and " +
		"leader election core/v1 Events, neither removed; the agents watch discovery.k8s.io/v1 EndpointSlices. The removed " +
		"APIs are events.k8s.io/v1beta1 and discovery.k8s.io/v1beta1, which nothing here uses",
}

// accepted returns why a warning is accepted, or "".
func accepted(w string) string {
	for part, why := range explained {
		if strings.Contains(w, part) {
			return why
		}
	}
	return ""
}

// validateBundle runs operator-framework/api's validators on a bundle
// directory: those of a registry+v1 bundle (CSV, CRDs, bundle), OperatorHub's,
// good practices, and the APIs removed up to the Kubernetes we test on.
func validateBundle(t *testing.T, dir string) {
	t.Helper()
	b, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	validators := append(validation.DefaultBundleValidators,
		validation.OperatorHubV2Validator, validation.StandardCapabilitiesValidator, validation.StandardCategoriesValidator,
		validation.GoodPracticesValidator, validation.AlphaDeprecatedAPIsValidator, validation.ObjectValidator)
	objs := b.ObjectsToValidate()
	objs = append(objs, map[string]string{"k8s-version": "1.37"})
	n := 0
	for _, res := range validators.Validate(objs...) {
		for _, e := range res.Errors {
			t.Errorf("%s: %s", res.Name, e)
		}
		for _, w := range res.Warnings {
			if why := accepted(w.Error()); why != "" {
				t.Logf("accepted warning %s: %s (%s)", res.Name, w, why)
				continue
			}
			t.Errorf("warning %s: %s", res.Name, w)
		}
		n++
	}
	if n == 0 {
		t.Fatal("the validators returned no result at all")
	}
	if b.CSV == nil || len(b.V1CRDs) != 3 || b.DefaultChannel == "" {
		t.Fatalf("the bundle loaded incompletely: csv %v, %d CRDs, channel %q", b.CSV != nil, len(b.V1CRDs), b.DefaultChannel)
	}
}

// The bundle passes operator-framework/api's validators.
func TestBundleValidates(t *testing.T) {
	validateBundle(t, filepath.Join(root, bundleDir))
}

// A later release, replacing this one, validates too, and says so.
func TestUpgradeBundleValidates(t *testing.T) {
	r := release(t)
	r.Replaces, r.Version, r.SkipRange = r.Version, "9.9.9", ">="+r.Version+" <9.9.9"
	r.Image, r.AgentImage = configImage+":v9.9.9", configAgentImage+":v9.9.9"
	files, err := generate(root, r, []string{"bundle"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := write(dir, files, nil); err != nil {
		t.Fatal(err)
	}
	validateBundle(t, filepath.Join(dir, bundleDir))
	b, _ := manifests.GetBundleFromDir(filepath.Join(dir, bundleDir))
	if b.CSV.Spec.Replaces != packageName+".v"+release(t).Version || b.CSV.Annotations["olm.skipRange"] != r.SkipRange {
		t.Fatalf("replaces %q, skipRange %q", b.CSV.Spec.Replaces, b.CSV.Annotations["olm.skipRange"])
	}
}

// The CSV installs what config/default installs: the operator's Deployment
// as rendered, and every rule bound to the operator's and the agents'
// ServiceAccounts.
func TestBundleCarriesConfig(t *testing.T) {
	b, err := manifests.GetBundleFromDir(filepath.Join(root, bundleDir))
	if err != nil {
		t.Fatal(err)
	}
	st := b.CSV.Spec.InstallStrategy.StrategySpec
	if len(st.DeploymentSpecs) != 1 || st.DeploymentSpecs[0].Spec.Template.Spec.Containers[0].Image != release(t).Image {
		t.Fatalf("deployments: %+v", st.DeploymentSpecs)
	}
	rules := map[string]bool{}
	for _, p := range append(st.Permissions, st.ClusterPermissions...) {
		if p.ServiceAccountName != "synterix-operator" && p.ServiceAccountName != "synterix-agent" {
			t.Errorf("permissions for %s", p.ServiceAccountName)
		}
		for _, r := range p.Rules {
			rules[fmt.Sprint(r.APIGroups, r.Resources, r.Verbs, r.ResourceNames)] = true
		}
	}
	for _, want := range []string{
		"[apps] [daemonsets] [create delete get list update watch] []",
		"[coordination.k8s.io] [leases] [get create update] []",
		"[authentication.k8s.io] [tokenreviews] [create] []",
		"[proxy.synterix.io] [proxynodes/status] [update] []",
	} {
		if !rules[want] {
			t.Errorf("no rule %s among %v", want, rules)
		}
	}
	kinds := map[string]bool{}
	for _, o := range b.Objects {
		kinds[o.GetKind()+"/"+o.GetName()] = true
	}
	// The agents' rules are their ServiceAccount's permissions (above), which
	// OLM creates and binds; the bundle carries the rest.
	for _, want := range []string{"ClusterRole/synterix-metrics-reader", "Service/synterix-operator-metrics", "ConfigMap/synterix-agent-images"} {
		if !kinds[want] {
			t.Errorf("the bundle lacks %s: %v", want, kinds)
		}
	}
}

// decode splits a YAML stream into objects, keyed kind/namespace/name.
func decode(t *testing.T, stream string) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) == 0 {
			continue
		}
		key := u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s twice", key)
		}
		out[key] = u
	}
	return out
}

// helmTemplate renders dist/chart with the Helm library as helm template
// does, CRD templates included.
func helmTemplate(t *testing.T, namespace string, values map[string]any) map[string]*unstructured.Unstructured {
	t.Helper()
	chrt, err := loader.Load(filepath.Join(root, chartDir))
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}
	if !chartutil.IsCompatibleRange(chrt.Metadata.KubeVersion, caps.KubeVersion.Version) {
		t.Fatalf("the chart refuses Kubernetes %s (kubeVersion %s)", caps.KubeVersion.Version, chrt.Metadata.KubeVersion)
	}
	vals, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{Name: "synterix", Namespace: namespace, IsInstall: true}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(chrt, vals)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	var stream strings.Builder
	for _, n := range names {
		stream.WriteString("---\n" + out[n] + "\n")
	}
	return decode(t, stream.String())
}

// normalised drops what the chart adds on purpose: the resource policy that
// keeps the CRDs on uninstall.
func normalised(u *unstructured.Unstructured) string {
	u = u.DeepCopy()
	ann := u.GetAnnotations()
	delete(ann, "helm.sh/resource-policy")
	if len(ann) == 0 {
		ann = nil
	}
	u.SetAnnotations(ann)
	data, _ := yaml.Marshal(u.Object)
	return string(data)
}

// helm template with the default values (and the namespace created) gives
// the objects of dist/install.yaml, object by object.
func TestChartMatchesInstaller(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, installerFile))
	if err != nil {
		t.Fatal(err)
	}
	want := decode(t, string(data))
	got := helmTemplate(t, configNamespace, map[string]any{"namespace": map[string]any{"create": true}})
	if len(want) < 10 {
		t.Fatalf("dist/install.yaml has only %d objects", len(want))
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Errorf("helm template lacks %s", key)
			continue
		}
		if normalised(g) != normalised(w) {
			t.Errorf("%s differs:\nhelm:\n%s\ninstall.yaml:\n%s", key, normalised(g), normalised(w))
		}
		if g.GetKind() == "CustomResourceDefinition" && g.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("%s: helm uninstall would delete it", key)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("helm template has %s, which dist/install.yaml lacks", key)
		}
	}
}

// The chart's values take effect: another namespace everywhere, another
// image, replicas and resources; no Namespace by default.
func TestChartValues(t *testing.T) {
	got := helmTemplate(t, "proxy", map[string]any{
		"image":        map[string]any{"repository": "registry.example/skp", "tag": "v9"},
		"replicaCount": 1,
		"resources":    map[string]any{"requests": map[string]any{"cpu": "1"}},
	})
	d, ok := got["Deployment/proxy/synterix-operator"]
	if !ok {
		t.Fatalf("no operator Deployment in namespace proxy: %v", keys(got))
	}
	c, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	container := c[0].(map[string]any)
	replicas, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas")
	cpu, _, _ := unstructured.NestedString(container, "resources", "requests", "cpu")
	if container["image"] != "registry.example/skp:v9" || fmt.Sprint(replicas) != "1" || cpu != "1" {
		t.Errorf("image %v, replicas %v, cpu %q", container["image"], replicas, cpu)
	}
	for key, u := range got {
		if u.GetKind() == "Namespace" {
			t.Errorf("%s rendered with namespace.create false", key)
		}
		if data, _ := yaml.Marshal(u.Object); strings.Contains(string(data), configNamespace) {
			t.Errorf("%s still names %s", key, configNamespace)
		}
	}
}

func keys(m map[string]*unstructured.Unstructured) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The generator renders config/default as kubectl kustomize does: with
// config's own images, kustomize's library and kubectl (bin/k8s) give the
// same objects.
func TestRenderIsKubectlKustomize(t *testing.T) {
	kubectl := filepath.Join(root, "bin", "k8s", "v1.37.2", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Skipf("no %s (make k8s-binaries): the render is not compared with kubectl kustomize", kubectl)
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	want := decode(t, string(out))
	// The images config/ itself names, so that the images transformer
	// changes nothing.
	var r Release
	for _, o := range want {
		if o.GetKind() == "Deployment" {
			c, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			r.Image = c[0].(map[string]any)["image"].(string)
		}
	}
	_, tag, _ := splitImage(r.Image)
	r.AgentImage = configAgentImage + ":" + tag
	objs, err := render(filepath.Join(root, "config", "default"), r)
	if err != nil {
		t.Fatal(err)
	}
	data, err := toYAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, string(data))
	if len(got) != len(want) || len(got) < 10 {
		t.Fatalf("%d objects rendered, kubectl kustomize gives %d", len(got), len(want))
	}
	for key, w := range want {
		if g, ok := got[key]; !ok || normalised(g) != normalised(w) {
			t.Errorf("%s differs from kubectl kustomize's", key)
		}
	}
}

// The agent image gets the release's wherever config/ names it: in an image
// field (kustomize's images), a flag or an environment variable.
func TestSetAgentImage(t *testing.T) {
	obj := map[string]any{"args": []any{"--agent-image=" + configAgentImage + ":dev", "--other=" + configAgentImage + "x"},
		"env": []any{map[string]any{"value": configAgentImage + "@sha256:0123abcd"}}, "image": configImage + ":dev"}
	got := setAgentImage(obj, "registry.example/agent:v2").(map[string]any)
	want := map[string]any{"args": []any{"--agent-image=registry.example/agent:v2", "--other=" + configAgentImage + "x"},
		"env": []any{map[string]any{"value": "registry.example/agent:v2"}}, "image": configImage + ":dev"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
