package kubenode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Addresses of the cluster network. They are those of test/cluster, so that
// this package can become its "shipped" tier; everything lives inside the
// cluster's own namespaces.
const (
	HubIP         = "10.77.0.1" // the hub's bridge
	APIServerIP   = "10.77.0.2" // the control-plane namespace
	APIServerPort = 6443
	ServiceCIDR   = "10.96.0.0/16"
	ClusterCIDR   = "10.244.0.0/16"
)

// APIServerURL is the API server's real address. Kubelets (and, later, the
// agent) use it, never the "kubernetes" Service: no kube-proxy runs, so no
// ClusterIP works before the agent does.
var APIServerURL = fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort)

// ControlPlane is etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, each a process in the control-plane namespace NS.
type ControlPlane struct {
	Dir, LogDir, Bin string
	NS               *netns.NS
	PKI              *PKI
	// AdminKubeconfig works from inside the cluster's namespaces.
	AdminKubeconfig string
	RESTConfig      *rest.Config
	Kube            kubernetes.Interface

	Etcd, APIServer, ControllerManager, Scheduler *netns.Process
}

// procs lists the processes in start order.
func (cp *ControlPlane) procs() []*netns.Process {
	var out []*netns.Process
	for _, p := range []*netns.Process{cp.Etcd, cp.APIServer, cp.ControllerManager, cp.Scheduler} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (cp *ControlPlane) process(name string, args ...string) *netns.Process {
	return &netns.Process{
		Name:    name,
		Args:    append([]string{"nsenter", "--net=" + cp.NS.Path(), "--", filepath.Join(cp.Bin, name)}, args...),
		LogPath: filepath.Join(cp.LogDir, name+".log"),
	}
}

// Start starts etcd and kube-apiserver, waits until the API server is ready,
// then starts kube-controller-manager and kube-scheduler with their own
// client certificates and waits until both are healthy.
func (cp *ControlPlane) Start(ctx context.Context) error {
	p := cp.PKI
	serving, err := p.ServingCert("apiserver", "kube-apiserver",
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(APIServerIP), net.ParseIP("10.96.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	kubeletClient, err := p.ClientCert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
	if err != nil {
		return err
	}
	cp.Etcd = cp.process("etcd",
		"--name=synx", "--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=synx=http://127.0.0.1:2380", "--unsafe-no-fsync", "--quota-backend-bytes=1073741824")
	cp.APIServer = cp.process("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address="+APIServerIP,
		"--cert-dir="+filepath.Join(cp.Dir, "apiserver"),
		"--tls-cert-file="+serving.CertFile, "--tls-private-key-file="+serving.KeyFile,
		"--client-ca-file="+p.CACert,
		"--kubelet-client-certificate="+kubeletClient.CertFile, "--kubelet-client-key="+kubeletClient.KeyFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.SAPub, "--service-account-signing-key-file="+p.SAKey,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false", "--v=1")
	for _, proc := range []*netns.Process{cp.Etcd, cp.APIServer} {
		if err := proc.Start(); err != nil {
			return err
		}
	}
	if err := cp.waitHealthy(ctx, cp.APIServer, APIServerURL+"/readyz"); err != nil {
		return err
	}
	if err := cp.connect(); err != nil {
		return err
	}
	return cp.startControllers(ctx)
}

// startControllers starts kube-controller-manager (every default controller:
// EndpointSlice, DaemonSet, namespace, ServiceAccount and token, node
// lifecycle, CSR signing, root CA publisher, ...) and kube-scheduler.
func (cp *ControlPlane) startControllers(ctx context.Context) error {
	p := cp.PKI
	kcm, err := cp.componentKubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	sched, err := cp.componentKubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	cp.ControllerManager = cp.process("kube-controller-manager",
		"--kubeconfig="+kcm,
		"--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
		"--controllers=*", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+p.SAKey, "--root-ca-file="+p.CACert,
		"--cluster-signing-cert-file="+p.CACert, "--cluster-signing-key-file="+p.CAKey,
		"--service-cluster-ip-range="+ServiceCIDR, "--cluster-cidr="+ClusterCIDR,
		"--allocate-node-cidrs=false", "--cluster-name=synx", "--profiling=false", "--v=1")
	cp.Scheduler = cp.process("kube-scheduler",
		"--kubeconfig="+sched,
		"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false", "--profiling=false", "--v=1")
	for _, proc := range []*netns.Process{cp.ControllerManager, cp.Scheduler} {
		if err := proc.Start(); err != nil {
			return err
		}
	}
	if err := cp.waitHealthy(ctx, cp.ControllerManager, "https://127.0.0.1:10257/healthz"); err != nil {
		return err
	}
	return cp.waitHealthy(ctx, cp.Scheduler, "https://127.0.0.1:10259/healthz")
}

// componentKubeconfig issues a client certificate for user and writes a
// kubeconfig for it; it returns the kubeconfig's path.
func (cp *ControlPlane) componentKubeconfig(name, user string, groups ...string) (string, error) {
	c, err := cp.PKI.ClientCert(name, user, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	return path, cp.PKI.WriteKubeconfig(path, APIServerURL, c)
}

// connect writes the admin kubeconfig and the harness's client, which dials
// from inside the control-plane namespace.
func (cp *ControlPlane) connect() error {
	admin, err := cp.PKI.ClientCert("admin", "synx-admin", "system:masters")
	if err != nil {
		return err
	}
	cp.AdminKubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := cp.PKI.WriteKubeconfig(cp.AdminKubeconfig, APIServerURL, admin); err != nil {
		return err
	}
	cp.RESTConfig = &rest.Config{
		Host:            APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.PKI.CAPEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM},
		QPS:             50, Burst: 100,
		Dial: cp.NS.Dial,
	}
	cp.Kube, err = kubernetes.NewForConfig(cp.RESTConfig)
	return err
}

// waitHealthy polls url from the control-plane namespace until it answers
// 200, failing early when proc exits. The controller manager and scheduler
// serve self-signed certificates, so only the API server's is verified.
func (cp *ControlPlane) waitHealthy(ctx context.Context, proc *netns.Process, url string) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.PKI.CAPEM)
	tlsCfg := &tls.Config{RootCAs: pool, InsecureSkipVerify: !strings.HasPrefix(url, APIServerURL)} //nolint:gosec // self-signed component endpoints
	if admin, err := tls.LoadX509KeyPair(filepath.Join(cp.PKI.Dir, "admin.crt"), filepath.Join(cp.PKI.Dir, "admin.key")); err == nil {
		tlsCfg.Certificates = []tls.Certificate{admin}
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, DialContext: cp.NS.Dial}}
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for time.Now().Before(deadline) {
		if !proc.Running() {
			return fmt.Errorf("%s exited during start-up: see %s", proc.Name, proc.LogPath)
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not healthy after 2m (%s): see %s", proc.Name, last, proc.LogPath)
}

// Stop stops the components in reverse start order.
func (cp *ControlPlane) Stop() {
	procs := cp.procs()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
}
