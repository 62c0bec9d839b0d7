// Command agent is the synterix node agent: it programs this node's kernel
// (iptables or IPVS) from the cluster's Services and EndpointSlices, under
// the config revision its ProxyNode names.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/dataplane"
	"github.com/synterix/synterix-kube-proxy/agent/explain"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/secureserve"
	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/internal/telemetry"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultMemoryLimit is the soft memory limit of the Go runtime.
const defaultMemoryLimit = 128 << 20

func main() {
	if err := run(); err != nil {
		klog.ErrorS(err, "Agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// options are the agent's command-line settings.
type options struct {
	nodeName, kubeconfig, healthAddr, metricsAddr string
	operatorNS, sysctlRoot, tlsCert, tlsKey       string
	metricsSecure, profiling, cleanup             bool
	showVersion                                   bool
}

// parseFlags reads the command line (and NODE_NAME, POD_NAMESPACE).
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node (default $NODE_NAME).")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty uses $KUBECONFIG, else the in-cluster config.")
	fs.StringVar(&o.healthAddr, "health-addr", "0.0.0.0:10256", "Address of /healthz, /livez and /readyz; empty disables.")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:10249",
		"Address of /metrics (and of the profiles, with --profiling); empty disables. Plain HTTP only on a loopback address; anywhere else add --metrics-secure.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", false,
		"Serve /metrics over HTTPS to clients the API server authenticates (TokenReview) and authorizes (SubjectAccessReview: get on the non-resource URL).")
	fs.StringVar(&o.tlsCert, "tls-cert-file", "", "Serving certificate (PEM) of --metrics-secure; empty makes a self-signed one at start.")
	fs.StringVar(&o.tlsKey, "tls-private-key-file", "", "Key (PEM) of --tls-cert-file.")
	fs.StringVar(&o.operatorNS, "operator-namespace", envOr("POD_NAMESPACE", "synterix-system"),
		"Namespace of the config revisions (default $POD_NAMESPACE, else synterix-system).")
	fs.StringVar(&o.sysctlRoot, "sysctl-root", sysctl.DefaultRoot,
		"Where the kernel's sysctls are; the agent pod mounts the host's /proc/sys/net at /host/proc/sys/net.")
	fs.BoolVar(&o.profiling, "profiling", false, "Serve Go runtime profiles under /debug/pprof/ on the metrics address.")
	fs.BoolVar(&o.cleanup, "cleanup", false, "Remove every rule the agent installs (iptables and IPVS) and exit.")
	fs.BoolVar(&o.showVersion, "version", false, "Print the version and exit.")
	// Only -v and the flags above are meant for users; klog's other flags
	// stay available for debugging.
	err := fs.Parse(args)
	return o, err
}

func run() error {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	sysctl.SetRoot(o.sysctlRoot)
	if o.showVersion {
		fmt.Println(version)
		return nil
	}
	// A node agent should not balloon during a resync: unless GOMEMLIMIT
	// is set, the garbage collector works harder as the heap nears
	// defaultMemoryLimit (a soft limit: the agent never fails because of it).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if o.cleanup {
		caps := probe.Default.Probe(ctx)
		if err := dataplane.CleanupAll(ctx, caps); err != nil {
			return err
		}
		klog.InfoS("Removed all rules of the agent")
		return nil
	}
	if o.nodeName == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "synterix-agent/" + version
	clients, err := informers.NewClients(cfg)
	if err != nil {
		return err
	}
	recorder, stopEvents := daemon.NewEventRecorder(ctx, clients.Core, o.nodeName)
	defer stopEvents()

	// Traces go where the OTEL_* environment says (the agent pod gets it
	// from the ConfigMap synterix-apiserver); none when it says nothing.
	tp, stopTracing, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "synterix-agent", ServiceVersion: version,
		Attributes: map[string]string{"k8s.node.name": o.nodeName}})
	if err != nil {
		return err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTracing(c)
	}()
	m := metrics.New()
	hs := health.NewState(time.Minute)
	a := daemon.New(daemon.Options{
		NodeName: o.nodeName, OperatorNamespace: o.operatorNS, Clients: clients, Recorder: recorder,
		Metrics: m, Health: hs, AgentVersion: version, TracerProvider: tp,
		// The operator's pod template sets it; the agent only reports it.
		PodTemplateHash: os.Getenv(v1alpha1.PodTemplateHashEnv),
	})
	if o.healthAddr != "" {
		if _, err := serve(ctx, o.healthAddr, hs.Handler()); err != nil {
			return fmt.Errorf("health server: %w", err)
		}
	}
	if _, err := serveMetrics(ctx, o, m, cfg, a.Snapshot); err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	klog.InfoS("Starting agent", "version", version, "node", o.nodeName, "operatorNamespace", o.operatorNS)
	err = a.Run(ctx)
	klog.InfoS("Agent stopped; the rules stay in the kernel")
	return err
}

// serveMetrics serves /metrics (and the profiles, with --profiling) on
// --metrics-addr until ctx ends, and returns the address it listens on
// (nil when disabled). With --metrics-secure it serves HTTPS to clients the
// API server of cfg authenticates and authorizes (agent/secureserve), and
// the explanation of what the agent programmed under /debug/synterix/
// (agent/explain) to tokens bound to its own audience; without, plain
// HTTP, on a loopback address only and without the explanation: the agent
// runs on the host network, so any other address is reachable from outside
// the node.
func serveMetrics(ctx context.Context, o options, m *metrics.Metrics, cfg *rest.Config, snapshot func() *daemon.Snapshot) (net.Addr, error) {
	if o.metricsAddr == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	if o.profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if o.metricsSecure {
		return secureserve.Serve(ctx, secureserve.Options{Addr: o.metricsAddr, CertFile: o.tlsCert, KeyFile: o.tlsKey, Config: cfg,
			Audiences: []secureserve.Audience{{Prefix: report.PathPrefix, Audiences: []string{report.Audience},
				Header: report.TokenHeader, Handler: explain.Handler(snapshot)}}}, mux)
	}
	if !loopback(o.metricsAddr) {
		return nil, fmt.Errorf("--metrics-addr %s is not a loopback address: plain-HTTP metrics are served only on loopback; "+
			"add --metrics-secure to serve them over HTTPS behind the API server's authentication and authorization", o.metricsAddr)
	}
	return serve(ctx, o.metricsAddr, mux)
}

// loopback reports whether a listen address binds loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func serve(ctx context.Context, addr string, h http.Handler) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	return l.Addr(), nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
