package trace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftState is the registers of one evaluation of a rule: 16 words of 4
// bytes (NFT_REG_1..4 are 16 bytes each over the same space) and the
// verdict register.
type nftState struct {
	regs    [64]byte
	verdict *expr.Verdict
}

// nftBranch is one way a rule's evaluation goes.
type nftBranch struct {
	st     nftState
	f      *flow
	effect []string
	// end is exitNAT or exitReject when a statement ended the chain.
	end exitKind
	// forked names the expression that forked the branch (numgen, jhash).
	forked string
	why    string
}

// ruleResult is one outcome of a rule for a flow.
type ruleResult struct {
	f       *flow
	verdict *expr.Verdict
	matched bool
	// why says why a branch of a fork or an unknown rule did not match.
	why    string
	end    exitKind
	effect string
	text   string
}

// evalRule evaluates rule i of a chain for a flow: one result when
// nothing forks, more when a numgen, a hash, a dynamic set or an unknown
// expression makes the outcome depend on what the tracer cannot see.
func (n *nftWalk) evalRule(w *walker, t *NFTable, c *NFChain, i int, f *flow) []ruleResult {
	r := c.Rules[i]
	text := n.ruleText(t, c, i)
	if r.Bad != "" {
		w.note("rule %d of %s/%s is not understood (%s) and is treated as not matching", i+1, tableName(t), c.Name, r.Bad)
		return []ruleResult{{f: f, why: "unknown rule (" + r.Bad + "): treated as not matching", end: exitReturn, text: text}}
	}
	live := []*nftBranch{{f: f, end: exitReturn}}
	var done, missed []*nftBranch
	for _, e := range r.Exprs {
		var next []*nftBranch
		for _, b := range live {
			cont, miss := n.eval(w, t, e, b)
			missed = append(missed, miss...)
			for _, x := range cont {
				if x.end != exitReturn || x.st.verdict != nil {
					done = append(done, x)
				} else {
					next = append(next, x)
				}
			}
		}
		if live = next; len(live) == 0 || w.err != nil {
			break
		}
	}
	var out []ruleResult
	for _, b := range append(done, live...) {
		out = append(out, ruleResult{f: b.f, verdict: b.st.verdict, matched: true, end: b.end,
			effect: strings.Join(b.effect, "; "), text: text})
	}
	for _, b := range mergeMissed(missed, f.prob) {
		out = append(out, ruleResult{f: b.f, why: b.why, end: exitReturn, text: text})
	}
	return out
}

// mergeMissed joins the branches that did not match under the same
// conditions (the other values of a numgen), summing their probability.
func mergeMissed(bs []*nftBranch, base float64) []*nftBranch {
	var out []*nftBranch
	byKey := map[string]*nftBranch{}
	for _, b := range bs {
		k := strings.Join(b.f.conds, "\x00") + "\x01" + b.forked + "\x01" + b.why
		if m := byKey[k]; m != nil && b.forked != "" {
			m.f.prob += b.f.prob
			continue
		}
		byKey[k] = b
		out = append(out, b)
	}
	for _, b := range out {
		if b.forked != "" && b.why == "" && base > 0 {
			b.why = fmt.Sprintf("%s did not pick it (%s of what reaches the rule goes on)", b.forked, Percent(b.f.prob/base))
		}
	}
	return out
}

// fork copies a branch for one alternative: its probability share and
// the condition it needs.
func (b *nftBranch) fork(w *walker, prob float64, cond string) *nftBranch {
	if w.paths++; w.paths > maxPaths {
		w.fail(errTooBig)
	}
	c := *b
	c.f = b.f.fork()
	c.f.prob *= prob
	c.effect = append([]string(nil), b.effect...)
	if cond != "" && !containsString(c.f.conds, cond) {
		c.f.conds = append(c.f.conds, cond)
	}
	return &c
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// eval applies one expression to a branch: the branches that go on, and
// those that stopped matching.
func (n *nftWalk) eval(w *walker, t *NFTable, e expr.Any, b *nftBranch) (cont, missed []*nftBranch) {
	one := []*nftBranch{b}
	ok := func(good bool) ([]*nftBranch, []*nftBranch) {
		if good {
			return one, nil
		}
		return nil, one
	}
	switch e := e.(type) {
	case *expr.Payload:
		return ok(n.payload(w, e, b))
	case *expr.Meta:
		return n.meta(w, e, b)
	case *expr.Cmp:
		return ok(cmpEval(e, &b.st))
	case *expr.Bitwise:
		return ok(bitwiseEval(e, &b.st))
	case *expr.Immediate:
		return ok(b.st.store(e.Register, e.Data))
	case *expr.Verdict:
		v := *e
		b.st.verdict = &v
		return one, nil
	case *expr.Lookup:
		return n.lookup(w, t, e, b)
	case *expr.Dynset:
		b.effect = append(b.effect, "records the binding in @"+e.SetName)
		return one, nil
	case *expr.Numgen:
		return numgenFork(w, e, b)
	case *expr.Hash:
		return hashFork(w, e, b)
	case *expr.Ct:
		return n.ct(w, e, b)
	case *expr.Fib:
		return n.fib(w, e, b)
	case *expr.NAT:
		return ok(natEval(w, e, b))
	case *expr.Masq:
		b.f.masq, b.end = true, exitNAT
		b.effect = append(b.effect, "masquerade: the source becomes the node's address")
		return one, nil
	case *expr.Reject:
		b.f.reject, b.end = rejectWords(e, t.Family), exitReject
		b.effect = append(b.effect, "reject")
		return one, nil
	case *expr.Counter, *expr.Log, *expr.Notrack:
		return one, nil
	case *expr.Match:
		if e.Name == "comment" {
			return one, nil
		}
	}
	return unknownFork(w, exprName(e), b)
}

// unknownFork follows a branch both ways past an expression the tracer
// does not interpret.
func unknownFork(w *walker, name string, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	w.note("expression %s is not interpreted by the tracer: its rule is followed both as matching and as not", name)
	yes := b.fork(w, 1, "if the unknown rule (expression "+name+") matches")
	yes.effect = append(yes.effect, "unknown rule: expression "+name+" not interpreted")
	no := b.fork(w, 1, "if the unknown rule (expression "+name+") does not match")
	no.why = "unknown rule: expression " + name + " not interpreted"
	return []*nftBranch{yes}, []*nftBranch{no}
}

func exprName(e expr.Any) string {
	if e == nil {
		return "nil"
	}
	return strings.ToLower(reflect.TypeOf(e).Elem().Name())
}

// regOff is the byte offset of a data register: NFT_REG_1..4 (16 bytes)
// or NFT_REG32_00..15 (4 bytes) over the same space.
func regOff(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 16, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r-unix.NFT_REG32_00) * 4, true
	}
	return 0, false
}

func (s *nftState) load(r uint32, n int) ([]byte, bool) {
	off, ok := regOff(r)
	if !ok || n < 0 || off+n > len(s.regs) {
		return nil, false
	}
	return s.regs[off : off+n], true
}

// store writes data to a register, zeroing the rest of its last word as
// the kernel does.
func (s *nftState) store(r uint32, data []byte) bool {
	off, ok := regOff(r)
	end := off + int(pad4(uint32(len(data))))
	if !ok || end > len(s.regs) {
		return false
	}
	clear(s.regs[off:end])
	copy(s.regs[off:], data)
	return true
}

func pad4(n uint32) uint32 { return (n + 3) &^ 3 }

func u32ne(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// headers builds the network and transport headers of a flow's packet.
func headers(f *flow) (nh, th []byte) {
	th = make([]byte, 8)
	binary.BigEndian.PutUint16(th[0:], f.sport)
	binary.BigEndian.PutUint16(th[2:], f.dport)
	if f.src.Is4() {
		nh = make([]byte, 20)
		nh[0], nh[9] = 0x45, protoNum(f.proto)
		s, d := f.src.As4(), f.dst.As4()
		copy(nh[12:], s[:])
		copy(nh[16:], d[:])
		return nh, th
	}
	nh = make([]byte, 40)
	nh[0], nh[6] = 0x60, protoNum(f.proto)
	s, d := f.src.As16(), f.dst.As16()
	copy(nh[8:], s[:])
	copy(nh[24:], d[:])
	return nh, th
}

func protoNum(p string) byte {
	switch p {
	case "tcp":
		return unix.IPPROTO_TCP
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return 0
}

func (n *nftWalk) payload(w *walker, e *expr.Payload, b *nftBranch) bool {
	if e.OperationType != expr.PayloadLoad {
		w.note("payload writes are not interpreted; the rule does not match")
		return false
	}
	nh, th := headers(b.f)
	var src []byte
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		src = nh
	case expr.PayloadBaseTransportHeader:
		src = th
	default:
		w.note("link-layer payload is not interpreted; the rule does not match")
		return false
	}
	if int(e.Offset+e.Len) > len(src) {
		return false // beyond the header: the kernel breaks the rule too
	}
	return b.st.store(e.DestRegister, src[e.Offset:e.Offset+e.Len])
}

func (n *nftWalk) meta(w *walker, e *expr.Meta, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	one := []*nftBranch{b}
	if e.SourceRegister {
		if e.Key != expr.MetaKeyMARK {
			return unknownFork(w, fmt.Sprintf("meta set %d", e.Key), b)
		}
		v, ok := b.st.load(e.Register, 4)
		if !ok {
			return nil, one
		}
		b.f.mark = binary.NativeEndian.Uint32(v)
		b.effect = append(b.effect, fmt.Sprintf("mark is now %#x", b.f.mark))
		return one, nil
	}
	var v []byte
	switch e.Key {
	case expr.MetaKeyL4PROTO:
		v = []byte{protoNum(b.f.proto)}
	case expr.MetaKeyNFPROTO:
		v = []byte{unix.NFPROTO_IPV6}
		if b.f.src.Is4() {
			v = []byte{unix.NFPROTO_IPV4}
		}
	case expr.MetaKeyPROTOCOL:
		v = binary.BigEndian.AppendUint16(nil, unix.ETH_P_IPV6)
		if b.f.src.Is4() {
			v = binary.BigEndian.AppendUint16(nil, unix.ETH_P_IP)
		}
	case expr.MetaKeyMARK:
		v = u32ne(b.f.mark)
	case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
		name := b.f.in
		if e.Key == expr.MetaKeyOIFNAME {
			name = b.f.out
		}
		if name == "" && !(e.Key == expr.MetaKeyIIFNAME && (b.f.hook == "OUTPUT" || b.f.hook == "POSTROUTING") && b.f.in == "") {
			return unknownFork(w, "meta interface name (not known for this packet)", b)
		}
		v = make([]byte, 16)
		copy(v, name)
	default:
		return unknownFork(w, fmt.Sprintf("meta key %d", e.Key), b)
	}
	if !b.st.store(e.Register, v) {
		return nil, one
	}
	return one, nil
}

func cmpEval(e *expr.Cmp, s *nftState) bool {
	v, ok := s.load(e.Register, len(e.Data))
	if !ok {
		return false
	}
	c := bytes.Compare(v, e.Data)
	switch e.Op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

func bitwiseEval(e *expr.Bitwise, s *nftState) bool {
	n := int(e.Len)
	v, ok := s.load(e.SourceRegister, n)
	if !ok || len(e.Mask) < n || len(e.Xor) < n {
		return false
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = v[i]&e.Mask[i] ^ e.Xor[i]
	}
	return s.store(e.DestRegister, out)
}

// lookup matches a key in a set, or maps it to data or a verdict. An
// element of a set whose elements expire (the affinity set) may expire
// before the packet comes: both outcomes are followed.
func (n *nftWalk) lookup(w *walker, t *NFTable, e *expr.Lookup, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	one := []*nftBranch{b}
	set := t.Set(e.SetName)
	if set == nil {
		w.note("set %s of table %s does not exist; its lookups do not match", e.SetName, tableName(t))
		return nil, one
	}
	el := n.find(b, set, e.SourceRegister)
	if e.Invert {
		if el == nil {
			return one, nil
		}
		return nil, one
	}
	if el == nil {
		return nil, one
	}
	if e.IsDestRegSet {
		if e.DestRegister == unix.NFT_REG_VERDICT {
			if el.Verdict == nil {
				return nil, one
			}
			v := *el.Verdict
			b.st.verdict = &v
		} else if !b.st.store(e.DestRegister, el.Data) {
			return nil, one
		}
	}
	if !set.Timeout {
		return one, nil
	}
	live := b.fork(w, 1, "while the binding in @"+set.Name+" lives")
	live.effect = append(live.effect, "the client has a binding in @"+set.Name)
	gone := b.fork(w, 1, "once the binding in @"+set.Name+" has expired")
	gone.why = "the binding in @" + set.Name + " has expired"
	return []*nftBranch{live}, []*nftBranch{gone}
}

// nftIndex is a set's elements by key, when all keys have one length.
type nftIndex struct {
	keyLen int
	byKey  map[string]int
}

// find returns the element whose key the registers hold from reg on.
func (n *nftWalk) find(b *nftBranch, set *NFSet, reg uint32) *NFElem {
	ix := n.index[set]
	if ix == nil {
		ix = &nftIndex{keyLen: -1, byKey: make(map[string]int, len(set.Elems))}
		for i, el := range set.Elems {
			switch {
			case i == 0:
				ix.keyLen = len(el.Key)
			case len(el.Key) != ix.keyLen:
				ix.byKey = nil
			}
			if ix.byKey != nil {
				ix.byKey[string(el.Key)] = i
			}
		}
		n.index[set] = ix
	}
	if ix.byKey != nil {
		v, ok := b.st.load(reg, ix.keyLen)
		if i, found := ix.byKey[string(v)]; ok && found {
			return &set.Elems[i]
		}
		return nil
	}
	for i := range set.Elems {
		el := &set.Elems[i]
		if v, ok := b.st.load(reg, len(el.Key)); ok && bytes.Equal(v, el.Key) {
			return el
		}
	}
	return nil
}

// numgenFork follows each value of a numgen with its share: random picks
// are probabilities, an incremental counter's position is a condition.
func numgenFork(w *walker, e *expr.Numgen, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	if e.Modulus == 0 || e.Modulus > 1024 {
		return unknownFork(w, fmt.Sprintf("numgen mod %d", e.Modulus), b)
	}
	name, cond := fmt.Sprintf("numgen random mod %d", e.Modulus), ""
	if e.Type == unix.NFT_NG_INCREMENTAL {
		name, cond = fmt.Sprintf("numgen inc mod %d", e.Modulus), "depending on the rotation counter (round robin)"
	}
	return spread(w, b, e.Modulus, e.Offset, e.Register, name, cond)
}

// hashFork follows each value of a jhash: which one a client gets is a
// condition (the hash of its address), each 1/mod of the clients.
func hashFork(w *walker, e *expr.Hash, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	if e.Modulus == 0 || e.Modulus > 1024 {
		return unknownFork(w, fmt.Sprintf("hash mod %d", e.Modulus), b)
	}
	return spread(w, b, e.Modulus, e.Offset, e.DestRegister, fmt.Sprintf("jhash mod %d", e.Modulus),
		"depending on the hash of the client address (source hashing)")
}

func spread(w *walker, b *nftBranch, mod, offset, reg uint32, name, cond string) ([]*nftBranch, []*nftBranch) {
	var out []*nftBranch
	for v := uint32(0); v < mod; v++ {
		g := b.fork(w, 1/float64(mod), cond)
		g.forked = name
		if !g.st.store(reg, u32ne(v+offset)) {
			return nil, []*nftBranch{b}
		}
		out = append(out, g)
	}
	return out, nil
}

// Conntrack bits of a new connection's first packet.
const (
	ctStateNew   = 1 << 3
	ctStatusSNAT = 1 << 4
	ctStatusDNAT = 1 << 5
)

func (n *nftWalk) ct(w *walker, e *expr.Ct, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	var v uint32
	switch {
	case e.SourceRegister:
		return unknownFork(w, "ct set", b)
	case e.Key == expr.CtKeySTATE:
		v = ctStateNew
	case e.Key == expr.CtKeySTATUS:
		if b.f.ctdnat {
			v |= ctStatusDNAT
		}
		if b.f.masq {
			v |= ctStatusSNAT
		}
	default:
		return unknownFork(w, fmt.Sprintf("ct key %d", e.Key), b)
	}
	if !b.st.store(e.Register, u32ne(v)) {
		return nil, []*nftBranch{b}
	}
	return []*nftBranch{b}, nil
}

func (n *nftWalk) fib(w *walker, e *expr.Fib, b *nftBranch) ([]*nftBranch, []*nftBranch) {
	if !e.ResultADDRTYPE || e.FlagSADDR == e.FlagDADDR {
		return unknownFork(w, "fib (other than saddr/daddr type)", b)
	}
	a := b.f.src
	if e.FlagDADDR {
		a = b.f.dst
	}
	typ := uint32(unix.RTN_UNICAST)
	if w.env.local(a) {
		typ = unix.RTN_LOCAL
	}
	if !b.st.store(e.Register, u32ne(typ)) {
		return nil, []*nftBranch{b}
	}
	return []*nftBranch{b}, nil
}

// natEval applies dnat (address and port from registers) or snat.
func natEval(w *walker, e *expr.NAT, b *nftBranch) bool {
	alen := 16
	if b.f.src.Is4() {
		alen = 4
	}
	b.end = exitNAT
	if e.Type == expr.NATTypeSourceNAT {
		b.f.masq = true
		b.effect = append(b.effect, "snat: the source is rewritten")
		return true
	}
	dst, port := b.f.dst, b.f.dport
	if e.RegAddrMin != 0 {
		raw, ok := b.st.load(e.RegAddrMin, alen)
		if !ok {
			return false
		}
		a, _ := netip.AddrFromSlice(raw)
		dst = a.Unmap()
	}
	if e.RegProtoMin != 0 {
		raw, ok := b.st.load(e.RegProtoMin, 2)
		if !ok {
			return false
		}
		port = binary.BigEndian.Uint16(raw)
	}
	b.f.dst, b.f.dport, b.f.dnat, b.f.ctdnat = dst, port, true, true
	b.effect = append(b.effect, "DNAT to "+netip.AddrPortFrom(dst, port).String())
	return true
}
