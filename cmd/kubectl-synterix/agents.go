package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Labels and port of the agent pods (controllers/agent_resources.go).
const (
	agentLabel       = "app.kubernetes.io/name=synterix-agent"
	agentPortName    = "metrics"
	agentDefaultPort = 10349
	// tokenSeconds is the life of the token the agents are asked with;
	// the API server's minimum.
	tokenSeconds = 600
)

// clients are the API clients and the agents' client of one command.
type clients struct {
	o   *options
	cs  kubernetes.Interface
	c   client.Client
	ns  string
	mu  sync.Mutex
	tok string
}

func (o *options) clients() (*clients, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-synterix"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	return &clients{o: o, cs: cs, c: c, ns: ns}, nil
}

// agentPod finds the agent pod of a node and its metrics port.
func (c *clients) agentPod(ctx context.Context, node string) (*corev1.Pod, int, error) {
	pods, err := c.cs.CoreV1().Pods(c.o.operatorNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: agentLabel, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, 0, fmt.Errorf("find the agent pod of node %s in %s: %w", node, c.o.operatorNamespace, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		port := agentDefaultPort
		for _, ct := range p.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == agentPortName {
					port = int(cp.ContainerPort)
				}
			}
		}
		return p, port, nil
	}
	return nil, 0, fmt.Errorf("node %s has no running agent pod (label %s in namespace %s)", node, agentLabel, c.o.operatorNamespace)
}

// token is what the agents are asked with: --agent-token, or a
// short-lived token of the explain ServiceAccount bound to the agents'
// audience, requested once per command.
func (c *clients) token(ctx context.Context) (string, error) {
	if c.o.agentToken != "" {
		return c.o.agentToken, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != "" {
		return c.tok, nil
	}
	exp := int64(tokenSeconds)
	tr, err := c.cs.CoreV1().ServiceAccounts(c.o.operatorNamespace).CreateToken(ctx, c.o.serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{report.Audience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token of ServiceAccount %s/%s for the agents (config/explain installs it and the role that allows it): %w",
			c.o.operatorNamespace, c.o.serviceAccount, err)
	}
	c.tok = tr.Status.Token
	return c.tok, nil
}

// nodeAddress is where --direct finds an agent that runs outside a pod
// (by hand, in a node's network namespace): the node's InternalIP and
// --agent-port.
func (c *clients) nodeAddress(ctx context.Context, node string) (*corev1.Pod, int, error) {
	n, err := c.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, 0, err
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return &corev1.Pod{Status: corev1.PodStatus{PodIP: a.Address}}, c.o.agentPort, nil
		}
	}
	return nil, 0, fmt.Errorf("node %s has no InternalIP", node)
}

// agentGet fetches path?query from the agent of a node and decodes its
// JSON answer into out.
func (c *clients) agentGet(ctx context.Context, node, path string, query url.Values, out any) error {
	pod, port, err := c.agentPod(ctx, node)
	if err != nil && c.o.direct {
		var aerr error
		if pod, port, aerr = c.nodeAddress(ctx, node); aerr != nil {
			return fmt.Errorf("%w; and no node address: %v", err, aerr)
		}
	} else if err != nil {
		return err
	}
	tok, err := c.token(ctx)
	if err != nil {
		return err
	}
	var body []byte
	if c.o.direct {
		body, err = c.direct(ctx, pod, port, path, query, tok)
	} else {
		body, err = c.proxied(ctx, pod, port, path, query, tok)
	}
	if err != nil {
		return fmt.Errorf("ask the agent on node %s: %w", node, err)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("the agent on node %s answered %.80q: %w", node, body, err)
	}
	return nil
}

// proxied goes through the API server's pods/proxy, which authenticates
// the caller, consumes its Authorization header and relays the rest.
func (c *clients) proxied(ctx context.Context, pod *corev1.Pod, port int, path string, query url.Values, tok string) ([]byte, error) {
	req := c.cs.CoreV1().RESTClient().Get().
		AbsPath("/api/v1/namespaces", pod.Namespace, "pods", "https:"+pod.Name+":"+strconv.Itoa(port), "proxy", strings.TrimPrefix(path, "/")).
		SetHeader(report.TokenHeader, "Bearer "+tok)
	for k, vs := range query {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	body, err := req.DoRaw(ctx)
	if err != nil {
		return nil, explainStatus(err, body)
	}
	return body, nil
}

// direct connects to the agent's node address. The agent's certificate is
// self-signed unless it was given one, so it is not verified: the token
// sent is bound to the agents' audience and lives 10 minutes.
func (c *clients) direct(ctx context.Context, pod *corev1.Pod, port int, path string, query url.Values, tok string) ([]byte, error) {
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)), Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed agents; the token is audience-bound
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusWords(resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// explainStatus turns an error status relayed by the API server into
// words.
func explainStatus(err error, body []byte) error {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		msg := strings.TrimSpace(string(body))
		if msg == "" {
			msg = se.ErrStatus.Message
		}
		return statusWords(int(se.ErrStatus.Code), msg)
	}
	return err
}

func statusWords(code int, msg string) error {
	switch code {
	case http.StatusUnauthorized:
		return fmt.Errorf("the agent refused the token (HTTP 401): it must be a token the API server accepts for the audience %q", report.Audience)
	case http.StatusForbidden:
		return fmt.Errorf("forbidden (HTTP 403): %s; the token's subject needs the ClusterRole synterix-debug-reader, and you need pods/proxy in the operator namespace (config/explain)", msg)
	case http.StatusServiceUnavailable:
		return fmt.Errorf("unavailable (HTTP 503): %s", msg)
	}
	return fmt.Errorf("HTTP %d: %s", code, msg)
}
