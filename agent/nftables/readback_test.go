package nftables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// TestDesiredTableIPv6: the ip6 table as a full sync writes it decodes
// back into expressions, its elements read as nft lists them, and the
// tracer walks it: balance over both endpoints, a reject without any.
func TestDesiredTableIPv6(t *testing.T) {
	st := ipv6State()
	tb, err := DesiredTable(st, Options{Family: model.IPv6})
	if err != nil {
		t.Fatal(err)
	}
	if tb.Family != "ip6" || tb.Name != DefaultTable {
		t.Fatalf("table %s %s", tb.Family, tb.Name)
	}
	for _, c := range tb.Chains {
		for i, r := range c.Rules {
			if r.Bad != "" || len(r.Exprs) == 0 {
				t.Errorf("rule %d of %s: %q, %d expressions", i+1, c.Name, r.Bad, len(r.Exprs))
			}
		}
	}
	var els []string
	for _, s := range []string{setServices, setNoEndpoint, setEndpoints, setHairpin} {
		for _, e := range tb.Set(s).Elems {
			els = append(els, s+": "+ElemText(s, e))
		}
	}
	for _, want := range []string{"service-ips: fd00:96::10 . tcp . 80 : goto pick-2-offcluster",
		"no-endpoint-services: fd00:96::11 . tcp . 80 : goto reject-chain",
		"endpoints: fd00:210::1 . tcp . 30080 . 1 : fd00:211::3 . 8080"} {
		if !slices.Contains(els, want) {
			t.Errorf("no element %q in:\n%s", want, strings.Join(els, "\n"))
		}
	}
	bind := trace.NFElem{Key: []byte(string(netip.MustParseAddr("fd00:210::2").AsSlice()) + string(netip.MustParseAddr("fd00:96::10").AsSlice()) +
		"\x00\x50\x00\x00" + string(netip.MustParseAddr("fd00:211::3").AsSlice()) + "\x1f\x90\x00\x00")}
	if got := ElemText(setAffinity, bind); got != "fd00:210::2 . fd00:96::10 . 80 . fd00:211::3 . 8080" {
		t.Errorf("a binding reads %q", got)
	}
	tr := &trace.NFTables{Tables: []*trace.NFTable{tb}}
	res, err := tr.Trace(trace.Packet{Proto: "tcp", Src: netip.MustParseAddr("fd00:210::2"), Dst: netip.MustParseAddr("fd00:96::10"), DstPort: 80})
	if err != nil {
		t.Fatal(err)
	}
	if eps := res.Endpoints(); len(eps) != 2 || eps["[fd00:211::3]:8080"] != 0.5 {
		t.Errorf("trace: %s", res.Summary())
	}
	res, err = tr.Trace(trace.Packet{Proto: "tcp", Src: netip.MustParseAddr("fd00:210::2"), Dst: netip.MustParseAddr("fd00:96::11"), DstPort: 80})
	if err != nil || len(res.Paths) != 1 || res.Paths[0].Verdict != trace.VerdictReject {
		t.Errorf("no endpoints: %v %s", err, res.Summary())
	}
}

// TestDecodeExprsBad: expression bytes that do not decode, or of a kind
// not known, are said in the rule, not a failure or a panic.
func TestDecodeExprsBad(t *testing.T) {
	for _, b := range [][]byte{{1, 2, 3}, {8, 0, 1, 0, 'x', 'y', 0, 0}} {
		if _, bad := decodeExprs(2, b); bad == "" {
			t.Errorf("junk %v decoded without a word", b)
		}
	}
	r := encode(2, false, verdict(0))
	exprs, bad := decodeExprs(2, r.exprs)
	if bad != "" || len(exprs) != 1 {
		t.Errorf("a drop verdict: %v %q", exprs, bad)
	}
	if _, err := decodeExpr(2, "tproxy", nil); err == nil {
		t.Error("an unknown expression kind decoded")
	}
}
