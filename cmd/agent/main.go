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
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
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

func run() error {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	klog.InitFlags(fs)
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "Name of this node (default $NODE_NAME).")
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig; empty uses $KUBECONFIG, else the in-cluster config.")
	healthAddr := fs.String("health-addr", "0.0.0.0:10256", "Address of /healthz, /livez and /readyz; empty disables.")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:10249", "Address of /metrics; empty disables.")
	operatorNS := fs.String("operator-namespace", envOr("POD_NAMESPACE", "synterix-system"),
		"Namespace of the config revisions (default $POD_NAMESPACE, else synterix-system).")
	sysctlRoot := fs.String("sysctl-root", sysctl.DefaultRoot,
		"Where the kernel's sysctls are; the agent pod mounts the host's /proc/sys/net at /host/proc/sys/net.")
	profiling := fs.Bool("profiling", false, "Serve Go runtime profiles under /debug/pprof/ on the metrics address.")
	cleanup := fs.Bool("cleanup", false, "Remove every rule the agent installs (iptables and IPVS) and exit.")
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	// Only -v and the flags above are meant for users; klog's other flags
	// stay available for debugging.
	_ = fs.Parse(os.Args[1:])
	sysctl.SetRoot(*sysctlRoot)
	if *showVersion {
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

	if *cleanup {
		caps := probe.Default.Probe(ctx)
		if err := dataplane.CleanupAll(ctx, caps); err != nil {
			return err
		}
		klog.InfoS("Removed all rules of the agent")
		return nil
	}
	if *nodeName == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "synterix-agent/" + version
	clients, err := informers.NewClients(cfg)
	if err != nil {
		return err
	}
	recorder, stopEvents := daemon.NewEventRecorder(ctx, clients.Core, *nodeName)
	defer stopEvents()

	m := metrics.New()
	hs := health.NewState(time.Minute)
	a := daemon.New(daemon.Options{
		NodeName: *nodeName, OperatorNamespace: *operatorNS, Clients: clients, Recorder: recorder,
		Metrics: m, Health: hs, AgentVersion: version,
	})
	if *healthAddr != "" {
		if err := serve(ctx, *healthAddr, hs.Handler()); err != nil {
			return fmt.Errorf("health server: %w", err)
		}
	}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		if *profiling {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		if err := serve(ctx, *metricsAddr, mux); err != nil {
			return fmt.Errorf("metrics server: %w", err)
		}
	}
	klog.InfoS("Starting agent", "version", version, "node", *nodeName, "operatorNamespace", *operatorNS)
	err = a.Run(ctx)
	klog.InfoS("Agent stopped; the rules stay in the kernel")
	return err
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	return nil
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
