// Package backend defines the contract between the agent's sync loop and the
// kernel programming backends (iptables, IPVS).
package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// SyncOptions tunes one Sync call.
type SyncOptions struct {
	// Full forces the backend to re-read and rewrite everything it owns
	// instead of only the services whose content hash changed.
	Full bool
}

// SyncResult describes what a Sync did.
type SyncResult struct {
	// Full is true when the backend rewrote everything, either because it
	// was asked to or because it decided to (first sync, detected flush).
	Full bool
	// Changed counts service ports added, removed or modified by this sync.
	Changed int
	// Rules counts the rules (or kernel objects) written by this sync.
	Rules int
	// Owned counts the rules (or kernel objects) the backend owns in the
	// kernel after this sync: what ProxyNode status reports.
	Owned    int
	Duration time.Duration
}

// Backend programs one node's kernel from a model.State.
type Backend interface {
	// Name is a short identifier, e.g. "iptables".
	Name() string
	// Sync makes the kernel match the state. It may be called with the same
	// state repeatedly; it must be safe after a restart (adopt what is
	// there) and after other programs flushed its rules.
	Sync(ctx context.Context, st *model.State, opts SyncOptions) (SyncResult, error)
	// Cleanup removes everything the backend installed and nothing else.
	Cleanup(ctx context.Context) error
	// Unsupported returns nil when the backend honours every setting of
	// the policy, or an *UnsupportedError naming what it cannot honour.
	Unsupported(p model.Policy) error
}

// Feature names a policy setting a backend may or may not honour.
type Feature string

// Features beyond the algorithms.
const (
	FeatureClientIPAffinity Feature = "SessionAffinity/ClientIP"
	FeatureSourceRanges     Feature = "SourceRanges"
)

// AlgorithmFeature turns an algorithm into a feature name.
func AlgorithmFeature(a model.Algorithm) Feature { return Feature("Algorithm/" + string(a)) }

// FeatureSupport is one row of a backend's feature table.
type FeatureSupport struct {
	Feature   Feature
	Supported bool
	Note      string
}

// FeatureTable is a backend's declared support, used both to answer
// Unsupported and to document the backend.
type FeatureTable []FeatureSupport

// Lookup returns the row for a feature; unknown features are unsupported.
func (t FeatureTable) Lookup(f Feature) FeatureSupport {
	for _, r := range t {
		if r.Feature == f {
			return r
		}
	}
	return FeatureSupport{Feature: f, Note: "not known to this backend"}
}

// Check returns an *UnsupportedError listing the policy settings the table
// does not support, or nil.
func (t FeatureTable) Check(backendName string, p model.Policy) error {
	var missing []string
	if p.Algorithm != model.AlgorithmDefault {
		if r := t.Lookup(AlgorithmFeature(p.Algorithm)); !r.Supported {
			missing = append(missing, string(r.Feature))
		}
	}
	if p.Affinity != nil && p.Affinity.ClientIP {
		if r := t.Lookup(FeatureClientIPAffinity); !r.Supported {
			missing = append(missing, string(r.Feature))
		}
	}
	if len(p.SourceRanges) > 0 {
		if r := t.Lookup(FeatureSourceRanges); !r.Supported {
			missing = append(missing, string(r.Feature))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return &UnsupportedError{Backend: backendName, Policy: p.String(), Features: missing}
}

// UnsupportedError reports policy settings a backend cannot honour. The
// operator surfaces it as the UnsupportedByBackend condition.
type UnsupportedError struct {
	Backend  string
	Policy   string
	Features []string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("policy %s: backend %s does not support %s", e.Policy, e.Backend, strings.Join(e.Features, ", "))
}
