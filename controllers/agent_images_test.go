package controllers_test

import (
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/controllers"
)

func TestImageAllowList(t *testing.T) {
	allowed, err := controllers.ParseImageAllowList(" ghcr.io/synterix/agent, registry.example/team/ ,mirror.example/agent:v1.2.3,,")
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) != 3 {
		t.Fatalf("parsed %q", allowed)
	}
	for image, want := range map[string]bool{
		"ghcr.io/synterix/agent":                                        true,
		"ghcr.io/synterix/agent:v1":                                     true,
		"ghcr.io/synterix/agent@sha256:" + strings.Repeat("a", 64):      true,
		"ghcr.io/synterix/agent-evil:v1":                                false, // a repository is not a prefix
		"ghcr.io/synterix/agentx":                                       false,
		"ghcr.io/synterix:v1":                                           false,
		"registry.example/team/anything:v1":                             true,
		"registry.example/team":                                         false,
		"registry.example/teammate/x:v1":                                false,
		"mirror.example/agent:v1.2.3":                                   true,
		"mirror.example/agent:v1.2.3@sha256:" + strings.Repeat("b", 64): false, // an exact image is exact
		"mirror.example/agent:v1.2.4":                                   false,
		"evil.example/ghcr.io/synterix/agent:v1":                        false,
	} {
		if got := controllers.ImageAllowed(image, allowed); got != want {
			t.Errorf("ImageAllowed(%s) = %v, want %v", image, got, want)
		}
	}
	for _, bad := range []string{"", " , ", "registry.example/*", "a b", "$(ALLOWED_AGENT_IMAGES)"} {
		if _, err := controllers.ParseImageAllowList(bad); err == nil {
			t.Errorf("ParseImageAllowList(%q) accepted", bad)
		}
	}
	for image, repo := range map[string]string{
		"ghcr.io/x/agent:v1":                "ghcr.io/x/agent",
		"ghcr.io/x/agent":                   "ghcr.io/x/agent",
		"localhost:5000/agent":              "localhost:5000/agent",
		"localhost:5000/agent:abc":          "localhost:5000/agent",
		"localhost:5000/agent:abc@sha256:0": "localhost:5000/agent",
		"agent@sha256:0":                    "agent",
	} {
		if got := controllers.ImageRepository(image); got != repo {
			t.Errorf("ImageRepository(%s) = %s, want %s", image, got, repo)
		}
	}
}
