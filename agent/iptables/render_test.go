package iptables

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

func TestProbability(t *testing.T) {
	for _, tc := range []struct {
		p    float64
		want string
	}{
		{0.5, "0.50000000000"},
		{1.0 / 3, "0.33333333349"}, // what iptables-save prints for 1/3
		{0.25, "0.25000000000"},
		{1.0 / 7, "0.14285714272"},
	} {
		if got := probability(tc.p); got != tc.want {
			t.Errorf("probability(%v) = %s, want %s", tc.p, got, tc.want)
		}
	}
}

func mkService(mut func(*model.Service)) *model.Service {
	s := &model.Service{
		Key: "ns/a:http/TCP", Namespace: "ns", Name: "a", PortName: "http", Protocol: model.TCP, Hash: "h",
		Frontends: []model.Frontend{{Kind: model.KindClusterIP, Addr: netip.MustParseAddr("10.96.0.10"), Port: 80,
			Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster}},
	}
	eps := []model.Endpoint{
		{Addr: netip.MustParseAddr("10.0.1.1"), Port: 8080, Ready: true},
		{Addr: netip.MustParseAddr("10.0.1.2"), Port: 8080, Ready: true},
	}
	s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints = eps, eps, eps
	if mut != nil {
		mut(s)
	}
	return s
}

var testOpts = renderOptions{masqMark: "0x20000/0x20000", family: model.IPv4,
	local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}}

func TestRenderClusterIP(t *testing.T) {
	s := mkService(nil)
	f := renderService(s, testOpts)
	svc := svcChain(s)
	want := map[string][]string{
		svc: {"-j SYNX-MASQ-OFFCLUS",
			"-p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.0.1.1:8080",
			"-p tcp -j DNAT --to-destination 10.0.1.2:8080"},
	}
	if !reflect.DeepEqual(f.nat, want) {
		t.Errorf("nat chains:\n%v\nwant\n%v", f.nat, want)
	}
	if want := []string{`-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/a:http/TCP clusterip" -j ` + svc}; !reflect.DeepEqual(f.services, want) {
		t.Errorf("dispatch = %v, want %v", f.services, want)
	}
	if len(f.filter) != 0 {
		t.Errorf("filter rules for a service with endpoints: %v", f.filter)
	}
	for c := range f.nat {
		if len(c) > 28 {
			t.Errorf("chain name %q longer than 28 characters", c)
		}
	}
}

func TestRenderCases(t *testing.T) {
	lb := model.Frontend{Kind: model.KindLoadBalancer, Addr: netip.MustParseAddr("203.0.113.7"), Port: 80, Protocol: model.TCP,
		Masquerade: model.MasqueradeAlways, SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	np := model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr("192.168.1.10"), Port: 30080, Protocol: model.TCP,
		Masquerade: model.MasqueradeAlways}
	cases := []struct {
		name string
		mut  func(*model.Service)
		// substrings that must appear in the joined output
		want []string
		// substrings that must not appear
		not []string
	}{
		{name: "no endpoints rejects", mut: func(s *model.Service) {
			s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints = nil, nil, nil
		}, want: []string{"filter -d 10.96.0.10/32 -p tcp -m tcp --dport 80", "-j REJECT --reject-with icmp-port-unreachable"},
			not: []string{"SYNX-SVC-", "services "}},
		{name: "affinity uses recent", mut: func(s *model.Service) {
			s.Affinity = model.Affinity{ClientIP: true, Timeout: 30 * time.Second}
		}, want: []string{"-p tcp -m recent --update --seconds 30 --reap --name SYNX-AFF-", "--mask 255.255.255.255 --rsource -j DNAT --to-destination 10.0.1.1:8080",
			"-p tcp -m statistic --mode random --probability 0.50000000000 -m recent --set --name SYNX-AFF-"}},
		{name: "round robin uses nth", mut: func(s *model.Service) { s.Algorithm = model.AlgorithmRoundRobin },
			want: []string{"-p tcp -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.0.1.1:8080"}, not: []string{"--mode random"}},
		{name: "masquerade all", mut: func(s *model.Service) { s.Frontends[0].Masquerade = model.MasqueradeAlways },
			want: []string{"nat SYNX-SVC-", "-j SYNX-MARK-MASQ"}, not: []string{"SYNX-MASQ-OFFCLUS"}},
		{name: "udp and sctp", mut: func(s *model.Service) {
			s.Protocol = model.SCTP
			s.Frontends[0].Protocol = model.SCTP
		}, want: []string{"-p sctp -m sctp --dport 80", "-p sctp -j DNAT"}},
		{name: "NodePort cluster policy masquerades and reuses the SVC chain", mut: func(s *model.Service) {
			s.Frontends = append(s.Frontends, np)
		}, want: []string{"-d 192.168.1.10/32 -p tcp -m tcp --dport 30080", "nat SYNX-EXT-", "-j SYNX-MARK-MASQ", "-j SYNX-SVC-"}},
		{name: "NodePort Local policy with no local endpoint drops, pods short-circuit", mut: func(s *model.Service) {
			s.Frontends = append(s.Frontends, np)
			s.ExternalLocal, s.ExternalEndpoints = true, nil
		}, want: []string{"-s 10.0.0.0/16 -j SYNX-SVC-", "-m addrtype --src-type LOCAL -j SYNX-MARK-MASQ",
			`--dport 30080 -m comment --comment "ns/a:http/TCP has no local endpoints" -j DROP`}},
		{name: "Local policy everywhere with no endpoints drops only", mut: func(s *model.Service) {
			s.Frontends = []model.Frontend{np}
			s.ExternalLocal, s.InternalLocal = true, true
			s.ExternalEndpoints, s.InternalEndpoints = nil, nil
		}, want: []string{"-j DROP"}, not: []string{"SYNX-EXT-", "REJECT"}},
		{name: "ClusterIP Local policy with remote endpoints only drops", mut: func(s *model.Service) {
			s.InternalLocal, s.InternalEndpoints = true, nil
		}, want: []string{`--dport 80 -m comment --comment "ns/a:http/TCP has no local endpoints" -j DROP`},
			not: []string{"REJECT", "SYNX-SVC-"}},
		{name: "ClusterIP Local policy without any endpoint rejects", mut: func(s *model.Service) {
			s.InternalLocal = true
			s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints = nil, nil, nil
		}, want: []string{"-j REJECT --reject-with icmp-port-unreachable"}, not: []string{"DROP"}},
		{name: "source ranges", mut: func(s *model.Service) { s.Frontends = append(s.Frontends, lb) },
			want: []string{"nat SYNX-FW-", "-s 192.0.2.0/24 -j SYNX-EXT-", `"ns/a:http/TCP source not allowed" -j DROP`,
				"-d 203.0.113.7/32 -p tcp -m tcp --dport 80 -m comment --comment \"ns/a:http/TCP loadbalancer\" -j SYNX-FW-"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mkService(tc.mut)
			f := renderService(s, testOpts)
			var lines []string
			for c, rules := range f.nat {
				for _, r := range rules {
					lines = append(lines, "nat "+c+" "+r)
				}
			}
			for _, r := range f.services {
				lines = append(lines, "services "+r)
			}
			for _, r := range f.filter {
				lines = append(lines, "filter "+r)
			}
			all := strings.Join(lines, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("missing %q in:\n%s", w, all)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(all, w) {
					t.Errorf("unexpected %q in:\n%s", w, all)
				}
			}
		})
	}
}

func TestParseSave(t *testing.T) {
	in := `# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:SYNX-SERVICES - [0:0]
:SYNX-SVC-X - [0:0]
:SYNX-EMPTY - [0:0]
[5:300] -A PREROUTING -m comment --comment "synterix service portals" -j SYNX-SERVICES
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.0.0.1/32 -j KUBE-SVC-Y
-A SYNX-SERVICES -d 10.96.0.10/32 -j SYNX-SVC-X
-A SYNX-SVC-X -j RETURN
COMMIT
`
	saved, err := parseSaveAll(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	ts := saved["nat"]
	want := map[string][]string{
		"SYNX-SERVICES": {"-d 10.96.0.10/32 -j SYNX-SVC-X"},
		"SYNX-SVC-X":    {"-j RETURN"},
		"SYNX-EMPTY":    nil,
	}
	if got, w := digests(ts.chains), digests(sumChains(want)); !reflect.DeepEqual(got, w) {
		t.Errorf("chains = %v, want %v", got, w)
	}
	if want := map[string][]string{"PREROUTING": {`-m comment --comment "synterix service portals" -j SYNX-SERVICES`}}; !reflect.DeepEqual(ts.hooks, want) {
		t.Errorf("hooks = %v, want %v", ts.hooks, want)
	}
}

func TestRestorePayload(t *testing.T) {
	cur := map[string][]string{
		"SYNX-SERVICES": {"-d A -j SYNX-SVC-1", "-d B -j SYNX-SVC-2"},
		"SYNX-SVC-1":    {"-j SYNX-SEP-1"},
		"SYNX-SVC-2":    {"-j SYNX-SEP-2"},
		"SYNX-SEP-1":    {"-j DNAT 1"},
		"SYNX-SEP-2":    {"-j DNAT 2"},
	}
	want := map[string][]string{
		"SYNX-SERVICES": {"-d A -j SYNX-SVC-1", "-d C -j SYNX-SVC-3"},
		"SYNX-SVC-1":    {"-j SYNX-SEP-1b"},
		"SYNX-SEP-1b":   {"-j DNAT 1b"},
		"SYNX-SVC-3":    {"-j SYNX-SEP-3"},
		"SYNX-SEP-3":    {"-j DNAT 3"},
	}
	t.Run("partial edits the dispatch chain", func(t *testing.T) {
		got, n := restorePayload("nat", want, cur, true)
		exp := `*nat
:SYNX-SEP-1b - [0:0]
:SYNX-SEP-3 - [0:0]
:SYNX-SVC-1 - [0:0]
:SYNX-SVC-3 - [0:0]
:SYNX-SEP-1 - [0:0]
:SYNX-SEP-2 - [0:0]
:SYNX-SVC-2 - [0:0]
-D SYNX-SERVICES -d B -j SYNX-SVC-2
-A SYNX-SEP-1b -j DNAT 1b
-A SYNX-SEP-3 -j DNAT 3
-A SYNX-SVC-1 -j SYNX-SEP-1b
-A SYNX-SVC-3 -j SYNX-SEP-3
-A SYNX-SERVICES -d C -j SYNX-SVC-3
-X SYNX-SEP-1
-X SYNX-SEP-2
-X SYNX-SVC-2
COMMIT
`
		if string(got) != exp {
			t.Errorf("payload:\n%s\nwant:\n%s", got, exp)
		}
		if n != 9 {
			t.Errorf("counted %d lines, want 9", n)
		}
	})
	t.Run("full rewrites the dispatch chain", func(t *testing.T) {
		got, _ := restorePayload("nat", want, cur, false)
		if !strings.Contains(string(got), ":SYNX-SERVICES - [0:0]\n") || strings.Contains(string(got), "-D ") {
			t.Errorf("payload:\n%s", got)
		}
	})
	t.Run("nothing to do", func(t *testing.T) {
		if got, n := restorePayload("nat", cur, cur, true); got != nil || n != 0 {
			t.Errorf("payload for identical state: %q", got)
		}
	})
	t.Run("reordered list chain is equal", func(t *testing.T) {
		re := map[string][]string{"SYNX-SERVICES": {"b", "a"}}
		if got, _ := restorePayload("nat", map[string][]string{"SYNX-SERVICES": {"a", "b"}}, re, false); got != nil {
			t.Errorf("payload: %q", got)
		}
	})
}

func TestListEdits(t *testing.T) {
	del, add := listEdits([]string{"a", "b", "b", "c"}, []string{"b", "c", "d", "d"})
	if !reflect.DeepEqual(del, []string{"a", "b"}) || !reflect.DeepEqual(add, []string{"d", "d"}) {
		t.Errorf("del %v add %v", del, add)
	}
}

func TestFeatures(t *testing.T) {
	be := &Backend{}
	ok := model.Policy{Namespace: "ns", Name: "p", Algorithm: model.AlgorithmRoundRobin, Affinity: &model.Affinity{ClientIP: true},
		SourceRanges: []string{"10.0.0.0/8"}}
	if err := be.Unsupported(ok); err != nil {
		t.Errorf("supported policy reported: %v", err)
	}
	bad := model.Policy{Namespace: "ns", Name: "p", Algorithm: model.AlgorithmMaglev}
	err := be.Unsupported(bad)
	ue, isUE := err.(*backend.UnsupportedError)
	if !isUE || !reflect.DeepEqual(ue.Features, []string{"Algorithm/Maglev"}) {
		t.Errorf("Maglev: %v", err)
	}
	for _, a := range model.KnownAlgorithms {
		if r := Features.Lookup(backend.AlgorithmFeature(a)); r.Note == "" {
			t.Errorf("feature table has no row or note for %s", a)
		}
	}
}

func TestParseSaveAll(t *testing.T) {
	in := "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n:SYNX-FILTER - [0:0]\n-A INPUT -j SYNX-FILTER\n-A SYNX-FILTER -j DROP\nCOMMIT\n# Completed\n*nat\n:SYNX-SERVICES - [0:0]\n-A SYNX-SERVICES -m comment --comment \"a*b\" -j X\nCOMMIT\n"
	got, err := parseSaveAll(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("tables: %v", got)
	}
	if !reflect.DeepEqual(digests(got["filter"].chains), digests(sumChains(map[string][]string{"SYNX-FILTER": {"-j DROP"}}))) ||
		!reflect.DeepEqual(got["filter"].hooks, map[string][]string{"INPUT": {"-j SYNX-FILTER"}}) {
		t.Errorf("filter: %+v", got["filter"])
	}
	if !reflect.DeepEqual(digests(got["nat"].chains), digests(sumChains(map[string][]string{"SYNX-SERVICES": {`-m comment --comment "a*b" -j X`}}))) {
		t.Errorf("nat: %+v", got["nat"])
	}
}

func TestIPv6Refused(t *testing.T) {
	be := &Backend{}
	if _, err := be.Sync(context.Background(), &model.State{Family: model.IPv6}, backend.SyncOptions{}); err == nil {
		t.Error("IPv6 state accepted; the backend only drives iptables (IPv4)")
	}
}

// digests dereferences parsed chain digests for comparison.
func digests(m map[string]*chainSum) map[string]chainSum {
	out := make(map[string]chainSum, len(m))
	for c, s := range m {
		out[c] = *s
	}
	return out
}

func TestChainSum(t *testing.T) {
	ab, ba := sumOf([]string{"a", "b"}), sumOf([]string{"b", "a"})
	if ab.seq == ba.seq {
		t.Error("reordered rules have the same ordered digest")
	}
	if ab.set != ba.set || ab.n != ba.n {
		t.Error("reordered rules have different unordered digests")
	}
	if s := sumOf([]string{"a", "b", "c"}); s.n == ab.n || s.seq == ab.seq {
		t.Error("an added rule is not seen")
	}
	if sumOf(nil) != (chainSum{}) {
		t.Error("the empty chain is not the zero digest")
	}
	// A chain split in two runs of lines digests as one, like rules read
	// back in order.
	saved, err := parseSaveAll(strings.NewReader("*nat\n:SYNX-A - [0:0]\n-A SYNX-A a\n-A SYNX-B x\n-A SYNX-A b\nCOMMIT\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := *saved["nat"].chains["SYNX-A"]; got != ab {
		t.Errorf("SYNX-A digest %+v, want %+v", got, ab)
	}
}
