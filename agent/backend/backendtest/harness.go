// Package backendtest holds the kernel scenarios every backend of the agent
// must pass, written once and run by each backend's own tests with real
// packets in network namespaces (package test/netns).
//
// A backend's test file fills a Harness (how to build the backend, how to
// read and disturb its rules) and calls Run; each scenario is a subtest,
// e.g. go test ./agent/iptables -run 'Scenarios/Affinity'. The scenarios
// program only the node namespace the topology creates and delete every
// namespace at the end; nothing touches the host's rules.
package backendtest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// Harness is what a backend gives the scenarios. Every function works on
// one IP family, that of the backend it reads or disturbs.
type Harness struct {
	// Tools are the binaries the backend or the harness runs, besides ip;
	// the scenarios skip loudly when one is missing.
	Tools []string
	// New builds the backend. It runs on a thread switched into the node
	// namespace; a second call is an agent restart.
	New func(ctx context.Context, fam model.Family) (backend.Backend, error)
	// Dump returns the node namespace's whole ruleset as text (other
	// programs' rules included), without counters or anything else that
	// changes while traffic flows, so that two dumps of the same rules are
	// equal.
	Dump func(t testing.TB, node *netns.NS, fam model.Family) string
	// Owned counts what the backend holds in the node namespace the way
	// SyncResult.Owned counts it.
	Owned func(t testing.TB, node *netns.NS, fam model.Family) int
	// Dispatch lists the backend's dispatch entries, one string per
	// frontend, each containing the frontend's address.
	Dispatch func(t testing.TB, node *netns.NS, fam model.Family) []string
	// Wipe removes the backend's rules the way another program would
	// (iptables -t nat -F, nft delete table); the next sync must notice
	// and restore them.
	Wipe func(t testing.TB, node *netns.NS, fam model.Family)
	// WipeDispatch empties only the dispatch entries; a full sync must
	// repair it.
	WipeDispatch func(t testing.TB, node *netns.NS, fam model.Family)
	// Foreign installs another program's rules in the node namespace,
	// among them a DNAT of ForeignVIP:80 to 10.211.1.4:8080 (translated
	// with IP), which must keep working while the backend is installed and
	// after its Cleanup.
	Foreign func(t testing.TB, node *netns.NS, fam model.Family)
	// OneEndpointWrites is SyncResult.Rules of the partial sync that
	// replaces the four endpoints of a ClusterIP Service by one.
	OneEndpointWrites int
	// EverySyncFull: the backend diffs against the kernel on every sync
	// and reports each one as full (IPVS); the scenarios then check what
	// a partial sync writes, not that it was partial.
	EverySyncFull bool
	// Limits are the checks the backend cannot pass because its kernel
	// mechanism works otherwise, each with the reason. A key names a
	// scenario ("LocalhostNodePort"), a scenario in one family
	// ("LocalhostNodePort/IPv4"), or a check inside a scenario
	// ("Affinity/expiry", "Affinity/expiry/IPv6"); Run skips such a
	// scenario and the scenario skips such a check, saying why. Every
	// limit must be stated in docs/backends.md too.
	Limits map[string]string
	// Family is the family a scenario runs in; Run sets it.
	Family model.Family
}

// ForeignVIP is the address the Harness's foreign rules DNAT.
const ForeignVIP = "10.96.9.9"

// Families are the IP families every scenario runs in.
var Families = []model.Family{model.IPv4, model.IPv6}

// Run runs every scenario as a subtest per family, e.g.
// TestScenarios/Affinity/IPv6; a dual-stack scenario runs once, with
// both families.
func Run(t *testing.T, h Harness) {
	for key := range h.Limits {
		name, _, _ := strings.Cut(key, "/")
		if !slices.ContainsFunc(Scenarios, func(sc Scenario) bool { return sc.Name == name }) {
			t.Fatalf("harness limit %q names no scenario", key)
		}
	}
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			if sc.DualStack {
				h.Family = model.IPv4
				if !h.Limited(t, sc.Name) {
					sc.Run(t, h)
				}
				return
			}
			for _, fam := range Families {
				t.Run(string(fam), func(t *testing.T) {
					h := h
					h.Family = fam
					if !h.Limited(t, sc.Name) {
						sc.Run(t, h)
					}
				})
			}
		})
	}
}

// Limited reports whether the check named key is one of the backend's
// Limits, in general or for the harness's family; if so it logs the
// reason, skipping the test when key names a whole scenario.
func (h Harness) Limited(t testing.TB, key string) bool {
	t.Helper()
	why, ok := h.Limits[key]
	if !ok {
		why, ok = h.Limits[key+"/"+string(h.Family)]
	}
	if !ok {
		return false
	}
	if !strings.Contains(key, "/") {
		t.Skipf("SKIPPED for this backend (%s): %s", h.Family, why)
	}
	t.Logf("check %q not run for this backend (%s): %s", key, h.Family, why)
	return true
}

// Scenario is one named kernel scenario.
type Scenario struct {
	Name string
	Run  func(t *testing.T, h Harness)
	// DualStack scenarios program both families at once; they run once.
	DualStack bool
}
