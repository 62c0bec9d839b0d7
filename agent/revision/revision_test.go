package revision

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/synterix/synterix-kube-proxy/agent/probe"
	"github.com/synterix/synterix-kube-proxy/agent/status"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// fakeRevisions is a FAKE revision cache holding two revisions: "good"
// (iptables) and "bad" (does not decode). The real informer is exercised
// by test/agent against the real API server.
type fakeRevisions struct{ store cache.Store }

func (f fakeRevisions) GetStore() cache.Store { return f.store }
func (f fakeRevisions) HasSynced() bool       { return true }

func revisions(t *testing.T) fakeRevisions {
	spec := v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeIPTables}
	good, err := v1alpha1.EncodeRevision(&spec)
	if err != nil {
		t.Fatal(err)
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	for _, cr := range []*appsv1.ControllerRevision{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "good"}, Data: runtime.RawExtension{Raw: good}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bad"}, Data: runtime.RawExtension{Raw: []byte(`not a spec`)}},
	} {
		_ = store.Add(cr)
	}
	return fakeRevisions{store: store}
}

// Informer handlers evaluate from several goroutines while the ProxyNode
// changes: after the last change, the facts handed to the status writer
// must be about the newest ProxyNode, never an older view. (The agent this
// replaced took its snapshot under a lock and handed it over outside it,
// so an older report could overwrite a newer one.)
func TestNewestFactsWin(t *testing.T) {
	var cur atomic.Pointer[v1alpha1.ProxyNode]
	var mu sync.Mutex
	var last status.RevisionFacts
	a := New(Options{OperatorNamespace: "ns", Caps: probe.Capabilities{IPTablesMode: "nft"},
		ProxyNode: func() *v1alpha1.ProxyNode { return cur.Load() },
		Facts:     func(f status.RevisionFacts) { mu.Lock(); last = f; mu.Unlock() },
		Event:     func(*v1alpha1.ProxyNode, string, string, string) {}})
	a.gcName, a.revInf = "gc", revisions(t)
	for round := 0; round < 200; round++ {
		var wg sync.WaitGroup
		for i := 1; i <= 50; i++ {
			pn := &v1alpha1.ProxyNode{Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: "gc", Revision: "bad"}}
			pn.Generation = int64(round*100 + i)
			if i%2 == 0 {
				pn.Spec.Revision = "good"
			}
			cur.Store(pn)
			wg.Add(1)
			go func() { defer wg.Done(); a.Evaluate() }()
		}
		wg.Wait()
		// The last ProxyNode (i=50) names the good revision: no refusal.
		mu.Lock()
		got := last
		mu.Unlock()
		if got.Refused() {
			t.Fatalf("round %d: the writer holds the refusal of generation %d, not the acceptance of generation %d",
				round, got.Generation, round*100+50)
		}
		if d := a.Decision(); d.Accepted == nil || d.Accepted.Generation != int64(round*100+50) {
			t.Fatalf("round %d: decision %+v, want generation %d", round, d.Accepted, round*100+50)
		}
	}
}

func TestRefusalsAndAcceptance(t *testing.T) {
	var pn atomic.Pointer[v1alpha1.ProxyNode]
	var facts []status.RevisionFacts
	var events []string
	a := New(Options{OperatorNamespace: "ns", Caps: probe.Capabilities{IPTablesMode: "nft"},
		ProxyNode: func() *v1alpha1.ProxyNode { return pn.Load() },
		Facts:     func(f status.RevisionFacts) { facts = append(facts, f) },
		Event:     func(_ *v1alpha1.ProxyNode, _, reason, _ string) { events = append(events, reason) }})
	a.gcName, a.revInf = "gc", revisions(t)
	set := func(rev string, gen int64) {
		p := &v1alpha1.ProxyNode{Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: "gc", Revision: rev}}
		p.Generation = gen
		pn.Store(p)
		a.Evaluate()
	}
	set("bad", 1)
	set("bad", 2)
	set("missing", 3)
	set("good", 4)
	want := []string{"RevisionInvalid/1", "RevisionInvalid/2", "RevisionNotFound/3", "/0"}
	if len(facts) != len(want) {
		t.Fatalf("facts %+v, want %v", facts, want)
	}
	for i, f := range facts {
		if got := f.Reason + "/" + itoa(f.Generation); got != want[i] {
			t.Errorf("facts[%d] = %s, want %s", i, got, want[i])
		}
	}
	if len(events) != 2 || events[0] != v1alpha1.ReasonRevisionInvalid || events[1] != v1alpha1.ReasonRevisionNotFound {
		t.Errorf("events %v: want one per new refusal", events)
	}
	if d := a.Decision(); d.Accepted == nil || d.Accepted.Name != "good" || d.Accepted.Choice.Backend != v1alpha1.BackendIPTables {
		t.Errorf("decision %+v", d.Accepted)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A revision that sets what the backend the node chose cannot honour is
// refused before anything is programmed, with SettingUnsupported in
// status and an Event, instead of being accepted and ignored (the
// masquerade bit on IPVS, which the API server refuses only for mode IPVS,
// not Auto).
func TestRefusesSettingsTheChosenBackendCannotHonour(t *testing.T) {
	bit := func(b int32) *v1alpha1.IPTablesConfig { return &v1alpha1.IPTablesConfig{MasqueradeBit: &b} }
	bridge := &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionBridgeInterface, BridgeInterface: "cbr0"}
	prefix := &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionInterfaceNamePrefix, InterfaceNamePrefix: "veth"}
	nodeCIDR := &v1alpha1.LocalTrafficDetection{Mode: v1alpha1.LocalTrafficDetectionNodeCIDR}
	ipvsNode := probe.Capabilities{IPVS: true, NFTables: true, IPTablesMode: "nft"}
	plainNode := probe.Capabilities{NFTables: true, IPTablesMode: "nft"}
	cases := []struct {
		name string
		caps probe.Capabilities
		spec v1alpha1.GatewayConfigSpec
		want string // in the refusal; empty: accepted
	}{
		{"Auto picks IPVS, bridge detection (the IPVS glue matches the input interface)", ipvsNode,
			v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, LocalTrafficDetection: bridge}, ""},
		{"Auto picks IPVS, prefix detection", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, LocalTrafficDetection: prefix}, ""},
		{"Auto picks IPVS, masquerade bit 5", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, IPTables: bit(5)},
			"masqueradeBit 5"},
		{"IPVS, masquerade bit 12", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeIPVS, IPTables: bit(12)},
			"masqueradeBit 12"},
		{"Auto picks IPVS, the default masquerade bit", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, IPTables: bit(14)}, ""},
		{"Auto picks IPVS, NodeCIDR detection", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, LocalTrafficDetection: nodeCIDR}, ""},
		{"Auto picks iptables, bridge detection and bit 5", plainNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, LocalTrafficDetection: bridge, IPTables: bit(5)}, ""},
		{"NFTables, prefix detection and bit 5", ipvsNode, v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeNFTables, LocalTrafficDetection: prefix, IPTables: bit(5)}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := v1alpha1.EncodeRevision(&tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			store := cache.NewStore(cache.MetaNamespaceKeyFunc)
			_ = store.Add(&appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r1"}, Data: runtime.RawExtension{Raw: raw}})
			var last status.RevisionFacts
			var events []string
			pn := &v1alpha1.ProxyNode{Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: "gc", Revision: "r1"}}
			pn.Generation = 3
			a := New(Options{OperatorNamespace: "ns", Caps: tc.caps,
				ProxyNode: func() *v1alpha1.ProxyNode { return pn },
				Facts:     func(f status.RevisionFacts) { last = f },
				Event:     func(_ *v1alpha1.ProxyNode, typ, reason, msg string) { events = append(events, typ+"/"+reason+": "+msg) }})
			a.gcName, a.revInf = "gc", fakeRevisions{store: store}
			a.Evaluate()
			d := a.Decision()
			if tc.want == "" {
				if d.Accepted == nil || last.Refused() || len(events) != 0 {
					t.Fatalf("want accepted, got decision %+v, facts %+v, events %v", d.Accepted, last, events)
				}
				return
			}
			if d.Accepted != nil {
				t.Fatalf("accepted on backend %s; want a refusal saying %q", d.Accepted.Choice.Backend, tc.want)
			}
			if last.Reason != v1alpha1.ReasonSettingUnsupported || !strings.Contains(last.Message, tc.want) || last.Generation != 3 {
				t.Errorf("facts %+v, want reason %s and a message with %q", last, v1alpha1.ReasonSettingUnsupported, tc.want)
			}
			if len(events) != 1 || !strings.HasPrefix(events[0], "Warning/"+v1alpha1.ReasonSettingUnsupported+": ") || !strings.Contains(events[0], tc.want) {
				t.Errorf("events %v, want one Warning %s", events, v1alpha1.ReasonSettingUnsupported)
			}
		})
	}
}

// The IPVS backend serves no NodePort on 127.0.0.1; the accepted config
// says so, for the model to report instead of the backend dropping them
// without a word. The other backends serve them.
func TestLocalhostNodePortsUnsupported(t *testing.T) {
	for b, want := range map[v1alpha1.Backend]bool{
		v1alpha1.BackendIPVS: true, v1alpha1.BackendIPTables: false, v1alpha1.BackendNFTables: false,
	} {
		c := &Config{Spec: &v1alpha1.GatewayConfigSpec{}, Choice: probe.Choice{Backend: b}}
		got := c.LocalhostNodePortsUnsupported()
		if (got != "") != want || (want && !strings.Contains(got, "IPVS")) {
			t.Errorf("backend %s: %q, want a reason naming IPVS: %t", b, got, want)
		}
	}
}

// spec.ipvs under mode Auto on a node that picks another backend is not
// applied, by the meaning of Auto: the revision is accepted, and the node
// says so in status.backendReason and a Warning Event, once.
func TestIPVSSettingsOnAnotherBackendAreSaid(t *testing.T) {
	spec := v1alpha1.GatewayConfigSpec{Mode: v1alpha1.BackendModeAuto, IPVS: &v1alpha1.IPVSConfig{Scheduler: v1alpha1.IPVSSchedulerSourceHashing}}
	raw, err := v1alpha1.EncodeRevision(&spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		caps probe.Capabilities
		said bool
	}{
		{probe.Capabilities{IPTablesMode: "nft", IPVSMissing: "no ip_vs"}, true},
		{probe.Capabilities{IPVS: true, IPTablesMode: "nft"}, false},
	} {
		store := cache.NewStore(cache.MetaNamespaceKeyFunc)
		_ = store.Add(&appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r1"}, Data: runtime.RawExtension{Raw: raw}})
		var events []string
		pn := &v1alpha1.ProxyNode{Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: "gc", Revision: "r1"}}
		a := New(Options{OperatorNamespace: "ns", Caps: tc.caps,
			ProxyNode: func() *v1alpha1.ProxyNode { return pn },
			Facts:     func(status.RevisionFacts) {},
			Event:     func(_ *v1alpha1.ProxyNode, typ, reason, msg string) { events = append(events, typ+"/"+reason+": "+msg) }})
		a.gcName, a.revInf = "gc", fakeRevisions{store: store}
		a.Evaluate()
		a.Evaluate()
		d := a.Decision()
		if d.Accepted == nil {
			t.Fatalf("caps %+v: refused; want accepted", tc.caps)
		}
		const want = "spec.ipvs is not applied"
		if got := strings.Contains(d.Accepted.Choice.Reason, want); got != tc.said {
			t.Errorf("backend %s, reason %q: says %q = %t, want %t", d.Accepted.Choice.Backend, d.Accepted.Choice.Reason, want, got, tc.said)
		}
		wantEvents := 0
		if tc.said {
			wantEvents = 1
		}
		if len(events) != wantEvents || (tc.said && !strings.HasPrefix(events[0], "Warning/"+v1alpha1.ReasonSettingNotApplied+": ")) {
			t.Errorf("backend %s: events %v, want %d Warning %s", d.Accepted.Choice.Backend, events, wantEvents, v1alpha1.ReasonSettingNotApplied)
		}
	}
}
