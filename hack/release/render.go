package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The image names in config/ that the release's images replace.
const (
	configImage      = "ghcr.io/synterix/synterix-kube-proxy"
	configAgentImage = "ghcr.io/synterix/synterix-kube-proxy-agent"
)

// Release is hack/release/release.yaml: the release the artefacts describe.
type Release struct {
	Version        string   `json:"version"`
	Replaces       string   `json:"replaces"`
	SkipRange      string   `json:"skipRange"`
	Channels       []string `json:"channels"`
	DefaultChannel string   `json:"defaultChannel"`
	MinKubeVersion string   `json:"minKubeVersion"`
	Image          string   `json:"image"`
	AgentImage     string   `json:"agentImage"`
}

// loadRelease reads a release file and fills the default images.
func loadRelease(path string) (Release, error) {
	var r Release
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if r.Version == "" || len(r.Channels) == 0 || r.DefaultChannel == "" || r.MinKubeVersion == "" {
		return r, fmt.Errorf("%s: version, channels, defaultChannel and minKubeVersion are required", path)
	}
	if r.Image == "" {
		r.Image = configImage + ":v" + r.Version
	}
	if r.AgentImage == "" {
		r.AgentImage = configAgentImage + ":v" + r.Version
	}
	return r, nil
}

// splitImage splits an image reference into its name and tag (or digest).
func splitImage(ref string) (name, tag, digest string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], "", ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:], ""
	}
	return ref, "", ""
}

// render renders the kustomization dir (config/default) with the release's
// images, as kubectl kustomize would, in kustomize's order.
func render(dir string, r Release) ([]*unstructured.Unstructured, error) {
	tmp, err := os.MkdirTemp("", "synterix-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(tmp, abs)
	if err != nil {
		return nil, err
	}
	k := "resources:\n- " + rel + "\nimages:\n"
	for _, img := range [][2]string{{configImage, r.Image}, {configAgentImage, r.AgentImage}} {
		name, tag, digest := splitImage(img[1])
		k += fmt.Sprintf("- name: %s\n  newName: %s\n", img[0], name)
		if tag != "" {
			k += "  newTag: " + tag + "\n"
		}
		if digest != "" {
			k += "  digest: " + digest + "\n"
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return nil, err
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), tmp)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, rs := range res.Resources() {
		// Through JSON, so that numbers are int64 or float64 as in any
		// object read from the API server.
		data, err := rs.MarshalJSON()
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, err
		}
		u.Object = setAgentImage(u.Object, r.AgentImage).(map[string]any)
		objs = append(objs, u)
	}
	return objs, nil
}

// agentImageRef matches the agent image of config/ where kustomize's images
// transformer does not reach: a whole string (an environment variable) or
// the value of a flag (--agent-image=...).
var agentImageRef = regexp.MustCompile(`(^|=)` + regexp.QuoteMeta(configAgentImage) + `(:[\w][\w.-]*|@sha256:[0-9a-f]+)?$`)

// setAgentImage gives every reference to the agent image in a JSON value
// the release's agent image; a bare repository (the allow-list of agent
// images) gets the release's repository.
func setAgentImage(v any, image string) any {
	switch v := v.(type) {
	case string:
		return agentImageRef.ReplaceAllStringFunc(v, func(m string) string {
			sub := agentImageRef.FindStringSubmatch(m)
			if sub[2] == "" {
				repo, _, _ := splitImage(image)
				return sub[1] + repo
			}
			return sub[1] + image
		})
	case []any:
		for i := range v {
			v[i] = setAgentImage(v[i], image)
		}
	case map[string]any:
		for k := range v {
			v[k] = setAgentImage(v[k], image)
		}
	}
	return v
}

// toYAML writes objects as one YAML stream.
func toYAML(objs []*unstructured.Unstructured) ([]byte, error) {
	var b strings.Builder
	for i, o := range objs {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(data)
	}
	return []byte(b.String()), nil
}
