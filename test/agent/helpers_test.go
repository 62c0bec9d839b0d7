// Package agent holds the cross-package tests of the node agent: the agent
// (in-process or as the real cmd/agent binary) against the real test
// kube-apiserver (test/testenv), programming real network namespaces
// (test/netns).
package agent

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Topology, all in namespaces the test creates:
//
//	client (10.210.0.2) ── node (10.210.0.1) ── b1 (10.211.1.2, .3)
//	                        agent rules here  └─ b2 (10.211.2.2)
//	                                           └─ sink (default route)
const (
	nodeName   = "node-a"
	nodeIP     = "10.210.0.1"
	clientIP   = "10.210.0.2"
	operatorNS = "synterix-system"
	gcName     = "default"
	testNS     = "test"
)

type world struct {
	t         testing.TB
	env       *envtest.Environment
	cfg       *rest.Config
	c         client.Client
	cs        kubernetes.Interface
	node      *netns.NS
	client    *netns.NS
	b1, b2    *netns.NS
	proxyNode *v1alpha1.ProxyNode
}

func requireKernel(t testing.TB) {
	netns.Require(t, "iptables", "iptables-save", "iptables-restore")
}

// startAPI starts the real kube-apiserver and etcd. The API server's
// certificates live in a fixed folder so that it can be restarted.
func startAPI(t testing.TB) *world { return startAPIWith(t, "") }

// startAPIBench starts an API server whose Service range holds 65k
// addresses.
func startAPIBench(t testing.TB) *world { return startAPIWith(t, "10.96.0.0/16") }

func startAPIWith(t testing.TB, serviceCIDR string) *world {
	t.Helper()
	env, err := testenv.New()
	if err != nil {
		t.Skipf("SKIPPING: no test control plane: %v", err)
	}
	if serviceCIDR != "" {
		env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", serviceCIDR)
	}
	env.ControlPlane.GetAPIServer().CertDir = t.TempDir()
	env.ControlPlaneStopTimeout = 3 * time.Minute
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	w := &world{t: t, env: env, cfg: cfg, c: c, cs: cs}
	for _, ns := range []string{operatorNS, testNS} {
		w.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return w
}

// topology builds the network namespaces and the backend servers.
func (w *world) topology() {
	t := w.t
	w.node, w.client = netns.New(t, "node"), netns.New(t, "client")
	w.b1, w.b2 = netns.New(t, "b1"), netns.New(t, "b2")
	netns.Link(t, w.node, "to-client", nodeIP+"/24", w.client, "eth0", clientIP+"/24")
	netns.Link(t, w.node, "to-b1", "10.211.1.1/24", w.b1, "eth0", "10.211.1.2/24")
	netns.Link(t, w.node, "to-b2", "10.211.2.1/24", w.b2, "eth0", "10.211.2.2/24")
	w.b1.AddAddr("eth0", "10.211.1.3/24")
	w.node.EnableForwarding()
	sink := netns.New(t, "sink")
	netns.Veth(t, w.node, "uplink", sink, "eth0")
	w.node.AddAddr("uplink", "10.250.0.1/24")
	sink.AddAddr("eth0", "10.250.0.2/24")
	w.node.AddRoute("default", "10.250.0.2", "uplink")
	for _, ip := range []string{"10.211.1.2", "10.211.1.3"} {
		w.b1.Serve(t, "tcp", ip+":8080", ip)
	}
	w.b2.Serve(t, "tcp", "10.211.2.2:8080", "10.211.2.2")
}

// Service web, the one most tests program: 10.0.0.10:80, one endpoint.
const (
	webVIP     = "10.0.0.10:80"
	webBackend = "10.211.1.2"
)

// startWeb is the start the agent tests share: the API server and the
// topology, revision rev of spec stored and assigned to the node, and
// Service web with its endpoint webBackend. Start the agent next, then
// waitServing.
func startWeb(t *testing.T, rev string, spec v1alpha1.GatewayConfigSpec) *world {
	t.Helper()
	w := startAPI(t)
	w.topology()
	w.revision(rev, spec)
	w.nodeObjects(rev)
	w.service("web", "10.0.0.10", webBackend)
	return w
}

// waitServing waits until the agent reports Ready at rev and web answers
// from its backend.
func (w *world) waitServing(rev string) *v1alpha1.ProxyNode {
	w.t.Helper()
	pn := w.waitReady(rev)
	w.waitAnswer(webVIP, webBackend)
	return pn
}

// waitEvent waits until an Event that match accepts is posted, and returns
// it.
func (w *world) waitEvent(what string, match func(corev1.Event) bool) corev1.Event {
	w.t.Helper()
	var found corev1.Event
	eventually(w.t, what, func() (bool, string) {
		evs, err := w.cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if match(e) {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none matches", len(evs.Items))
	})
	return found
}

func (w *world) create(obj client.Object) {
	w.t.Helper()
	if err := w.c.Create(context.Background(), obj); err != nil {
		w.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// revision stores a config revision of the GatewayConfig.
func (w *world) revision(name string, spec v1alpha1.GatewayConfigSpec) {
	w.t.Helper()
	data, err := v1alpha1.EncodeRevision(&spec)
	if err != nil {
		w.t.Fatal(err)
	}
	w.revisionRaw(name, data)
}

func (w *world) revisionRaw(name string, data []byte) {
	w.t.Helper()
	w.create(&appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: name,
			Labels: map[string]string{v1alpha1.RevisionGatewayConfigLabel: gcName}},
		Data: runtime.RawExtension{Raw: data}, Revision: 1,
	})
}

// nodeObjects creates the Node and its ProxyNode assigned revision rev.
func (w *world) nodeObjects(rev string) {
	w.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Status: corev1.NodeStatus{}})
	n := &corev1.Node{}
	_ = w.c.Get(context.Background(), client.ObjectKey{Name: nodeName}, n)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}
	if err := w.c.Status().Update(context.Background(), n); err != nil {
		w.t.Fatal(err)
	}
	pn := &v1alpha1.ProxyNode{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: gcName, Revision: rev}}
	w.create(pn)
	w.proxyNode = pn
}

// assign points the ProxyNode at another revision.
func (w *world) assign(rev string) {
	w.t.Helper()
	pn := &v1alpha1.ProxyNode{}
	if err := w.c.Get(context.Background(), client.ObjectKey{Name: nodeName}, pn); err != nil {
		w.t.Fatal(err)
	}
	pn.Spec.Revision = rev
	if err := w.c.Update(context.Background(), pn); err != nil {
		w.t.Fatal(err)
	}
}

// service creates a ClusterIP Service with port 80 and its EndpointSlice
// pointing at ips:8080.
func (w *world) service(name, clusterIP string, ips ...string) {
	w.t.Helper()
	w.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	})
	w.create(slice(name, ips...))
}

func slice(name string, ips ...string) *discoveryv1.EndpointSlice {
	port, pname, proto := int32(8080), "http", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	for _, ip := range ips {
		ready := true
		other := "node-b"
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &other,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

// setEndpoints replaces the endpoints of a Service's slice, stamping the
// trigger-time annotation as the EndpointSlice controller does.
func (w *world) setEndpoints(name string, ips ...string) time.Time {
	w.t.Helper()
	cur := &discoveryv1.EndpointSlice{}
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: name + "-1"}, cur); err != nil {
		w.t.Fatal(err)
	}
	want := slice(name, ips...)
	cur.Endpoints = want.Endpoints
	now := time.Now()
	cur.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": now.UTC().Format(time.RFC3339Nano)}
	if err := w.c.Update(context.Background(), cur); err != nil {
		w.t.Fatal(err)
	}
	return now
}

// getProxyNode reads the ProxyNode from the API server.
func (w *world) getProxyNode() *v1alpha1.ProxyNode {
	pn := &v1alpha1.ProxyNode{}
	if err := w.c.Get(context.Background(), client.ObjectKey{Name: nodeName}, pn); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		w.t.Logf("get ProxyNode: %v", err)
		return nil
	}
	return pn
}

// eventually polls cond until it holds or a generous deadline passes. The
// deadline bounds a hang; it asserts nothing about speed.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	eventuallyFor(t, 90*time.Second, what, cond)
}

func eventuallyFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
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

// waitReady waits for Ready=True at revision rev.
func (w *world) waitReady(rev string) *v1alpha1.ProxyNode {
	w.t.Helper()
	var pn *v1alpha1.ProxyNode
	eventually(w.t, "ProxyNode Ready at "+rev, func() (bool, string) {
		pn = w.getProxyNode()
		if pn == nil {
			return false, "no ProxyNode"
		}
		c := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil {
			return false, fmt.Sprintf("no Ready condition: %+v", pn.Status)
		}
		return c.Status == metav1.ConditionTrue && pn.Status.AppliedRevision == rev,
			fmt.Sprintf("Ready=%s %s %q applied=%q", c.Status, c.Reason, c.Message, pn.Status.AppliedRevision)
	})
	return pn
}

// answer returns who answers one TCP request from ns to target within
// timeout, or "error: " and the outcome.
func answer(ns *netns.NS, target string, timeout time.Duration) string {
	r, err := ns.Request("tcp", target, netns.RequestOptions{Timeout: timeout})
	if err != nil {
		return "error: " + netns.Outcome(err)
	}
	return r.Server
}

// answers returns who answers a TCP request from the client to target.
func (w *world) answers(target string) string { return answer(w.client, target, time.Second) }

// waitOnlyAnswer waits until n requests in a row are answered by id: once
// the old endpoints are gone from the kernel, not merely when a random pick
// among old and new endpoints happens to hit id.
func (w *world) waitOnlyAnswer(target, id string, n int) {
	w.t.Helper()
	eventually(w.t, target+" answered only by "+id, func() (bool, string) {
		for range n {
			if got := w.answers(target); got != id {
				return false, got
			}
		}
		return true, ""
	})
}

// waitAnswer waits until target is answered by one of ids.
func (w *world) waitAnswer(target string, ids ...string) {
	w.t.Helper()
	eventually(w.t, target+" answered by "+strings.Join(ids, ","), func() (bool, string) {
		got := w.answers(target)
		for _, id := range ids {
			if got == id {
				return true, ""
			}
		}
		return false, got
	})
}

// httpGet fetches a URL from inside a namespace.
func httpGet(ns *netns.NS, url string) (int, string, error) {
	resp, err := ns.HTTPClient(5 * time.Second).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// forwarder listens inside a namespace and forwards every connection to
// an address of the test process's namespace: it lets a process that runs
// inside the node namespace reach the API server on the host's loopback
// without touching the host's links or rules.
type forwarder struct {
	ns     *netns.NS
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newForwarder(t testing.TB, ns *netns.NS, listen, target string) *forwarder {
	f := &forwarder{ns: ns, target: target, addr: listen, conns: map[net.Conn]bool{}}
	if err := f.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.stop)
	return f
}

func (f *forwarder) start() error {
	var ln net.Listener
	if err := f.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", f.addr)
		return err
	}); err != nil {
		return err
	}
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns[c], f.conns[u] = true, true
			f.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return nil
}

// stop closes the listener and every forwarded connection.
func (f *forwarder) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	f.conns = map[net.Conn]bool{}
}

// nodeKubeconfig lets processes in the node namespace reach the API server,
// which listens on the host's loopback, through a forwarder on the node's
// loopback, and returns a kubeconfig that points there.
func (w *world) nodeKubeconfig(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(w.cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	newForwarder(t, w.node, "127.0.0.1:6443", u.Host)
	return kubeconfig(t, w.cfg, "https://127.0.0.1:6443")
}

// kubeconfig writes a kubeconfig for cfg with the server replaced.
func kubeconfig(t testing.TB, cfg *rest.Config, server string) string {
	t.Helper()
	b64 := func(b []byte) string { return base64Std(b) }
	s := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, server, b64(cfg.CAData), b64(cfg.CertData), b64(cfg.KeyData))
	p := t.TempDir() + "/kubeconfig"
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
