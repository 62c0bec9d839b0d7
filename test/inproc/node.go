package inproc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/health"
	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/metrics"
	"github.com/synterix/synterix-kube-proxy/agent/secureserve"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Node is a node of a World: a Node object and a network namespace the
// node's agent programs, with a client and a namespace of pods:
//
//	client 10.210.I.2 ── node 10.210.I.1 ──── pods 10.211.I.2, .3, .4
//	                          10.211.I.1  └── sink (default route)
type Node struct {
	Name   string
	Index  int
	NS     *netns.NS
	Client *netns.NS
	Pods   *netns.NS
	// Agent is set once the agent runs (see StartAgent); AgentStarted is
	// closed then.
	Agent        *daemon.Agent
	agentStarted chan struct{}
}

// IP is the node's address, ClientIP its client's, PodIP(j) a pod's.
func (n *Node) IP() string       { return fmt.Sprintf("10.210.%d.1", n.Index) }
func (n *Node) ClientIP() string { return fmt.Sprintf("10.210.%d.2", n.Index) }
func (n *Node) PodIP(j int) string {
	return fmt.Sprintf("10.211.%d.%d", n.Index, j+2)
}

// AddNode creates node index i (1-based): its namespaces and its Node
// object with the given labels.
func (w *World) AddNode(name string, i int, labels map[string]string) *Node {
	t := w.T
	t.Helper()
	netns.Require(t, "iptables", "iptables-save", "iptables-restore")
	n := &Node{Name: name, Index: i, NS: netns.New(t, "node"), Client: netns.New(t, "client"), Pods: netns.New(t, "pods")}
	netns.Link(t, n.NS, "to-client", n.IP()+"/24", n.Client, "eth0", n.ClientIP()+"/24")
	netns.Link(t, n.NS, "to-pods", fmt.Sprintf("10.211.%d.1/24", i), n.Pods, "eth0", n.PodIP(0)+"/24")
	for j := 1; j < 3; j++ {
		n.Pods.AddAddr("eth0", n.PodIP(j)+"/24")
	}
	n.NS.EnableForwarding()
	sink := netns.New(t, "sink")
	netns.Veth(t, n.NS, "uplink", sink, "eth0")
	n.NS.AddAddr("uplink", "10.250.0.1/24")
	sink.AddAddr("eth0", "10.250.0.2/24")
	n.NS.AddRoute("default", "10.250.0.2", "uplink")
	w.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	node := &corev1.Node{}
	if err := w.C.Get(context.Background(), key(name), node); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP()}}
	if err := w.C.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	return n
}

// StartAgent runs the node's agent in-process, its kernel work in the
// node's namespace, tracing with tp (nil: none), as kubelet would run the
// pod of the operator's agent DaemonSet: once that DaemonSet exists, with
// the pod template hash its template gives the agent (POD_TEMPLATE_HASH),
// which the operator requires in the ProxyNode's status before it counts
// the node Ready. It returns at once.
func (w *World) StartAgent(n *Node, tp trace.TracerProvider) {
	t := w.T
	t.Helper()
	clients, err := informers.NewClients(w.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.agentStarted = make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		hash, err := w.podTemplateHash(ctx)
		if err != nil {
			t.Errorf("agent %s: %v", n.Name, err)
			return
		}
		rec, stopRec := daemon.NewEventRecorder(ctx, clients.Core, n.Name)
		defer stopRec()
		n.Agent = daemon.New(daemon.Options{NodeName: n.Name, OperatorNamespace: OperatorNamespace, Clients: clients, Recorder: rec,
			Metrics: metrics.New(), Health: health.NewState(time.Minute), InNetNS: n.NS.Do, AgentVersion: "test", TracerProvider: tp,
			PodTemplateHash: hash})
		close(n.agentStarted)
		if err := n.Agent.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", n.Name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// podTemplateHash waits for the agent DaemonSet in the operator's
// namespace and returns the hash its pod template gives the agent.
func (w *World) podTemplateHash(ctx context.Context) (string, error) {
	for {
		var list appsv1.DaemonSetList
		if err := w.C.List(ctx, &list, client.InNamespace(OperatorNamespace),
			client.MatchingLabels{"app.kubernetes.io/name": "synterix-agent"}); err != nil && ctx.Err() == nil {
			return "", err
		}
		for _, ds := range list.Items {
			for _, c := range ds.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					if e.Name == v1alpha1.PodTemplateHashEnv {
						return e.Value, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ServeExplain serves the node's explain endpoint as the agent does
// (secure server, audience-bound tokens) on the host's address, and
// creates the agent Pod object that points there, so that the API server's
// pods/proxy reaches it.
func (w *World) ServeExplain(n *Node) {
	t := w.T
	t.Helper()
	select {
	case <-n.agentStarted:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the agent of %s never started (no agent DaemonSet?)", n.Name)
	}
	host, err := HostIP()
	if err != nil {
		t.Skipf("SKIPPING: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr, err := secureserve.Serve(ctx, secureserve.Options{Addr: net.JoinHostPort(host, "0"), Config: w.Cfg,
		Audiences: []secureserve.Audience{{Prefix: report.PathPrefix, Audiences: []string{report.Audience},
			Header: report.TokenHeader, Handler: explain.Handler(n.Agent.Snapshot)}}}, http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	port := addr.(*net.TCPAddr).Port
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: OperatorNamespace, Name: "synterix-agent-" + n.Name,
			Labels: map[string]string{"app.kubernetes.io/name": "synterix-agent"}},
		Spec: corev1.PodSpec{NodeName: n.Name, HostNetwork: true, Containers: []corev1.Container{{Name: "agent", Image: AgentImage,
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(port), HostPort: int32(port)}}}}},
	}
	w.Create(pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host, HostIP: host, PodIPs: []corev1.PodIP{{IP: host}}}
	if err := w.C.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("pod status: %v", err)
	}
	t.Logf("agent of %s explains on https://%s", n.Name, net.JoinHostPort(host, strconv.Itoa(port)))
}
