package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// MissingError says a piece of the product the harness needs is not in the
// tree yet (a binary, a config folder). Tests skip on it, naming the piece.
type MissingError struct{ Piece string }

func (e *MissingError) Error() string { return "missing: " + e.Piece }

// IsMissing reports whether err is a MissingError.
func IsMissing(err error) bool {
	var m *MissingError
	return errors.As(err, &m)
}

// OperatorNamespace is the namespace config/default deploys the operator to,
// known once InstallOperator ran.
func (c *Cluster) OperatorNamespace() string { return c.operatorNS }

// InstallOperator renders config/default (kubectl kustomize), applies
// everything in it but the manager's Deployment, and runs the Deployment's
// container as a process in the control-plane namespace, the way kubelet
// would: same arguments and environment, the ServiceAccount's token in a
// kubeconfig. config/agent (the agent's ClusterRole) is applied too.
func (c *Cluster) InstallOperator(ctx context.Context) error {
	bin := filepath.Join(c.opts.RepoRoot, "bin", "manager")
	if _, err := os.Stat(bin); err != nil {
		return &MissingError{Piece: "bin/manager (cmd/manager, issue 3): run 'make build'"}
	}
	def := filepath.Join(c.opts.ConfigDir, "default")
	if _, err := os.Stat(filepath.Join(def, "kustomization.yaml")); err != nil {
		return &MissingError{Piece: "config/default/kustomization.yaml (issue 3)"}
	}
	agentDir := filepath.Join(c.opts.ConfigDir, "agent")
	if !fileExists(filepath.Join(agentDir, "kustomization.yaml")) {
		return &MissingError{Piece: "config/agent/kustomization.yaml (the agent's RBAC, issue 6)"}
	}
	objs, err := c.kustomize(def)
	if err != nil {
		return err
	}
	// config/default may or may not include config/agent: apply both, once.
	more, err := c.kustomize(agentDir)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var all []*unstructured.Unstructured
	for _, o := range append(objs, more...) {
		key := o.GetAPIVersion() + "/" + o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if !seen[key] {
			seen[key] = true
			all = append(all, o)
		}
	}
	objs = all
	var deploy *appsv1.Deployment
	var apply bytes.Buffer
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			deploy = &appsv1.Deployment{}
			data, _ := o.MarshalJSON()
			if err := yaml.Unmarshal(data, deploy); err != nil {
				return fmt.Errorf("decode the manager Deployment: %w", err)
			}
			continue
		case "DaemonSet":
			continue // the operator's own job
		}
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return err
		}
		apply.WriteString("---\n")
		apply.Write(data)
	}
	if deploy == nil {
		return &MissingError{Piece: "a Deployment of the manager in config/default (issue 3)"}
	}
	if _, err := c.KubectlInput(apply.Bytes(), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return fmt.Errorf("apply config/default: %w", err)
	}
	c.operatorNS = deploy.Namespace
	spec := deploy.Spec.Template.Spec
	if len(spec.Containers) == 0 {
		return errors.New("the manager Deployment has no container")
	}
	ctr := spec.Containers[0]
	for _, ct := range spec.Containers {
		if ct.Name == "manager" {
			ctr = ct
		}
	}
	sa := spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	kubeconfig, err := c.serviceAccountKubeconfig(ctx, deploy.Namespace, sa, "manager")
	if err != nil {
		return err
	}
	env := []string{"KUBECONFIG=" + kubeconfig}
	env = append(env, containerEnv(ctr, deploy.Namespace, "")...)
	args := append([]string{bin}, ctr.Args...)
	c.Manager = c.newProcess("manager", c.CP, args...)
	c.Manager.Env = env
	if err := c.Manager.Start(); err != nil {
		return err
	}
	return c.waitProcessHealthy(ctx, c.Manager, c.CP, probeURL(ctr, "127.0.0.1"))
}

// containerEnv resolves a container's environment the way kubelet would for
// the fields the harness knows: literal values, metadata.namespace and
// spec.nodeName.
func containerEnv(ctr corev1.Container, namespace, nodeName string) []string {
	var env []string
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+namespace)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env = append(env, e.Name+"="+nodeName)
		}
	}
	return env
}

// probeURL returns the URL of the container's readiness (else liveness)
// HTTP probe on host, or "" when it has none.
func probeURL(ctr corev1.Container, host string) string {
	p := ctr.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		p = ctr.LivenessProbe
	}
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	port := p.HTTPGet.Port.IntVal
	if port == 0 {
		for _, cp := range ctr.Ports {
			if cp.Name == p.HTTPGet.Port.StrVal {
				port = cp.ContainerPort
			}
		}
	}
	if port == 0 {
		return ""
	}
	return fmt.Sprintf("http://%s:%d%s", host, port, p.HTTPGet.Path)
}

// waitProcessHealthy waits until url answers 200 from inside ns (or, with no
// url, until the process has stayed up for two seconds).
func (c *Cluster) waitProcessHealthy(ctx context.Context, p *netns.Process, ns *netns.NS, url string) error {
	return waitHealthy(ctx, ns.HTTPClient(2*time.Second), url, 90*time.Second, p)
}

// kustomize renders a kustomization with kubectl.
func (c *Cluster) kustomize(dir string) ([]*unstructured.Unstructured, error) {
	out, err := c.Kubectl("kustomize", dir)
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := dec.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// StartAgents starts the agent on every node that does not run one yet. See
// StartAgent.
func (c *Cluster) StartAgents(ctx context.Context) error {
	for _, n := range c.Nodes {
		if n.Agent != nil && n.Agent.Running() {
			continue
		}
		if err := c.StartAgent(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// StartAgent runs the agent of the node as a process in the node's
// namespace, the way kubelet would run the pod of the operator's agent
// DaemonSet there: it waits for the operator to assign the node (its
// ProxyNode) and to create the GatewayConfig's DaemonSet, then runs bin/agent
// with the DaemonSet's arguments and environment and a kubeconfig holding a
// token of the DaemonSet's ServiceAccount, and waits for its health
// endpoint. A node whose agent ran before gets the same command again.
func (c *Cluster) StartAgent(ctx context.Context, n *Node) error {
	if n.Agent != nil {
		if err := n.Agent.Start(); err != nil {
			return err
		}
		return c.waitProcessHealthy(ctx, n.Agent, n.NS, n.healthURL)
	}
	bin := filepath.Join(c.opts.RepoRoot, "bin", "agent")
	if _, err := os.Stat(bin); err != nil {
		return &MissingError{Piece: "bin/agent (cmd/agent, issue 6): run 'make build'"}
	}
	ds, err := c.waitAgentDaemonSet(ctx, n)
	if err != nil {
		return err
	}
	spec := ds.Spec.Template.Spec
	ctr := spec.Containers[0]
	for _, ct := range spec.Containers {
		if ct.Name == "agent" {
			ctr = ct
		}
	}
	kubeconfig, err := c.serviceAccountKubeconfig(ctx, ds.Namespace, spec.ServiceAccountName, "agent-"+n.Name)
	if err != nil {
		return err
	}
	env := containerEnv(ctr, ds.Namespace, n.Name)
	args := []string{bin}
	for _, a := range ctr.Args {
		a = strings.ReplaceAll(a, "$(NODE_NAME)", n.Name)
		if root, ok := strings.CutPrefix(a, "--sysctl-root="); ok {
			a = "--sysctl-root=" + hostPathOf(spec, ctr, root)
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+kubeconfig)
	n.Agent = c.newProcess("agent-"+n.Name, n.NS, args...)
	n.Agent.Env = append(env, "KUBECONFIG="+kubeconfig)
	n.healthURL = probeURL(ctr, n.IP)
	if err := n.Agent.Start(); err != nil {
		return err
	}
	return c.waitProcessHealthy(ctx, n.Agent, n.NS, n.healthURL)
}

// hostPathOf is the host path that a path of the container stands for,
// through its hostPath mounts, as kubelet would mount them: the agent's
// --sysctl-root=/host/proc/sys, under which the pod mounts the host's
// /proc/sys/net at /host/proc/sys/net, is /proc/sys for a process on the
// host. A path no mount explains is returned as it is.
func hostPathOf(spec corev1.PodSpec, ctr corev1.Container, path string) string {
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range ctr.VolumeMounts {
		host, ok := hostPaths[m.Name]
		if !ok {
			continue
		}
		if rest, ok := strings.CutPrefix(path, m.MountPath); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
			return host + rest // the path is in the mount
		}
		if sub, ok := strings.CutPrefix(m.MountPath, path+"/"); ok {
			if root, ok := strings.CutSuffix(host, "/"+sub); ok {
				return root // the mount is below the path, at the same place
			}
		}
	}
	return path
}

// waitAgentDaemonSet waits until the node's ProxyNode names its
// GatewayConfig and that GatewayConfig's DaemonSet exists.
func (c *Cluster) waitAgentDaemonSet(ctx context.Context, n *Node) (*appsv1.DaemonSet, error) {
	deadline := time.Now().Add(60 * time.Second)
	last := "no ProxyNode " + n.Name + " yet"
	for time.Now().Before(deadline) {
		var pn proxyv1alpha1.ProxyNode
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &pn); err == nil && pn.Spec.GatewayConfig != "" {
			var list appsv1.DaemonSetList
			if err := c.Client.List(ctx, &list, client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: pn.Spec.GatewayConfig}); err == nil {
				for i := range list.Items {
					if len(list.Items[i].Spec.Template.Spec.Containers) > 0 {
						return &list.Items[i], nil
					}
				}
			}
			last = "no DaemonSet labelled " + proxyv1alpha1.RevisionGatewayConfigLabel + "=" + pn.Spec.GatewayConfig + " yet"
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	logHint := ""
	if c.Manager != nil {
		logHint = ": see " + c.Manager.LogPath
	}
	return nil, fmt.Errorf("node %s: the operator did not assign it an agent within 60s (%s)%s", n.Name, last, logHint)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
