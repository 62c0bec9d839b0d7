package controllers

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/rollout"
)

// The agent DaemonSet's update strategy is OnDelete: the DaemonSet controller
// never replaces a running agent by itself. The rollout does, node by node:
// when a node is assigned the target revision and its agent pod runs another
// pod template, the operator deletes that pod and the DaemonSet controller
// creates the target's. A node counts as updated only once its agent reports
// the target's pod template (ProxyNode status.podTemplateHash).

// +kubebuilder:rbac:groups="",namespace=synterix-system,resources=pods,verbs=get;list;watch;delete

// observeAgents reads a GatewayConfig's agent DaemonSet (nil when there is
// none) and its agent pods by node.
func (r *GatewayConfigReconciler) observeAgents(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) (*appsv1.DaemonSet, map[string][]*corev1.Pod, error) {
	ds := &appsv1.DaemonSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: r.Agent.Namespace, Name: agentObjectName(gc.Name)}, ds)
	if apierrors.IsNotFound(err) {
		ds = nil
	} else if err != nil {
		return nil, nil, err
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(r.Agent.Namespace),
		client.MatchingLabels{labelName: agentAppName, labelInstance: labelValue(gc.Name)}); err != nil {
		return nil, nil, err
	}
	byNode := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if n := podNode(p); n != "" {
			byNode[n] = append(byNode[n], p)
		}
	}
	return ds, byNode, nil
}

// podNode returns the node of a DaemonSet pod: where it is bound, else the
// node its DaemonSet controller placed it on (node affinity on metadata.name).
func podNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// revisionTemplates returns the agent pod template of every revision whose
// data can be read; a revision it cannot read is reported when rolled out.
func revisionTemplates(obs *observation) map[string]*podTemplate {
	out := make(map[string]*podTemplate, len(obs.revs))
	for name, rev := range obs.revs {
		data, err := proxyv1alpha1.DecodeRevisionData(rev.Data.Raw)
		if err != nil {
			continue
		}
		if t, err := revisionTemplate(rev, data, obs.ds); err == nil && t != nil {
			out[name] = t
		}
	}
	return out
}

// runsAssigned reports whether a node's agent runs the pod template of the
// revision it is assigned (true when that template is unknown).
func (o *observation) runsAssigned(pn *proxyv1alpha1.ProxyNode) bool {
	return o.runs(pn, pn.Spec.Revision)
}

// runs reports whether a node's agent runs the pod template of revision rev
// (true when that template is unknown).
func (o *observation) runs(pn *proxyv1alpha1.ProxyNode, rev string) bool {
	t := o.templates[rev]
	return t == nil || t.runs(pn.Status.PodTemplateHash)
}

// podsRun reports whether every agent pod of a node runs the pod template
// of revision rev (true when that template is unknown).
func (o *observation) podsRun(node, rev string) bool {
	t := o.templates[rev]
	if t == nil {
		return true
	}
	for _, p := range o.pods[node] {
		if !t.runs(p.Labels[proxyv1alpha1.PodTemplateHashLabel]) {
			return false
		}
	}
	return true
}

// replaceAgentPods deletes the agent pods that run another pod template than
// the target revision's on the nodes assigned it, for the DaemonSet
// controller to replace them from the template just written. The rollout
// planner already bounds how many nodes are assigned a new target and not
// yet Ready; this bounds the replacements under way by maxUnavailable too,
// so that converging on a known-good revision (a rollback) also goes batch
// by batch. Nodes are taken by name.
func (r *GatewayConfigReconciler) replaceAgentPods(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation, pl *rolloutPlan, assigned map[string]string) error {
	t := obs.templates[pl.target]
	if t == nil {
		return nil
	}
	stale := map[string][]*corev1.Pod{}
	var nodes []string
	inflight := 0
	for _, n := range obs.won {
		if assigned[n.Name] != pl.target {
			continue
		}
		for _, p := range obs.pods[n.Name] {
			if p.DeletionTimestamp.IsZero() && !t.runs(p.Labels[proxyv1alpha1.PodTemplateHashLabel]) {
				stale[n.Name] = append(stale[n.Name], p)
			}
		}
		_, changed := pl.Assign[n.Name]
		switch {
		case len(stale[n.Name]) > 0:
			nodes = append(nodes, n.Name)
		case changed || pl.health[n.Name] != rollout.Ready:
			// Being replaced, or applying the target: unavailable.
			inflight++
		}
	}
	if budget := max(pl.MaxUnavailable-inflight, 0); len(nodes) > budget {
		nodes = nodes[:budget]
	}
	if len(nodes) == 0 {
		return nil
	}
	for _, node := range nodes {
		for _, p := range stale[node] {
			if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	agentPodsReplaced.WithLabelValues(gc.Name).Add(float64(len(nodes)))
	r.Recorder.Eventf(gc, nil, corev1.EventTypeNormal, proxyv1alpha1.ReasonAgentPodsReplaced, "ReplaceAgentPods",
		"Replacing the agent pods of %s with pod template %s of revision %s", nameList(nodes, len(nodes)), t.Hash, pl.target)
	logf.FromContext(ctx).Info("Replacing agent pods", "nodes", boundedNames(nodes), "podTemplateHash", t.Hash, "revision", pl.target)
	return nil
}
