package iptables

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestScenarios runs the kernel scenarios every backend passes (package
// backendtest) against the iptables backend, in the flavour the namespace
// detection picks (nft on a fresh namespace).
func TestScenarios(t *testing.T) { backendtest.Run(t, harness(Options{})) }

// harness tells the scenarios how to build this backend and how to read
// and disturb its rules with the tools of its flavour.
func harness(opts Options) backendtest.Harness {
	var bins xtables.Binaries // of the backend built last
	ipt := func(t testing.TB, node *netns.NS, args ...string) string {
		t.Helper()
		out, err := node.Exec(append([]string{bins.Cmd, "-w"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return backendtest.Harness{
		Tools: []string{"iptables", "iptables-save", "iptables-restore"},
		New: func(ctx context.Context) (backend.Backend, error) {
			be, err := New(ctx, opts)
			if err == nil {
				bins = be.bins
			}
			return be, err
		},
		Dump: func(t testing.TB, node *netns.NS) string {
			t.Helper()
			out, err := node.Exec(bins.Save)
			if err != nil {
				t.Fatal(err)
			}
			return canonicalSave(out)
		},
		Owned: func(t testing.TB, node *netns.NS) int {
			t.Helper()
			out, err := node.Exec(bins.Save)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "-A "+ChainPrefix) {
					n++
				}
			}
			return n
		},
		Dispatch: func(t testing.TB, node *netns.NS) []string {
			var rules []string
			for _, l := range strings.Split(ipt(t, node, "-t", "nat", "-S", chainServices), "\n") {
				if strings.HasPrefix(l, "-A ") {
					rules = append(rules, l)
				}
			}
			return rules
		},
		Wipe:         func(t testing.TB, node *netns.NS) { ipt(t, node, "-t", "nat", "-F") },
		WipeDispatch: func(t testing.TB, node *netns.NS) { ipt(t, node, "-t", "nat", "-F", chainServices) },
		Foreign: func(t testing.TB, node *netns.NS) {
			ipt(t, node, "-t", "nat", "-N", "KUBE-SERVICES")
			ipt(t, node, "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
			ipt(t, node, "-t", "nat", "-A", "KUBE-SERVICES", "-d", backendtest.ForeignVIP+"/32", "-p", "tcp", "--dport", "80",
				"-j", "DNAT", "--to-destination", "10.211.1.4:8080")
			ipt(t, node, "-t", "nat", "-A", "POSTROUTING", "-s", "10.211.0.0/16", "-o", "uplink", "-j", "MASQUERADE")
			ipt(t, node, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
			ipt(t, node, "-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "someone else", "-j", "ACCEPT")
		},
		// The service's chain: masquerade test + one DNAT rule.
		OneEndpointWrites: 2,
	}
}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// canonicalSave drops comment lines and counters from iptables-save output.
func canonicalSave(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		keep = append(keep, counterRE.ReplaceAllString(l, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}

// TestLegacyMode runs a NodePort distribution, adoption and Cleanup round
// with the legacy flavour.
func TestLegacyMode(t *testing.T) {
	netns.Require(t, "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore")
	h := harness(Options{Mode: xtables.ModeLegacy})
	tp := backendtest.NewTopo(t, h)
	// Legacy tables only show up in iptables-save once something used
	// them; make both exist before taking the reference.
	tp.Node.MustExec("iptables-legacy", "-w", "-t", "nat", "-S")
	tp.Node.MustExec("iptables-legacy", "-w", "-t", "filter", "-S")
	before := tp.Dump()
	tp.Put(backendtest.Svc{Name: "web", ClusterIP: backendtest.VIP, Port: 80, NodePort: 30080, Eps: backendtest.FourEndpoints()})
	tp.Sync(false)
	got := tp.Client.Tally("tcp", backendtest.NodeIP+":30080", 40, netns.RequestOptions{})
	if len(got) < 2 || got["!timeout"]+got["!refused"] > 0 {
		t.Errorf("legacy NodePort distribution: %v", got)
	}
	if res := tp.Sync(true); res.Rules != 0 {
		t.Errorf("legacy: full resync rewrote %d rules", res.Rules)
	}
	if mode := tp.Backend.(*Backend).Mode(); mode != xtables.ModeLegacy {
		t.Errorf("backend runs %s, want legacy", mode)
	}
	tp.Cleanup()
	if after := tp.Dump(); after != before {
		t.Errorf("legacy cleanup:\n%s", backendtest.DiffLines(before, after))
	}
}
