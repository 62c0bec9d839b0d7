// Package secureserve serves the agent's HTTP endpoints that are not meant
// for everyone (metrics, profiles, and later the explanation of what the
// agent programmed) over HTTPS, to clients the API server vouches for. It
// is the mechanism of the manager's metrics endpoint and of
// kube-rbac-proxy: each request's bearer token is checked with a
// TokenReview, then its access with a SubjectAccessReview for the request's
// path as a non-resource URL and its HTTP method as the verb (GET /metrics
// needs "get" on nonResourceURL "/metrics"). Answers are cached briefly, so
// a scraper costs the API server about one review a minute.
//
// The agent needs "create" on tokenreviews and subjectaccessreviews for it
// (the markers below, in config/agent/rbac/role.yaml).
package secureserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Options configure a secure server.
type Options struct {
	// Addr is the address to listen on.
	Addr string
	// CertFile and KeyFile are the serving certificate and key (PEM). When
	// both are empty a self-signed certificate is made at start: clients
	// then skip verifying it (the token, not the certificate, is what
	// authenticates here; give a certificate to let them verify the agent).
	CertFile, KeyFile string
	// Config is the agent's client configuration, for the reviews.
	Config *rest.Config
	// Audiences are paths served with their own guard: tokens bound to
	// other audiences than the API server's (audience.go).
	Audiences []Audience
}

// Cache lifetimes of the reviews' answers. A revoked permission stops
// working within AllowCacheTTL.
const (
	TokenCacheTTL = time.Minute
	AllowCacheTTL = time.Minute
	DenyCacheTTL  = 10 * time.Second
)

// Serve serves h on o.Addr over HTTPS, behind authentication and
// authorization, until ctx ends. It returns the address it listens on.
func Serve(ctx context.Context, o Options, h http.Handler) (net.Addr, error) {
	guarded, err := Wrap(o.Config, h)
	if err != nil {
		return nil, err
	}
	if guarded, err = mount(o.Config, guarded, o.Audiences); err != nil {
		return nil, err
	}
	cert, err := certificate(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           guarded,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Handshake errors (scanners, plain-HTTP clients) are not news.
		ErrorLog: log.New(verboseWriter{}, "", 0),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			// HTTP/1.1 only: no HTTP/2 Rapid Reset or Stream Cancellation.
			NextProtos: []string{"http/1.1"},
		},
	}
	go func() {
		if err := srv.Serve(tls.NewListener(l, srv.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Secure server stopped", "address", l.Addr().String())
		}
	}()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	return l.Addr(), nil
}

// Wrap returns h behind authentication (TokenReview) and authorization
// (SubjectAccessReview) through the API server of cfg.
func Wrap(cfg *rest.Config, h http.Handler) (http.Handler, error) {
	return wrap(cfg, nil, h)
}

// wrap is Wrap for tokens bound to audiences (nil: the API server's).
func wrap(cfg *rest.Config, audiences authenticator.Audiences, h http.Handler) (http.Handler, error) {
	if cfg == nil {
		return nil, errors.New("secure serving needs a client configuration for its token and access reviews")
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	backoff := &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                &apiserver.AnonymousAuthConfig{Enabled: false},
		APIAudiences:             audiences,
		TokenAccessReviewClient:  cs.AuthenticationV1(),
		TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff:      backoff,
		CacheTTL:                 TokenCacheTTL,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("token reviews: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: cs.AuthorizationV1(),
		AllowCacheTTL:             AllowCacheTTL,
		DenyCacheTTL:              DenyCacheTTL,
		WebhookRetryBackoff:       backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("access reviews: %w", err)
	}
	return &guard{authn: authn, authz: authz, next: h}, nil
}

// guard lets through the requests the API server authenticates and
// authorizes.
type guard struct {
	authn authenticator.Request
	authz authorizer.Authorizer
	next  http.Handler
}

func (g *guard) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	res, ok, err := g.authn.AuthenticateRequest(req)
	if err != nil {
		// A bad token and an unreachable API server both land here: say
		// no more than that to the client.
		klog.V(2).InfoS("Request not authenticated", "path", req.URL.Path, "remote", req.RemoteAddr, "err", err)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if !ok {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	attrs := authorizer.AttributesRecord{User: res.User, Verb: strings.ToLower(req.Method), Path: req.URL.Path}
	decision, reason, err := g.authz.Authorize(req.Context(), attrs)
	if err != nil {
		klog.ErrorS(err, "Access review failed", "user", res.User.GetName(), "path", req.URL.Path)
		http.Error(w, "Access review failed", http.StatusInternalServerError)
		return
	}
	if decision != authorizer.DecisionAllow {
		klog.V(2).InfoS("Request forbidden", "user", res.User.GetName(), "verb", attrs.Verb, "path", req.URL.Path, "reason", reason)
		http.Error(w, fmt.Sprintf("Forbidden: %s may not %s %s", res.User.GetName(), attrs.Verb, req.URL.Path), http.StatusForbidden)
		return
	}
	g.next.ServeHTTP(w, req)
}

// certificate loads the serving certificate, or makes a self-signed one.
func certificate(certFile, keyFile string) (tls.Certificate, error) {
	if (certFile == "") != (keyFile == "") {
		return tls.Certificate{}, errors.New("give both a TLS certificate and its key, or neither")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("serving certificate: %w", err)
		}
		return c, nil
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "synterix-agent"
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, nil, nil)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// verboseWriter logs the HTTP server's own messages at verbosity 4.
type verboseWriter struct{}

func (verboseWriter) Write(p []byte) (int, error) {
	klog.V(4).InfoS("Secure server", "message", strings.TrimSpace(string(p)))
	return len(p), nil
}
