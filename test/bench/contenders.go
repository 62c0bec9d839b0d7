package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Products.
const (
	KubeProxy = "kube-proxy"
	Synterix  = "synterix"
)

// Contender is one proxy, in one mode, that the harness measures.
type Contender struct {
	// Name is how the CSV and the plots call it.
	Name string
	// Product is KubeProxy or Synterix.
	Product string
	// Mode is kube-proxy's mode (iptables, nftables, ipvs) or our
	// GatewayConfig's spec.mode (IPTables, IPVS, …).
	Mode string
	// Requires returns why this machine cannot run the contender, or nil.
	Requires func() error
	// ServiceChain is the nat chain whose rules match Service addresses one
	// after another, for the first-packet figure; empty when the lookup is
	// a map or a hash and a Service's position does not matter.
	ServiceChain string
}

// Contenders are every contender, in the order a repetition runs them.
// Adding a backend of ours is one line here: its Mode is the GatewayConfig
// mode that selects it.
var Contenders = []Contender{
	{Name: "kube-proxy-iptables", Product: KubeProxy, Mode: "iptables", ServiceChain: "KUBE-SERVICES"},
	{Name: "kube-proxy-nftables", Product: KubeProxy, Mode: "nftables"},
	{Name: "kube-proxy-ipvs", Product: KubeProxy, Mode: "ipvs", Requires: needIPVS},
	{Name: "synterix-iptables", Product: Synterix, Mode: "IPTables", ServiceChain: "SYNX-SERVICES"},
	{Name: "synterix-nftables", Product: Synterix, Mode: "NFTables"},
	{Name: "synterix-ipvs", Product: Synterix, Mode: "IPVS", Requires: needIPVS},
}

// needIPVS reports why the kernel cannot run IPVS, if it cannot.
func needIPVS() error {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		return nil
	}
	if out, err := exec.Command("modprobe", "ip_vs").CombinedOutput(); err != nil {
		return fmt.Errorf("this kernel has no IPVS (no /proc/net/ip_vs; modprobe ip_vs: %s)", strings.TrimSpace(string(out)))
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		return fmt.Errorf("this kernel has no IPVS: /proc/net/ip_vs is missing after modprobe ip_vs")
	}
	return nil
}

// Binaries are the programs the contenders run.
type Binaries struct {
	KubeProxy, Agent string
}

// Start runs the contender in the node namespace with the kubeconfig at kc.
// dir holds its config file; its output is appended to logPath.
func (c Contender) Start(cl *Cluster, bins Binaries, node *netns.NS, kc, dir, logPath string) (*Process, error) {
	if c.Product == Synterix {
		if err := cl.Revision(c.Mode); err != nil {
			return nil, fmt.Errorf("store the revision of mode %s: %w", c.Mode, err)
		}
		return StartProcess(node, logPath, bins.Agent, "--node-name="+nodeName, "--kubeconfig="+kc,
			"--health-addr=127.0.0.1:10256", "--metrics-addr=127.0.0.1:10249",
			"--operator-namespace="+operatorNS, "-v=2")
	}
	path := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(kubeProxyConfig(c.Mode, kc)), 0o600); err != nil {
		return nil, err
	}
	return StartProcess(node, logPath, bins.KubeProxy, "--config="+path)
}

// kubeProxyConfig is kube-proxy's configuration: its defaults (syncPeriod
// 30s, minSyncPeriod 1s, the client's 5 requests/s), except what a node
// namespace needs: health and metrics on the namespace's loopback, the node
// name, the cluster CIDR, and conntrack.maxPerCore 0, which leaves alone
// nf_conntrack_max — a global sysctl that a network namespace cannot set.
func kubeProxyConfig(mode, kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %s
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: %s
detectLocalMode: ClusterCIDR
conntrack:
  maxPerCore: 0
logging:
  verbosity: 2
`, mode, kubeconfig, nodeName, clusterCIDR)
}

// Synced reports whether the contender says its first sync is done: our
// agent's /readyz answers 200; kube-proxy's metrics show the time of a
// successful IPv4 sync (the Services are IPv4).
func (c Contender) Synced(node *netns.NS) bool {
	if c.Product == Synterix {
		code, _, err := httpGet(node, "http://127.0.0.1:10256/readyz")
		return err == nil && code == 200
	}
	code, body, err := httpGet(node, "http://127.0.0.1:10249/metrics")
	if err != nil || code != 200 {
		return false
	}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}` {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v > 0
		}
	}
	return false
}

var serviceRule = regexp.MustCompile(`^-A \S+ -d (\d+\.\d+\.\d+\.\d+)/32 `)

// ServiceOrder returns the Service addresses in the order the kernel tries
// them (the rules of ServiceChain), or nil when the position does not matter.
func (c Contender) ServiceOrder(ctx context.Context, node *netns.NS) ([]string, error) {
	if c.ServiceChain == "" {
		return nil, nil
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", node.Name, "iptables", "-w", "-t", "nat", "-S", c.ServiceChain)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("iptables -t nat -S %s: %w", c.ServiceChain, err)
	}
	var ips []string
	seen := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if m := serviceRule.FindStringSubmatch(l); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			ips = append(ips, m[1])
		}
	}
	return ips, nil
}

// httpGet fetches a URL from inside a namespace.
func httpGet(ns *netns.NS, url string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}, DisableKeepAlives: true}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
