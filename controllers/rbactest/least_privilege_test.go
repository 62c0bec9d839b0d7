package rbactest

// The seven paths of issue 14 ("Least privilege"), each tested where it is
// enforced: the operator's behaviour, the API server's RBAC, or its
// ValidatingAdmissionPolicies. Paths 6 (agent metrics) and 7 (images, the
// vulnerability check) are tested in cmd/agent and by hack/govulncheck.sh.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/agent/informers"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers"
)

// Path 1: whoever writes a GatewayConfig chose the image every node runs
// as root. The operator now runs only images of the allow-list set at
// install (config/policy's ConfigMap synterix-agent-images), and says why
// it refuses one.
func TestAgentImageAllowList(t *testing.T) {
	ctx := context.Background()
	const evil = "evil.example/root:latest"
	gc := &proxyv1alpha1.GatewayConfig{ObjectMeta: metav1.ObjectMeta{Name: "img"}, Spec: proxyv1alpha1.GatewayConfigSpec{
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"none": "true"}},
		Agent:        &proxyv1alpha1.AgentSpec{Image: evil},
	}}
	if err := fx.admin.Create(ctx, gc); err != nil {
		t.Fatal(err)
	}
	dsKey := client.ObjectKey{Namespace: ns, Name: "synterix-agent-img"}
	eventually(t, "the operator refuses the image and says so in status", func() error {
		ds := &appsv1.DaemonSet{}
		if err := fx.admin.Get(ctx, dsKey, ds); err == nil && ds.Spec.Template.Spec.Containers[0].Image == evil {
			t.Fatalf("the operator runs %s, an image nobody allowed at install, as root on the nodes of GatewayConfig img", evil)
		}
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := fx.admin.Get(ctx, client.ObjectKeyFromObject(gc), cur); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cur.Status.Conditions, proxyv1alpha1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, evil) || !strings.Contains(c.Message, "not an allowed agent image") {
			return fmt.Errorf("Degraded is %+v", c)
		}
		return nil
	})
	eventually(t, "an Event says why", func() error {
		var evs eventsv1.EventList
		if err := fx.admin.List(ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "img" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, evil) {
				return nil
			}
		}
		return errors.New("no Warning Event about GatewayConfig img names the image")
	})
	if err := fx.admin.Get(ctx, dsKey, &appsv1.DaemonSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("a DaemonSet exists for a GatewayConfig whose only revision is refused: %v", err)
	}

	// An image of the allow-list runs.
	const good = "ghcr.io/synterix/synterix-kube-proxy-agent:v9.9.9"
	updateGC(t, "img", func(g *proxyv1alpha1.GatewayConfig) { g.Spec.Agent.Image = good })
	eventually(t, "an allowed image runs", func() error {
		ds := &appsv1.DaemonSet{}
		if err := fx.admin.Get(ctx, dsKey, ds); err != nil {
			return err
		}
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != good {
			return fmt.Errorf("image %s", img)
		}
		return nil
	})
}

func updateGC(t *testing.T, name string, mutate func(*proxyv1alpha1.GatewayConfig)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &proxyv1alpha1.GatewayConfig{}
		if err := fx.admin.Get(context.Background(), client.ObjectKey{Name: name}, cur); err != nil {
			return err
		}
		mutate(cur)
		return fx.admin.Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Path 2: the operator could delete, update and patch any
// ClusterRoleBinding, and create ServiceAccounts. The API server now
// refuses it everything that would let it grant itself or anyone more.
func TestOperatorCannotEscalate(t *testing.T) {
	for _, a := range []authorizationv1.ResourceAttributes{
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "delete", Name: "cluster-admin"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "delete", Name: "system:node-proxier"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "update", Name: "cluster-admin"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "patch", Name: "cluster-admin"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "create"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "list"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Verb: "bind", Name: controllers.AgentClusterRole},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Verb: "escalate", Name: "cluster-admin"},
		{Group: "rbac.authorization.k8s.io", Resource: "rolebindings", Verb: "create", Namespace: ns},
		{Resource: "serviceaccounts", Verb: "create", Namespace: ns},
		{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: ns, Name: "synterix-agent"},
		{Resource: "pods", Verb: "create", Namespace: ns},
		{Resource: "pods", Verb: "create", Namespace: "kube-system"},
		{Resource: "secrets", Verb: "get", Namespace: ns},
		{Resource: "secrets", Verb: "list"},
		{Resource: "configmaps", Verb: "update", Namespace: ns, Name: "synterix-agent-images"},
		{Group: "apps", Resource: "daemonsets", Verb: "create", Namespace: "kube-system"},
		{Resource: "nodes", Verb: "patch"},
		{Group: "admissionregistration.k8s.io", Resource: "validatingadmissionpolicies", Verb: "delete"},
		{Group: "admissionregistration.k8s.io", Resource: "validatingadmissionpolicybindings", Verb: "update"},
		{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Verb: "create"},
	} {
		if allowed(t, operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns}, a) {
			t.Errorf("the operator may %s %s/%s %s (namespace %q)", a.Verb, a.Resource, a.Subresource, a.Name, a.Namespace)
		}
	}
}

// allowed asks the API server's authorizer whether user may do a.
func allowed(t *testing.T, user string, groups []string, a authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar, err := fx.kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: append(groups, "system:authenticated"), ResourceAttributes: &a},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sar.Status.Allowed
}

// Path 3a: a compromised operator wrote any DaemonSet it liked in a
// privileged namespace. The shipped policy now admits in that namespace
// only agent DaemonSets: an allowed image, exactly NET_ADMIN and NET_RAW,
// the agent's two host paths, nothing privileged.
// Each case is the operator's own DaemonSet with one field changed,
// created (dry run) as the operator.
func TestAgentDaemonSetPinned(t *testing.T) {
	ctx := context.Background()
	defaultGC(t)
	base := &appsv1.DaemonSet{}
	if err := fx.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "synterix-agent-default"}, base); err != nil {
		t.Fatal(err)
	}
	op := asOperator(t)
	probe := func(mutate func(*corev1.PodSpec, *corev1.Container)) error {
		ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "pin-probe", Namespace: ns, Labels: base.Labels},
			Spec: *base.Spec.DeepCopy()}
		mutate(&ds.Spec.Template.Spec, &ds.Spec.Template.Spec.Containers[0])
		return op.Create(ctx, ds, client.DryRunAll)
	}
	if err := probe(func(*corev1.PodSpec, *corev1.Container) {}); err != nil {
		t.Fatalf("the operator's own DaemonSet is refused: %v", err)
	}
	hostPath := func(name, path string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}
	}
	cases := []struct {
		name, want string
		mutate     func(*corev1.PodSpec, *corev1.Container)
	}{
		{"an image off the allow-list", "image", func(_ *corev1.PodSpec, c *corev1.Container) { c.Image = "evil.example/root:latest" }},
		{"privileged", "privileged", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.Privileged = ptr.To(true) }},
		{"privilege escalation", "allowPrivilegeEscalation", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		}},
		{"SYS_ADMIN", "capabilities", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.Capabilities.Add = append(c.SecurityContext.Capabilities.Add, "SYS_ADMIN")
		}},
		{"capabilities not dropped", "capabilities", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.Capabilities.Drop = nil }},
		{"the host's root file system", "hostPath", func(p *corev1.PodSpec, c *corev1.Container) {
			p.Volumes = append(p.Volumes, hostPath("root", "/"))
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "root", MountPath: "/host"})
		}},
		{"another path behind an agent volume", "hostPath", func(p *corev1.PodSpec, _ *corev1.Container) {
			for i := range p.Volumes {
				if p.Volumes[i].HostPath != nil && p.Volumes[i].HostPath.Path == "/proc/sys/net" {
					p.Volumes[i].HostPath.Path = "/etc"
				}
			}
		}},
		{"the host's modules, once mounted by the agent", "hostPath", func(p *corev1.PodSpec, c *corev1.Container) {
			p.Volumes = append(p.Volumes, hostPath("lib-modules", "/lib/modules"))
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true})
		}},
		{"a Secret volume", "volumes", func(p *corev1.PodSpec, _ *corev1.Container) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}})
		}},
		{"the host's PID namespace", "hostPID", func(p *corev1.PodSpec, _ *corev1.Container) { p.HostPID = true }},
		{"the host's IPC namespace", "hostIPC", func(p *corev1.PodSpec, _ *corev1.Container) { p.HostIPC = true }},
		{"a shell", "command", func(_ *corev1.PodSpec, c *corev1.Container) { c.Command = []string{"/bin/sh", "-c", "id"} }},
		{"an unknown flag", "args", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.Args = append(c.Args, "--kubeconfig=/host/etc/kubernetes/admin.conf")
		}},
		{"another ServiceAccount", "serviceAccountName", func(p *corev1.PodSpec, _ *corev1.Container) { p.ServiceAccountName = "synterix-operator" }},
		{"an init container", "initContainers", func(p *corev1.PodSpec, c *corev1.Container) {
			p.InitContainers = []corev1.Container{{Name: "init", Image: c.Image, Command: []string{"/agent"}}}
		}},
		{"a second container", "containers", func(p *corev1.PodSpec, c *corev1.Container) {
			extra := c.DeepCopy()
			extra.Name = "second"
			p.Containers = append(p.Containers, *extra)
		}},
		{"seccomp unconfined", "seccomp", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}},
		{"no seccomp profile at all", "seccomp", func(p *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.SeccompProfile = nil
			p.SecurityContext = nil
		}},
		{"an environment variable of its own", "env", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "KUBECONFIG", Value: "/host/etc/kubernetes/admin.conf"})
		}},
		{"an exec probe", "exec probes", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "id"}}}}
		}},
		{"a writable root file system", "readOnlyRootFilesystem", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		}},
	}
	// The first case waits for the API server to load the policy.
	eventually(t, "the policy refuses "+cases[0].name, func() error {
		if probe(cases[0].mutate) == nil {
			return errors.New("allowed")
		}
		return nil
	})
	for _, tc := range cases {
		err := probe(tc.mutate)
		switch {
		case err == nil:
			t.Errorf("as the operator, an agent DaemonSet with %s is admitted", tc.name)
		case !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: refused for another reason (want one naming %q): %v", tc.name, tc.want, err)
		}
	}

	// The operator and the policy agree on which images are allowed, for
	// every kind of entry: the allow-list is widened for the comparison,
	// then put back.
	const list = "ghcr.io/synterix/synterix-kube-proxy-agent, mirror.example/agent:v1.2.3, registry.example:5000/team/, pinned.example/agent@sha256:" +
		"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	allowed, err := controllers.ParseImageAllowList(list)
	if err != nil {
		t.Fatal(err)
	}
	restore := setAllowList(t, list)
	defer restore()
	eventually(t, "the policy reads the widened allow-list", func() error {
		return probe(func(_ *corev1.PodSpec, c *corev1.Container) { c.Image = "registry.example:5000/team/x:1" })
	})
	for _, img := range []string{
		"ghcr.io/synterix/synterix-kube-proxy-agent:v1", "ghcr.io/synterix/synterix-kube-proxy-agent",
		"ghcr.io/synterix/synterix-kube-proxy-agent@sha256:" + strings.Repeat("a", 64),
		"ghcr.io/synterix/synterix-kube-proxy-agent:v1@sha256:" + strings.Repeat("b", 64),
		"ghcr.io/synterix/synterix-kube-proxy-agent-evil:v1", "ghcr.io/synterix/synterix-kube-proxy-agentx",
		"ghcr.io/synterix/synterix-kube-proxy:v1", "evil.example/ghcr.io/synterix/synterix-kube-proxy-agent:v1",
		"mirror.example/agent:v1.2.3", "mirror.example/agent:v1.2.4", "mirror.example/agent",
		"mirror.example/agent:v1.2.3@sha256:" + strings.Repeat("d", 64),
		"registry.example:5000/team/agent:v1", "registry.example:5000/teammate/agent:v1", "registry.example:5000/team",
		"pinned.example/agent@sha256:" + strings.Repeat("c", 64), "pinned.example/agent@sha256:" + strings.Repeat("e", 64),
		"pinned.example/agent:latest",
	} {
		byPolicy := probe(func(_ *corev1.PodSpec, c *corev1.Container) { c.Image = img }) == nil
		if byOperator := controllers.ImageAllowed(img, allowed); byOperator != byPolicy {
			t.Errorf("image %s: the operator allows it %v, the policy %v", img, byOperator, byPolicy)
		}
	}
}

// setAllowList sets the shipped ConfigMap's allow-list, and returns what
// puts the shipped one back.
func setAllowList(t *testing.T, list string) func() {
	t.Helper()
	ctx := context.Background()
	key := client.ObjectKey{Namespace: ns, Name: "synterix-agent-images"}
	set := func(v string) string {
		cm := &corev1.ConfigMap{}
		if err := fx.admin.Get(ctx, key, cm); err != nil {
			t.Fatal(err)
		}
		old := cm.Data["allowedImages"]
		cm.Data["allowedImages"] = v
		if err := fx.admin.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
		return old
	}
	shipped := set(list)
	return func() { set(shipped) }
}

// Path 3b: a manual edit of an agent DaemonSet was never reverted (the
// spec-hash annotation still matched). The operator now puts back what it
// wants of the DaemonSet whenever its spec changes; and an edit of a pinned
// field is refused to anyone, cluster administrators included.
func TestAgentDaemonSetDriftReverted(t *testing.T) {
	ctx := context.Background()
	defaultGC(t)
	key := client.ObjectKey{Namespace: ns, Name: "synterix-agent-default"}
	edit := func(mutate func(*appsv1.DaemonSet)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ds := &appsv1.DaemonSet{}
			if err := fx.admin.Get(ctx, key, ds); err != nil {
				return err
			}
			mutate(ds)
			return fx.admin.Update(ctx, ds)
		})
	}
	err := edit(func(ds *appsv1.DaemonSet) {
		c := &ds.Spec.Template.Spec.Containers[0]
		c.Args = append(c.Args, "-v=9")
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}
		if ds.Spec.Template.Annotations == nil {
			ds.Spec.Template.Annotations = map[string]string{}
		}
		ds.Spec.Template.Annotations["drift"] = "yes"
	})
	if err != nil {
		t.Fatalf("a manual edit: %v", err)
	}
	eventually(t, "the operator reverts a manual edit of the agent DaemonSet", func() error {
		ds := &appsv1.DaemonSet{}
		if err := fx.admin.Get(ctx, key, ds); err != nil {
			return err
		}
		c := ds.Spec.Template.Spec.Containers[0]
		if slices.Contains(c.Args, "-v=9") || c.Resources.Requests != nil || ds.Spec.Template.Annotations["drift"] != "" {
			return fmt.Errorf("still edited: args %q, requests %v, annotations %v", c.Args, c.Resources.Requests, ds.Spec.Template.Annotations)
		}
		return nil
	})
	err = edit(func(ds *appsv1.DaemonSet) {
		c := &ds.Spec.Template.Spec.Containers[0]
		c.Env = append(c.Env, corev1.EnvVar{Name: "LD_PRELOAD", Value: "/tmp/x.so"})
	})
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "env") {
		t.Errorf("an administrator's edit of a pinned field (env): %v, want refused", err)
	}
}

// Path 4: every agent could read every ControllerRevision in the cluster,
// hence every StatefulSet's and DaemonSet's pod template. The agents now
// read revisions in the operator's namespace only.
func TestAgentReadsRevisionsOnlyInOperatorNamespace(t *testing.T) {
	ctx := context.Background()
	defaultGC(t)
	sa := agentServiceAccount(t)
	secret := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "db-template"},
		Data: runtime.RawExtension{Raw: []byte(`{"spec":{"template":{"spec":{"containers":[{"env":[{"name":"PASSWORD","value":"hunter2"}]}]}}}}`)}}
	if err := fx.admin.Create(ctx, secret); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	agent := clientWithToken(t, serviceAccountToken(t, sa, nil))
	var own appsv1.ControllerRevisionList
	if err := agent.List(ctx, &own, client.InNamespace(ns), client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: "default"}); err != nil || len(own.Items) == 0 {
		t.Fatalf("the agent cannot read its config revisions: %d, %v", len(own.Items), err)
	}
	for what, err := range map[string]error{
		"list them in kube-system":     agent.List(ctx, &appsv1.ControllerRevisionList{}, client.InNamespace("kube-system")),
		"list them in every namespace": agent.List(ctx, &appsv1.ControllerRevisionList{}),
		"get kube-system/db-template":  agent.Get(ctx, client.ObjectKeyFromObject(secret), &appsv1.ControllerRevision{}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the agent may %s: %v", what, err)
		}
	}
}

// Path 5: any agent could write any node's ProxyNode status, and so mark
// other nodes Ready. The shipped policy now lets an agent write only the
// status of the ProxyNode of the node its token was issued for (the
// authentication.kubernetes.io/node-name the API server puts in the
// identity of a token bound to a Pod on a Node).
func TestAgentWritesOnlyItsOwnProxyNode(t *testing.T) {
	ctx := context.Background()
	defaultGC(t)
	// The writes below replace the simulated agents' reports: have them
	// report again afterwards.
	defer fx.agents.Sync("n-")
	sa := agentServiceAccount(t)
	tokens := map[string]string{}
	for _, node := range []string{"n-0", "n-1"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent-" + node}, Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "agent", Image: agentImage}}}}
		if err := fx.admin.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		tokens[node] = serviceAccountToken(t, sa, pod)
		// The identity carries the node, or this test proves nothing.
		rev, err := kubernetes.NewForConfigOrDie(tokenConfig(tokens[node])).AuthenticationV1().SelfSubjectReviews().
			Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := rev.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; !slices.Equal(got, authenticationv1.ExtraValue{node}) {
			t.Fatalf("the token bound to pod %s on %s carries node-name %v", pod.Name, node, got)
		}
	}
	// The agent's own status writer (agent/status), as each agent runs it.
	write := func(token, node, version string) error {
		rc, err := informers.NewProxyClient(tokenConfig(token))
		if err != nil {
			t.Fatal(err)
		}
		cur := &proxyv1alpha1.ProxyNode{}
		if err := fx.admin.Get(ctx, client.ObjectKey{Name: node}, cur); err != nil {
			t.Fatal(err)
		}
		w := status.New(rc, node, status.Static{AgentVersion: version}, func() *proxyv1alpha1.ProxyNode { return cur }, func(string) {})
		w.SetSync(status.SyncFacts{LastSync: &proxyv1alpha1.SyncStatus{Time: &metav1.Time{Time: time.Now()}}})
		return w.Flush(ctx)
	}
	if err := write(tokens["n-0"], "n-0", "own"); err != nil {
		t.Fatalf("the agent of n-0 cannot write the status of ProxyNode n-0: %v", err)
	}
	eventually(t, "the agent of n-0 may not write the status of ProxyNode n-1", func() error {
		err := write(tokens["n-0"], "n-1", "forged-by-n-0")
		if err == nil {
			return errors.New("it may")
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "n-1") {
			t.Fatalf("refused for another reason: %v", err)
		}
		return nil
	})
	// A token of the agent's ServiceAccount bound to no Pod names no node.
	if err := write(serviceAccountToken(t, sa, nil), "n-0", "unbound"); err == nil {
		t.Error("a token that names no node may write a ProxyNode status")
	}
}

// agentServiceAccount is the ServiceAccount of the operator's agent pods.
func agentServiceAccount(t *testing.T) string {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	if err := fx.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "synterix-agent-default"}, ds); err != nil {
		t.Fatal(err)
	}
	return ds.Spec.Template.Spec.ServiceAccountName
}

// serviceAccountToken issues a token of the ServiceAccount, bound to pod
// when it is not nil (as kubelet asks for one).
func serviceAccountToken(t *testing.T, sa string, pod *corev1.Pod) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := fx.kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func tokenConfig(token string) *rest.Config {
	return &rest.Config{Host: fx.cfg.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: fx.cfg.CAData}}
}

func clientWithToken(t *testing.T, token string) client.Client {
	t.Helper()
	c, err := client.New(tokenConfig(token), client.Options{Scheme: fx.scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestShippedPoliciesTypeCheck type-checks every expression of the shipped
// policies against the schemas of the kinds they match, as served by the
// API server, with the type checker kube-controller-manager runs (the test
// API server has no controller manager to fill the policies' status). A
// mistyped field would fail at admission, and with failurePolicy Fail
// refuse every write the policy matches.
func TestShippedPoliciesTypeCheck(t *testing.T) {
	dc := discovery.NewDiscoveryClientForConfigOrDie(fx.cfg)
	checker := &validating.TypeChecker{
		SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc},
		RestMapper:     restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
	}
	n := 0
	for _, o := range fx.shipped {
		if o.GetKind() != "ValidatingAdmissionPolicy" {
			continue
		}
		n++
		p := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		if err := fx.admin.Get(context.Background(), client.ObjectKey{Name: o.GetName()}, p); err != nil {
			t.Fatal(err)
		}
		for _, w := range checker.Check(p) {
			t.Errorf("policy %s, %s: %s", p.Name, w.FieldRef, w.Warning)
		}
	}
	if n < 2 {
		t.Errorf("config/policy ships %d ValidatingAdmissionPolicies, want the agent DaemonSet's and the ProxyNode status's", n)
	}
}
