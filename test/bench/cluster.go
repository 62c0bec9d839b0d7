package bench

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// The cluster every contender sees.
const (
	nodeName    = "node-a"
	nodeIP      = "10.210.0.1"
	operatorNS  = "synterix-system"
	benchNS     = "bench"
	gcName      = "bench"
	serviceCIDR = "10.96.0.0/16"
	// clusterCIDR holds the client and the backend namespaces: both
	// products are told it, so neither masquerades the client's traffic.
	clusterCIDR = "10.208.0.0/12"
	// probeName is the Service whose endpoint the latency phases move
	// between backendA and backendB.
	probeName = "probe"
	probeIP   = "10.96.255.250"
	// contenderGroup is the group of every contender's identity: the audit
	// policy logs its requests, and only its.
	contenderGroup = "bench:contenders"
	// endpointsPerService is the number of ready endpoints of each bulk Service.
	endpointsPerService = 10
)

// Cluster is the one real kube-apiserver (and etcd) of a run, with its audit
// log, and the objects the contenders need.
type Cluster struct {
	env      *envtest.Environment
	cfg      *rest.Config
	c        client.Client
	auditLog string
	loaded   int         // bulk Services created so far: svc-00000 … svc-<loaded-1>
	gen      map[int]int // generation of each churned bulk Service's endpoints
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["ResponseStarted", "ResponseComplete", "Panic"]
rules:
- level: Metadata
  userGroups: ["` + contenderGroup + `"]
- level: None
`

// StartCluster starts the API server with a Service range of 65k addresses
// and an audit log of the contenders' requests (one line per request
// received), and creates the namespaces, the Node and the agent's objects.
func StartCluster(t testing.TB) (*Cluster, error) {
	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	cl := &Cluster{env: env, auditLog: filepath.Join(dir, "audit.log")}
	args := env.ControlPlane.GetAPIServer().Configure()
	args.Set("service-cluster-ip-range", serviceCIDR)
	args.Set("audit-policy-file", policy)
	args.Set("audit-log-path", cl.auditLog)
	args.Set("audit-log-format", "json")
	env.ControlPlane.GetAPIServer().CertDir = filepath.Join(dir, "certs")
	if err := os.MkdirAll(env.ControlPlane.GetAPIServer().CertDir, 0o700); err != nil {
		return nil, err
	}
	env.ControlPlaneStopTimeout = 3 * time.Minute
	if cl.cfg, err = env.Start(); err != nil {
		return nil, fmt.Errorf("start the API server: %w", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cl.cfg.QPS, cl.cfg.Burst = 500, 1000
	if cl.c, err = client.New(cl.cfg, client.Options{Scheme: testenv.Scheme()}); err != nil {
		return nil, err
	}
	return cl, cl.baseObjects()
}

// baseObjects creates the namespaces, the Node (kube-proxy needs only it),
// the GatewayConfig, its ProxyNode and a probe Service on backendA.
func (cl *Cluster) baseObjects() error {
	ctx := context.Background()
	for _, ns := range []string{operatorNS, benchNS} {
		if err := cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}}
	if err := cl.c.Create(ctx, node); err != nil {
		return err
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeHostName, Address: nodeName}}
	if err := cl.c.Status().Update(ctx, node); err != nil {
		return err
	}
	gc := &v1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: gcName}, Spec: v1alpha1.GatewayConfigSpec{
		Mode: v1alpha1.BackendModeIPTables,
		LocalTrafficDetection: &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionClusterCIDR,
			ClusterCIDRs: []v1alpha1.CIDR{clusterCIDR}},
	}}
	if err := cl.c.Create(ctx, gc); err != nil {
		return fmt.Errorf("create the GatewayConfig: %w", err)
	}
	pn := &v1alpha1.ProxyNode{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: gcName, Revision: "none"}}
	if err := cl.c.Create(ctx, pn); err != nil {
		return err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: probeName},
		Spec: corev1.ServiceSpec{ClusterIP: probeIP, ClusterIPs: []string{probeIP}, Ports: servicePorts()}}
	if err := cl.c.Create(ctx, svc); err != nil {
		return err
	}
	return cl.c.Create(ctx, endpointSlice(probeName, backendA))
}

// Revision stores a config revision of the GatewayConfig running the agent
// backend mode, and points the ProxyNode at it. The spec is the one the API
// server stored (its defaults applied: minSyncPeriod 1s, syncPeriod 30s), as
// the operator would snapshot it.
func (cl *Cluster) Revision(mode string) error {
	ctx := context.Background()
	gc := &v1alpha1.GatewayConfig{}
	if err := cl.c.Get(ctx, client.ObjectKey{Name: gcName}, gc); err != nil {
		return err
	}
	spec := gc.Spec.DeepCopy()
	spec.Mode = v1alpha1.BackendMode(mode)
	data, err := v1alpha1.EncodeRevision(spec)
	if err != nil {
		return err
	}
	name := "bench-" + strings.ToLower(mode)
	rev := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: name,
		Labels: map[string]string{v1alpha1.RevisionGatewayConfigLabel: gcName}},
		Data: runtime.RawExtension{Raw: data}, Revision: 1}
	if err := cl.c.Create(ctx, rev); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	pn := &v1alpha1.ProxyNode{}
	if err := cl.c.Get(ctx, client.ObjectKey{Name: nodeName}, pn); err != nil {
		return err
	}
	pn.Spec.Revision = name
	return cl.c.Update(ctx, pn)
}

func servicePorts() []corev1.ServicePort {
	return []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
}

// endpointSlice is the slice "<name>-1" of a Service, its endpoints ready on
// another node, port 8080.
func endpointSlice(name string, ips ...string) *discoveryv1.EndpointSlice {
	port, pname, proto := int32(backendPort), "http", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	es.Endpoints = endpoints(ips)
	return es
}

func endpoints(ips []string) []discoveryv1.Endpoint {
	var out []discoveryv1.Endpoint
	for _, ip := range ips {
		ready, other := true, "node-b"
		out = append(out, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &other,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return out
}

// bulkName is the name of bulk Service i.
func bulkName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// bulkEndpoints are the addresses of bulk Service i's endpoints: 10.(128+j).x.y,
// all answered by the sink namespace. gen > 0 moves the first endpoint to
// another address of the sink's range, for churn.
func bulkEndpoints(i, gen int) []string {
	ips := make([]string, endpointsPerService)
	for j := range ips {
		ips[j] = fmt.Sprintf("10.%d.%d.%d", 128+j, i/250, i%250+1)
	}
	if gen > 0 {
		ips[0] = fmt.Sprintf("10.%d.%d.%d", 138+gen%4, i/250, i%250+1)
	}
	return ips
}

// Load creates bulk Services (ClusterIP, port 80) with one EndpointSlice of
// 10 ready endpoints each until there are n, with 16 writers.
func (cl *Cluster) Load(n int) error {
	ctx := context.Background()
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: bulkName(i)},
					Spec: corev1.ServiceSpec{Ports: servicePorts()}}
				err := createRetry(ctx, cl.c, svc)
				if err == nil {
					err = createRetry(ctx, cl.c, endpointSlice(bulkName(i), bulkEndpoints(i, 0)...))
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("create %s: %w", bulkName(i), err) })
				}
			}
		}()
	}
	for i := cl.loaded; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		cl.loaded = n
	}
	return firstErr
}

// createRetry creates obj, retrying a few times over a busy API server; an
// object that already exists (from an earlier try) counts as created.
func createRetry(ctx context.Context, c client.Client, obj client.Object) error {
	var err error
	for range 5 {
		if err = c.Create(ctx, obj); err == nil || strings.Contains(err.Error(), "already exists") {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}

// ClusterIP returns the ClusterIP of a Service of the bench namespace.
func (cl *Cluster) ClusterIP(name string) (string, error) {
	svc := &corev1.Service{}
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: benchNS, Name: name}, svc); err != nil {
		return "", err
	}
	return svc.Spec.ClusterIP, nil
}

// SetEndpoints replaces the endpoints of a Service's slice with one merge
// patch (one write), stamping the trigger-time annotation as the
// EndpointSlice controller does, and returns when the write was sent.
func (cl *Cluster) SetEndpoints(ctx context.Context, name string, ips ...string) (time.Time, error) {
	now := time.Now()
	patch := map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{
			"endpoints.kubernetes.io/last-change-trigger-time": now.UTC().Format(time.RFC3339Nano)}},
		"endpoints": endpoints(ips),
	}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: name + "-1"}}
	err := cl.c.Patch(ctx, es, mergePatch(patch))
	return now, err
}

// Identity creates a client identity (a certificate whose common name is
// user, in the contenders' group and system:masters) and returns a
// kubeconfig for it that reaches the API server at server.
func (cl *Cluster) Identity(user, server string) ([]byte, error) {
	u, err := cl.env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters", contenderGroup}}, nil)
	if err != nil {
		return nil, err
	}
	cfg := u.Config()
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: bench
  context: {cluster: bench, user: %s}
current-context: bench
`, server, b64(cfg.CAData), user, b64(cfg.CertData), b64(cfg.KeyData), user), nil
}

// APIHost is the host:port of the API server on the host's loopback.
func (cl *Cluster) APIHost() (string, error) {
	u, err := url.Parse(cl.cfg.Host)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

func mergePatch(v any) client.Patch {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of strings and endpoint structs always marshal
	}
	return client.RawPatch(types.MergePatchType, data)
}
