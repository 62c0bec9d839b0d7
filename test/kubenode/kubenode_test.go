package kubenode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// echoImage is the echo image of make images (hack/image).
const echoImage = "localhost/synterix/echo:test"

// requireNodes skips the test unless E2E=1 and root, and returns the host's
// state before the test, for the leftover checks.
func requireNodes(t *testing.T) *HostState {
	t.Helper()
	if os.Getenv("E2E") == "" {
		t.Skip("SKIPPING KUBENODE TEST: set E2E=1 to run real kubelets and containerd in namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING KUBENODE TEST: needs root")
	}
	before, err := TakeHostState()
	if err != nil {
		t.Fatal(err)
	}
	return before
}

// TestTwoNodes brings up a real two-node dual-stack cluster (kubelet and
// containerd in each node's own namespaces, every control-plane component)
// and checks, in order: both Nodes register and become Ready, with an
// address and a podCIDR of each family; the namespace and ServiceAccount
// controllers run; an echo pod on each node is Running and Ready (kubelet's
// probe crosses the node's bridge) with an address of each family; the
// EndpointSlice controller publishes both pods in both families; pods
// answer over both families from the other node (pod routes between nodes)
// and from outside the nodes; a hostNetwork pod
// answers on its node's address; a DaemonSet runs a pod on each node; no
// mount of the nodes shows on the host while they run; and Down leaves
// nothing on the host.
func TestTwoNodes(t *testing.T) {
	before := requireNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Up(ctx, Options{Nodes: 2, DualStack: true, Progress: os.Stderr})
	if c != nil {
		stop := c.DownOnSignal()
		defer stop()
		defer teardown(t, c, before)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING nothing -> %d Ready nodes: %s", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	for _, s := range c.Timings {
		t.Logf("TIMING   %s: %s", s.Step, s.Took.Round(time.Millisecond))
	}
	kube := c.Kube
	ns := "demo"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, time.Minute, "ServiceAccount demo/default", func(ctx context.Context) (bool, string, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		t.Fatal(err)
	}

	podsStart := time.Now()
	pods := map[string]*corev1.Pod{}
	for _, n := range c.Nodes {
		p := echoPod("echo-"+n.Name, n.Name, false, 8080)
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		p, err := c.WaitPodReady(ctx, ns, "echo-"+n.Name, 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.NodeName != n.Name || !inCIDRs(podIPs(p), n.PodCIDRs()) {
			t.Fatalf("pod %s: node %s IPs %v, want node %s, an IP in each of %v", p.Name, p.Spec.NodeName, podIPs(p), n.Name, n.PodCIDRs())
		}
		pods[n.Name] = p
	}
	t.Logf("TIMING pods created -> %d echo pods Running and Ready: %s (nothing -> pods Ready: %s)",
		len(pods), time.Since(podsStart).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	t.Run("NodesOfBothFamilies", func(t *testing.T) { checkNodeFamilies(ctx, t, c) })
	t.Run("EndpointSlices", func(t *testing.T) { checkEndpointSlices(ctx, t, c, ns, pods) })
	t.Run("PodToPodAcrossNodes", func(t *testing.T) { checkPodRouting(ctx, t, c, pods) })
	t.Run("HostNetworkPod", func(t *testing.T) { checkHostNetwork(ctx, t, c, ns) })
	t.Run("DaemonSet", func(t *testing.T) { checkDaemonSet(ctx, t, c, ns) })
	t.Run("IsolatedFromHost", func(t *testing.T) { checkIsolation(t, c, pods) })
	t.Run("APIServerByRealAddressOnly", func(t *testing.T) { checkAPIFromPod(ctx, t, c, pods[c.Nodes[0].Name]) })
}

// teardown runs Down and fails the test if anything of the cluster is left
// on the host; the folder (logs) is kept when the test failed.
func teardown(t *testing.T, c *Cluster, before *HostState) {
	fp := CaptureFootprint(c.ID)
	if len(fp.Pids) == 0 || len(fp.NetNS) == 0 {
		t.Errorf("the footprint of the running cluster is empty: %+v", fp)
	}
	downStart := time.Now()
	if err := c.Down(); err != nil {
		t.Errorf("down: %v", err)
	}
	t.Logf("TIMING teardown: %s", time.Since(downStart).Round(time.Millisecond))
	keep := t.Failed() || os.Getenv("KEEP_LOGS") != ""
	if keep {
		t.Logf("logs kept in %s", c.Dir)
	} else if err := c.RemoveDir(); err != nil {
		t.Error(err)
	}
	left, err := before.Leftovers(c.ID, fp)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range left {
		if keep && strings.HasPrefix(l, "folder ") {
			continue // kept for its logs on purpose
		}
		t.Errorf("left on the host: %s", l)
	}
}

// echoPod is a pod of the echo image (make images) placed by the
// scheduler on node; it answers HTTP on port with "id=<pod> from=<client>".
func echoPod(name, node string, hostNetwork bool, port int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			HostNetwork:                   hostNetwork,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{echoContainer(port)},
		},
	}
}

func echoContainer(port int32) corev1.Container {
	return corev1.Container{
		Name:            "echo",
		Image:           echoImage,
		ImagePullPolicy: corev1.PullNever,
		// Only the HTTP server, on port: hostNetwork pods share the node's ports.
		Args: []string{"-tcp=", "-udp=", fmt.Sprintf("-http=%d", port)},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(port)}},
			PeriodSeconds: 1,
		},
	}
}

// podIPs are the pod's addresses, the primary first.
func podIPs(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	return out
}

// inCIDRs reports whether there is one IP per CIDR, each in its CIDR.
func inCIDRs(ips, cidrs []string) bool {
	if len(ips) != len(cidrs) {
		return false
	}
	for i, ip := range ips {
		a, err1 := netip.ParseAddr(ip)
		p, err2 := netip.ParsePrefix(cidrs[i])
		if err1 != nil || err2 != nil || !p.Contains(a) {
			return false
		}
	}
	return true
}

// checkNodeFamilies checks that every Node reports an InternalIP of each
// family (kubelet's --node-ip) and carries a podCIDR of each family.
func checkNodeFamilies(ctx context.Context, t *testing.T, c *Cluster) {
	for _, n := range c.Nodes {
		node, err := c.Kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var internal []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		if strings.Join(internal, ",") != strings.Join(n.IPs(), ",") {
			t.Errorf("node %s: InternalIPs %v, want %v", n.Name, internal, n.IPs())
		}
		if strings.Join(node.Spec.PodCIDRs, ",") != strings.Join(n.PodCIDRs(), ",") {
			t.Errorf("node %s: podCIDRs %v, want %v", n.Name, node.Spec.PodCIDRs, n.PodCIDRs())
		}
	}
}

// checkEndpointSlices creates a PreferDualStack Service selecting the echo
// pods and waits for the EndpointSlice controller to list both pods, ready,
// on their nodes, in a slice of each family.
func checkEndpointSlices(ctx context.Context, t *testing.T, c *Cluster, ns string, pods map[string]*corev1.Pod) {
	policy := corev1.IPFamilyPolicyPreferDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "echo"},
			IPFamilyPolicy: &policy,
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	got, err := c.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.ClusterIPs) != 2 {
		t.Errorf("PreferDualStack Service: ClusterIPs %v, want one of each family", got.Spec.ClusterIPs)
	}
	want := map[string]string{} // pod IP -> node
	for node, p := range pods {
		for _, ip := range podIPs(p) {
			want[ip] = node
		}
	}
	err = poll.Until(ctx, time.Minute, "EndpointSlices of demo/echo", func(ctx context.Context) (bool, string, error) {
		list, err := c.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return false, err.Error(), nil
		}
		got := map[string]string{}
		for _, s := range list.Items {
			if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
				return false, "", fmt.Errorf("slice %s managed by %q", s.Name, s.Labels[discoveryv1.LabelManagedBy])
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && e.NodeName != nil && len(e.Addresses) > 0 {
					got[e.Addresses[0]] = *e.NodeName
				}
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("ready endpoints %v, want %v", got, want), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkPodRouting sends a request from every pod to every pod, from every
// node to every pod, and from the control-plane namespace (outside the
// nodes) to every pod.
func checkPodRouting(ctx context.Context, t *testing.T, c *Cluster, pods map[string]*corev1.Pod) {
	for _, n := range c.Nodes {
		src := pods[n.Name]
		from, err := n.PodNetNS(string(src.UID))
		if err != nil {
			t.Fatal(err)
		}
		for node, p := range pods {
			for i, ip := range podIPs(p) {
				body, err := from.HTTPGet(ctx, "http://"+net.JoinHostPort(ip, "8080")+"/")
				if err != nil {
					t.Errorf("pod %s -> pod %s on %s at %s: %v", src.Name, p.Name, node, ip, err)
					continue
				}
				// The server sees the client pod's own address of the
				// family: no NAT between pods.
				if want := fmt.Sprintf("id=%s from=%s", p.Name, net.JoinHostPort(podIPs(src)[i], "")); !strings.HasPrefix(body, want) {
					t.Errorf("pod %s -> pod %s: answer %q, want %q...", src.Name, p.Name, body, want)
				}
			}
		}
	}
	for _, from := range append(nodeNS(c), c.ControlPlane.NS) {
		for node, p := range pods {
			for _, ip := range podIPs(p) {
				body, err := HTTPGet(ctx, from, "http://"+net.JoinHostPort(ip, "8080")+"/")
				if err != nil {
					t.Errorf("%s -> pod %s on %s at %s: %v", from.Name, p.Name, node, ip, err)
					continue
				}
				if want := fmt.Sprintf("id=%s ", p.Name); !strings.HasPrefix(body, want) {
					t.Errorf("%s -> pod %s: answer %q, want %q...", from.Name, p.Name, body, want)
				}
			}
		}
	}
}

func nodeNS(c *Cluster) []*netns.NS {
	var out []*netns.NS
	for _, n := range c.Nodes {
		out = append(out, n.NS)
	}
	return out
}

// checkHostNetwork runs an echo pod in the last node's network namespace
// and reaches it on the node's address from the control-plane namespace.
func checkHostNetwork(ctx context.Context, t *testing.T, c *Cluster, ns string) {
	n := c.Nodes[len(c.Nodes)-1]
	p := echoPod("echo-hostnet", n.Name, true, 18080)
	p.Labels = map[string]string{"app": "echo-hostnet"}
	if _, err := c.Kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitPodReady(ctx, ns, p.Name, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.PodIP != n.IP {
		t.Errorf("hostNetwork pod IP %s, want the node's %s", got.Status.PodIP, n.IP)
	}
	body, err := HTTPGet(ctx, c.ControlPlane.NS, fmt.Sprintf("http://%s:18080/", n.IP))
	if err != nil {
		t.Fatal(err)
	}
	if want := "id=echo-hostnet from=" + clusternet.APIServerIP + ":"; !strings.HasPrefix(body, want) {
		t.Errorf("hostNetwork pod answered %q, want %q...", body, want)
	}
}

// checkDaemonSet creates a DaemonSet shaped like the agent's (host
// network, privileged, tolerating every taint) and waits until it runs one
// ready pod on every node, answering on each node's address.
func checkDaemonSet(ctx context.Context, t *testing.T, c *Cluster, ns string) {
	labels := map[string]string{"app": "echo-ds"}
	ctr := echoContainer(18081)
	ctr.SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-ds"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: new(int64),
					Containers:                    []corev1.Container{ctr},
				},
			},
		},
	}
	if _, err := c.Kube.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	onNodes := map[string]string{} // node -> its ready pod
	err := poll.Until(ctx, 2*time.Minute, "DaemonSet demo/echo-ds on every node", func(ctx context.Context) (bool, string, error) {
		list, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo-ds"})
		if err != nil {
			return false, err.Error(), nil
		}
		clear(onNodes)
		for _, p := range list.Items {
			if podReady(&p) {
				onNodes[p.Spec.NodeName] = p.Name
			}
		}
		got, err := c.Kube.AppsV1().DaemonSets(ns).Get(ctx, "echo-ds", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		st := got.Status
		return len(onNodes) == len(c.Nodes) && st.NumberReady == int32(len(c.Nodes)),
			fmt.Sprintf("ready on %v; desired %d ready %d", onNodes, st.DesiredNumberScheduled, st.NumberReady), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		body, err := HTTPGet(ctx, c.ControlPlane.NS, fmt.Sprintf("http://%s:18081/", n.IP))
		if err != nil {
			t.Errorf("DaemonSet pod on %s: %v", n.Name, err)
		} else if want := "id=" + onNodes[n.Name] + " "; !strings.HasPrefix(body, want) {
			t.Errorf("DaemonSet pod on %s answered %q, want %q", n.Name, body, want)
		}
	}
}

// checkIsolation proves, while pods run, that the nodes' mounts stay in the
// nodes' mount namespaces and their containers in the nodes' cgroups.
func checkIsolation(t *testing.T, c *Cluster, pods map[string]*corev1.Pod) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		// The cluster's own network namespaces are the only mounts of it the
		// host may see.
		if strings.Contains(l, " /run/netns/"+c.ID+"-") && strings.Contains(l, " nsfs ") {
			continue
		}
		if OwnMount(l, c.ID) {
			t.Errorf("node mount visible on the host: %s", l)
		}
	}
	for _, n := range c.Nodes {
		mounts, err := n.Exec("cat", "/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(mounts, " overlay ") {
			t.Errorf("node %s: no overlay mount in its own mount namespace; is the check looking at the right place?", n.Name)
		}
		if len(n.Cgroups.Pids()) < 4 { // holder, containerd, kubelet, a shim, the containers
			t.Errorf("node %s: only %v in its cgroups", n.Name, n.Cgroups.Pids())
		}
		out, err := n.Exec("ctr", "--address", n.containerdSocket(), "-n", "k8s.io", "tasks", "list")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s tasks:\n%s", n.Name, out)
	}
}

// checkAPIFromPod shows what a kube-proxy-less cluster gives a pod before a
// Service proxy runs: kubelet points it at the "kubernetes" ClusterIP, which
// nothing serves, while the API server's real address works with the pod's
// own ServiceAccount token (issued by TokenRequest, projected by kubelet,
// CA from the root-CA publisher).
func checkAPIFromPod(ctx context.Context, t *testing.T, c *Cluster, p *corev1.Pod) {
	n := c.Nodes[0]
	from, err := n.PodNetNS(string(p.UID))
	if err != nil {
		t.Fatal(err)
	}
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	var token, ca []byte
	var environ string
	for _, pid := range n.Cgroups.PodPids(string(p.UID)) {
		root := fmt.Sprintf("/proc/%d/root", pid)
		if token, err = os.ReadFile(root + sa + "token"); err == nil {
			ca, _ = os.ReadFile(root + sa + "ca.crt")
			env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			environ = strings.ReplaceAll(string(env), "\x00", " ")
			break
		}
	}
	if len(token) == 0 || len(ca) == 0 {
		t.Fatalf("pod %s: no ServiceAccount token and CA in any of its containers", p.Name)
	}
	if !strings.Contains(environ, "KUBERNETES_SERVICE_HOST=10.96.0.1 ") {
		t.Errorf("pod %s environment %q: want kubelet's KUBERNETES_SERVICE_HOST=10.96.0.1", p.Name, environ)
	}
	if conn, err := from.Dial(ctx, "tcp", "10.96.0.1:443"); err == nil {
		conn.Close()
		t.Errorf("pod %s reached the kubernetes ClusterIP with no Service proxy running", p.Name)
	} else {
		t.Logf("as expected without a Service proxy: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: from.Dial, TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, clusternet.APIServerURL+"/api/v1/namespaces/demo/pods/"+p.Name, nil)
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The default ServiceAccount may not read pods: 403 proves the token
	// was authenticated (an unknown token gets 401).
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with the pod's token at %s: %s, want 403 Forbidden for an authenticated ServiceAccount", clusternet.APIServerURL, resp.Status)
	}
}
