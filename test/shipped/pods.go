package shipped

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/echo"
	"github.com/synterix/synterix-kube-proxy/test/kubenode"
	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// ProbePort is the echo pods' HTTP port: their readiness probe asks
// /readyz there.
const ProbePort = 9090

// Pod is an echo pod the harness runs, and its network namespace.
type Pod struct {
	Name, Namespace, IP string
	// IPs are the pod's addresses, one per family, IP (the primary) first.
	IPs  []string
	UID  string
	Node *kubenode.Node
	// NS is the pod's network namespace (attached under a name of the
	// cluster): traffic sent from it leaves from the pod. For a
	// hostNetwork pod it is the node's namespace.
	NS *netns.NS
}

// PodOptions shape the echo pods of RunPods.
type PodOptions struct {
	// TCP and UDP are the ports the echo server serves (test/echo).
	TCP, UDP []int
	// Labels are added to every pod.
	Labels map[string]string
	// HostNetwork runs the pods in their node's network namespace; they
	// serve only their probe port then, HTTPPort.
	HostNetwork bool
	// HTTPPort is the probe port; default ProbePort.
	HTTPPort int
}

// EchoPod is the manifest of an echo pod on node: the echo image, its
// identity the pod's name, ready once it serves (an HTTP probe every
// second), gone a second after its deletion.
func (c *Cluster) EchoPod(namespace, name, node string, o PodOptions) *corev1.Pod {
	port := o.HTTPPort
	if port == 0 {
		port = ProbePort
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			HostNetwork:                   o.HostNetwork,
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name:            "echo",
				Image:           c.Images["echo"].Image,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"-tcp=" + echo.JoinPorts(o.TCP), "-udp=" + echo.JoinPorts(o.UDP), fmt.Sprintf("-http=%d", port)},
				Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt(port)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// RunPods creates one echo pod per node given, named <prefix>-<n>, waits
// until each is Ready and attaches its network namespace.
func (c *Cluster) RunPods(ctx context.Context, namespace, prefix string, nodes []*kubenode.Node, o PodOptions) ([]*Pod, error) {
	var pods []*corev1.Pod
	for _, n := range nodes {
		c.mu.Lock()
		c.seq++
		name := fmt.Sprintf("%s-%d", prefix, c.seq)
		c.mu.Unlock()
		p := c.EchoPod(namespace, name, n.Name, o)
		if err := c.Client.Create(ctx, p); err != nil {
			return nil, fmt.Errorf("create pod %s/%s: %w", namespace, name, err)
		}
		pods = append(pods, p)
	}
	var out []*Pod
	for i, p := range pods {
		got, err := c.WaitPodReady(ctx, namespace, p.Name, 3*time.Minute)
		if err != nil {
			return out, err
		}
		pod, err := c.attach(got, nodes[i])
		if err != nil {
			return out, err
		}
		out = append(out, pod)
	}
	return out, nil
}

// attach names the pod's network namespace after the cluster.
func (c *Cluster) attach(p *corev1.Pod, n *kubenode.Node) (*Pod, error) {
	pids := n.Cgroups.PodPids(string(p.UID))
	if len(pids) == 0 {
		return nil, fmt.Errorf("pod %s/%s: no process in node %s's cgroups", p.Namespace, p.Name, n.Name)
	}
	ns, err := c.AttachNS("pod-"+p.Namespace+"-"+p.Name, pids[0])
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return &Pod{Name: p.Name, Namespace: p.Namespace, IP: p.Status.PodIP, IPs: ips, UID: string(p.UID), Node: n, NS: ns}, nil
}

// DeletePod deletes the pod, waits until it is gone and removes the name
// of its namespace.
func (c *Cluster) DeletePod(ctx context.Context, p *Pod) error {
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := client.IgnoreNotFound(c.Client.Delete(ctx, obj)); err != nil {
		return err
	}
	err := poll.Until(ctx, 2*time.Minute, "pod "+p.Namespace+"/"+p.Name+" gone", func(ctx context.Context) (bool, string, error) {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	return errors.Join(err, kubenode.DetachNS(p.NS))
}

// AgentPod returns the agent pod running on node, of any GatewayConfig.
func (c *Cluster) AgentPod(ctx context.Context, node string) (*corev1.Pod, error) {
	var list corev1.PodList
	if err := c.Client.List(ctx, &list, client.InNamespace(OperatorNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": "synterix-agent"}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == node && p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no agent pod on %s", node)
}

// WaitAgentsReady waits until every node runs a Ready agent pod that is
// not the one named in old (pods replaced since), and returns them by
// node.
func (c *Cluster) WaitAgentsReady(ctx context.Context, timeout time.Duration, old ...string) (map[string]*corev1.Pod, error) {
	out := map[string]*corev1.Pod{}
	err := poll.Until(ctx, timeout, "a ready agent pod on every node", func(ctx context.Context) (bool, string, error) {
		clear(out)
		var state []string
		for _, n := range c.Nodes {
			p, err := c.AgentPod(ctx, n.Name)
			switch {
			case err != nil:
				state = append(state, err.Error())
			case slices.Contains(old, p.Name):
				state = append(state, n.Name+": still "+p.Name)
			case !podReady(p):
				state = append(state, n.Name+": "+p.Name+" not ready")
			default:
				out[n.Name] = p
			}
		}
		return len(out) == len(c.Nodes), strings.Join(state, "; "), nil
	})
	return out, err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
