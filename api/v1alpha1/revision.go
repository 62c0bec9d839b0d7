package v1alpha1

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// A config revision is an immutable snapshot of a GatewayConfig's spec, stored by
// the operator as an apps/v1 ControllerRevision in its own namespace. A
// ProxyNode's spec.revision names it; the node's agent reads it and runs it.
//
// The ControllerRevision's data is the JSON of RevisionData: the spec, and
// the agent pod template the operator runs it with. Its labels carry
// RevisionGatewayConfigLabel (the GatewayConfig's name), RevisionHashLabel
// and, when the data holds a pod template, PodTemplateHashLabel.

const (
	// RevisionGatewayConfigLabel labels a ControllerRevision with the name of
	// the GatewayConfig it snapshots.
	RevisionGatewayConfigLabel = "proxy.synterix.io/gateway-config"
	// RevisionHashLabel labels a ControllerRevision with the hash of its data.
	RevisionHashLabel = "proxy.synterix.io/revision-hash"
	// TraceParentAnnotation, when tracing is on, carries a W3C traceparent
	// across the API: on a ControllerRevision, the operator's reconcile
	// that created it; on a ProxyNode, the rollout batch that assigned its
	// revision, which the agent's first sync of that revision continues.
	TraceParentAnnotation = "proxy.synterix.io/traceparent"

	// PodTemplateHashLabel labels a ControllerRevision, and the agent pods
	// the operator runs it with, with the hash of the revision's agent pod
	// template. A node counts as updated to a revision only when its agent
	// reports that hash (ProxyNode status.podTemplateHash).
	PodTemplateHashLabel = "proxy.synterix.io/pod-template-hash"
	// PodTemplateHashEnv is the agent container's environment variable that
	// holds the same hash; the agent reports it in its ProxyNode status.
	PodTemplateHashEnv = "POD_TEMPLATE_HASH"
	// AdoptedPodTemplateAnnotation, on a ControllerRevision written before
	// revisions held a pod template, holds the agent pod template (JSON)
	// the operator found running that revision when it was upgraded, so
	// that the revision can be rolled back to exactly.
	AdoptedPodTemplateAnnotation = "proxy.synterix.io/adopted-pod-template"
)

// RevisionData is what a config revision holds.
// +kubebuilder:object:generate=false
type RevisionData struct {
	// Spec is the GatewayConfig spec the revision snapshots.
	Spec GatewayConfigSpec `json:"spec"`
	// AgentPod is the agent pod template the operator runs the revision
	// with, less what depends on the nodes of the moment (the node
	// affinity) and the hash marks (PodTemplateHashLabel,
	// PodTemplateHashEnv). Absent in revisions written by operators
	// before v1alpha1 revisions held it. Agents ignore it.
	AgentPod *corev1.PodTemplateSpec `json:"agentPod,omitempty"`
}

// EncodeRevision returns the data of a ControllerRevision that snapshots spec
// with no agent pod template.
func EncodeRevision(spec *GatewayConfigSpec) ([]byte, error) {
	return json.Marshal(RevisionData{Spec: *spec})
}

// EncodeRevisionData returns the data of a ControllerRevision that holds d.
func EncodeRevisionData(d *RevisionData) ([]byte, error) {
	return json.Marshal(d)
}

// DecodeRevision returns the GatewayConfig spec that a ControllerRevision's
// data holds.
func DecodeRevision(data []byte) (*GatewayConfigSpec, error) {
	d, err := DecodeRevisionData(data)
	if err != nil {
		return nil, err
	}
	return &d.Spec, nil
}

// DecodeRevisionData returns what a ControllerRevision's data holds.
func DecodeRevisionData(data []byte) (*RevisionData, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("config revision has no data")
	}
	var d RevisionData
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("config revision data is not a GatewayConfig spec: %w", err)
	}
	return &d, nil
}
