package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// A revision runs with an agent pod template: the agent image and every pod
// setting the operator builds. The revisions this operator writes hold it in
// their data, so that the image the operator was released with and its own
// pod settings are part of what names a revision: an operator upgrade that
// changes either makes a new revision, which rolls out like any other
// change. Revisions written by earlier releases hold none; the template they
// ran with is adopted from the DaemonSet at the upgrade (adoptLegacyTemplate).

// podTemplate is the agent pod template of a revision.
type podTemplate struct {
	// Template is the template without node affinity and hash marks.
	Template corev1.PodTemplateSpec
	// Hash names it: the pods running it carry it (PodTemplateHashLabel)
	// and their agents report it (ProxyNode status.podTemplateHash).
	Hash string
	// Legacy: the template of a revision written before revisions held
	// one. The agents and pods that earlier release started carry no hash
	// mark, and run it too.
	Legacy bool
}

// runs reports whether a pod or an agent marked with hash runs the template.
func (t *podTemplate) runs(hash string) bool {
	return hash == t.Hash || t.Legacy && hash == ""
}

// marked returns the template with its hash marks: the pod label, and the
// agent container's environment variable the agent reports.
func (t *podTemplate) marked() corev1.PodTemplateSpec {
	pod := *t.Template.DeepCopy()
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[proxyv1alpha1.PodTemplateHashLabel] = t.Hash
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Name == agentContainerName {
			c.Env = append(c.Env, corev1.EnvVar{Name: proxyv1alpha1.PodTemplateHashEnv, Value: t.Hash})
		}
	}
	return pod
}

// unmarked returns a live template without node affinity and hash marks:
// the inverse of marked.
func unmarked(live *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	pod := *live.DeepCopy()
	pod.Spec.Affinity = nil
	delete(pod.Labels, proxyv1alpha1.PodTemplateHashLabel)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == proxyv1alpha1.PodTemplateHashEnv })
		if len(c.Env) == 0 {
			c.Env = nil
		}
	}
	return pod
}

// newPodTemplate names a template by its hash.
func newPodTemplate(t corev1.PodTemplateSpec, legacy bool) (*podTemplate, error) {
	h, err := hashOf(t)
	if err != nil {
		return nil, err
	}
	return &podTemplate{Template: t, Hash: h, Legacy: legacy}, nil
}

// revisionTemplate returns the agent pod template of a revision: the one
// its data holds, else the one adopted for it at an upgrade, else, for a
// revision an earlier release wrote and this one has not adopted, the
// template that release's DaemonSet (ds, with no hash mark) runs now. It
// returns nil when there is none of these (the template is unknown: any
// agent counts as running it, and rolled out it gets the template this
// operator builds for its agent settings, see targetTemplate).
func revisionTemplate(rev *appsv1.ControllerRevision, data *proxyv1alpha1.RevisionData, ds *appsv1.DaemonSet) (*podTemplate, error) {
	if data.AgentPod != nil {
		return newPodTemplate(*data.AgentPod, false)
	}
	if raw := rev.Annotations[proxyv1alpha1.AdoptedPodTemplateAnnotation]; raw != "" {
		var t corev1.PodTemplateSpec
		if err := json.Unmarshal([]byte(raw), &t); err != nil {
			return nil, fmt.Errorf("annotation %s of revision %s: %w", proxyv1alpha1.AdoptedPodTemplateAnnotation, rev.Name, err)
		}
		return newPodTemplate(t, true)
	}
	if ds == nil || ds.Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel] != "" {
		return nil, nil
	}
	return newPodTemplate(unmarked(&ds.Spec.Template), true)
}

// adoptLegacyTemplate runs on the first reconcile of a GatewayConfig after
// an upgrade from a release whose revisions held no pod template: the
// DaemonSet that release wrote (no hash mark on its template) runs the
// template of the revision it was rolling out, status.updatedRevision. That
// template is recorded on the revision (AdoptedPodTemplateAnnotation; a
// ControllerRevision's data is immutable), so that this revision keeps its
// agents exactly as they are and can be rolled back to exactly, whatever
// this release would build.
func (r *GatewayConfigReconciler) adoptLegacyTemplate(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, obs *observation) error {
	ds := obs.ds
	if ds == nil || ds.Spec.Template.Labels[proxyv1alpha1.PodTemplateHashLabel] != "" {
		return nil
	}
	name := gc.Status.UpdatedRevision
	if name == "" {
		name = gc.Status.CurrentRevision
	}
	rev := obs.revs[name]
	if rev == nil || rev.Annotations[proxyv1alpha1.AdoptedPodTemplateAnnotation] != "" {
		return nil
	}
	data, err := proxyv1alpha1.DecodeRevisionData(rev.Data.Raw)
	if err != nil || data.AgentPod != nil {
		return nil // not a legacy revision; a bad one is reported when rolled out
	}
	t, err := newPodTemplate(unmarked(&ds.Spec.Template), true)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(t.Template)
	if err != nil {
		return err
	}
	patch := client.MergeFrom(rev.DeepCopy())
	if rev.Annotations == nil {
		rev.Annotations = map[string]string{}
	}
	if rev.Labels == nil {
		rev.Labels = map[string]string{}
	}
	rev.Annotations[proxyv1alpha1.AdoptedPodTemplateAnnotation] = string(raw)
	rev.Labels[proxyv1alpha1.PodTemplateHashLabel] = t.Hash
	if err := r.Patch(ctx, rev, patch, FieldOwner); err != nil {
		return err
	}
	r.Recorder.Eventf(gc, rev, corev1.EventTypeNormal, proxyv1alpha1.ReasonPodTemplateAdopted, "AdoptPodTemplate",
		"Revision %s was written by an earlier operator release: its agents keep the pod template they run (%s)", rev.Name, t.Hash)
	logf.FromContext(ctx).Info("Adopted the agent pod template of a revision written by an earlier release",
		"revision", rev.Name, "podTemplateHash", t.Hash, "daemonSet", klogRef(ds))
	return nil
}

// checkTemplateImages refuses a pod template with an image that is not
// allowed.
func (o AgentOptions) checkTemplateImages(t *corev1.PodTemplateSpec) error {
	allowed := o.allowedImages()
	for _, c := range append(slices.Clone(t.Spec.InitContainers), t.Spec.Containers...) {
		if !ImageAllowed(c.Image, allowed) {
			return notAllowedError(c.Image, allowed)
		}
	}
	return nil
}

// agentContainerName is the agent's container in its pod.
const agentContainerName = "agent"
