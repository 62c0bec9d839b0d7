package iptables_test

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestDesiredIsWhatSyncWrites: the rules DesiredFor renders are, line for
// line, what a Sync leaves in the kernel (our chains and our jumps), so
// that a drift report comparing the two is about the kernel, not about the
// renderer.
func TestDesiredIsWhatSyncWrites(t *testing.T) {
	netns.Require(t, "iptables", "iptables-save", "iptables-restore")
	node := netns.New(t, "desired")
	ep := func(ip string, local bool) model.Endpoint {
		return model.Endpoint{Addr: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true, Local: local}
	}
	eps := []model.Endpoint{ep("10.211.1.2", true), ep("10.211.2.2", false)}
	st := &model.State{NodeName: "n", Family: model.IPv4, NodeIPs: []netip.Addr{netip.MustParseAddr("10.210.0.1")},
		Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.211.0.0/16")}},
		Services: []*model.Service{
			{Key: "t/a:p/TCP", Namespace: "t", Name: "a", Protocol: model.TCP, Hash: "1",
				Frontends: []model.Frontend{
					{Kind: model.KindClusterIP, Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster},
					{Kind: model.KindLoadBalancer, Addr: netip.MustParseAddr("203.0.113.9"), Port: 80, Protocol: model.TCP,
						Masquerade: model.MasqueradeAlways, SourceRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
				},
				InternalEndpoints: eps, ExternalEndpoints: eps, ClusterEndpoints: eps,
				Affinity: model.Affinity{ClientIP: true, Timeout: time.Minute}},
			{Key: "t/b:p/UDP", Namespace: "t", Name: "b", Protocol: model.UDP, Hash: "2",
				Frontends: []model.Frontend{{Kind: model.KindClusterIP, Addr: netip.MustParseAddr("10.96.0.11"), Port: 53, Protocol: model.UDP}}},
		}}
	var bins xtables.Binaries
	var randomFully bool
	if err := node.Do(func() error {
		be, err := iptables.New(context.Background(), iptables.Options{})
		if err != nil {
			return err
		}
		mode := be.Mode()
		bins = xtables.BinariesFor(model.IPv4, mode)
		r, err := xtables.NewRunner(model.IPv4, mode)
		if err != nil {
			return err
		}
		if randomFully, err = xtables.HasRandomFully(context.Background(), r); err != nil {
			return err
		}
		_, err = be.Sync(context.Background(), st, backend.SyncOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	d, err := iptables.DesiredFor(st, iptables.Options{}, randomFully)
	if err != nil {
		t.Fatal(err)
	}
	got, want := ruleLines(node.MustExec(bins.Save)), ruleLines(d.SaveText())
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("kernel:\n%s\n\nDesiredFor:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(want) < 10 {
		t.Errorf("only %d rules rendered", len(want))
	}
}

// ruleLines returns the "-A" lines of a dump, sorted, per table.
func ruleLines(dump string) []string {
	var out []string
	table := ""
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l
		case strings.HasPrefix(l, "-A "):
			out = append(out, table+" "+l)
		}
	}
	sort.Strings(out)
	return out
}
