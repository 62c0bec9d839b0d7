// Command manager is the synterix-kube-proxy operator: it runs the agent
// DaemonSets, rolls config revisions out node by node, and aggregates the
// nodes' reports into the status of GatewayConfigs and ProxyPolicies.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/synterix/synterix-kube-proxy/controllers"
	"github.com/synterix/synterix-kube-proxy/internal/telemetry"
)

// version and agentImage are set at build time (-ldflags "-X
// main.version=... -X main.agentImage=..."; see the Dockerfile).
var (
	version = "dev"
	// agentImage is the agent image built with this manager; empty means
	// the project's agent image at this version.
	agentImage = ""
)

// Options are the manager's command-line settings.
type Options struct {
	MetricsAddr      string
	ProbeAddr        string
	LeaderElect      bool
	Namespace        string
	AgentImage       string
	AllowedImages    []string
	AgentHealthPort  int
	AgentMetricsPort int
	EnableHTTP2      bool
	SecureMetrics    bool
	QPS              float64
	Burst            int
}

// defaultImage is the agent image the operator was released with.
func defaultImage() string {
	if agentImage != "" {
		return agentImage
	}
	return "ghcr.io/synterix/synterix-kube-proxy-agent:" + version
}

// parseFlags reads the command line and the environment (POD_NAMESPACE).
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (Options, *zap.Options, error) {
	var o Options
	ns := getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "synterix-system"
	}
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS, authenticated and authorized through the API server); 0 disables it.")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles.")
	fs.StringVar(&o.Namespace, "namespace", ns, "Namespace of the operator, its agent DaemonSets and config revisions (default: $POD_NAMESPACE, else synterix-system).")
	fs.StringVar(&o.AgentImage, "agent-image", defaultImage(), "Agent image when a GatewayConfig's spec.agent.image is empty.")
	allowed := fs.String("allowed-agent-images", getenv("ALLOWED_AGENT_IMAGES"),
		"Comma-separated agent images the operator may run, set at install (default $ALLOWED_AGENT_IMAGES, which config/manager takes from the ConfigMap synterix-agent-images; empty: the repository of --agent-image). "+
			"Each entry is a repository (any tag or digest of it), an exact image, or a prefix ending in /. A GatewayConfig asking for another image is refused.")
	fs.IntVar(&o.AgentHealthPort, "agent-health-port", int(controllers.DefaultAgentHealthPort), "Port of the agents' /healthz and /readyz (host network).")
	fs.IntVar(&o.AgentMetricsPort, "agent-metrics-port", int(controllers.DefaultAgentMetricsPort), "Port of the agents' /metrics (host network).")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", false, "Serve the metrics endpoint over HTTP/2 too (off by default: HTTP/2 Rapid Reset and Stream Cancellation).")
	fs.BoolVar(&o.SecureMetrics, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization.")
	fs.Float64Var(&o.QPS, "kube-api-qps", controllers.DefaultQPS, "Requests per second to the API server, sustained.")
	fs.IntVar(&o.Burst, "kube-api-burst", controllers.DefaultBurst, "Requests to the API server in a burst.")
	zo := &zap.Options{}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, nil, err
	}
	for _, p := range []int{o.AgentHealthPort, o.AgentMetricsPort} {
		if p < 1 || p > 65535 {
			return o, nil, fmt.Errorf("agent port %d is out of range 1-65535", p)
		}
	}
	if o.Namespace == "" {
		return o, nil, fmt.Errorf("--namespace must not be empty")
	}
	if o.AgentImage == "" {
		return o, nil, fmt.Errorf("--agent-image must not be empty")
	}
	if *allowed != "" {
		var err error
		if o.AllowedImages, err = controllers.ParseImageAllowList(*allowed); err != nil {
			return o, nil, fmt.Errorf("--allowed-agent-images: %w", err)
		}
		if !controllers.ImageAllowed(o.AgentImage, o.AllowedImages) {
			return o, nil, fmt.Errorf("--agent-image %s is not in --allowed-agent-images %q", o.AgentImage, *allowed)
		}
	}
	return o, zo, nil
}

// managerOptions builds the controller-runtime manager options.
func managerOptions(o Options, scheme *runtime.Scheme) ctrl.Options {
	var tlsOpts []func(*tls.Config)
	if !o.EnableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metrics := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.SecureMetrics, TLSOpts: tlsOpts}
	if o.SecureMetrics {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metrics,
		HealthProbeBindAddress:        o.ProbeAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "operator.proxy.synterix.io",
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(o.Namespace),
	}
}

func main() {
	o, zo, err := parseFlags(flag.CommandLine, os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(zo)))
	log := ctrl.Log.WithName("setup")

	restCfg := ctrl.GetConfigOrDie()
	restCfg.QPS, restCfg.Burst = float32(o.QPS), o.Burst
	mgr, err := ctrl.NewManager(restCfg, managerOptions(o, controllers.NewScheme()))
	if err != nil {
		log.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	// Traces go where the OTEL_* environment says; none when it says nothing.
	tp, stopTracing, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "synterix-operator", ServiceVersion: version})
	if err != nil {
		log.Error(err, "Unable to set up tracing")
		os.Exit(1)
	}
	defer func() { _ = stopTracing(context.Background()) }()
	if err := controllers.Setup(mgr, controllers.AgentOptions{
		Namespace: o.Namespace, DefaultImage: o.AgentImage, AllowedImages: o.AllowedImages,
		HealthPort: int32(o.AgentHealthPort), MetricsPort: int32(o.AgentMetricsPort),
	}, controllers.WithTracerProvider(tp)); err != nil {
		log.Error(err, "Unable to set up the controllers")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up the readiness check")
		os.Exit(1)
	}
	log.Info("Starting the manager", "version", version, "namespace", o.Namespace, "agentImage", o.AgentImage,
		"allowedAgentImages", o.AllowedImages, "leaderElect", o.LeaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Manager stopped with an error")
		_ = stopTracing(context.Background())
		os.Exit(1)
	}
}
