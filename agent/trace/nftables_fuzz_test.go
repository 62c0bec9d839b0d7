package trace

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
)

// fuzzExprs builds rules from bytes: each byte picks an expression of the
// kinds the tracer interprets (and some it does not), the next bytes its
// registers and values, so that odd registers, lengths, verdicts and sets
// reach every evaluator.
func fuzzExprs(b []byte) []NFRule {
	next := func() byte {
		if len(b) == 0 {
			return 0
		}
		c := b[0]
		b = b[1:]
		return c
	}
	reg := func() uint32 { return uint32(next() % 26) }
	data := func() []byte { return make([]byte, int(next()%20)) }
	var rules []NFRule
	var cur []expr.Any
	for len(b) > 0 {
		switch next() % 20 {
		case 0:
			cur = append(cur, &expr.Payload{DestRegister: reg(), Base: expr.PayloadBase(next() % 3), Offset: uint32(next() % 48), Len: uint32(next() % 20)})
		case 1:
			cur = append(cur, &expr.Meta{Key: expr.MetaKey(next() % 30), Register: reg(), SourceRegister: next()%2 == 0})
		case 2:
			cur = append(cur, &expr.Cmp{Op: expr.CmpOp(next() % 7), Register: reg(), Data: data()})
		case 3:
			cur = append(cur, &expr.Bitwise{SourceRegister: reg(), DestRegister: reg(), Len: uint32(next() % 20), Mask: data(), Xor: data()})
		case 4:
			cur = append(cur, &expr.Immediate{Register: reg(), Data: data()})
		case 5:
			cur = append(cur, &expr.Verdict{Kind: expr.VerdictKind(int(next()%12) - 5), Chain: []string{"a", "b", "missing"}[next()%3]})
		case 6:
			cur = append(cur, &expr.Lookup{SourceRegister: reg(), DestRegister: reg(), IsDestRegSet: next()%2 == 0, SetName: []string{"s", "m", "v", "none"}[next()%4], Invert: next()%5 == 0})
		case 7:
			cur = append(cur, &expr.Numgen{Register: reg(), Modulus: uint32(next() % 5), Type: uint32(next() % 2)})
		case 8:
			cur = append(cur, &expr.Hash{SourceRegister: reg(), DestRegister: reg(), Modulus: uint32(next() % 5)})
		case 9:
			cur = append(cur, &expr.Ct{Register: reg(), Key: expr.CtKey(next() % 5), SourceRegister: next()%4 == 0})
		case 10:
			cur = append(cur, &expr.Fib{Register: reg(), ResultADDRTYPE: next()%2 == 0, FlagSADDR: next()%2 == 0, FlagDADDR: next()%2 == 0})
		case 11:
			cur = append(cur, &expr.NAT{Type: expr.NATType(next() % 2), RegAddrMin: reg(), RegProtoMin: reg()})
		case 12:
			cur = append(cur, &expr.Masq{})
		case 13:
			cur = append(cur, &expr.Reject{Type: uint32(next() % 3), Code: next()})
		case 14:
			cur = append(cur, &expr.Dynset{SrcRegKey: reg(), SetName: "s"})
		case 15:
			cur = append(cur, &expr.Limit{}, nil)
		default:
			rules = append(rules, NFRule{Exprs: cur})
			cur = nil
		}
	}
	return append(rules, NFRule{Exprs: cur})
}

// FuzzNFTables: the nftables tracer and its rule text never panic, loop or
// branch without bound on any rules.
func FuzzNFTables(f *testing.F) {
	f.Add([]byte{0, 1, 1, 16, 4, 6, 9, 2, 0, 0, 19, 5, 3, 0, 19, 7, 2, 3, 1, 2, 1, 0, 19})
	f.Add([]byte{11, 1, 2, 5, 7, 2, 19, 6, 1, 0, 1, 1, 0, 13, 0, 3, 12, 5, 6, 1, 19, 8, 9, 9, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 400 {
			return
		}
		third := len(b) / 3
		set := func(name string, m bool) *NFSet {
			return &NFSet{Name: name, Map: m, Timeout: name == "s", Elems: []NFElem{{Key: []byte{10, 96, 0, 10}, Data: []byte{10, 1, 1, 1, 0, 80},
				Verdict: &expr.Verdict{Kind: expr.VerdictJump, Chain: "a"}}, {Key: []byte{1}}}}
		}
		tb := &NFTable{Family: "ip", Name: "fuzz", Sets: []*NFSet{set("s", false), set("m", true), set("v", true)},
			Chains: []*NFChain{
				{Name: "pre", Hook: "PREROUTING", Type: "nat", Priority: -100, Rules: fuzzExprs(b[:third])},
				{Name: "a", Rules: fuzzExprs(b[third : 2*third])},
				{Name: "b", Rules: fuzzExprs(b[2*third:])},
				{Name: "fwd", Hook: "FORWARD", Type: "filter", Policy: "drop", Rules: []NFRule{{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "a"}}}}},
				{Name: "post", Hook: "POSTROUTING", Type: "nat", Rules: []NFRule{{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: "b"}}}}},
			}}
		tr := &NFTables{Tables: []*NFTable{tb}}
		for _, from := range []bool{false, true} {
			_, _ = tr.Trace(Packet{Proto: "udp", Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 80, FromNode: from})
		}
		for _, c := range tb.Chains {
			for _, r := range c.Rules {
				_ = NFRuleText(tb, r)
			}
		}
	})
}
