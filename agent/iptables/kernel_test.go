package iptables

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
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
	bins := map[model.Family]xtables.Binaries{} // of the backend built last, per family
	ipt := func(t testing.TB, node *netns.NS, fam model.Family, args ...string) string {
		t.Helper()
		out, err := node.Exec(append([]string{bins[fam].Cmd, "-w"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	save := func(t testing.TB, node *netns.NS, fam model.Family) string {
		t.Helper()
		out, err := node.Exec(bins[fam].Save)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return backendtest.Harness{
		Tools: []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"},
		New: func(ctx context.Context, fam model.Family) (backend.Backend, error) {
			o := opts
			o.Family = fam
			be, err := New(ctx, o)
			if err == nil {
				bins[fam] = be.bins
			}
			return be, err
		},
		Dump: func(t testing.TB, node *netns.NS, fam model.Family) string {
			t.Helper()
			return canonicalSave(save(t, node, fam))
		},
		Owned: func(t testing.TB, node *netns.NS, fam model.Family) int {
			t.Helper()
			n := 0
			for _, l := range strings.Split(save(t, node, fam), "\n") {
				if strings.HasPrefix(l, "-A "+ChainPrefix) {
					n++
				}
			}
			return n
		},
		Dispatch: func(t testing.TB, node *netns.NS, fam model.Family) []string {
			var rules []string
			for _, l := range strings.Split(ipt(t, node, fam, "-t", "nat", "-S", chainServices), "\n") {
				if strings.HasPrefix(l, "-A ") {
					rules = append(rules, l)
				}
			}
			return rules
		},
		Wipe: func(t testing.TB, node *netns.NS, fam model.Family) { ipt(t, node, fam, "-t", "nat", "-F") },
		WipeDispatch: func(t testing.TB, node *netns.NS, fam model.Family) {
			ipt(t, node, fam, "-t", "nat", "-F", chainServices)
		},
		Foreign: func(t testing.TB, node *netns.NS, fam model.Family) {
			ipt(t, node, fam, "-t", "nat", "-N", "KUBE-SERVICES")
			ipt(t, node, fam, "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
			ipt(t, node, fam, "-t", "nat", "-A", "KUBE-SERVICES", "-d", backendtest.IP(fam, backendtest.ForeignVIP), "-p", "tcp", "--dport", "80",
				"-j", "DNAT", "--to-destination", backendtest.At(fam, "10.211.1.4", 8080))
			ipt(t, node, fam, "-t", "nat", "-A", "POSTROUTING", "-s", backendtest.IP(fam, "10.211.0.0/16"), "-o", "uplink", "-j", "MASQUERADE")
			ipt(t, node, fam, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
			ipt(t, node, fam, "-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "someone else", "-j", "ACCEPT")
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
