// Package controlplane runs a real Kubernetes control plane in a network
// namespace for both cluster tiers (test/cluster and test/kubenode): etcd
// and kube-apiserver, and with Controllers kube-controller-manager and
// kube-scheduler, from the binaries of bin/k8s; the cluster's certificate
// authority (PKI); kubeconfigs; and kubectl run inside the namespace.
package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// ControlPlane is etcd, kube-apiserver and optionally
// kube-controller-manager and kube-scheduler, each a process in the
// control-plane namespace NS, at clusternet.APIServerIP.
type ControlPlane struct {
	// Dir holds the certificates (pki/), etcd's data and the kubeconfigs;
	// LogDir one log per process; Bin the Kubernetes binaries.
	Dir, LogDir, Bin string
	NS               *netns.NS
	// Controllers starts kube-controller-manager (every default
	// controller) and kube-scheduler too; ControllerManagerArgs are added
	// to the controller manager's command line.
	Controllers           bool
	ControllerManagerArgs []string
	// DualStack makes the cluster dual-stack, IPv4 primary: the API server
	// and the controller manager get an IPv6 service range beside the IPv4
	// one, and the controller manager an IPv6 cluster CIDR too.
	DualStack bool
	// Detach lets the processes outlive the harness (a kept cluster).
	Detach bool

	PKI *PKI
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
		NS:      cp.NS,
		Args:    append([]string{filepath.Join(cp.Bin, name)}, args...),
		LogPath: filepath.Join(cp.LogDir, name+".log"),
		Detach:  cp.Detach,
	}
}

// Start writes a fresh PKI, starts etcd and kube-apiserver, waits until the
// API server is ready and connects the admin client; with Controllers it
// then starts kube-controller-manager and kube-scheduler with their own
// client certificates and waits until both are healthy.
func (cp *ControlPlane) Start(ctx context.Context) error {
	for _, b := range cp.binaries() {
		if _, err := os.Stat(filepath.Join(cp.Bin, b)); err != nil {
			return fmt.Errorf("%s is missing from %s: run 'hack/build-k8s.sh %s'", b, cp.Bin, strings.Join(cp.binaries(), " "))
		}
	}
	if err := os.MkdirAll(cp.Dir, 0o755); err != nil {
		return err
	}
	var err error
	if cp.PKI, err = NewPKI(filepath.Join(cp.Dir, "pki")); err != nil {
		return err
	}
	if err := cp.startAPIServer(ctx); err != nil {
		return err
	}
	if err := cp.connect(); err != nil {
		return err
	}
	if !cp.Controllers {
		return nil
	}
	return cp.startControllers(ctx)
}

func (cp *ControlPlane) binaries() []string {
	b := []string{"etcd", "kube-apiserver", "kubectl"}
	if cp.Controllers {
		b = append(b, "kube-controller-manager", "kube-scheduler")
	}
	return b
}

// startAPIServer starts etcd and kube-apiserver (Node and RBAC
// authorization, NodeRestriction) and waits until the API server is ready.
func (cp *ControlPlane) startAPIServer(ctx context.Context) error {
	p := cp.PKI
	serving, err := p.ServingCert("apiserver", "kube-apiserver",
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(clusternet.APIServerIP), net.ParseIP("10.96.0.1"), net.ParseIP(clusternet.APIServerIP6)},
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
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", clusternet.APIServerPort),
		"--advertise-address="+clusternet.APIServerIP,
		"--cert-dir="+filepath.Join(cp.Dir, "apiserver"),
		"--tls-cert-file="+serving.CertFile, "--tls-private-key-file="+serving.KeyFile,
		"--client-ca-file="+p.CACert,
		"--kubelet-client-certificate="+kubeletClient.CertFile, "--kubelet-client-key="+kubeletClient.KeyFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.SAPub, "--service-account-signing-key-file="+p.SAKey,
		"--service-cluster-ip-range="+cp.serviceCIDRs(),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false", "--v=1")
	for _, proc := range []*netns.Process{cp.Etcd, cp.APIServer} {
		if err := proc.Start(); err != nil {
			return err
		}
	}
	return cp.waitHealthy(ctx, clusternet.APIServerURL+"/readyz", cp.Etcd, cp.APIServer)
}

// startControllers starts kube-controller-manager (every default controller:
// EndpointSlice, DaemonSet, Deployment, namespace, garbage collector,
// ServiceAccount and token, node lifecycle, CSR signing, root CA
// publisher, ...) and kube-scheduler.
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
	cp.ControllerManager = cp.process("kube-controller-manager", append([]string{
		"--kubeconfig=" + kcm,
		"--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
		"--controllers=*", "--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.SAKey, "--root-ca-file=" + p.CACert,
		"--cluster-signing-cert-file=" + p.CACert, "--cluster-signing-key-file=" + p.CAKey,
		"--service-cluster-ip-range=" + cp.serviceCIDRs(), "--cluster-cidr=" + cp.clusterCIDRs(),
		"--allocate-node-cidrs=false", "--cluster-name=synx", "--profiling=false", "--v=1"},
		cp.ControllerManagerArgs...)...)
	cp.Scheduler = cp.process("kube-scheduler",
		"--kubeconfig="+sched,
		"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false", "--profiling=false", "--v=1")
	for _, proc := range []*netns.Process{cp.ControllerManager, cp.Scheduler} {
		if err := proc.Start(); err != nil {
			return err
		}
	}
	if err := cp.waitHealthy(ctx, "https://127.0.0.1:10257/healthz", cp.ControllerManager); err != nil {
		return err
	}
	return cp.waitHealthy(ctx, "https://127.0.0.1:10259/healthz", cp.Scheduler)
}

// serviceCIDRs is the service range, or the two of a dual-stack cluster
// (IPv4 first: the primary family, which a Service gets when it asks for
// none).
func (cp *ControlPlane) serviceCIDRs() string {
	if cp.DualStack {
		return clusternet.ServiceCIDR + "," + clusternet.ServiceCIDR6
	}
	return clusternet.ServiceCIDR
}

// clusterCIDRs is the pod network, or the two of a dual-stack cluster.
func (cp *ControlPlane) clusterCIDRs() string {
	if cp.DualStack {
		return clusternet.ClusterCIDR + "," + clusternet.ClusterCIDR6
	}
	return clusternet.ClusterCIDR
}

// componentKubeconfig issues a client certificate for user and writes a
// kubeconfig for it; it returns the kubeconfig's path.
func (cp *ControlPlane) componentKubeconfig(name, user string, groups ...string) (string, error) {
	c, err := cp.PKI.ClientCert(name, user, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	return path, cp.PKI.WriteKubeconfig(path, clusternet.APIServerURL, c)
}

// connect writes the admin kubeconfig and the harness's client, which dials
// from inside the control-plane namespace.
func (cp *ControlPlane) connect() error {
	admin, err := cp.PKI.ClientCert("admin", "synx-admin", "system:masters")
	if err != nil {
		return err
	}
	cp.AdminKubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := cp.PKI.WriteKubeconfig(cp.AdminKubeconfig, clusternet.APIServerURL, admin); err != nil {
		return err
	}
	cp.RESTConfig = &rest.Config{
		Host:            clusternet.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.PKI.CAPEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM},
		QPS:             100, Burst: 200,
		Dial: cp.NS.Dial,
	}
	cp.Kube, err = kubernetes.NewForConfig(cp.RESTConfig)
	return err
}

// waitHealthy polls url from the control-plane namespace until it answers
// 200, failing early when one of procs exits (the last is the one waited
// for). The controller manager and scheduler serve self-signed
// certificates, so only the API server's is verified.
func (cp *ControlPlane) waitHealthy(ctx context.Context, url string, procs ...*netns.Process) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.PKI.CAPEM)
	tlsCfg := &tls.Config{RootCAs: pool, InsecureSkipVerify: !strings.HasPrefix(url, clusternet.APIServerURL)} //nolint:gosec // self-signed component endpoints
	if admin, err := tls.LoadX509KeyPair(filepath.Join(cp.PKI.Dir, "admin.crt"), filepath.Join(cp.PKI.Dir, "admin.key")); err == nil {
		tlsCfg.Certificates = []tls.Certificate{admin}
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, DialContext: cp.NS.Dial}}
	p := procs[len(procs)-1]
	return poll.Until(ctx, 2*time.Minute, fmt.Sprintf("%s healthy at %s (log %s)", p.Name, url, p.LogPath), func(context.Context) (bool, string, error) {
		for _, q := range procs {
			if !q.Running() {
				return false, "", fmt.Errorf("%s exited: see %s", q.Name, q.LogPath)
			}
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
}

// Stop stops the components in reverse start order.
func (cp *ControlPlane) Stop() {
	procs := cp.procs()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
}

// Kubectl runs kubectl as the admin in the control-plane namespace and
// returns its combined output.
func (cp *ControlPlane) Kubectl(args ...string) (string, error) {
	return cp.KubectlInput(nil, args...)
}

// KubectlInput is Kubectl with stdin.
func (cp *ControlPlane) KubectlInput(stdin []byte, args ...string) (string, error) {
	return cp.NS.ExecInput(stdin, append([]string{filepath.Join(cp.Bin, "kubectl"), "--kubeconfig", cp.AdminKubeconfig}, args...)...)
}

// KubectlCommand is the command line that runs kubectl as the admin.
func (cp *ControlPlane) KubectlCommand() string {
	return fmt.Sprintf("ip netns exec %s %s --kubeconfig %s", cp.NS.Name, filepath.Join(cp.Bin, "kubectl"), cp.AdminKubeconfig)
}

// WriteKubectl writes an executable at path that runs kubectl as the
// admin in the control-plane namespace, for scripts that take a KUBECTL
// (hack/deploy.sh, hack/undeploy.sh).
func (cp *ControlPlane) WriteKubectl(path string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "#!/bin/sh\n# kubectl of cluster namespace %s\nexec %s \"$@\"\n", cp.NS.Name, cp.KubectlCommand())
	return os.WriteFile(path, b.Bytes(), 0o755)
}

// ServiceAccountKubeconfig requests a token of the ServiceAccount (as
// kubelet does for a pod) and writes a kubeconfig with it at path; it
// retries while the ServiceAccount is being created.
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, sa, path string) error {
	return cp.boundKubeconfig(ctx, namespace, sa, nil, path)
}

// PodKubeconfig is ServiceAccountKubeconfig with the token bound to the pod,
// exactly as kubelet requests it: the API server then records the pod's node
// in the token (authentication.kubernetes.io/node-name), which the
// ProxyNode status admission policy checks.
func (cp *ControlPlane) PodKubeconfig(ctx context.Context, pod *corev1.Pod, path string) error {
	ref := &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	return cp.boundKubeconfig(ctx, pod.Namespace, pod.Spec.ServiceAccountName, ref, path)
}

func (cp *ControlPlane) boundKubeconfig(ctx context.Context, namespace, sa string, ref *authenticationv1.BoundObjectReference, path string) error {
	var token string
	err := poll.Until(ctx, 30*time.Second, "a token of ServiceAccount "+namespace+"/"+sa, func(ctx context.Context) (bool, string, error) {
		tr, err := cp.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(48 * 3600)), BoundObjectRef: ref},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		token = tr.Status.Token
		return true, "", nil
	})
	if err != nil {
		return err
	}
	return cp.PKI.WriteTokenKubeconfig(path, clusternet.APIServerURL, token)
}
