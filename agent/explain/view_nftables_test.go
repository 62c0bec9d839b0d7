package explain

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftables"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// nftWorld is a NodePort Service with two endpoints, as the model builds it.
func nftWorld(t *testing.T) *model.State {
	t.Helper()
	_, st := world(false, ep{ip: "10.211.1.2", node: "node-a", ready: true, serving: true},
		ep{ip: "10.211.2.2", node: "node-b", ready: true, serving: true})
	if len(st.Services) != 1 {
		t.Fatalf("state has %d service ports", len(st.Services))
	}
	return st
}

// TestNFTablesViewDrift: a view whose kernel holds what the backend
// writes has no drift; a missing endpoint element, a missing chain and an
// extra chain are each reported, for the node and for the port.
func TestNFTablesViewDrift(t *testing.T) {
	st := nftWorld(t)
	s := st.Services[0]
	kernelTable := func() *trace.NFTable {
		tb, err := nftables.DesiredTable(st, nftables.Options{Family: model.IPv4})
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	v := &nftView{tr: &trace.NFTables{Tables: []*trace.NFTable{kernelTable()}}, opts: nftables.Options{Family: model.IPv4}}
	if d, n := v.diff(st, ""); len(d) != 0 || n == 0 {
		t.Fatalf("the backend's own table: %d compared, differences %+v", n, d)
	}
	k := v.port(s)
	if len(k.SetEntries[nftables.MapServices]) != 2 || len(k.SetEntries[nftables.MapEndpoints]) != 4 {
		t.Errorf("port's elements %v", k.SetEntries)
	}
	if got := strings.Join(k.SetEntries[nftables.MapEndpoints], "\n"); !strings.Contains(got, "10.96.0.10 . tcp . 80 . 0 : 10.211.1.2 . 8080") {
		t.Errorf("endpoints elements:\n%s", got)
	}

	// The kernel lost an endpoint element and a pick chain, and holds a
	// service chain nobody wants.
	tb := v.ours()
	eps := tb.Set(nftables.MapEndpoints)
	eps.Elems = eps.Elems[1:]
	var kept []*trace.NFChain
	lost := ""
	for _, c := range tb.Chains {
		if strings.HasPrefix(c.Name, "pick-") && lost == "" {
			lost = c.Name
			continue
		}
		kept = append(kept, c)
	}
	tb.Chains = append(kept, &trace.NFChain{Name: "svc-AAAAAAAAAAAA-ns/web/tcp/http"})
	d, _ := v.diff(st, "")
	text := ""
	for _, x := range d {
		text += x.Kind + " " + x.Object + " " + x.Detail + "\n"
		if x.Object == "set endpoints" && x.Service != s.Key {
			t.Errorf("the lost endpoint element is told as %q's, want %q's", x.Service, s.Key)
		}
	}
	for _, want := range []string{"differs set endpoints missing:", "missing chain " + lost, "extra chain svc-AAAAAAAAAAAA-ns/web/tcp/http"} {
		if !strings.Contains(text, want) {
			t.Errorf("node drift lacks %q:\n%s", want, text)
		}
	}
	d, _ = v.diff(st, s.Key)
	text = ""
	for _, x := range d {
		text += x.Kind + " " + x.Object + "\n"
	}
	if !strings.Contains(text, "differs set endpoints") || !strings.Contains(text, "extra chain svc-") || strings.Contains(text, lost) {
		t.Errorf("port drift (the shared pick chain is the node's, not the port's):\n%s", text)
	}
	// No table at all.
	v.tr.Tables = nil
	if d, _ := v.diff(st, ""); len(d) != 1 || d[0].Kind != "missing" {
		t.Errorf("no table: %+v", d)
	}
}

// TestNFTablesIsLocal: a trace from one of an nftables node's own
// addresses takes the output path.
func TestNFTablesIsLocal(t *testing.T) {
	own := netip.MustParseAddr("10.210.0.1")
	tr := &trace.NFTables{Env: trace.Env{LocalAddrs: []netip.Addr{own}}}
	if !isLocal(tr, own) || isLocal(tr, netip.MustParseAddr("10.210.0.2")) {
		t.Error("the node's own address not told apart")
	}
}

// TestNFTablesViewKernel: the view reads back what the real backend
// programmed in a network namespace: no drift, the port's elements, and
// a trace through it; a deleted map element is drift.
func TestNFTablesViewKernel(t *testing.T) {
	netns.Require(t, "nft")
	node := netns.New(t, "explain-node")
	st := nftWorld(t)
	ctx := context.Background()
	snap := &daemon.Snapshot{Backend: v1alpha1.BackendNFTables, InNetNS: node.Do}
	err := node.Do(func() error {
		be, err := nftables.New(nftables.Options{Family: model.IPv4})
		if err != nil {
			return err
		}
		_, err = be.Sync(ctx, st, backend.SyncOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := readView(ctx, snap, model.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if d, n := v.diff(st, ""); len(d) != 0 || n == 0 {
		t.Fatalf("after a sync: %d compared, differences %+v", n, d)
	}
	k := v.port(st.Services[0])
	if k.Backend != "nftables" || len(k.SetEntries[nftables.MapEndpoints]) != 4 {
		t.Errorf("port %+v", k)
	}
	res, err := v.tracer().Trace(trace.Packet{Proto: "tcp", Src: netip.MustParseAddr("10.210.0.2"), Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 80})
	if err != nil {
		t.Fatal(err)
	}
	if eps := res.Endpoints(); len(eps) != 2 || eps["10.211.1.2:8080"] != 0.5 {
		t.Errorf("trace: %s", res.Summary())
	}
	node.MustExec("nft", "delete", "element", "ip", nftables.DefaultTable, nftables.MapServices, "{ 10.96.0.10 . tcp . 80 }")
	if v, err = readView(ctx, snap, model.IPv4); err != nil {
		t.Fatal(err)
	}
	d, _ := v.diff(st, st.Services[0].Key)
	if len(d) != 1 || d[0].Object != "set "+nftables.MapServices || !strings.Contains(d[0].Detail, "missing: 10.96.0.10 . tcp . 80 : goto pick-2") {
		t.Errorf("a deleted dispatch element: %+v", d)
	}
}
