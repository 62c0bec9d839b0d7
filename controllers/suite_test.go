package controllers_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/test/fakeagent"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// These tests run the operator's manager in-process against the real
// kube-apiserver and etcd of test/testenv. The per-node agents are simulated
// by test/fakeagent, which writes ProxyNode status as agents would. envtest
// runs no kube-controller-manager: there is no garbage collector and no
// DaemonSet controller, so ownerReferences are checked as written, and agent
// pods never exist.

const operatorNamespace = "synterix-system"

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.WithWatch
	fleet     *fakeagent.Fleet

	// behaviors routes the simulated agents' behaviour by node-name prefix, so
	// that each test drives its own nodes.
	behaviors sync.Map // prefix -> fakeagent.Behavior
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Operator suite")
}

// setBehavior sets the behaviour of the simulated agents of the nodes whose
// name starts with prefix, and has them look at their ProxyNodes again.
func setBehavior(prefix string, b fakeagent.Behavior) {
	behaviors.Store(prefix, b)
	fleet.SetBehavior(dispatch)
}

func dispatch(node, rev string) fakeagent.Report {
	var rep fakeagent.Report
	behaviors.Range(func(k, v any) bool {
		if strings.HasPrefix(node, k.(string)) {
			rep = v.(fakeagent.Behavior)(node, rev)
			return false
		}
		return true
	})
	return rep
}

// countingTransport counts the requests of a client.
type countingTransport struct {
	rt http.RoundTripper
	n  *requestCounter
}

// requestCounter counts API requests: all, and writes (not GET).
type requestCounter struct {
	all, writes atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.all.Add(1)
	if r.Method != http.MethodGet {
		c.n.writes.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// defaultAgent are the agent options the suite's operator starts with.
var defaultAgent = controllers.AgentOptions{Namespace: operatorNamespace, DefaultImage: "example.org/synterix:test"}

// startOperator starts the operator's manager in-process, as cmd/manager does,
// with its requests counted in n.
func startOperator(ctx context.Context, cfg *rest.Config, n *requestCounter, onErr func(error)) error {
	_, err := startOperatorWith(ctx, cfg, n, defaultAgent, onErr)
	return err
}

// startOperatorWith starts the operator with the agent options o, and
// returns a channel closed once its manager has stopped (ctx ended).
func startOperatorWith(ctx context.Context, cfg *rest.Config, n *requestCounter, o controllers.AgentOptions, onErr func(error)) (<-chan struct{}, error) {
	opCfg := rest.CopyConfig(cfg)
	opCfg.QPS, opCfg.Burst = controllers.DefaultQPS, controllers.DefaultBurst
	opCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, n: n} })
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:                 controllers.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(operatorNamespace),
		// The benchmark starts a manager per run in one process, and the
		// upgrade tests restart this suite's.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	if err := controllers.Setup(mgr, o); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			onErr(err)
		}
	}()
	return done, nil
}

// The suite's operator: its agent options, and how to stop it.
var (
	operatorMu     sync.Mutex
	operatorOpts   controllers.AgentOptions
	operatorCancel context.CancelFunc
	operatorDone   <-chan struct{}
)

// operatorAgent returns the agent options the suite's operator runs with.
func operatorAgent() controllers.AgentOptions {
	operatorMu.Lock()
	defer operatorMu.Unlock()
	return operatorOpts
}

// restartOperator stops the suite's operator, waits until its manager has
// stopped, and starts it again with the agent options o: an upgrade of the
// operator, as far as its agent options go.
func restartOperator(o controllers.AgentOptions) {
	operatorMu.Lock()
	defer operatorMu.Unlock()
	if operatorCancel != nil {
		operatorCancel()
		<-operatorDone
	}
	opCtx, c := context.WithCancel(ctx)
	done, err := startOperatorWith(opCtx, cfg, &operatorRequests, o, func(err error) { defer GinkgoRecover(); Fail(err.Error()) })
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	operatorOpts, operatorCancel, operatorDone = o, c, done
}

// stopOperator stops the suite's operator and waits until it has stopped.
func stopOperator() {
	operatorMu.Lock()
	defer operatorMu.Unlock()
	operatorCancel()
	<-operatorDone
	operatorCancel = nil
}

var operatorRequests requestCounter

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	k8sClient, err = client.NewWithWatch(cfg, client.Options{Scheme: controllers.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())

	restartOperator(defaultAgent)

	agentClient, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
	fleet = fakeagent.New(agentClient, dispatch)
	fleet.Namespace = operatorNamespace
	Expect(fleet.Start(ctx, cfg, 4)).To(Succeed())
})

var _ = AfterSuite(func() {
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})
