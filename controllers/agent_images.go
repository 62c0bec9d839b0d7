package controllers

import (
	"fmt"
	"strings"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// The agent runs as root with NET_ADMIN on every node it is scheduled to,
// so the image it runs is chosen at install, not by whoever may write a
// GatewayConfig: the operator runs only images of its allow-list
// (--allowed-agent-images, from config/policy's ConfigMap
// synterix-agent-images, which the shipped admission policy reads too).

// ParseImageAllowList reads a comma-separated allow-list of agent images.
// Each entry is an image repository ("registry.example/team/agent": any
// tag or digest of it), one exact image ("...agent:v1.2.3",
// "...agent@sha256:...": that reference and nothing else, so a tag does not
// let in every digest of the repository), or a prefix ending in "/"
// ("registry.example/team/": every repository under it).
func ParseImageAllowList(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.ContainsAny(e, " \t\n*?$()") {
			return nil, fmt.Errorf("agent image allow-list entry %q: an image repository, an image, or a prefix ending in /; no spaces or wildcards", e)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the agent image allow-list %q names no image", s)
	}
	return out, nil
}

// ImageAllowed reports whether image matches an entry of the allow-list
// (see ParseImageAllowList). The shipped admission policy
// (config/policy/agent-daemonset-policy.yaml) applies the same rule.
func ImageAllowed(image string, allowed []string) bool {
	for _, e := range allowed {
		if strings.HasSuffix(e, "/") {
			if strings.HasPrefix(image, e) {
				return true
			}
			continue
		}
		if image == e || ImageRepository(e) == e && (strings.HasPrefix(image, e+":") || strings.HasPrefix(image, e+"@")) {
			return true
		}
	}
	return false
}

// ImageRepository returns an image's repository: without tag and digest.
func ImageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}

// notAllowedError says that a revision's agent image is not allowed.
func notAllowedError(image string, allowed []string) error {
	return fmt.Errorf("spec.agent.image %s is not an allowed agent image: the operator runs only %s "+
		"(--allowed-agent-images, set at install in ConfigMap synterix-agent-images); use one of those, or ask "+
		"a cluster administrator to allow this image", image, strings.Join(allowed, ", "))
}

// allowedImages is the allow-list in force: AllowedImages, else the
// repository of the default image.
func (o AgentOptions) allowedImages() []string {
	if len(o.AllowedImages) > 0 {
		return o.AllowedImages
	}
	return []string{ImageRepository(o.DefaultImage)}
}

// checkAgentImage refuses agent settings whose image is not allowed.
func (o AgentOptions) checkAgentImage(agent *proxyv1alpha1.AgentSpec) error {
	image := o.DefaultImage
	if agent != nil && agent.Image != "" {
		image = agent.Image
	}
	if allowed := o.allowedImages(); !ImageAllowed(image, allowed) {
		return notAllowedError(image, allowed)
	}
	return nil
}
