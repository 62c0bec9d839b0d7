// Command demo runs the product as shipped on a real cluster built on this
// machine (test/shipped): nodes that are each a kubelet and a containerd in
// their own namespaces, no kube-proxy, the images of make images imported
// into every node, and the product installed by hack/deploy.sh from
// config/default. It walks through it with real traffic: from a pod and
// from every node to a ClusterIP, from an outside client to a NodePort and
// to a LoadBalancer address; the three kinds and the agent pods in kubectl;
// a config change rolled out node by node after approval; a ProxyPolicy's
// effect on traffic. It tears everything down at the end, on failure and on
// Ctrl-C; -keep waits for Ctrl-C before it does.
//
// Run it with "make demo" (or "make demo KEEP=1"); it needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

func main() {
	keep := flag.Bool("keep", false, "leave the cluster running until Ctrl-C, and print how to use it")
	down := flag.Bool("down", false, "tear down every cluster left by earlier runs and exit")
	nodes := flag.Int("nodes", 3, "number of nodes")
	flag.Parse()
	if *down {
		for _, id := range kubenode.ListClusters() {
			if err := kubenode.TearDown(id); err != nil {
				fmt.Fprintln(os.Stderr, id, err)
			}
			fmt.Println("removed", id)
		}
		return
	}
	os.Exit(run(*keep, *nodes))
}

type demo struct {
	c     *shipped.Cluster
	step  int
	steps int
	start time.Time
}

func (d *demo) progress(format string, args ...any) {
	d.step++
	fmt.Printf("\n==> [%d/%d %5.1fs] %s\n", d.step, d.steps, time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func run(keep bool, nodes int) (code int) {
	d := &demo{steps: 8, start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\n==> %v: stopping and tearing down (again to force)\n", s)
		cancel()
		<-sigs
		if d.c != nil {
			_ = d.c.Down()
		}
		os.Exit(130)
	}()

	d.progress("Bringing up a %d-node cluster: a kubelet and a containerd per node, no kube-proxy", nodes)
	before, err := kubenode.TakeHostState()
	if err != nil {
		return fail(nil, "reading the host's state", err)
	}
	c, err := shipped.Up(ctx, shipped.Options{Nodes: nodes, Progress: os.Stdout})
	if c != nil {
		d.c = c
		defer func() { code = d.tearDown(ctx, code, keep, before) }()
	}
	if err != nil {
		return fail(c, "bringing up the cluster", err)
	}
	if err := d.walk(ctx); err != nil {
		return fail(c, fmt.Sprintf("step %d", d.step), err)
	}
	return 0
}

// tearDown waits for Ctrl-C first when keep is set (and the demo
// succeeded), then tears the cluster down and checks that the host holds
// nothing of it; the folder with every log is removed after a success and
// kept after a failure.
func (d *demo) tearDown(ctx context.Context, code int, keep bool, before *kubenode.HostState) int {
	c := d.c
	if keep && code == 0 {
		printKeep(c)
		<-ctx.Done()
	}
	fmt.Printf("\n==> Tearing down %s\n", c.ID)
	fp := kubenode.CaptureFootprint(c.ID)
	if err := c.Down(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		code = 1
	}
	if code == 0 {
		_ = c.RemoveDir()
	}
	left, err := before.Leftovers(c.ID, fp)
	if err != nil {
		left = append(left, err.Error())
	}
	for _, l := range left {
		if code != 0 && strings.HasPrefix(l, "folder ") {
			continue // kept for its logs
		}
		fmt.Fprintln(os.Stderr, "==> LEFT ON THE HOST:", l)
		code = 1
	}
	if code == 0 {
		fmt.Printf("==> Done in %.1fs; checked: nothing of %s is left on the host (no namespace, mount, process, cgroup, rule or file)\n",
			time.Since(d.start).Seconds(), c.ID)
	} else {
		fmt.Fprintf(os.Stderr, "==> Logs kept in %s\n", c.Dir)
	}
	return code
}

func fail(c *shipped.Cluster, where string, err error) int {
	fmt.Fprintf(os.Stderr, "\n==> FAILED at %s: %v\n", where, err)
	if c != nil {
		fmt.Fprintf(os.Stderr, "==> Logs: %s/logs (control plane), %s/node-N/logs (containerd, kubelet), %s/node-N/pod-logs (pods)\n", c.Dir, c.Dir, c.Dir)
	}
	return 1
}

func printKeep(c *shipped.Cluster) {
	fmt.Printf(`
==> The cluster %s stays up until Ctrl-C (KEEP=1).
    kubectl:            sudo %s get gatewayconfigs,proxynodes,proxypolicies
    a shell on node-1:  sudo ip netns exec %s bash   (its containerd: nsenter -t %d -m -n ctr -n k8s.io containers ls)
    the outside client: sudo ip netns exec %s bash
    logs:               %s
`, c.ID, c.KubectlPath, c.Nodes[0].NS.Name, c.Nodes[0].Holder.Pid(), c.ClientNS.Name, c.Dir)
}

func (d *demo) kubectl(args ...string) error {
	out, err := d.c.Kubectl(args...)
	fmt.Print(indent(out))
	return err
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = "    " + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func (d *demo) manifest(name string) string {
	return filepath.Join(d.c.RepoRoot(), "test", "cluster", "manifests", name)
}

func (d *demo) walk(ctx context.Context) error {
	c := d.c
	if err := d.kubectl("get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	if err := d.install(ctx); err != nil {
		return err
	}
	if err := d.samples(ctx); err != nil {
		return err
	}
	web, err := d.backends(ctx)
	if err != nil {
		return err
	}

	d.progress("Real requests to demo/web: from a pod and every node to its ClusterIP, from the client to its NodePort and LoadBalancer address")
	if err := d.spread(ctx, web); err != nil {
		return err
	}

	d.progress("kubectl get gatewayconfigs,proxynodes,proxypolicies")
	if err := d.kubectl("get", "gatewayconfigs,proxynodes", "-o", "wide"); err != nil {
		return err
	}
	if err := d.kubectl("get", "proxypolicies", "-A", "-o",
		`custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,ACCEPTED:.status.conditions[?(@.type=="Accepted")].reason,PROGRAMMED:.status.conditions[?(@.type=="Programmed")].reason,MESSAGE:.status.conditions[?(@.type=="Accepted")].message`); err != nil {
		return err
	}

	d.progress("A config change under the Manual strategy: pending, approved, rolled out node by node")
	if err := d.rollout(ctx); err != nil {
		return err
	}

	d.progress("ProxyPolicy demo/web-sticky (ClientIP session affinity on web): every node now sticks to one pod")
	if err := d.policy(ctx, "web-affinity.yaml", "web-sticky"); err != nil {
		return err
	}
	if err := d.fromNodes(ctx, web, sticky); err != nil {
		return err
	}

	d.progress("ProxyPolicy demo/web-rotate replaces it (RoundRobin): every node rotates strictly over the pods")
	if _, err := c.Kubectl("delete", "proxypolicy", "-n", "demo", "web-sticky"); err != nil {
		return err
	}
	if err := d.policy(ctx, "web-roundrobin.yaml", "web-rotate"); err != nil {
		return err
	}
	return d.fromNodes(ctx, web, rotate)
}

// install installs the product as docs/install.md tells a user on a
// cluster without kube-proxy, and shows the operator.
func (d *demo) install(ctx context.Context) error {
	c := d.c
	d.progress("Installing the product as docs/install.md says: the API server's address, then hack/deploy.sh (config/default with %s)", c.ManagerImage())
	fmt.Printf("    kubectl -n %s create configmap %s KUBERNETES_SERVICE_HOST=%s KUBERNETES_SERVICE_PORT=%d\n",
		shipped.OperatorNamespace, shipped.APIServerConfigMap, clusternet.APIServerIP, clusternet.APIServerPort)
	fmt.Printf("    IMG=%s AGENT_IMG=%s hack/deploy.sh\n", c.ManagerImage(), c.AgentImage())
	var out strings.Builder
	if err := c.Install(ctx, &out); err != nil {
		fmt.Print(indent(out.String()))
		return err
	}
	fmt.Printf("      %d objects applied server-side; the operator's Deployment is available\n", strings.Count(out.String(), "serverside-applied"))
	return d.kubectl("-n", shipped.OperatorNamespace, "get", "deployments,pods", "-o", "wide")
}

// samples applies config/samples and the workload, and shows the agent
// pods once the GatewayConfig default rolled out.
func (d *demo) samples(ctx context.Context) error {
	c := d.c
	d.progress("Applying config/samples and the workload: echo pods behind demo/web (LoadBalancer) and default/checkout")
	if err := d.kubectl("apply", "-f", filepath.Join(c.RepoRoot(), "config", "samples")); err != nil {
		return err
	}
	if err := d.kubectl("apply", "-f", d.manifest("web.yaml")); err != nil {
		return err
	}
	gc, err := shipped.WaitRolledOut(ctx, c.Client, "default", 3*time.Minute)
	if err != nil {
		return err
	}
	if _, err := c.WaitAgentsReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("    GatewayConfig default rolled out: revision %s ready on %d/%d nodes; its DaemonSet runs the agent pods:\n",
		gc.Status.CurrentRevision, gc.Status.ReadyNodes, gc.Status.DesiredNodes)
	return d.kubectl("-n", shipped.OperatorNamespace, "get", "pods", "-l", "app.kubernetes.io/name=synterix-agent", "-o", "wide")
}

// web is the demo Service and where to reach it.
type web struct {
	vip, lb string
	pods    []string
	client  *shipped.Pod
}

// backends waits for the web and checkout pods and the EndpointSlice
// controller's slices, writes web's LoadBalancer address as a cloud's
// controller would, and starts a client pod.
func (d *demo) backends(ctx context.Context) (*web, error) {
	c := d.c
	for _, s := range []struct{ ns, name string }{{"demo", "web"}, {"default", "checkout"}} {
		if _, err := c.Kubectl("-n", s.ns, "rollout", "status", "statefulset/"+s.name, "--timeout=3m"); err != nil {
			return nil, err
		}
	}
	if err := d.kubectl("-n", "demo", "get", "pods,endpointslices", "-o", "wide"); err != nil {
		return nil, err
	}
	var svc corev1.Service
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "web"}, &svc); err != nil {
		return nil, err
	}
	w := &web{vip: fmt.Sprintf("%s:80", svc.Spec.ClusterIP), lb: clusternet.NextLoadBalancerIP()}
	if err := shipped.SetLoadBalancerIngress(ctx, c.Client, &svc, w.lb); err != nil {
		return nil, err
	}
	fmt.Printf("    status.loadBalancer.ingress of demo/web = %s (as a cloud's controller would write it; the client routes it via node-1)\n", w.lb)
	w.lb += ":80"
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace("demo"), client.MatchingLabels{"app": "web"}); err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		w.pods = append(w.pods, p.Name)
	}
	clients, err := c.RunPods(ctx, "demo", "client", c.Nodes[:1], shipped.PodOptions{TCP: []int{8080}})
	if err != nil {
		return nil, err
	}
	w.client = clients[0]
	fmt.Printf("    pod demo/%s on %s (%s) will send requests; it is no backend\n", w.client.Name, w.client.Node.Name, w.client.IP)
	return w, nil
}

// policy applies a ProxyPolicy manifest, waits until it is Programmed on
// every node and prints the policies.
func (d *demo) policy(ctx context.Context, file, name string) error {
	c := d.c
	if err := d.kubectl("apply", "-f", d.manifest(file)); err != nil {
		return err
	}
	if err := poll.Until(ctx, 2*time.Minute, "ProxyPolicy "+name+" Programmed", func(ctx context.Context) (bool, string, error) {
		var p proxyv1alpha1.ProxyPolicy
		if err := c.Client.Get(ctx, types.NamespacedName{Namespace: "demo", Name: name}, &p); err != nil {
			return false, err.Error(), nil
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == proxyv1alpha1.ConditionProgrammed {
				return cond.Status == "True" && p.Status.ObservedGeneration == p.Generation &&
					p.Status.Nodes.Programmed == int32(len(c.Nodes)), cond.Reason + ": " + cond.Message, nil
			}
		}
		return false, "no Programmed condition", nil
	}); err != nil {
		return err
	}
	return d.kubectl("get", "proxypolicies", "-n", "demo")
}

// What traffic expects of the answers.
type expectation int

const (
	spread expectation = iota // every pod answers
	sticky                    // one pod answers everything
	rotate                    // every pod answers exactly as often
)

const perSource = 30

// send waits until perSource requests from ns to target meet want, and
// prints who answered.
func (d *demo) send(ctx context.Context, label string, ns *netns.NS, target string, pods int, want expectation) error {
	var a netns.Answers
	err := poll.Until(ctx, 90*time.Second, label+" -> "+target, func(context.Context) (bool, string, error) {
		a = ns.Spread("tcp", target, perSource, netns.RequestOptions{})
		switch want {
		case sticky:
			return a.Failures == 0 && len(a.Servers) == 1, a.String(), nil
		case rotate:
			for _, k := range a.Servers {
				if k != perSource/pods {
					return false, a.String(), nil
				}
			}
		}
		return a.Failures == 0 && len(a.Servers) == pods, a.String(), nil
	})
	fmt.Printf("    %-34s %s\n", label+" -> "+target+":", a)
	return err
}

// spread sends requests from the client pod, every node and the client.
func (d *demo) spread(ctx context.Context, w *web) error {
	c := d.c
	if err := d.send(ctx, "pod "+w.client.Name, w.client.NS, w.vip, len(w.pods), spread); err != nil {
		return err
	}
	if err := d.fromNodes(ctx, w, spread); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := d.send(ctx, "client", c.ClientNS, n.IP+":30080", len(w.pods), spread); err != nil {
			return err
		}
	}
	return d.send(ctx, "client", c.ClientNS, w.lb, len(w.pods), spread)
}

// fromNodes sends requests from every node to web's ClusterIP.
func (d *demo) fromNodes(ctx context.Context, w *web, want expectation) error {
	for _, n := range d.c.Nodes {
		if err := d.send(ctx, n.Name, n.NS, w.vip, len(w.pods), want); err != nil {
			return err
		}
	}
	return nil
}

// rollout switches the default GatewayConfig to Manual, changes its spec,
// shows the pending revision, approves it and prints the nodes as they move.
func (d *demo) rollout(ctx context.Context) error {
	c := d.c
	fmt.Println("    kubectl patch gatewayconfig default: rollout.strategy=Manual")
	if _, err := c.Kubectl("patch", "gatewayconfig", "default", "--type=merge", "-p", `{"spec":{"rollout":{"strategy":"Manual"}}}`); err != nil {
		return err
	}
	if _, err := shipped.WaitRolledOut(ctx, c.Client, "default", 2*time.Minute); err != nil {
		return err
	}
	before, err := shipped.ProxyNodes(ctx, c.Client)
	if err != nil {
		return err
	}
	fmt.Println("    kubectl patch gatewayconfig default: syncPeriod 30s -> 45s")
	if _, err := c.Kubectl("patch", "gatewayconfig", "default", "--type=merge", "-p", `{"spec":{"syncPeriod":"45s"}}`); err != nil {
		return err
	}
	var gc proxyv1alpha1.GatewayConfig
	if err := poll.Until(ctx, time.Minute, "a pendingRevision on GatewayConfig default", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: "default"}, &gc); err != nil {
			return false, err.Error(), nil
		}
		return gc.Status.PendingRevision != "", fmt.Sprintf("%+v", gc.Status), nil
	}); err != nil {
		return err
	}
	pending := gc.Status.PendingRevision
	if err := d.kubectl("get", "gatewayconfig", "default"); err != nil {
		return err
	}
	now, err := shipped.ProxyNodes(ctx, c.Client)
	if err != nil {
		return err
	}
	for name, pn := range now {
		if pn.Spec.Revision != before[name].Spec.Revision {
			return fmt.Errorf("node %s moved to %s before approval", name, pn.Spec.Revision)
		}
	}
	fmt.Printf("    no node moved while %s waits for approval\n", pending)
	fmt.Printf("    kubectl patch gatewayconfig default: rollout.approvedRevision=%s\n", pending)
	if _, err := c.Kubectl("patch", "gatewayconfig", "default", "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"rollout":{"approvedRevision":%q}}}`, pending)); err != nil {
		return err
	}
	if err := d.watchNodes(ctx, pending); err != nil {
		return err
	}
	if _, err := shipped.WaitRolledOut(ctx, c.Client, "default", 2*time.Minute); err != nil {
		return err
	}
	return d.kubectl("get", "gatewayconfig", "default")
}

// watchNodes prints every change of a node's assigned or applied revision
// until every node applied rev.
func (d *demo) watchNodes(ctx context.Context, rev string) error {
	seen := map[string]string{}
	return poll.Until(ctx, 3*time.Minute, "revision "+rev+" applied on every node", func(ctx context.Context) (bool, string, error) {
		pns, err := shipped.ProxyNodes(ctx, d.c.Client)
		if err != nil {
			return false, err.Error(), nil
		}
		names := make([]string, 0, len(pns))
		for n := range pns {
			names = append(names, n)
		}
		sort.Strings(names)
		done := 0
		for _, n := range names {
			pn := pns[n]
			state := fmt.Sprintf("assigned %s, applied %s", pn.Spec.Revision, pn.Status.AppliedRevision)
			if seen[n] != state {
				seen[n] = state
				fmt.Printf("    %6.1fs %s: %s\n", time.Since(d.start).Seconds(), n, state)
			}
			if pn.Spec.Revision == rev && pn.Status.AppliedRevision == rev {
				done++
			}
		}
		return done == len(names), fmt.Sprintf("%d/%d nodes at %s", done, len(names), rev), nil
	})
}
