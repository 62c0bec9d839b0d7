package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/inproc"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// The plugin against the real thing: a real API server, the operator and
// two real agents in-process (test/inproc), each programming its node's
// network namespace and serving its explain endpoint behind a Pod object,
// reached by the plugin binary through "kubectl synterix" (kubectl's
// plugin discovery) and the API server's pods/proxy, as a user who holds
// only the roles config/explain ships. Each command's output is checked;
// with SYNX_UPDATE_TROUBLESHOOTING=1 the outputs are written into
// docs/troubleshooting.md, whose examples are these runs.

// session runs the plugin as the explainer.
type session struct {
	t          *testing.T
	kubectl    string
	kubeconfig string
	path       string
	outputs    map[string]string
}

// run runs "kubectl synterix args..." and checks its output contains every
// want; it records the output under name for the docs. A non-zero exit is
// an error unless failOK.
func (s *session) run(name string, failOK bool, args []string, want ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.kubectl, append([]string{"synterix", "--kubeconfig", s.kubeconfig, "-n", inproc.TestNamespace}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+s.path)
	out, err := cmd.CombinedOutput()
	text := string(out)
	s.t.Logf("$ kubectl synterix %s\n%s", strings.Join(args, " "), text)
	if err != nil && !failOK {
		s.t.Errorf("kubectl synterix %s: %v", strings.Join(args, " "), err)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			s.t.Errorf("kubectl synterix %s: output lacks %q", strings.Join(args, " "), w)
		}
	}
	s.outputs[name] = "$ kubectl synterix " + strings.Join(args, " ") + "\n" + text
	return text
}

func TestPluginTroubleshooting(t *testing.T) {
	w := inproc.Start(t)
	w.Operator(nil)
	w.Apply("config/explain")
	sel := map[string]string{"proxy.test/selected": "true"}
	a, b := w.AddNode("node-a", 1, sel), w.AddNode("node-b", 2, sel)
	for _, n := range []*inproc.Node{a, b} {
		w.StartAgent(n, nil)
	}
	services(w, a, b)
	w.Create(gatewayConfig())
	rev1 := waitReady(t, w, "", "node-a", "node-b")
	for _, n := range []*inproc.Node{a, b} {
		w.ServeExplain(n)
	}
	s := newSession(t, w)
	s.healthy(a)
	s.noEndpoints()
	s.localWithoutEndpoint(a)
	s.policyNotProgrammed(w)
	s.drift(a)
	s.heldForApproval(w, rev1)
	if os.Getenv("SYNX_UPDATE_TROUBLESHOOTING") == "1" {
		writeDocs(t, s.outputs, func(name string) bool { return !strings.HasPrefix(name, "nft-") })
	}
}

func (s *session) healthy(a *inproc.Node) {
	s.run("status", false, []string{"status"}, "node-a", "node-b", "True (Synced)", "none", "done")
	s.run("explain-web", false, []string{"explain", "service", "web", "--node", "node-a"},
		"10.211.1.2:8080", "serving-terminating", "terminating: not used while ready endpoints exist", "Verdict: OK")
	s.run("explain-web-all", false, []string{"explain", "service", "web"}, "node-a", "node-b", "OK: http/TCP: 2 of 3 endpoints in use")
	s.run("trace-web", false, []string{"trace", "--node", "node-a", "--from", a.ClientIP(), "--to", "10.0.0.10:80"},
		"DNAT to 10.211.1.2:8080 (50%), 10.211.1.3:8080 (50%); masqueraded")
	s.run("trace-web-json", false, []string{"trace", "--node", "node-a", "--from", a.PodIP(0), "--to", "10.0.0.10:80", "-o", "json"},
		`"verdict": "DNAT"`, `"masquerade": false`)
}

func (s *session) noEndpoints() {
	s.run("explain-empty", false, []string{"explain", "service", "empty", "--node", "node-a"},
		"no endpoints: connections to ClusterIP 10.0.0.11:80 are rejected", "Verdict: PROBLEM")
	s.run("trace-empty", false, []string{"trace", "--node", "node-a", "--from", "10.210.1.2", "--to", "10.0.0.11:80"},
		"REJECT", "icmp-port-unreachable")
	s.run("explain-drain", false, []string{"explain", "service", "drain", "--node", "node-a"},
		"no ready endpoints; 2 terminating endpoints are used as a fallback")
}

func (s *session) localWithoutEndpoint(a *inproc.Node) {
	s.run("explain-local", false, []string{"explain", "service", "local", "--node", "node-a"},
		"externalTrafficPolicy Local and no local endpoint: external traffic to this node", "is dropped", "on another node")
	s.run("trace-local", false, []string{"trace", "--node", "node-a", "--from", a.ClientIP(), "--to", a.IP() + ":30080"},
		"Verdict: DROP")
	s.run("trace-local-pod", false, []string{"trace", "--node", "node-a", "--from", a.PodIP(0), "--to", a.IP() + ":30080"},
		"DNAT to 10.211.2.2:8080 (100%)")
}

func (s *session) policyNotProgrammed(w *inproc.World) {
	w.Create(&v1alpha1.ProxyPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: "web-lc"},
		Spec: v1alpha1.ProxyPolicySpec{TargetRefs: []v1alpha1.PolicyTargetReference{{Kind: "Service", Name: "web"}},
			LoadBalancing: &v1alpha1.LoadBalancingSpec{Algorithm: v1alpha1.AlgorithmLeastConnections}}})
	inproc.Eventually(s.t, "the policy reported as failed", func() (bool, string) {
		pn := &v1alpha1.ProxyNode{}
		_ = w.C.Get(context.Background(), client.ObjectKey{Name: "node-a"}, pn)
		return pn.Status.FailedPolicyCount == 1, fmt.Sprint(pn.Status.FailedPolicies)
	})
	s.run("explain-web-policy", false, []string{"explain", "service", "web", "--node", "node-a"},
		"the policy web-lc is not programmed on node-a: UnsupportedByBackend", "LeastConnections")
	s.run("status-policy", false, []string{"status", "--no-drift"}, "1 policy not programmed")
}

// drift deletes one of web's DNAT rules behind the agent's back (its sync
// period is an hour, so it stays so).
func (s *session) drift(a *inproc.Node) {
	chain := iptables.ServiceChains("test/web:http/TCP")[0]
	a.NS.MustExec("iptables", "-w", "-t", "nat", "-D", chain, "2")
	s.run("diff", true, []string{"diff"}, "node-a", "differs", "chain nat "+chain, "missing: -p tcp", "node-b", "IPv4: in sync")
	s.run("status-drift", false, []string{"status"}, "1 difference")
	s.run("explain-web-drift", false, []string{"explain", "service", "web", "--node", "node-a"}, "the kernel differs from what the agent programmed")
}

// heldForApproval switches the rollout to Manual and changes the spec:
// the new revision waits for approval.
func (s *session) heldForApproval(w *inproc.World, rev1 string) {
	gc := &v1alpha1.GatewayConfig{}
	if err := w.C.Get(context.Background(), client.ObjectKey{Name: "default"}, gc); err != nil {
		s.t.Fatal(err)
	}
	gc.Spec.Rollout = &v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutManual}
	gc.Spec.MinSyncPeriod = &metav1.Duration{Duration: 200 * time.Millisecond}
	if err := w.C.Update(context.Background(), gc); err != nil {
		s.t.Fatal(err)
	}
	inproc.Eventually(s.t, "a pending revision", func() (bool, string) {
		_ = w.C.Get(context.Background(), client.ObjectKey{Name: "default"}, gc)
		return gc.Status.PendingRevision != "", fmt.Sprint(gc.Status)
	})
	s.run("status-held", false, []string{"status", "--no-drift"}, "Manual", rev1, "held for approval: revision "+gc.Status.PendingRevision)
}

func newSession(t *testing.T, w *inproc.World) *session {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-synterix"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the plugin: %v\n%s", err, out)
	}
	bin, err := testenv.BinaryDir()
	if err != nil {
		t.Fatal(err)
	}
	return &session{t: t, kubectl: filepath.Join(bin, "kubectl"), kubeconfig: explainer(t, w, dir),
		path: dir + ":" + os.Getenv("PATH"), outputs: map[string]string{}}
}

// explainer is a kubeconfig of a user holding only config/explain's
// roles (a ServiceAccount's token, for the test).
func explainer(t *testing.T, w *inproc.World, dir string) string {
	ctx := context.Background()
	w.Create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: "alice"}})
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: inproc.TestNamespace, Name: "alice"}}
	w.Create(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-explains"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "synterix-explainer"}})
	w.Create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.OperatorNamespace, Name: "alice-explains"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "synterix-explainer"}})
	tr, err := w.CS.CoreV1().ServiceAccounts(inproc.TestNamespace).CreateToken(ctx, "alice", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, w.Cfg.CAData, 0o600); err != nil {
		t.Fatal(err)
	}
	kc := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {server: %s, certificate-authority: %s}\n"+
		"users:\n- name: alice\n  user: {token: %s}\ncontexts:\n- name: test\n  context: {cluster: test, user: alice, namespace: %s}\ncurrent-context: test\n",
		w.Cfg.Host, ca, tr.Status.Token, inproc.TestNamespace)
	p := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func gatewayConfig() *v1alpha1.GatewayConfig {
	return &v1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.GatewayConfigSpec{
		NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"proxy.test/selected": "true"}},
		Mode:          v1alpha1.BackendModeIPTables,
		MinSyncPeriod: &metav1.Duration{Duration: 100 * time.Millisecond},
		SyncPeriod:    &metav1.Duration{Duration: time.Hour},
		LocalTrafficDetection: &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionClusterCIDR,
			ClusterCIDRs: []v1alpha1.CIDR{"10.211.0.0/16"}},
	}}
}

// waitReady waits until the nodes are Ready at one applied revision
// (other than not), and returns it.
func waitReady(t *testing.T, w *inproc.World, not string, nodes ...string) string {
	rev := ""
	inproc.Eventually(t, "the nodes Ready", func() (bool, string) {
		var revs []string
		for _, n := range nodes {
			pn := &v1alpha1.ProxyNode{}
			if err := w.C.Get(context.Background(), client.ObjectKey{Name: n}, pn); err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(pn.Status.Conditions, v1alpha1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionTrue || pn.Status.AppliedRevision == not {
				return false, n + " not ready"
			}
			revs = append(revs, pn.Status.AppliedRevision)
		}
		rev = revs[0]
		return rev == revs[len(revs)-1], fmt.Sprint(revs)
	})
	return rev
}

// services creates the Services of the examples: web (two ready
// endpoints on node-a, one terminating on node-b), empty (none), drain
// (only terminating ones) and local (NodePort, externalTrafficPolicy Local,
// its endpoint on node-b).
func services(w *inproc.World, a, b *inproc.Node) {
	type ep struct {
		ip, node    string
		terminating bool
	}
	svc := func(name, ip string, np int32, local bool, eps ...ep) {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Type: corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}}}
		if np != 0 {
			s.Spec.Type, s.Spec.Ports[0].NodePort = corev1.ServiceTypeNodePort, np
		}
		if local {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		w.Create(s)
		port, pname, proto := int32(8080), "http", corev1.ProtocolTCP
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: inproc.TestNamespace, Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}}}
		for _, e := range eps {
			ready, serving, term, node := !e.terminating, true, e.terminating, e.node
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: &node,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}})
		}
		w.Create(es)
	}
	svc("web", "10.0.0.10", 0, false, ep{a.PodIP(0), a.Name, false}, ep{a.PodIP(1), a.Name, false}, ep{b.PodIP(0), b.Name, true})
	svc("empty", "10.0.0.11", 0, false)
	svc("local", "10.0.0.12", 30080, true, ep{b.PodIP(0), b.Name, false})
	svc("drain", "10.0.0.13", 0, false, ep{a.PodIP(0), a.Name, true}, ep{b.PodIP(1), b.Name, true})
}

// writeDocs replaces each "<!-- output: NAME -->" block of
// docs/troubleshooting.md that the test owns with the recorded output.
func writeDocs(t *testing.T, outputs map[string]string, owns func(name string) bool) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "docs", "troubleshooting.md")
	doc, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- output: ([a-z0-9-]+) -->\n```text\n.*?```")
	used := map[string]bool{}
	out := re.ReplaceAllStringFunc(string(doc), func(m string) string {
		name := re.FindStringSubmatch(m)[1]
		if !owns(name) {
			return m
		}
		o, ok := outputs[name]
		if !ok {
			t.Errorf("docs/troubleshooting.md shows output %q, which the test does not produce", name)
			return m
		}
		used[name] = true
		return "<!-- output: " + name + " -->\n```text\n" + strings.TrimRight(o, "\n") + "\n```"
	})
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d outputs into %s", len(used), p)
}

// TestPluginNFTables: the same cluster with mode NFTables. explain shows
// the port's nftables map elements, trace walks the nftables table, and a
// map element deleted behind the agent's back is drift in diff.
func TestPluginNFTables(t *testing.T) {
	w := inproc.Start(t)
	w.Operator(nil)
	w.Apply("config/explain")
	sel := map[string]string{"proxy.test/selected": "true"}
	a, b := w.AddNode("node-a", 1, sel), w.AddNode("node-b", 2, sel)
	for _, n := range []*inproc.Node{a, b} {
		w.StartAgent(n, nil)
	}
	services(w, a, b)
	gc := gatewayConfig()
	gc.Spec.Mode = v1alpha1.BackendModeNFTables
	w.Create(gc)
	waitReady(t, w, "", "node-a", "node-b")
	for _, n := range []*inproc.Node{a, b} {
		w.ServeExplain(n)
	}
	s := newSession(t, w)
	s.run("nft-status", false, []string{"status"}, "node-a", "node-b", "NFTables")
	s.run("nft-explain-web", false, []string{"explain", "service", "web", "--node", "node-a"},
		"Kernel (nftables, read back)", "map service-ips:", "10.0.0.10 . tcp . 80 : goto pick-2-offcluster",
		"map endpoints:", "10.0.0.10 . tcp . 80 . 1 : 10.211.1.3 . 8080", "Drift: none", "Verdict: OK")
	s.run("nft-trace-web", false, []string{"trace", "--node", "node-a", "--from", a.ClientIP(), "--to", "10.0.0.10:80"},
		"vmap @service-ips", "DNAT to 10.211.1.2:8080 (50%), 10.211.1.3:8080 (50%); masqueraded")
	s.run("nft-trace-web-pod", false, []string{"trace", "--node", "node-a", "--from", a.PodIP(0), "--to", "10.0.0.10:80", "-o", "json"},
		`"verdict": "DNAT"`, `"masquerade": false`)
	s.run("nft-trace-empty", false, []string{"trace", "--node", "node-a", "--from", "10.210.1.2", "--to", "10.0.0.11:80"},
		"REJECT", "go to reject-chain", "icmp port-unreachable")
	s.run("nft-trace-local", false, []string{"trace", "--node", "node-a", "--from", a.ClientIP(), "--to", a.IP() + ":30080"},
		"Verdict: DROP")
	s.run("nft-diff", false, []string{"diff"}, "node-a", "node-b", "IPv4: in sync")
	a.NS.MustExec("nft", "delete", "element", "ip", "synterix", "service-ips", "{ 10.0.0.10 . tcp . 80 }")
	s.run("nft-diff-drift", true, []string{"diff"}, "node-a", "differs", "set service-ips", "test/web:http/TCP",
		"missing: 10.0.0.10 . tcp . 80 : goto pick-2-offcluster", "node-b", "IPv4: in sync")
	s.run("nft-explain-web-drift", false, []string{"explain", "service", "web", "--node", "node-a"},
		"the kernel differs from what the agent programmed")
	if os.Getenv("SYNX_UPDATE_TROUBLESHOOTING") == "1" {
		writeDocs(t, s.outputs, func(name string) bool { return strings.HasPrefix(name, "nft-") })
	}
}
