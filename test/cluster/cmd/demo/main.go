// Command demo brings a three-node cluster up out of network namespaces on
// this machine, runs the operator and the agents as real processes, and walks
// through the product with real traffic: balancing from every node, NodePort
// from an outside client, the CRDs' columns, a config change rolled out node
// by node after approval, and a ProxyPolicy's effect on traffic. It tears the
// cluster down at the end, on failure and on Ctrl-C; -keep leaves it up.
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
	"github.com/synterix/synterix-kube-proxy/test/cluster"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

func main() {
	cluster.RunHelperIfRequested()
	keep := flag.Bool("keep", false, "leave the cluster running and print how to use it and tear it down")
	down := flag.Bool("down", false, "tear down every cluster left by earlier runs (kept ones included) and exit")
	nodes := flag.Int("nodes", 3, "number of nodes")
	flag.Parse()
	if *down {
		for _, id := range cluster.ListClusters() {
			cluster.TearDown(id)
			fmt.Println("removed", id)
		}
		return
	}
	os.Exit(run(*keep, *nodes))
}

type demo struct {
	c     *cluster.Cluster
	step  int
	steps int
	start time.Time
}

func (d *demo) progress(format string, args ...any) {
	d.step++
	fmt.Printf("\n==> [%d/%d %5.1fs] %s\n", d.step, d.steps, time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func run(keep bool, nodes int) (code int) {
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var c *cluster.Cluster
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\n==> %v: stopping and tearing down (again to force)\n", s)
		cancel()
		<-sigs
		if c != nil {
			_ = c.Down()
		}
		os.Exit(130)
	}()

	d := &demo{steps: 10, start: start}
	d.progress("Bringing up a %d-node cluster of network namespaces", nodes)
	var err error
	c, err = cluster.Up(ctx, cluster.Options{Nodes: nodes, Keep: keep, Progress: os.Stdout})
	if c != nil {
		d.c = c
		defer func() {
			if keep && code == 0 {
				printKeep(c)
				return
			}
			fmt.Printf("\n==> Tearing down %s\n", c.ID)
			if err := c.Down(); err != nil {
				fmt.Fprintln(os.Stderr, "teardown:", err)
				code = 1
			}
			if code == 0 {
				c.RemoveDir()
				fmt.Printf("==> Done in %.1fs: nothing left behind (no namespace, link, process or rule)\n", time.Since(start).Seconds())
			} else {
				fmt.Fprintf(os.Stderr, "==> Logs of every process kept in %s\n", c.LogDir)
			}
		}()
	}
	if err != nil {
		return fail(c, "bringing up the cluster", err)
	}
	if err := d.walk(ctx); err != nil {
		return fail(c, fmt.Sprintf("step %d", d.step), err)
	}
	return 0
}

func fail(c *cluster.Cluster, where string, err error) int {
	fmt.Fprintf(os.Stderr, "\n==> FAILED at %s: %v\n", where, err)
	if c != nil {
		fmt.Fprintf(os.Stderr, "==> Process logs: %s (manager.log, agent-node-N.log, kube-apiserver.log, etcd.log)\n", c.LogDir)
	}
	if cluster.IsMissing(err) {
		fmt.Fprintln(os.Stderr, "==> A piece of the product is not in this tree yet; the demo runs only the real thing.")
	}
	return 1
}

func printKeep(c *cluster.Cluster) {
	fmt.Printf(`
==> The cluster %s is left running (KEEP=1).
    kubeconfig: %s
    kubectl:    sudo %s get gatewayconfigs,proxynodes,proxypolicies -A
    a shell on node-1:  sudo ip netns exec %s bash
    the client:         sudo ip netns exec %s bash
    logs:       %s
    tear down:  sudo go run ./test/cluster/cmd/demo -down   (the next 'make demo' also removes it)
`, c.ID, c.Kubeconfig, c.KubectlCommand(), c.Nodes[0].NS.Name, c.ClientNS.Name, c.LogDir)
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
	d.progress("Starting the operator (bin/manager, as config/default deploys it)")
	if err := c.InstallOperator(ctx); err != nil {
		return err
	}
	fmt.Printf("    manager running in %s, namespace %s, log %s\n", c.CP.Name, c.OperatorNamespace(), c.Manager.LogPath)

	d.progress("Applying the samples of config/samples (the edge GatewayConfig selects no node: none is labelled node-role.synterix.io/edge)")
	if err := d.kubectl("apply", "-f", d.manifest("web.yaml")); err != nil {
		return err
	}
	if err := d.kubectl("apply", "-f", filepath.Join(c.RepoRoot(), "config", "samples")); err != nil {
		return err
	}

	d.progress("Starting one agent per node (bin/agent in the node's namespace, as the operator's DaemonSet asks)")
	if err := c.StartAgents(ctx); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		fmt.Printf("    %s: agent pid %d in %s, log %s\n", n.Name, n.Agent.Pid(), n.NS.Name, n.Agent.LogPath)
	}
	gc, err := c.WaitGatewayConfigRolledOut(ctx, "default", 3*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("    GatewayConfig default rolled out: revision %s ready on %d/%d nodes\n", gc.Status.CurrentRevision, gc.Status.ReadyNodes, gc.Status.DesiredNodes)

	d.progress("Starting pods web-1..%d (one per node) and checkout-1..2, and their EndpointSlices", len(c.Nodes))
	web, err := d.pods(ctx, "web", len(c.Nodes))
	if err != nil {
		return err
	}
	checkout, err := d.pods(ctx, "checkout", 2)
	if err != nil {
		return err
	}
	webSvc, err := d.endpoints(ctx, "demo", "web", web)
	if err != nil {
		return err
	}
	if _, err := d.endpoints(ctx, "default", "checkout", checkout); err != nil {
		return err
	}
	vip := fmt.Sprintf("%s:80", webSvc.Spec.ClusterIP)

	d.progress("Real requests to Service demo/web (ClusterIP %s) from every node, and to its NodePort from the client", vip)
	if err := d.traffic(ctx, vip, len(web), spread); err != nil {
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
	if err := d.traffic(ctx, vip, len(web), sticky); err != nil {
		return err
	}

	d.progress("ProxyPolicy demo/web-rotate replaces it (RoundRobin): every node rotates strictly over the pods")
	if _, err := c.Kubectl("delete", "proxypolicy", "-n", "demo", "web-sticky"); err != nil {
		return err
	}
	if err := d.policy(ctx, "web-roundrobin.yaml", "web-rotate"); err != nil {
		return err
	}
	return d.traffic(ctx, vip, len(web), rotate)
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

// pods starts count pods named prefix-1..count, spread over the nodes.
func (d *demo) pods(ctx context.Context, prefix string, count int) ([]*cluster.Pod, error) {
	var out []*cluster.Pod
	for i := 0; i < count; i++ {
		n := d.c.Nodes[i%len(d.c.Nodes)]
		p, err := d.c.AddPod(ctx, n, fmt.Sprintf("%s-%d", prefix, i+1), []int{8080}, []int{8080})
		if err != nil {
			return nil, err
		}
		fmt.Printf("    pod %-10s on %s  %s\n", p.Name, n.Name, p.IP)
		out = append(out, p)
	}
	return out, nil
}

func (d *demo) endpoints(ctx context.Context, ns, name string, pods []*cluster.Pod) (*corev1.Service, error) {
	var svc corev1.Service
	if err := d.c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
		return nil, err
	}
	return &svc, d.c.SetEndpoints(ctx, &svc, cluster.Ready(pods...), 1)
}

// What traffic expects of the answers.
type expectation int

const (
	spread expectation = iota // every pod answers
	sticky                    // one pod answers everything
	rotate                    // every pod answers exactly as often
)

// traffic sends requests from every node (and, for spread, from the client
// to every node's NodePort) and prints who answered.
func (d *demo) traffic(ctx context.Context, vip string, pods int, want expectation) error {
	const perNode = 30
	for _, n := range d.c.Nodes {
		var t netns.Answers
		err := poll.Until(ctx, 90*time.Second, "traffic from "+n.Name+" to "+vip, func(context.Context) (bool, string, error) {
			t = n.NS.Spread("tcp", vip, perNode, netns.RequestOptions{})
			switch want {
			case sticky:
				return t.Failures == 0 && len(t.Servers) == 1, t.String(), nil
			case rotate:
				for _, k := range t.Servers {
					if k != perNode/pods {
						return false, t.String(), nil
					}
				}
			}
			return t.Failures == 0 && len(t.Servers) == pods, t.String(), nil
		})
		fmt.Printf("    from %s: %s\n", n.Name, t)
		if err != nil {
			return err
		}
	}
	if want != spread {
		return nil
	}
	for _, n := range d.c.Nodes {
		addr := fmt.Sprintf("%s:30080", n.IP)
		var t netns.Answers
		err := poll.Until(ctx, 60*time.Second, "NodePort "+addr+" from the client", func(context.Context) (bool, string, error) {
			t = d.c.ClientNS.Spread("tcp", addr, perNode, netns.RequestOptions{})
			return t.Failures == 0 && len(t.Servers) == pods, t.String(), nil
		})
		fmt.Printf("    client -> NodePort %s: %s\n", addr, t)
		if err != nil {
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
	if _, err := c.WaitGatewayConfigRolledOut(ctx, "default", 2*time.Minute); err != nil {
		return err
	}
	before, err := c.ProxyNodes(ctx)
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
	now, err := c.ProxyNodes(ctx)
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
	// Print every change of a node's assigned or applied revision.
	seen := map[string]string{}
	err = poll.Until(ctx, 3*time.Minute, "revision "+pending+" applied on every node", func(ctx context.Context) (bool, string, error) {
		pns, err := c.ProxyNodes(ctx)
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
			if pn.Spec.Revision == pending && pn.Status.AppliedRevision == pending {
				done++
			}
		}
		return done == len(names), fmt.Sprintf("%d/%d nodes at %s", done, len(names), pending), nil
	})
	if err != nil {
		return err
	}
	if _, err := c.WaitGatewayConfigRolledOut(ctx, "default", 2*time.Minute); err != nil {
		return err
	}
	return d.kubectl("get", "gatewayconfig", "default")
}
