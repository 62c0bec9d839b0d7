package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

const ns = "synterix-system"

// TestMetricsAsDeployed starts the agent's metrics server with the arguments
// the operator's DaemonSet passes (the port made free), against a real API
// server holding the shipped RBAC (config/rbac's metrics reader role,
// config/agent), with the agent running as its ServiceAccount. Nobody
// without a token the API server accepts, and the right to get /metrics,
// reads them: the agents listen on every host interface.
func TestMetricsAsDeployed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	admin, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"config/rbac", "config/agent", "config/explain"} {
		for _, o := range kustomize(t, dir) {
			if o.GetNamespace() == "" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" {
				o.SetNamespace(ns)
			}
			if err := admin.Create(ctx, o); err != nil {
				t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
	// The agent's ServiceAccount, a scraper allowed to read metrics
	// (synterix-metrics-reader, shipped) and one that is not.
	for _, sa := range []string{"synterix-agent", "prometheus", "nosy"} {
		err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
		if client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-reads-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "synterix-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	}); err != nil {
		t.Fatal(err)
	}
	token := func(sa string, audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	agentCfg := &rest.Config{Host: cfg.Host, BearerToken: token("synterix-agent"),
		TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}}

	// The agent as the DaemonSet runs it, on a free port.
	args := controllers.AgentArgs(nil, controllers.AgentOptions{
		Namespace: ns, HealthPort: controllers.DefaultAgentHealthPort, MetricsPort: controllers.DefaultAgentMetricsPort})
	o, err := parseFlags(withFreePorts(args))
	if err != nil {
		t.Fatalf("the DaemonSet's arguments %q: %v", args, err)
	}
	addr, err := serveMetrics(ctx, o, metrics.New(), agentCfg, synced)
	if err != nil {
		t.Fatalf("metrics server with the DaemonSet's arguments %q: %v", args, err)
	}
	port := addr.(*net.TCPAddr).Port
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	t.Run("no metrics over plain HTTP", func(t *testing.T) {
		code, body := get(t, "http://"+target+"/metrics", "", false)
		if code == http.StatusOK || strings.Contains(body, "synterix_") {
			t.Fatalf("an anonymous client read the metrics over plain HTTP on %s (the DaemonSet's %q): HTTP %d", addr, args, code)
		}
	})
	t.Run("no metrics without a token", func(t *testing.T) {
		if code, _ := get(t, "https://"+target+"/metrics", "", true); code != http.StatusUnauthorized {
			t.Fatalf("HTTPS without a token: HTTP %d, want 401", code)
		}
	})
	t.Run("no metrics for a ServiceAccount without the reader role", func(t *testing.T) {
		if code, _ := get(t, "https://"+target+"/metrics", token("nosy"), true); code != http.StatusForbidden {
			t.Fatalf("HTTPS with a token not allowed get /metrics: HTTP %d, want 403", code)
		}
	})
	t.Run("metrics for the reader", func(t *testing.T) {
		code, body := get(t, "https://"+target+"/metrics", token("prometheus"), true)
		if code != http.StatusOK || !strings.Contains(body, "synterix_") {
			t.Fatalf("HTTPS as a metrics reader: HTTP %d %.200s", code, body)
		}
	})
	explainURL := "https://" + target + report.PathServices
	t.Run("explanations for the explain ServiceAccount's audience-bound token", func(t *testing.T) {
		code, body := getWith(t, explainURL, report.TokenHeader, token("synterix-explain", report.Audience))
		if code != http.StatusOK || !strings.Contains(body, `"node": "node-x"`) {
			t.Fatalf("GET %s with the relayed header: HTTP %d %.300s", report.PathServices, code, body)
		}
		// A direct client puts it in Authorization.
		if code, _ := get(t, explainURL, token("synterix-explain", report.Audience), true); code != http.StatusOK {
			t.Fatalf("GET %s with Authorization: HTTP %d", report.PathServices, code)
		}
	})
	t.Run("no explanations for a token of the API server's audience", func(t *testing.T) {
		for _, sa := range []string{"synterix-explain", "prometheus"} {
			if code, _ := getWith(t, explainURL, report.TokenHeader, token(sa)); code != http.StatusUnauthorized {
				t.Fatalf("%s's token for the API server: HTTP %d, want 401", sa, code)
			}
		}
	})
	t.Run("no explanations without the debug reader role", func(t *testing.T) {
		if code, _ := getWith(t, explainURL, report.TokenHeader, token("nosy", report.Audience)); code != http.StatusForbidden {
			t.Fatalf("audience-bound token of a ServiceAccount without synterix-debug-reader: HTTP %d, want 403", code)
		}
	})
	t.Run("no metrics for the explain token", func(t *testing.T) {
		if code, _ := get(t, "https://"+target+"/metrics", token("synterix-explain", report.Audience), true); code != http.StatusUnauthorized {
			t.Fatalf("the audience-bound token on /metrics: HTTP %d, want 401", code)
		}
	})
	t.Run("plain HTTP only on loopback", func(t *testing.T) {
		o, err := parseFlags([]string{"--metrics-addr=127.0.0.1:0", "--metrics-secure=false"})
		if err != nil {
			t.Fatal(err)
		}
		a, err := serveMetrics(ctx, o, metrics.New(), agentCfg, synced)
		if err != nil {
			t.Fatalf("plain HTTP on loopback, as kube-proxy: %v", err)
		}
		if code, _ := get(t, "http://"+a.String()+"/metrics", "", false); code != http.StatusOK {
			t.Fatalf("plain HTTP on loopback: HTTP %d", code)
		}
		o, err = parseFlags([]string{"--metrics-addr=:0", "--metrics-secure=false"})
		if err == nil {
			_, err = serveMetrics(ctx, o, metrics.New(), agentCfg, synced)
		}
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("plain HTTP on every interface: %v, want an error that says loopback", err)
		}
	})
}

// synced is the snapshot of an agent that synced nothing.
func synced() *daemon.Snapshot { return &daemon.Snapshot{NodeName: "node-x"} }

// getWith is get with the token in another header, as the API server's
// proxy relays it.
func getWith(t *testing.T, url, header, token string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test client, self-signed agent
	}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(header, "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}

// withFreePorts rewrites the listen addresses of the agent's arguments to
// port 0, keeping their hosts.
func withFreePorts(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		for _, flag := range []string{"--metrics-addr=", "--health-addr="} {
			if v, ok := strings.CutPrefix(a, flag); ok {
				host, _, _ := net.SplitHostPort(v)
				a = flag + net.JoinHostPort(host, "0")
			}
		}
		out = append(out, a)
	}
	return out
}

func get(t *testing.T, url, token string, insecureTLS bool) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		// The agent's certificate is self-signed unless one is given.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: insecureTLS}, //nolint:gosec // test client
	}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}

// kustomize renders a kustomization folder of the repository into objects.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, dir)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs
}
