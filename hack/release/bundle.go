package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/lib/version"
	csvv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// packageName is the OLM package, and the prefix of the CSV's name.
const packageName = "synterix-kube-proxy"

// bundleKinds are the kinds a registry+v1 bundle may carry besides the CSV
// and the CRDs, which OLM creates as they are.
var bundleKinds = map[string]bool{
	"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"Service": true, "ConfigMap": true, "Secret": true, "ServiceAccount": true,
	"PodDisruptionBudget": true, "PriorityClass": true, "ServiceMonitor": true, "PrometheusRule": true,
}

// adminKinds are the kinds of config/policy that an OLM bundle cannot carry
// and that the operator must not manage either (they constrain it): a
// cluster administrator applies them besides the bundle (docs/install.md).
var adminKinds = map[string]bool{"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

// bundleFile is one file of bundle/.
type bundleFile struct {
	path string
	data []byte
}

// sorted returns the files in path order.
func sorted(files []bundleFile) []bundleFile {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	return files
}

// makeBundle turns the rendered config/default into an OLM registry+v1
// bundle: the operator's Deployment and the rules bound to its
// ServiceAccount go into the CSV's install strategy (OLM creates the account
// and the bindings), the CRDs and the other objects into manifests/. The
// Namespace is left to whoever installs (an OperatorGroup's namespace).
func makeBundle(objs []*unstructured.Unstructured, r Release, meta bundleMeta) ([]bundleFile, error) {
	csv, err := newCSV(r, meta)
	if err != nil {
		return nil, err
	}
	install, rest, crds, err := installStrategy(objs)
	if err != nil {
		return nil, err
	}
	csv.Spec.InstallStrategy = csvv1alpha1.NamedInstallStrategy{StrategyName: csvv1alpha1.InstallStrategyNameDeployment, StrategySpec: install}
	var files []bundleFile
	for _, crd := range crds {
		desc, err := describeCRD(crd)
		if err != nil {
			return nil, err
		}
		csv.Spec.CustomResourceDefinitions.Owned = append(csv.Spec.CustomResourceDefinitions.Owned, desc)
		data, err := yaml.Marshal(crd.Object)
		if err != nil {
			return nil, err
		}
		files = append(files, bundleFile{"manifests/" + crd.GetName() + ".yaml", data})
	}
	for _, o := range rest {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		gv := strings.ReplaceAll(o.GetAPIVersion(), "/", "_")
		files = append(files, bundleFile{fmt.Sprintf("manifests/%s_%s_%s.yaml", o.GetName(), gv, strings.ToLower(o.GetKind())), data})
	}
	data, err := yaml.Marshal(csv)
	if err != nil {
		return nil, err
	}
	files = append(files, bundleFile{"manifests/" + packageName + ".clusterserviceversion.yaml", data})
	ann, err := annotations(r)
	if err != nil {
		return nil, err
	}
	files = append(files, bundleFile{"metadata/annotations.yaml", ann})
	return sorted(files), nil
}

// bundleMeta is what the CSV says about the product, from hack/release.
type bundleMeta struct {
	Description string
	Icon        []byte
	Examples    []map[string]any
}

// newCSV returns the CSV of a release without its install strategy and CRDs.
func newCSV(r Release, meta bundleMeta) (*csvv1alpha1.ClusterServiceVersion, error) {
	v, err := semver.Parse(r.Version)
	if err != nil {
		return nil, fmt.Errorf("release version: %w", err)
	}
	examples, err := json.Marshal(meta.Examples)
	if err != nil {
		return nil, err
	}
	nsTemplate := `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"synterix-system","labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`
	csv := &csvv1alpha1.ClusterServiceVersion{
		TypeMeta: metav1.TypeMeta{APIVersion: csvv1alpha1.SchemeGroupVersion.String(), Kind: csvv1alpha1.ClusterServiceVersionKind},
		ObjectMeta: metav1.ObjectMeta{
			Name: packageName + ".v" + r.Version,
			Annotations: map[string]string{
				"alm-examples":   string(examples),
				"capabilities":   "Basic Install",
				"categories":     "Networking",
				"containerImage": r.Image,
				"description":    "kube-proxy replacement: an operator and a per-node agent, with node-by-node rollouts under change control",
				"repository":     "https://github.com/synterix/synterix-kube-proxy",
				"support":        "synterix",
				"operatorframework.io/suggested-namespace":          "synterix-system",
				"operatorframework.io/suggested-namespace-template": nsTemplate,
				"operators.operatorframework.io/builder":            "hack/release",
				// The operator makes ProxyNodes, one per node: not for users to create.
				"operators.operatorframework.io/internal-objects": `["proxynodes.proxy.synterix.io"]`,
			},
		},
		Spec: csvv1alpha1.ClusterServiceVersionSpec{
			DisplayName:    "synterix-kube-proxy",
			Description:    meta.Description,
			Version:        version.OperatorVersion{Version: v},
			Maturity:       "alpha",
			MinKubeVersion: r.MinKubeVersion,
			Keywords:       []string{"kube-proxy", "service proxy", "iptables", "ipvs", "networking"},
			Maintainers:    []csvv1alpha1.Maintainer{{Name: "synterix", Email: "maintainers@synterix.io"}},
			Provider:       csvv1alpha1.AppLink{Name: "synterix", URL: "https://github.com/synterix"},
			Links:          []csvv1alpha1.AppLink{{Name: "Source", URL: "https://github.com/synterix/synterix-kube-proxy"}},
			Icon:           []csvv1alpha1.Icon{{Data: base64.StdEncoding.EncodeToString(meta.Icon), MediaType: "image/svg+xml"}},
			// GatewayConfigs and ProxyNodes are cluster-scoped, and the
			// operator watches Services in every namespace.
			InstallModes: []csvv1alpha1.InstallMode{
				{Type: csvv1alpha1.InstallModeTypeOwnNamespace, Supported: false},
				{Type: csvv1alpha1.InstallModeTypeSingleNamespace, Supported: false},
				{Type: csvv1alpha1.InstallModeTypeMultiNamespace, Supported: false},
				{Type: csvv1alpha1.InstallModeTypeAllNamespaces, Supported: true},
			},
			RelatedImages: []csvv1alpha1.RelatedImage{{Name: "manager", Image: r.Image}, {Name: "agent", Image: r.AgentImage}},
		},
	}
	if r.Replaces != "" {
		csv.Spec.Replaces = packageName + ".v" + r.Replaces
	}
	if r.SkipRange != "" {
		csv.Annotations["olm.skipRange"] = r.SkipRange
	}
	return csv, nil
}

// installStrategy splits the rendered objects: the Deployments and the rules
// bound to their ServiceAccounts make the install strategy; the CRDs and
// the objects a bundle may carry are returned; the Namespace, the
// ServiceAccounts and their bindings are OLM's to create. Any other kind is
// an error, so that config/ cannot grow something the bundle silently lacks.
func installStrategy(objs []*unstructured.Unstructured) (csvv1alpha1.StrategyDetailsDeployment, []*unstructured.Unstructured, []*unstructured.Unstructured, error) {
	var st csvv1alpha1.StrategyDetailsDeployment
	var rest, crds []*unstructured.Unstructured
	accounts := map[string]bool{}
	roles := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				return st, nil, nil, err
			}
			st.DeploymentSpecs = append(st.DeploymentSpecs, csvv1alpha1.StrategyDeploymentSpec{Name: d.Name, Spec: d.Spec, Label: d.Labels})
			accounts[d.Spec.Template.Spec.ServiceAccountName] = true
		case "ServiceAccount":
			// Every ServiceAccount of config/ (the operator's, the agents')
			// becomes a set of permissions, which OLM creates and binds in
			// the install namespace.
			accounts[o.GetName()] = true
		case "ClusterRole", "Role":
			roles[o.GetKind()+"/"+o.GetName()] = o
		case "CustomResourceDefinition":
			crds = append(crds, o)
		}
	}
	bound := map[string]bool{}
	for _, o := range objs {
		kind := o.GetKind()
		if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
			continue
		}
		var b rbacv1.RoleBinding // a ClusterRoleBinding has the same fields
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			return st, nil, nil, err
		}
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind || !accounts[s.Name] {
				continue
			}
			role := roles[b.RoleRef.Kind+"/"+b.RoleRef.Name]
			if role == nil {
				return st, nil, nil, fmt.Errorf("%s %s binds %s %s, which config/ does not define", kind, o.GetName(), b.RoleRef.Kind, b.RoleRef.Name)
			}
			var cr rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(role.Object, &cr); err != nil {
				return st, nil, nil, err
			}
			perm := csvv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: s.Name, Rules: cr.Rules}
			if kind == "ClusterRoleBinding" {
				st.ClusterPermissions = append(st.ClusterPermissions, perm)
			} else {
				st.Permissions = append(st.Permissions, perm)
			}
			bound[o.GetKind()+"/"+o.GetName()] = true
			bound[b.RoleRef.Kind+"/"+b.RoleRef.Name] = true
		}
	}
	st.Permissions, st.ClusterPermissions = mergePermissions(st.Permissions), mergePermissions(st.ClusterPermissions)
	for _, o := range objs {
		kind := o.GetKind()
		switch {
		case kind == "Deployment" || kind == "CustomResourceDefinition" || kind == "Namespace" || bound[kind+"/"+o.GetName()]:
		case kind == "ServiceAccount" && accounts[o.GetName()]:
		case adminKinds[kind]:
		case bundleKinds[kind]:
			o = o.DeepCopy()
			o.SetNamespace("") // OLM creates them in the install namespace
			rest = append(rest, o)
		default:
			return st, nil, nil, fmt.Errorf("config/default has a %s (%s), which an OLM bundle cannot carry", kind, o.GetName())
		}
	}
	return st, rest, crds, nil
}

// mergePermissions joins the rules of each ServiceAccount, in order.
func mergePermissions(perms []csvv1alpha1.StrategyDeploymentPermissions) []csvv1alpha1.StrategyDeploymentPermissions {
	var out []csvv1alpha1.StrategyDeploymentPermissions
	at := map[string]int{}
	for _, p := range perms {
		if i, ok := at[p.ServiceAccountName]; ok {
			out[i].Rules = append(out[i].Rules, p.Rules...)
			continue
		}
		at[p.ServiceAccountName] = len(out)
		out = append(out, p)
	}
	return out
}

// annotations is bundle/metadata/annotations.yaml.
func annotations(r Release) ([]byte, error) {
	return yaml.Marshal(map[string]any{"annotations": bundleLabels(r)})
}

// bundleLabels are the bundle's annotations, which bundle.Dockerfile repeats
// as labels.
func bundleLabels(r Release) map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         packageName,
		"operators.operatorframework.io.bundle.channels.v1":        strings.Join(r.Channels, ","),
		"operators.operatorframework.io.bundle.channel.default.v1": r.DefaultChannel,
	}
}

// dockerfile is bundle.Dockerfile: the bundle image, labelled as its
// annotations say.
func dockerfile(r Release) []byte {
	labels := bundleLabels(r)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Generated by make bundle (hack/release); do not edit.\nFROM scratch\n\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "LABEL %s=%s\n", k, labels[k])
	}
	b.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\n")
	return []byte(b.String())
}

// readExamples reads the sample objects of config/samples for alm-examples.
func readExamples(dir string) ([]map[string]any, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []map[string]any
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// describeCRD is the CSV's description of an owned CRD: its storage
// version, and a descriptor for each top-level field of its spec and status
// with the description of the field's schema, so that they follow the API.
func describeCRD(u *unstructured.Unstructured) (csvv1alpha1.CRDDescription, error) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
		return csvv1alpha1.CRDDescription{}, err
	}
	d := csvv1alpha1.CRDDescription{Name: crd.Name, Kind: crd.Spec.Names.Kind, DisplayName: crd.Spec.Names.Kind}
	for _, v := range crd.Spec.Versions {
		if !v.Storage {
			continue
		}
		d.Version = v.Name
		props := v.Schema.OpenAPIV3Schema.Properties
		d.Description = firstSentence(v.Schema.OpenAPIV3Schema.Description)
		for _, f := range sortedKeys(props["spec"].Properties) {
			s := props["spec"].Properties[f]
			d.SpecDescriptors = append(d.SpecDescriptors, csvv1alpha1.SpecDescriptor{
				Path: f, DisplayName: displayName(f), Description: firstSentence(s.Description), XDescriptors: xDescriptors(s, false),
			})
		}
		for _, f := range sortedKeys(props["status"].Properties) {
			s := props["status"].Properties[f]
			d.StatusDescriptors = append(d.StatusDescriptors, csvv1alpha1.StatusDescriptor{
				Path: f, DisplayName: displayName(f), Description: firstSentence(s.Description), XDescriptors: xDescriptors(s, f == "conditions"),
			})
		}
	}
	if d.Version == "" {
		return d, fmt.Errorf("CRD %s has no storage version", crd.Name)
	}
	d.Resources = ownedResources[d.Kind]
	return d, nil
}

// ownedResources are the objects the operator makes for each kind, which
// the console shows under it.
var ownedResources = map[string][]csvv1alpha1.APIResourceReference{
	"GatewayConfig": {
		{Name: "", Kind: "DaemonSet", Version: "v1"},
		{Name: "", Kind: "ControllerRevision", Version: "v1"},
		{Name: "", Kind: "ServiceAccount", Version: "v1"},
		{Name: "", Kind: "ClusterRoleBinding", Version: "v1"},
		{Name: "", Kind: "ProxyNode", Version: "v1alpha1"},
	},
}

// xDescriptors picks the console's widget for a field.
func xDescriptors(s apiextensionsv1.JSONSchemaProps, conditions bool) []string {
	switch {
	case conditions:
		return []string{"urn:alm:descriptor:io.kubernetes.conditions"}
	case s.Type == "boolean":
		return []string{"urn:alm:descriptor:com.tectonic.ui:booleanSwitch"}
	case s.Type == "integer":
		return []string{"urn:alm:descriptor:com.tectonic.ui:number"}
	case s.Type == "string" && len(s.Enum) > 0:
		var out []string
		for _, e := range s.Enum {
			var v string
			if json.Unmarshal(e.Raw, &v) == nil {
				out = append(out, "urn:alm:descriptor:com.tectonic.ui:select:"+v)
			}
		}
		return out
	case s.Type == "string":
		return []string{"urn:alm:descriptor:com.tectonic.ui:text"}
	}
	return nil
}

func sortedKeys(m map[string]apiextensionsv1.JSONSchemaProps) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// displayName turns a field name such as nodePortAddresses into "Node Port
// Addresses".
func displayName(f string) string {
	var b strings.Builder
	for i, c := range f {
		if i == 0 {
			b.WriteString(strings.ToUpper(string(c)))
			continue
		}
		if c >= 'A' && c <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// firstSentence returns the first sentence of a schema description, on one
// line.
func firstSentence(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	return s
}
