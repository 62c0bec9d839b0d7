package v1alpha1

import (
	"encoding/json"
	"fmt"
)

// A config revision is an immutable snapshot of a GatewayConfig's spec, stored by
// the operator as an apps/v1 ControllerRevision in its own namespace. A
// ProxyNode's spec.revision names it; the node's agent reads it and runs it.
//
// The ControllerRevision's data is the JSON of RevisionData. Its labels carry
// RevisionGatewayConfigLabel (the GatewayConfig's name) and RevisionHashLabel.

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
)

// RevisionData is what a config revision holds.
// +kubebuilder:object:generate=false
type RevisionData struct {
	// Spec is the GatewayConfig spec the revision snapshots.
	Spec GatewayConfigSpec `json:"spec"`
}

// EncodeRevision returns the data of a ControllerRevision that snapshots spec.
func EncodeRevision(spec *GatewayConfigSpec) ([]byte, error) {
	return json.Marshal(RevisionData{Spec: *spec})
}

// DecodeRevision returns the GatewayConfig spec that a ControllerRevision's
// data holds.
func DecodeRevision(data []byte) (*GatewayConfigSpec, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("config revision has no data")
	}
	var d RevisionData
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("config revision data is not a GatewayConfig spec: %w", err)
	}
	return &d.Spec, nil
}
