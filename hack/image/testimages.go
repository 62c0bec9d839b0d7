package main

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// testImage is an image only the local build makes, for clusters built on
// this machine: a static binary on an empty base.
type testImage struct {
	name, pkg, user, title string
	ports                  []string
}

var testImages = []testImage{
	// The sandbox ("pause") container of every pod; 65535 as Kubernetes' own.
	{name: "pause", pkg: "./test/images/pause", user: "65535:65535", title: "synterix test pause"},
	// The backend of test Services: TCP and UDP on 8080, HTTP probes on 8081.
	{name: "echo", pkg: "./test/images/echo", user: "65532:65532", title: "synterix test echo",
		ports: []string{"8080/tcp", "8080/udp", "8081/tcp"}},
}

// addTestImages adds the pause and echo images to the plan, their binaries
// built with the environment and flags of the Dockerfile's agent build.
func addTestImages(p *Plan, version string) error {
	agent, ok := p.Build.Binaries["/out/agent"]
	if !ok {
		return fmt.Errorf("the Dockerfile builds no /out/agent, whose flags the test images use")
	}
	for _, t := range testImages {
		out := "/out/" + t.name
		p.Build.Binaries[out] = GoBuild{Env: agent.Env, Flags: agent.Flags, Out: out, Package: t.pkg}
		cfg := v1.Config{
			Entrypoint: []string{"/" + t.name},
			User:       t.user,
			Env:        []string{"PATH=" + DefaultPath},
			Labels:     map[string]string{"org.opencontainers.image.title": t.title, "org.opencontainers.image.version": version},
		}
		for _, port := range t.ports {
			if cfg.ExposedPorts == nil {
				cfg.ExposedPorts = map[string]struct{}{}
			}
			cfg.ExposedPorts[port] = struct{}{}
		}
		p.Images[t.name] = &ImageSpec{Name: t.name, Config: cfg, Copies: []Copy{{
			Text: "COPY --from=" + p.Build.Name + " " + out + " /" + t.name, From: p.Build.Name,
			Sources: []string{out}, Dest: "/" + t.name,
		}}}
	}
	return nil
}
