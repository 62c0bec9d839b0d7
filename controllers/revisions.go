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

// RevisionFor returns the data, the hash and the ControllerRevision name of the
// revision that snapshots spec.
func RevisionFor(gcName string, spec *proxyv1alpha1.GatewayConfigSpec) (data []byte, hash, name string, err error) {
	data, err = proxyv1alpha1.EncodeRevision(RevisionSpec(spec))
	if err != nil {
		return nil, "", "", fmt.Errorf("encoding the config revision: %w", err)
	}
	sum := sha256.Sum256(data)
	hash = hex.EncodeToString(sum[:5])
	prefix := gcName
	// A ControllerRevision name is at most 253 characters.
	if max := 253 - len(hash) - 1; len(prefix) > max {
		prefix = prefix[:max]
	}
	return data, hash, prefix + "-" + hash, nil
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
