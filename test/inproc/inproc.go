// Package inproc runs synterix-kube-proxy in the test process against the
// real API server of test/testenv: the operator's manager, and real agents
// (agent/daemon) each programming the kernel of its own node network
// namespace (test/netns), optionally serving their explain endpoint on the
// host's address behind a Pod object, so that the API server's pods/proxy
// reaches it as in a cluster. Tests of tracing and of the kubectl plugin
// share it.
package inproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Namespaces of a World.
const (
	OperatorNamespace = "synterix-system"
	TestNamespace     = "test"
	// AgentImage is the operator's default (and only allowed) agent image.
	AgentImage = "example.org/synterix:test"
)

// World is a real API server and what the test process runs against it.
type World struct {
	T   testing.TB
	Env *envtest.Environment
	Cfg *rest.Config
	C   client.Client
	CS  kubernetes.Interface
}

// Start starts the API server (skipping the test when there is none) and
// creates the operator's and the test's namespaces.
func Start(t testing.TB) *World {
	t.Helper()
	env, err := testenv.New()
	if err != nil {
		t.Skipf("SKIPPING: no test control plane: %v", err)
	}
	env.ControlPlaneStopTimeout = 3 * time.Minute
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	w := &World{T: t, Env: env, Cfg: cfg, C: c, CS: kubernetes.NewForConfigOrDie(cfg)}
	for _, ns := range []string{OperatorNamespace, TestNamespace} {
		w.Create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return w
}

// Create creates obj or fails the test.
func (w *World) Create(obj client.Object) {
	w.T.Helper()
	if err := w.C.Create(context.Background(), obj); err != nil {
		w.T.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// Operator starts the operator's manager in-process, as cmd/manager does,
// with tp tracing its reconciles (nil: none).
func (w *World) Operator(tp trace.TracerProvider) {
	w.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := ctrl.NewManager(rest.CopyConfig(w.Cfg), ctrl.Options{
		Scheme:                 controllers.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(OperatorNamespace),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		w.T.Fatal(err)
	}
	var opts []controllers.SetupOption
	if tp != nil {
		opts = append(opts, controllers.WithTracerProvider(tp))
	}
	if err := controllers.Setup(mgr, controllers.AgentOptions{Namespace: OperatorNamespace, DefaultImage: AgentImage}, opts...); err != nil {
		w.T.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			w.T.Errorf("operator: %v", err)
		}
	}()
	w.T.Cleanup(func() { cancel(); <-done })
}

// Apply creates the objects of a kustomization folder of the repository,
// namespaced ones in the operator's namespace.
func (w *World) Apply(dir string) {
	w.T.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		w.T.Fatal(err)
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		w.T.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, dir)).Output()
	if err != nil {
		w.T.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			w.T.Fatal(err)
		}
		if len(u.Object) > 0 {
			w.Create(u)
		}
	}
}

// Eventually polls cond until it holds or a generous deadline passes. The
// deadline bounds a hang; it asserts nothing about speed.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: never happened; last: %s", what, last)
}

// HostIP is an address of the test process's own network namespace that
// the API server may proxy to (not loopback or link-local): the agents'
// explain servers listen there, as agents do on a node's address.
func HostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		return ipn.IP.String(), nil
	}
	return "", fmt.Errorf("no IPv4 address outside loopback")
}

func key(name string) types.NamespacedName { return types.NamespacedName{Name: name} }

// Revision returns a config revision of the operator's namespace.
func (w *World) Revision(name string) *appsv1.ControllerRevision {
	w.T.Helper()
	cr := &appsv1.ControllerRevision{}
	if err := w.C.Get(context.Background(), types.NamespacedName{Namespace: OperatorNamespace, Name: name}, cr); err != nil {
		w.T.Fatal(err)
	}
	return cr
}
