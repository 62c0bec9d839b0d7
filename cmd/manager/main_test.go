package main

import (
	"crypto/tls"
	"flag"
	"testing"

	"github.com/synterix/synterix-kube-proxy/controllers"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlagsDefaults(t *testing.T) {
	o, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "synterix-system" || o.LeaderElect || o.EnableHTTP2 || !o.SecureMetrics {
		t.Errorf("defaults: %+v", o)
	}
	if o.AgentImage != defaultImage() || o.AgentHealthPort != int(controllers.DefaultAgentHealthPort) {
		t.Errorf("agent defaults: %+v", o)
	}
	o, _, err = parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), nil, env(map[string]string{"POD_NAMESPACE": "ops"}))
	if err != nil || o.Namespace != "ops" {
		t.Errorf("POD_NAMESPACE: %+v %v", o, err)
	}
	o, _, err = parseFlags(flag.NewFlagSet("t", flag.ContinueOnError),
		[]string{"--namespace=x", "--agent-image=img:1", "--leader-elect"}, env(map[string]string{"POD_NAMESPACE": "ops"}))
	if err != nil || o.Namespace != "x" || o.AgentImage != "img:1" || !o.LeaderElect {
		t.Errorf("flags: %+v %v", o, err)
	}
}

// The allow-list comes from the environment the Deployment fills from the
// ConfigMap synterix-agent-images; a flag overrides it.
func TestParseFlagsAllowedImages(t *testing.T) {
	o, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--agent-image=registry.example/agent:1"},
		env(map[string]string{"ALLOWED_AGENT_IMAGES": "registry.example/agent, mirror.example/"}))
	if err != nil || len(o.AllowedImages) != 2 || o.AllowedImages[1] != "mirror.example/" {
		t.Errorf("from the environment: %+v %v", o.AllowedImages, err)
	}
	o, _, err = parseFlags(flag.NewFlagSet("t", flag.ContinueOnError),
		[]string{"--agent-image=registry.example/agent:1", "--allowed-agent-images=registry.example/agent:1"},
		env(map[string]string{"ALLOWED_AGENT_IMAGES": "other.example/"}))
	if err != nil || len(o.AllowedImages) != 1 || o.AllowedImages[0] != "registry.example/agent:1" {
		t.Errorf("the flag wins: %+v %v", o.AllowedImages, err)
	}
	if o, _, err = parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), nil, env(nil)); err != nil || o.AllowedImages != nil {
		t.Errorf("unset: %+v %v (the operator then allows the repository of --agent-image)", o.AllowedImages, err)
	}
}

func TestParseFlagsRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--agent-health-port=0"},
		{"--agent-metrics-port=70000"},
		{"--namespace="},
		{"--agent-image="},
		{"--no-such-flag"},
		{"--agent-image=ghcr.io/x/agent:1", "--allowed-agent-images=registry.example/agent"},
		{"--allowed-agent-images=registry.example/*"},
		{"--allowed-agent-images= , "},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(discard{})
		if _, _, err := parseFlags(fs, args, env(nil)); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestManagerOptions(t *testing.T) {
	o, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	mo := managerOptions(o, controllers.NewScheme())
	if mo.Metrics.FilterProvider == nil || !mo.Metrics.SecureServing {
		t.Error("metrics are not served securely behind authentication and authorization")
	}
	c := &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
	for _, f := range mo.Metrics.TLSOpts {
		f(c)
	}
	if len(c.NextProtos) != 1 || c.NextProtos[0] != "http/1.1" {
		t.Errorf("HTTP/2 is not off by default: %v", c.NextProtos)
	}
	if mo.LeaderElectionID == "" || mo.LeaderElectionNamespace != "synterix-system" {
		t.Errorf("leader election: %q in %q", mo.LeaderElectionID, mo.LeaderElectionNamespace)
	}
	o.EnableHTTP2 = true
	if len(managerOptions(o, controllers.NewScheme()).Metrics.TLSOpts) != 0 {
		t.Error("--enable-http2 still restricts to HTTP/1.1")
	}
}

func TestDefaultImage(t *testing.T) {
	defer func(v, a string) { version, agentImage = v, a }(version, agentImage)
	version, agentImage = "v1.2.3", ""
	if got := defaultImage(); got != "ghcr.io/synterix/synterix-kube-proxy-agent:v1.2.3" {
		t.Errorf("without agentImage: %s", got)
	}
	agentImage = "registry.example/p/synterix-kube-proxy-agent:abc"
	if got := defaultImage(); got != agentImage {
		t.Errorf("with agentImage: %s", got)
	}
}
