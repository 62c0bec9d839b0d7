package iptables

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestUDPEndpointReplaced: a UDP flow (fixed client port, so one conntrack
// entry) follows its Service when the endpoint is replaced, once the stale
// conntrack entry is deleted after the sync, as the agent's sync core does
// after every backend's sync. The old server keeps running, so a stale
// entry would visibly keep answering from it; the control run without
// conntrack cleanup shows exactly that: the rules alone do not move the
// flow.
func TestUDPEndpointReplaced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
		want  string
	}{
		{"with cleanup", true, "10.211.1.3"},
		{"control without cleanup", false, "10.211.1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t, Options{})
			sync := func() backend.SyncResult {
				res := tp.sync(false)
				if tc.clean {
					tp.cleanConntrack()
				}
				return res
			}
			tp.put(svcSpec{name: "dns", clusterIP: vip, proto: corev1.ProtocolUDP, port: 53, eps: []ep{{ip: "10.211.1.2"}}})
			sync()
			opts := netns.RequestOptions{Local: clientIP + ":40001"}
			for i := 0; i < 3; i++ {
				if r, err := tp.client.Request("udp", vip+":53", opts); err != nil || r.Server != "10.211.1.2" {
					t.Fatalf("before: %+v %v", r, err)
				}
			}
			tp.put(svcSpec{name: "dns", clusterIP: vip, proto: corev1.ProtocolUDP, port: 53, eps: []ep{{ip: "10.211.1.3"}}})
			if res := sync(); res.Full {
				t.Errorf("endpoint change caused a full sync")
			}
			r, err := tp.client.Request("udp", vip+":53", opts)
			if err != nil || r.Server != tc.want {
				t.Errorf("after replacing the endpoint: got %+v %v, want answer from %s", r, err, tc.want)
			}
		})
	}
}

// TestUDPFirstEndpoint: datagrams sent to a VIP before it had rules are
// routed out of the uplink and recorded un-NATed. Once the Service gets its
// first endpoint, that entry must be deleted after the sync (the sync
// core's conntrack step) or the flow stays black-holed.
func TestUDPFirstEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
		want  string
	}{
		{"with cleanup", true, "ok"},
		{"control without cleanup", false, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t, Options{})
			sync := func() {
				tp.sync(false)
				if tc.clean {
					tp.cleanConntrack()
				}
			}
			sync() // no services yet
			opts := netns.RequestOptions{Local: clientIP + ":40002", Timeout: time.Second}
			if _, err := tp.client.Request("udp", vip+":53", opts); netns.Outcome(err) != "timeout" {
				t.Fatalf("before the service exists: outcome %s (%v), want timeout", netns.Outcome(err), err)
			}
			tp.put(svcSpec{name: "dns", clusterIP: vip, proto: corev1.ProtocolUDP, port: 53, eps: []ep{{ip: "10.211.2.2"}}})
			sync()
			_, err := tp.client.Request("udp", vip+":53", opts)
			if got := netns.Outcome(err); got != tc.want {
				t.Errorf("after the first endpoint appeared: outcome %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

// TestFlushRecovery: after someone flushes the nat table (our chains and the
// jumps into them), the next sync notices through the canary and restores
// everything; a flush of only the dispatch chain is repaired by a full sync.
func TestFlushRecovery(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, eps: fourEndpoints()})
	tp.sync(false)
	check := func(stage, want string) {
		t.Helper()
		_, err := tp.client.Request("tcp", vip+":80", netns.RequestOptions{Timeout: time.Second})
		if got := netns.Outcome(err); got != want {
			t.Fatalf("%s: outcome %s (%v), want %s", stage, got, err, want)
		}
	}
	check("initial", "ok")
	want := tp.save()

	tp.ipt("-t", "nat", "-F")
	check("after iptables -t nat -F", "timeout")
	res := tp.sync(false) // asked for a partial sync
	if !res.Full {
		t.Errorf("canary did not turn the sync into a full one")
	}
	check("after resync", "ok")
	if got := tp.save(); got != want {
		t.Errorf("rules after recovery differ from the original:\n%s", diffLines(want, got))
	}

	tp.ipt("-t", "nat", "-F", chainServices)
	check("after flushing "+chainServices, "timeout")
	tp.sync(true)
	check("after full sync", "ok")
	if got := tp.save(); got != want {
		t.Errorf("rules after full sync differ from the original:\n%s", diffLines(want, got))
	}
}

// TestAdoptAndIdempotence: a second sync of the same state writes nothing; a
// new backend instance (agent restart) adopts the rules without writing
// either, and traffic never stops.
func TestAdoptAndIdempotence(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.cfg.LocalhostNodePorts = true
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, nodePort: 30080, lbIP: "203.0.113.10", ranges: []string{"10.210.0.0/24"},
		affinity: 60, eps: fourEndpoints()})
	tp.put(svcSpec{name: "local", clusterIP: "10.96.0.11", port: 80, nodePort: 30081, etpLocal: true, eps: []ep{{ip: "10.211.2.2"}}})
	tp.put(svcSpec{name: "empty", clusterIP: "10.96.0.12", port: 80})
	tp.put(svcSpec{name: "dns", clusterIP: "10.96.0.13", proto: corev1.ProtocolSCTP, port: 53, eps: []ep{{ip: "10.211.2.2"}}})
	if res := tp.sync(false); res.Rules == 0 || !res.Full {
		t.Fatalf("first sync: %+v", res)
	}
	if res := tp.sync(false); res.Rules != 0 || res.Full {
		t.Errorf("second partial sync of the same state wrote %d rules (full=%v)", res.Rules, res.Full)
	}
	if res := tp.sync(true); res.Rules != 0 {
		t.Errorf("full sync of the same state rewrote %d rules: iptables-save text differs from what we render", res.Rules)
	}
	before := tp.save()
	if err := tp.node.Do(func() (err error) {
		tp.be, err = New(context.Background(), tp.backendOptions)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if res := tp.sync(false); !res.Full || res.Rules != 0 {
		t.Errorf("restarted backend: %+v, want a full sync that writes nothing", res)
	}
	if got := tp.save(); got != before {
		t.Errorf("adoption changed rules:\n%s", diffLines(before, got))
	}
	if _, err := tp.client.Request("tcp", vip+":80", netns.RequestOptions{}); err != nil {
		t.Errorf("traffic after restart: %v", err)
	}
}

// TestPartialSync: changing one endpoint rewrites only that Service's chains
// and edits the dispatch chain with -A/-D; traffic follows.
func TestPartialSync(t *testing.T) {
	tp := newTopo(t, Options{})
	for i := 0; i < 20; i++ {
		tp.put(svcSpec{name: fmt.Sprintf("s%02d", i), clusterIP: fmt.Sprintf("10.96.1.%d", i+1), port: 80, eps: fourEndpoints()})
	}
	tp.sync(false)
	tp.put(svcSpec{name: "s07", clusterIP: "10.96.1.8", port: 80, eps: []ep{{ip: "10.211.2.4"}}})
	res := tp.sync(false)
	if res.Full || res.Changed != 1 {
		t.Errorf("one endpoint change: %+v, want a partial sync of one service", res)
	}
	// The service's chain: masquerade test + one DNAT rule.
	if res.Rules != 2 {
		t.Errorf("one endpoint change wrote %d rule lines, want 2", res.Rules)
	}
	got := tp.client.Tally("tcp", "10.96.1.8:80", 10, netns.RequestOptions{})
	if got["10.211.2.4"] != 10 {
		t.Errorf("after partial sync: %v, want all from 10.211.2.4", got)
	}
	// Remove a Service, add another: dispatch edited, not rewritten.
	tp.del("s03")
	tp.put(svcSpec{name: "new", clusterIP: "10.96.2.1", port: 80, eps: []ep{{ip: "10.211.1.4"}}})
	dispatch := tp.ipt("-t", "nat", "-S", chainServices)
	res = tp.sync(false)
	if res.Full || res.Changed != 2 {
		t.Errorf("add+remove: %+v", res)
	}
	after := tp.ipt("-t", "nat", "-S", chainServices)
	if strings.Contains(after, "10.96.1.4/32") || !strings.Contains(after, "10.96.2.1/32") {
		t.Errorf("dispatch chain not updated:\n%s", after)
	}
	if n := len(strings.Split(after, "\n")); n != len(strings.Split(dispatch, "\n")) {
		t.Errorf("dispatch chain had %d lines, now %d", len(strings.Split(dispatch, "\n")), n)
	}
	if _, err := tp.client.Request("tcp", "10.96.1.4:80", netns.RequestOptions{Timeout: time.Second}); netns.Outcome(err) != "timeout" {
		t.Errorf("removed service still answers: %v", err)
	}
	if r, err := tp.client.Request("tcp", "10.96.2.1:80", netns.RequestOptions{}); err != nil || r.Server != "10.211.1.4" {
		t.Errorf("added service: %+v %v", r, err)
	}
	// Everything the kernel has matches a from-scratch full sync.
	if res := tp.sync(true); res.Rules != 0 {
		t.Errorf("full sync after partial ones rewrote %d rules: partial syncs drifted", res.Rules)
	}
}

// TestCleanupRestoresTables: with foreign rules present (including a
// kube-proxy-like KUBE-SERVICES chain), sync then Cleanup leaves
// iptables-save exactly as before.
func TestCleanupRestoresTables(t *testing.T) {
	tp := newTopo(t, Options{})
	tp.ipt("-t", "nat", "-N", "KUBE-SERVICES")
	tp.ipt("-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
	tp.ipt("-t", "nat", "-A", "KUBE-SERVICES", "-d", "10.96.9.9/32", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.211.1.4:8080")
	tp.ipt("-t", "nat", "-A", "POSTROUTING", "-s", "10.211.0.0/16", "-o", "uplink", "-j", "MASQUERADE")
	tp.ipt("-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	tp.ipt("-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "someone else", "-j", "ACCEPT")
	before := tp.save()

	tp.cfg.LocalhostNodePorts = true
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, nodePort: 30080, lbIP: "203.0.113.10", ranges: []string{"10.210.0.0/24"},
		affinity: 60, eps: fourEndpoints()})
	tp.put(svcSpec{name: "empty", clusterIP: "10.96.0.12", port: 80, nodePort: 30081, etpLocal: true})
	tp.sync(false)
	if tp.save() == before {
		t.Fatal("sync did not change anything")
	}
	if r, err := tp.client.Request("tcp", "10.96.9.9:80", netns.RequestOptions{}); err != nil || r.Server != "10.211.1.4" {
		t.Errorf("foreign DNAT rule broken while we are installed: %+v %v", r, err)
	}
	tp.cleanup()
	if got := tp.save(); got != before {
		t.Errorf("cleanup did not restore the tables:\n%s", diffLines(before, got))
	}
	if r, err := tp.client.Request("tcp", "10.96.9.9:80", netns.RequestOptions{}); err != nil || r.Server != "10.211.1.4" {
		t.Errorf("foreign DNAT rule broken after cleanup: %+v %v", r, err)
	}
	// Cleanup of a clean node is a no-op.
	tp.cleanup()
	if got := tp.save(); got != before {
		t.Errorf("second cleanup changed tables:\n%s", diffLines(before, got))
	}
}

// TestLegacyMode runs a distribution + cleanup round with the legacy flavour.
func TestLegacyMode(t *testing.T) {
	netns.Require(t, "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore")
	tp := newTopo(t, Options{Mode: xtables.ModeLegacy})
	// Legacy tables only show up in iptables-save once something used
	// them; make both exist before taking the reference.
	tp.ipt("-t", "nat", "-S")
	tp.ipt("-t", "filter", "-S")
	before := tp.save()
	tp.put(svcSpec{name: "web", clusterIP: vip, port: 80, nodePort: 30080, eps: fourEndpoints()})
	tp.sync(false)
	got := tp.client.Tally("tcp", nodeIP+":30080", 40, netns.RequestOptions{})
	if len(got) < 2 || got["!timeout"]+got["!refused"] > 0 {
		t.Errorf("legacy NodePort distribution: %v", got)
	}
	if res := tp.sync(true); res.Rules != 0 {
		t.Errorf("legacy: full resync rewrote %d rules", res.Rules)
	}
	tp.cleanup()
	if after := tp.save(); after != before {
		t.Errorf("legacy cleanup:\n%s", diffLines(before, after))
	}
}

func diffLines(a, b string) string {
	as, bs := map[string]int{}, map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		as[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		bs[l]++
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if bs[l] == 0 {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if as[l] == 0 {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, different order or counts)"
	}
	return strings.Join(out, "\n")
}

var _ = model.IPv4

// The count of owned rules the backend reports (ProxyNode
// status.counts.rules) is the number of rules in our chains, after full and
// partial syncs alike.
func TestOwnedRulesMatchTheKernel(t *testing.T) {
	tp := newTopo(t, Options{})
	ours := func() int {
		n := 0
		for _, l := range strings.Split(tp.node.MustExec("iptables-save"), "\n") {
			if strings.HasPrefix(l, "-A "+ChainPrefix) {
				n++
			}
		}
		return n
	}
	tp.put(svcSpec{name: "a", clusterIP: vip, port: 80, eps: []ep{{ip: "10.211.1.2"}, {ip: "10.211.1.3"}}})
	if res := tp.sync(true); res.Owned != ours() || res.Owned == 0 {
		t.Fatalf("full sync: owned %d, kernel holds %d rules in our chains", res.Owned, ours())
	}
	tp.put(svcSpec{name: "b", clusterIP: "10.96.0.11", port: 80, eps: []ep{{ip: "10.211.1.2"}}})
	if res := tp.sync(false); res.Full || res.Owned != ours() {
		t.Fatalf("partial sync (full=%t): owned %d, kernel holds %d", res.Full, res.Owned, ours())
	}
}
