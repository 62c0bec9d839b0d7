package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// RevisionHistoryLimit is how many config revisions of one GatewayConfig are
// kept. Revisions a node is assigned, the last good, the target, the desired
// and the pending revision are never deleted, whatever the limit.
const RevisionHistoryLimit = 10

// RevisionSpec is the part of a GatewayConfig spec a revision snapshots: all
// of it but spec.rollout, which says how revisions travel and is not itself
// configuration of a node. So changing maxUnavailable, the canary or
// approvedRevision creates no revision and restarts no agent.
func RevisionSpec(spec *proxyv1alpha1.GatewayConfigSpec) *proxyv1alpha1.GatewayConfigSpec {
	s := spec.DeepCopy()
	s.Rollout = nil
	return s
}

// Revision is a config revision as the operator writes it.
type Revision struct {
	// Name is the ControllerRevision's name, <gatewayconfig>-<Hash>.
	Name string
	// Data is its data (proxyv1alpha1.RevisionData).
	Data []byte
	// Hash is the hash of Data (RevisionHashLabel).
	Hash string
	// PodTemplateHash is the hash of its agent pod template
	// (PodTemplateHashLabel).
	PodTemplateHash string
}

// RevisionFor returns the revision that snapshots spec as an operator with
// the agent options o runs it: the spec less spec.rollout, and the agent pod
// template built from it, so that the image the operator defaults to and
// every pod setting it builds are part of what names the revision. The same
// spec under an operator that builds another pod (an upgrade) is another
// revision, which rolls out, and waits for approval, like any change.
func RevisionFor(gcName string, spec *proxyv1alpha1.GatewayConfigSpec, o AgentOptions) (Revision, error) {
	s := RevisionSpec(spec)
	pod := agentPodTemplate(gcName, s.Agent, o.WithDefaults())
	data, err := proxyv1alpha1.EncodeRevisionData(&proxyv1alpha1.RevisionData{Spec: *s, AgentPod: &pod})
	if err != nil {
		return Revision{}, fmt.Errorf("encoding the config revision: %w", err)
	}
	// Hashed as it reads back (revisionTemplate), whatever the encoding.
	back, err := proxyv1alpha1.DecodeRevisionData(data)
	if err != nil {
		return Revision{}, err
	}
	podHash, err := hashOf(*back.AgentPod)
	if err != nil {
		return Revision{}, err
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:5])
	prefix := gcName
	// A ControllerRevision name is at most 253 characters.
	if max := 253 - len(hash) - 1; len(prefix) > max {
		prefix = prefix[:max]
	}
	return Revision{Name: prefix + "-" + hash, Data: data, Hash: hash, PodTemplateHash: podHash}, nil
}

// revisionsToPrune returns the revisions to delete to stay within the history
// limit: the oldest first, skipping every revision named in keep.
func revisionsToPrune(revs []appsv1.ControllerRevision, keep map[string]bool, limit int) []appsv1.ControllerRevision {
	if len(revs) <= limit {
		return nil
	}
	sorted := append([]appsv1.ControllerRevision(nil), revs...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Revision != sorted[j].Revision {
			return sorted[i].Revision < sorted[j].Revision
		}
		return sorted[i].Name < sorted[j].Name
	})
	excess := len(sorted) - limit
	var out []appsv1.ControllerRevision
	for _, r := range sorted {
		if excess == 0 {
			break
		}
		if keep[r.Name] {
			continue
		}
		out = append(out, r)
		excess--
	}
	return out
}
