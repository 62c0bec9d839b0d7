package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// AgentOptions are the operator-wide settings of the agent DaemonSets.
type AgentOptions struct {
	// Namespace is the operator's namespace, where the DaemonSets and
	// config revisions live, and the agents' ServiceAccount.
	Namespace string
	// DefaultImage is the agent image when spec.agent.image is empty.
	DefaultImage string
	// AllowedImages is the allow-list of agent images (see
	// ParseImageAllowList); empty allows the default image's repository
	// only.
	AllowedImages []string
	// HealthPort serves the agent's /healthz and /readyz.
	HealthPort int32
	// MetricsPort serves the agent's /metrics.
	MetricsPort int32
}

// Labels of the objects the operator creates for a GatewayConfig.
const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelManagedBy = "app.kubernetes.io/managed-by"
	agentAppName   = "synterix-agent"
	managedBy      = "synterix-operator"
)

// agentObjectName is the name of a GatewayConfig's DaemonSet. Long names
// are cut and suffixed with a hash so that pod names stay valid.
func agentObjectName(gc string) string {
	name := "synterix-agent-" + gc
	if len(name) <= 52 {
		return name
	}
	sum := sha256.Sum256([]byte(gc))
	return name[:41] + "-" + hex.EncodeToString(sum[:5])
}

// labelValue returns a valid label value for a GatewayConfig name: names of up
// to 63 characters as they are.
func labelValue(gc string) string {
	if len(gc) <= 63 {
		return gc
	}
	sum := sha256.Sum256([]byte(gc))
	return gc[:52] + "-" + hex.EncodeToString(sum[:5])
}

func agentLabels(gc string) map[string]string {
	return map[string]string{
		labelName:                                agentAppName,
		labelInstance:                            labelValue(gc),
		labelManagedBy:                           managedBy,
		proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc),
	}
}

// nodeAffinity places a GatewayConfig's agents on exactly the nodes it wins: its
// own node selector, less the nodes an older GatewayConfig won (one
// metadata.name NotIn requirement each, as the API allows one value per field
// requirement). The operator never labels nodes: they belong to humans.
func nodeAffinity(sel *metav1.LabelSelector, lost []string) *corev1.Affinity {
	var term corev1.NodeSelectorTerm
	if sel != nil {
		keys := make([]string, 0, len(sel.MatchLabels))
		for k := range sel.MatchLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			term.MatchExpressions = append(term.MatchExpressions, corev1.NodeSelectorRequirement{
				Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{sel.MatchLabels[k]},
			})
		}
		for _, e := range sel.MatchExpressions {
			term.MatchExpressions = append(term.MatchExpressions, corev1.NodeSelectorRequirement{
				Key: e.Key, Operator: corev1.NodeSelectorOperator(e.Operator), Values: append([]string(nil), e.Values...),
			})
		}
	}
	for _, n := range lost {
		term.MatchFields = append(term.MatchFields, corev1.NodeSelectorRequirement{
			Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{n},
		})
	}
	if len(term.MatchExpressions) == 0 && len(term.MatchFields) == 0 {
		return nil
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}},
	}}
}

// agentDaemonSet builds the agent DaemonSet of a GatewayConfig: the pod
// template of the revision being rolled out (tmpl) with its hash marks, on
// the nodes the GatewayConfig's node selector picks less those it lost.
// Its update strategy is OnDelete: the DaemonSet controller never replaces
// a running agent pod by itself; the operator deletes each node's pod when
// the rollout reaches the node (replaceAgentPods), and the controller then
// creates the new one from this template. Two agents never run on one node:
// the new pod claims the agent's host ports (host network), so it is not
// scheduled there before the old one has exited. The rollout settings
// appear nowhere here.
func agentDaemonSet(gc *proxyv1alpha1.GatewayConfig, tmpl *podTemplate, lost []string, o AgentOptions) *appsv1.DaemonSet {
	labels := agentLabels(gc.Name)
	pod := tmpl.marked()
	pod.Spec.Affinity = nodeAffinity(gc.Spec.NodeSelector, lost)
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: agentObjectName(gc.Name), Namespace: o.Namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{labelName: agentAppName, labelInstance: labelValue(gc.Name)}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType},
			Template:       pod,
		},
	}
}

// agentPodTemplate is the agent pod template the operator builds for a
// GatewayConfig's agent settings: what a revision holds, without the node
// affinity (which follows the nodes of the moment) and the hash marks.
func agentPodTemplate(gcName string, agent *proxyv1alpha1.AgentSpec, o AgentOptions) corev1.PodTemplateSpec {
	if agent == nil {
		agent = &proxyv1alpha1.AgentSpec{}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: agentLabels(gcName)},
		Spec:       agentPodSpec(agent, o),
	}
}

// agentPodSpec is the agent pod: host network, tolerating every taint unless
// told otherwise, with the host paths iptables and IPVS need.
func agentPodSpec(agent *proxyv1alpha1.AgentSpec, o AgentOptions) corev1.PodSpec {
	tolerations := agent.Tolerations
	if tolerations == nil {
		tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	hostPathFile := corev1.HostPathFileOrCreate
	hostPathDir := corev1.HostPathDirectory
	return corev1.PodSpec{
		ServiceAccountName:            AgentServiceAccount,
		HostNetwork:                   true,
		DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
		PriorityClassName:             agent.PriorityClassName,
		Tolerations:                   tolerations,
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		Containers:                    []corev1.Container{agentContainer(agent, o)},
		Volumes: []corev1.Volume{
			{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/xtables.lock", Type: &hostPathFile}}},
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "proc-sys-net", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/proc/sys/net", Type: &hostPathDir}}},
		},
	}
}

// agentContainer is the agent container: its image, flags, probes and the
// least privilege the kernel backends need.
func agentContainer(agent *proxyv1alpha1.AgentSpec, o AgentOptions) corev1.Container {
	image := agent.Image
	if image == "" {
		image = o.DefaultImage
	}
	var resources corev1.ResourceRequirements
	if agent.Resources != nil {
		resources = *agent.Resources
	}
	return corev1.Container{
		Name:            agentContainerName,
		Image:           image,
		ImagePullPolicy: agent.ImagePullPolicy,
		Command:         []string{"/agent"},
		Args:            AgentArgs(agent, o),
		Env: []corev1.EnvVar{
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		// On a node without kube-proxy the kubernetes Service's ClusterIP
		// works only once this agent has programmed it: the optional
		// ConfigMap gives the API server's real address
		// (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT), as it does
		// to the operator.
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: APIServerConfigMap}, Optional: ptr.To(true)}}},
		Ports: []corev1.ContainerPort{
			{Name: "health", ContainerPort: o.HealthPort, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: o.MetricsPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}},
			PeriodSeconds: 5, FailureThreshold: 3,
		},
		Resources: resources,
		SecurityContext: &corev1.SecurityContext{
			// iptables and IPVS need NET_ADMIN; raw sockets for conntrack and
			// ipset need NET_RAW. Nothing else.
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsUser:                ptr.To[int64](0),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
			{Name: "tmp", MountPath: "/tmp"},
			// The net.* sysctls the backends write (IPVS, route_localnet,
			// conntrack): /proc/sys is read-only in a container that is not
			// privileged, so only the host's /proc/sys/net is mounted
			// writable.
			{Name: "proc-sys-net", MountPath: agentSysctlRoot + "/net"},
		},
	}
}

// AgentArgs are the agent container's arguments for the agent settings of
// a revision; cmd/agent's tests parse them as the DaemonSet passes them.
func AgentArgs(agent *proxyv1alpha1.AgentSpec, o AgentOptions) []string {
	args := []string{
		"--node-name=$(NODE_NAME)",
		"--sysctl-root=" + agentSysctlRoot,
		fmt.Sprintf("--health-addr=:%d", o.HealthPort),
		// Every host interface, so HTTPS behind the API server's
		// authentication and authorization (see agent/secureserve).
		fmt.Sprintf("--metrics-addr=:%d", o.MetricsPort),
		"--metrics-secure",
	}
	if agent != nil && agent.LogVerbosity != nil {
		args = append(args, fmt.Sprintf("-v=%d", *agent.LogVerbosity))
	}
	return args
}

// agentSysctlRoot is where the agent container sees the host's sysctls.
const agentSysctlRoot = "/host/proc/sys"

// AgentServiceAccount, in the operator's namespace, is the ServiceAccount of
// every agent, shipped in config/agent with its bindings: the operator
// creates no ServiceAccount and no binding.
const AgentServiceAccount = "synterix-agent"

// APIServerConfigMap, in the operator's namespace, holds the API server's
// address for the operator and the agents, for clusters whose kubernetes
// Service is not reachable before the agent runs (no kube-proxy).
const APIServerConfigMap = "synterix-apiserver"
