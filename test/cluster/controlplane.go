package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Addresses of the cluster network. Everything lives inside the cluster's
// namespaces; nothing is added to the host's.
const (
	HubIP         = "10.77.0.1"   // the hub's bridge address
	APIServerIP   = "10.77.0.2"   // the control-plane namespace
	ClientIP      = "10.77.0.100" // the client namespace
	APIServerPort = 6443
	ServiceCIDR   = "10.96.0.0/16"
	// LoadBalancerCIDR holds the LoadBalancer addresses the harness hands out,
	// as a LoadBalancer controller would; the client routes it via node 1.
	LoadBalancerCIDR = "10.77.200.0/24"
	// ExternalIPCIDR holds addresses for Services' externalIPs; the client
	// routes it via node 2 (node 1 when there is one node).
	ExternalIPCIDR = "10.77.201.0/24"
	// ClusterCIDR covers every node's pod network 10.244.<n>.0/24.
	ClusterCIDR = "10.244.0.0/16"
)

// APIServerURL is where the API server listens, inside the cluster network.
var APIServerURL = fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort)

// startControlPlane starts etcd and kube-apiserver in the control-plane
// namespace and waits for the API server to be ready.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	bin := c.opts.K8sBin
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s is missing from %s: run 'make k8s-binaries' first", b, bin)
		}
	}
	dataDir := filepath.Join(c.Dir, "etcd")
	c.Etcd = c.newProcess("etcd", c.CP,
		filepath.Join(bin, "etcd"),
		"--name=synx", "--data-dir="+dataDir,
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=synx=http://127.0.0.1:2380",
		"--unsafe-no-fsync", "--quota-backend-bytes=1073741824")
	if err := c.Etcd.Start(); err != nil {
		return err
	}
	p := c.pki
	c.APIServer = c.newProcess("kube-apiserver", c.CP,
		filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address="+APIServerIP,
		"--cert-dir="+filepath.Join(c.Dir, "pki"),
		"--tls-cert-file="+p.serverCert, "--tls-private-key-file="+p.serverKey,
		"--client-ca-file="+p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.saPub,
		"--service-account-signing-key-file="+p.saKey,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1")
	if err := c.APIServer.Start(); err != nil {
		return err
	}
	return c.waitAPIServer(ctx)
}

// waitAPIServer polls /readyz from the control-plane namespace.
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	cert, err := tls.X509KeyPair(c.pki.adminCertPEM, c.pki.adminKeyPEM)
	if err != nil {
		return err
	}
	pool, err := c.caPool()
	if err != nil {
		return err
	}
	hc := &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
			DialContext:     c.CP.Dial,
		},
	}
	return waitHealthy(ctx, hc, APIServerURL+"/readyz", 2*time.Minute, c.Etcd, c.APIServer)
}
