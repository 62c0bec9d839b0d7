// Package rbactest runs the operator against a real kube-apiserver that
// holds exactly what config/ ships: the operator's RBAC (config/rbac), the
// agent's ServiceAccount and RBAC (config/agent), the admission policies
// and the agent image allow-list (config/policy), and, in its own test, the
// optional approval policy (config/admission). The API server authorizes
// with RBAC and enforces ValidatingAdmissionPolicies, so each test checks a
// permission or a policy where it is enforced.
//
// The operator runs as its ServiceAccount (impersonated) with leader
// election, as deployed; every request it makes is recorded, so that the
// least-privilege test can compare the shipped rules with what the code
// uses. The per-node agents are simulated (test/fakeagent, with the test's
// admin client) except where a test needs an agent's own identity: there
// it uses ServiceAccount tokens bound to Pods on Nodes, as kubelet issues
// them.
package rbactest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

const (
	ns = "synterix-system"
	// operatorUser is the operator's ServiceAccount, as config/rbac names it.
	operatorUser = "system:serviceaccount:" + ns + ":synterix-operator"
	// agentImage is the operator's default agent image in these tests, in
	// the repository the shipped allow-list names.
	agentImage = "ghcr.io/synterix/synterix-kube-proxy-agent:test"
)

// shippedDirs are installed, in this order, before the operator starts.
var shippedDirs = []string{"config/rbac", "config/agent", "config/policy"}

// fx is the shared fixture: one API server and one operator for the
// package.
var fx struct {
	cfg     *rest.Config
	admin   client.Client
	kube    kubernetes.Interface
	scheme  *runtime.Scheme
	shipped []*unstructured.Unstructured
	opts    controllers.AgentOptions
	agents  *fakeagent.Fleet
	// requests are the operator's requests to the API server.
	requests *requestLog
	mgrErr   chan error
}

func TestMain(m *testing.M) {
	logf.SetLogger(logr.Discard())
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	code := 1
	if err := setup(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
	} else {
		code = m.Run()
	}
	cancel()
	_ = env.Stop()
	os.Exit(code)
}

// setup installs what config/ ships, the test nodes, the operator and the
// simulated agents.
func setup(ctx context.Context, cfg *rest.Config) error {
	fx.cfg = cfg
	fx.scheme = controllers.NewScheme()
	var err error
	if fx.admin, err = client.New(cfg, client.Options{Scheme: fx.scheme}); err != nil {
		return err
	}
	fx.kube = kubernetes.NewForConfigOrDie(cfg)
	// The operator's namespace as config/manager ships it (its label
	// selects it for the admission policies).
	objs, err := kustomize("config/manager")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := fx.admin.Create(ctx, o); err != nil {
				return err
			}
		}
	}
	if err := installShipped(ctx); err != nil {
		return err
	}
	// n-0 and n-1 run the GatewayConfig "default"; the others belong to
	// single tests.
	for name, role := range map[string]string{"n-0": "proxy", "n-1": "proxy", "n-2": "doomed", "n-3": "rbac"} {
		if err := fx.admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"role": role}}}); err != nil {
			return err
		}
	}
	if err := startOperator(ctx); err != nil {
		return err
	}
	fx.agents = fakeagent.New(fx.admin, fakeagent.Always(fakeagent.Ready))
	fx.agents.Namespace = ns
	return fx.agents.Start(ctx, cfg, 2)
}

// installShipped creates every object of shippedDirs; objects without a
// namespace go to the operator's, as config/default does.
func installShipped(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	for _, dir := range shippedDirs {
		if _, err := os.Stat(filepath.Join(root, dir, "kustomization.yaml")); err != nil {
			fmt.Fprintf(os.Stderr, "%s is not there: not installed\n", dir)
			continue
		}
		objs, err := kustomize(dir)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetNamespace() == "" && namespaced(o.GetKind()) {
				o.SetNamespace(ns)
			}
			if err := fx.admin.Create(ctx, o); err != nil {
				return fmt.Errorf("creating %s %s from %s: %w", o.GetKind(), o.GetName(), dir, err)
			}
			fx.shipped = append(fx.shipped, o)
		}
	}
	return nil
}

func namespaced(kind string) bool {
	switch kind {
	case "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Namespace":
		return false
	}
	return true
}

// startOperator runs the operator as its ServiceAccount, with leader
// election and the agent image allow-list config/policy ships.
func startOperator(ctx context.Context) error {
	opCfg := rest.CopyConfig(fx.cfg)
	opCfg.Impersonate = rest.ImpersonationConfig{
		UserName: operatorUser,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	fx.requests = &requestLog{}
	opCfg.Wrap(fx.requests.wrap)
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme: fx.scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		LeaderElection: true, LeaderElectionID: "operator.proxy.synterix.io", LeaderElectionNamespace: ns,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(ns),
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return err
	}
	fx.opts = controllers.AgentOptions{Namespace: ns, DefaultImage: agentImage}
	// The allow-list config/policy ships, as the manager's Deployment
	// passes it (ALLOWED_AGENT_IMAGES from the ConfigMap).
	for _, o := range fx.shipped {
		if o.GetKind() == "ConfigMap" && o.GetName() == "synterix-agent-images" {
			list, _, _ := unstructured.NestedString(o.Object, "data", "allowedImages")
			if fx.opts.AllowedImages, err = controllers.ParseImageAllowList(list); err != nil {
				return err
			}
		}
	}
	if err := controllers.Setup(mgr, fx.opts); err != nil {
		return err
	}
	fx.mgrErr = make(chan error, 1)
	go func() { fx.mgrErr <- mgr.Start(ctx) }()
	return nil
}

// kustomize renders a kustomization folder of the repository into objects.
func kustomize(dir string) ([]*unstructured.Unstructured, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, dir)).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// eventually retries f until it succeeds; the deadline only bounds a hang.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case err := <-fx.mgrErr:
			t.Fatalf("the operator stopped: %v", err)
		default:
		}
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// as returns a client that impersonates user in groups (and every
// authenticated user's group).
func as(t *testing.T, user string, groups ...string) client.Client {
	t.Helper()
	c := rest.CopyConfig(fx.cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	cl, err := client.New(c, client.Options{Scheme: fx.scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// asOperator impersonates the operator's ServiceAccount.
func asOperator(t *testing.T) client.Client {
	return as(t, operatorUser, "system:serviceaccounts", "system:serviceaccounts:"+ns)
}

var defaultOnce sync.Once

// defaultGC makes sure the GatewayConfig "default" (nodes n-0 and n-1) is
// rolled out by the operator, and returns it.
func defaultGC(t *testing.T) *proxyv1alpha1.GatewayConfig {
	t.Helper()
	ctx := context.Background()
	defaultOnce.Do(func() {
		gc := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: proxyv1alpha1.GatewayConfigSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "proxy"}}}}
		if err := fx.admin.Create(ctx, gc); err != nil {
			t.Fatal(err)
		}
	})
	cur := &proxyv1alpha1.GatewayConfig{}
	eventually(t, "the operator, with only its shipped RBAC, rolls out GatewayConfig default", func() error {
		if err := fx.admin.Get(ctx, client.ObjectKey{Name: "default"}, cur); err != nil {
			return err
		}
		if cur.Status.ReadyNodes != 2 || cur.Status.CurrentRevision == "" {
			return fmt.Errorf("not rolled out: %d ready nodes, revision %q", cur.Status.ReadyNodes, cur.Status.CurrentRevision)
		}
		return nil
	})
	return cur
}

// requestLog records the method, URL and status of every request of the
// operator.
type requestLog struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, url string
	status      int
}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		r := recorded{method: req.Method, url: req.URL.String()}
		if resp != nil {
			r.status = resp.StatusCode
		}
		l.mu.Lock()
		l.reqs = append(l.reqs, r)
		l.mu.Unlock()
		return resp, err
	})
}

func (l *requestLog) all() []recorded {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]recorded(nil), l.reqs...)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
