package trace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftSym is what a register word holds, as text: the expression that
// loaded it, or a constant.
type nftSym struct {
	text  string
	raw   []byte // a constant's bytes
	words int
	// kind formats constants compared with it: addr, port, proto, mark,
	// state, status, fibtype.
	kind string
	bits int // a prefix length applied to an address
}

// nftText renders a rule in words close to what nft prints, tracking
// what each register holds.
type nftText struct {
	t     *NFTable
	regs  [16]*nftSym
	parts []string
}

// NFRuleText renders a rule of a table in words close to what nft
// prints, e.g. "ip daddr . meta l4proto . th dport vmap @service-ips".
func NFRuleText(t *NFTable, r NFRule) string { return nftRuleText(t, r) }

func nftRuleText(t *NFTable, r NFRule) string {
	x := &nftText{t: t}
	for _, e := range r.Exprs {
		x.add(e)
	}
	if r.Bad != "" {
		x.parts = append(x.parts, "<not decoded: "+r.Bad+">")
	}
	return strings.Join(x.parts, " ")
}

func (x *nftText) set(reg uint32, s *nftSym, n int) {
	off, ok := regOff(reg)
	if !ok || off/4 >= len(x.regs) {
		return
	}
	s.words = max(1, int(pad4(uint32(n)))/4)
	x.regs[off/4] = s
}

func (x *nftText) get(reg uint32) *nftSym {
	off, ok := regOff(reg)
	if !ok || off/4 >= len(x.regs) || x.regs[off/4] == nil {
		return &nftSym{text: "?"}
	}
	return x.regs[off/4]
}

// key renders n bytes from reg on: one symbol, or a concatenation.
func (x *nftText) key(reg uint32, n int) string {
	off, ok := regOff(reg)
	if !ok {
		return "?"
	}
	var parts []string
	for w := off / 4; w < off/4+max(1, int(pad4(uint32(n)))/4) && w < len(x.regs); {
		s := x.regs[w]
		if s == nil {
			parts = append(parts, "?")
			w++
			continue
		}
		parts = append(parts, x.value(s))
		w += s.words
	}
	return strings.Join(parts, " . ")
}

// value is a symbol as an operand: its text, or a constant formatted.
func (x *nftText) value(s *nftSym) string {
	if s.raw == nil {
		return s.text
	}
	return formatConst(s.raw, guessKind(s.raw))
}

func guessKind(raw []byte) string {
	switch len(raw) {
	case 2:
		return "port"
	case 4, 16:
		return "addr"
	}
	return ""
}

// formatConst renders a constant by what it is compared with.
func formatConst(b []byte, kind string) string {
	switch {
	case kind == "addr" && (len(b) == 4 || len(b) == 16):
		a, _ := netip.AddrFromSlice(b)
		return a.String()
	case kind == "port" && len(b) == 2:
		return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
	case kind == "proto" && len(b) == 1:
		switch b[0] {
		case unix.IPPROTO_TCP:
			return "tcp"
		case unix.IPPROTO_UDP:
			return "udp"
		case unix.IPPROTO_SCTP:
			return "sctp"
		}
		return strconv.Itoa(int(b[0]))
	case kind == "fibtype" && len(b) == 4:
		switch binary.NativeEndian.Uint32(b) {
		case unix.RTN_LOCAL:
			return "local"
		case unix.RTN_UNICAST:
			return "unicast"
		}
	case (kind == "mark" || kind == "state" || kind == "status" || kind == "num") && len(b) == 4:
		v := binary.NativeEndian.Uint32(b)
		if kind == "num" {
			return strconv.FormatUint(uint64(v), 10)
		}
		return fmt.Sprintf("%#x", v)
	}
	return fmt.Sprintf("0x%x", b)
}

func cmpOp(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return ""
	case expr.CmpOpNeq:
		return "!= "
	case expr.CmpOpLt:
		return "< "
	case expr.CmpOpLte:
		return "<= "
	case expr.CmpOpGt:
		return "> "
	case expr.CmpOpGte:
		return ">= "
	}
	return "? "
}

func (x *nftText) add(e expr.Any) {
	switch e := e.(type) {
	case *expr.Payload:
		x.set(e.DestRegister, &nftSym{text: payloadName(e), kind: payloadKind(e)}, int(e.Len))
	case *expr.Meta:
		x.meta(e)
	case *expr.Cmp:
		s := x.get(e.Register)
		if t, ok := bitsText(s, e); ok {
			x.parts = append(x.parts, t)
			return
		}
		val := formatConst(e.Data, s.kind)
		if s.kind == "addr" && s.bits > 0 {
			val += "/" + strconv.Itoa(s.bits)
		}
		x.parts = append(x.parts, s.text+" "+cmpOp(e.Op)+val)
	case *expr.Bitwise:
		x.bitwise(e)
	case *expr.Immediate:
		x.set(e.Register, &nftSym{text: fmt.Sprintf("0x%x", e.Data), raw: append([]byte(nil), e.Data...)}, len(e.Data))
	case *expr.Verdict:
		x.parts = append(x.parts, verdictText(e))
	case *expr.Lookup:
		x.lookup(e)
	case *expr.Dynset:
		op := "add"
		if e.Operation == unix.NFT_DYNSET_OP_UPDATE {
			op = "update"
		}
		x.parts = append(x.parts, fmt.Sprintf("%s @%s { %s timeout %s }", op, e.SetName, x.key(e.SrcRegKey, x.keyLen(e.SetName)), e.Timeout))
	case *expr.Numgen:
		typ := "random"
		if e.Type == unix.NFT_NG_INCREMENTAL {
			typ = "inc"
		}
		x.set(e.Register, &nftSym{text: fmt.Sprintf("numgen %s mod %d", typ, e.Modulus), kind: "num"}, 4)
	case *expr.Hash:
		x.set(e.DestRegister, &nftSym{text: fmt.Sprintf("jhash %s mod %d seed %#x", x.get(e.SourceRegister).text, e.Modulus, e.Seed), kind: "num"}, 4)
	case *expr.Ct:
		x.ct(e)
	case *expr.Fib:
		what := "saddr"
		if e.FlagDADDR {
			what = "daddr"
		}
		x.set(e.Register, &nftSym{text: "fib " + what + " type", kind: "fibtype"}, 4)
	case *expr.NAT:
		x.nat(e)
	case *expr.Masq:
		s := "masquerade"
		if e.FullyRandom {
			s += " fully-random"
		}
		x.parts = append(x.parts, s)
	case *expr.Reject:
		x.parts = append(x.parts, "reject with "+rejectWords(e, x.t.Family))
	case *expr.Counter:
		x.parts = append(x.parts, "counter")
	case *expr.Match:
		x.parts = append(x.parts, "xt match "+e.Name)
	default:
		x.parts = append(x.parts, "<"+exprName(e)+">")
	}
}

func payloadName(e *expr.Payload) string {
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		switch {
		case e.Offset == 12 && e.Len == 4:
			return "ip saddr"
		case e.Offset == 16 && e.Len == 4:
			return "ip daddr"
		case e.Offset == 8 && e.Len == 16:
			return "ip6 saddr"
		case e.Offset == 24 && e.Len == 16:
			return "ip6 daddr"
		}
		return fmt.Sprintf("@nh,%d,%d", e.Offset*8, e.Len*8)
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 0 && e.Len == 2:
			return "th sport"
		case e.Offset == 2 && e.Len == 2:
			return "th dport"
		}
		return fmt.Sprintf("@th,%d,%d", e.Offset*8, e.Len*8)
	}
	return fmt.Sprintf("@ll,%d,%d", e.Offset*8, e.Len*8)
}

func payloadKind(e *expr.Payload) string {
	switch {
	case e.Base == expr.PayloadBaseNetworkHeader && (e.Len == 4 || e.Len == 16):
		return "addr"
	case e.Base == expr.PayloadBaseTransportHeader && e.Len == 2:
		return "port"
	}
	return ""
}

func (x *nftText) meta(e *expr.Meta) {
	names := map[expr.MetaKey][2]string{
		expr.MetaKeyL4PROTO: {"meta l4proto", "proto"}, expr.MetaKeyMARK: {"meta mark", "mark"},
		expr.MetaKeyIIFNAME: {"iifname", "name"}, expr.MetaKeyOIFNAME: {"oifname", "name"},
		expr.MetaKeyNFPROTO: {"meta nfproto", ""}, expr.MetaKeyPROTOCOL: {"meta protocol", ""},
	}
	n, ok := names[e.Key]
	if !ok {
		n = [2]string{fmt.Sprintf("meta %d", e.Key), ""}
	}
	if e.SourceRegister {
		x.parts = append(x.parts, n[0]+" set "+x.get(e.Register).text)
		return
	}
	x.set(e.Register, &nftSym{text: n[0], kind: n[1]}, 4)
}

func (x *nftText) ct(e *expr.Ct) {
	text, kind := fmt.Sprintf("ct %d", e.Key), ""
	switch e.Key {
	case expr.CtKeySTATE:
		text, kind = "ct state", "state"
	case expr.CtKeySTATUS:
		text, kind = "ct status", "status"
	}
	if e.SourceRegister {
		x.parts = append(x.parts, text+" set "+x.get(e.Register).text)
		return
	}
	x.set(e.Register, &nftSym{text: text, kind: kind}, 4)
}

// bitwise renders an address prefix as such ("ip saddr 10.0.0.0/8"),
// conntrack bits by name ("ct state new"), a mark set as "| bits",
// anything else as "x & mask ^ xor".
func (x *nftText) bitwise(e *expr.Bitwise) {
	s := x.get(e.SourceRegister)
	switch {
	case s.kind == "addr" && prefixLen(e.Mask) >= 0 && isZero(e.Xor):
		x.set(e.DestRegister, &nftSym{text: s.text, kind: "addr", bits: prefixLen(e.Mask)}, int(e.Len))
		return
	case (s.kind == "state" || s.kind == "status") && isZero(e.Xor) && len(e.Mask) == 4:
		x.set(e.DestRegister, &nftSym{text: s.text, kind: s.kind + "bits", bits: int(binary.NativeEndian.Uint32(e.Mask))}, 4)
		return
	case s.kind == "mark" && len(e.Mask) == 4 && len(e.Xor) == 4:
		m, v := binary.NativeEndian.Uint32(e.Mask), binary.NativeEndian.Uint32(e.Xor)
		if v != 0 && m == ^v {
			x.set(e.DestRegister, &nftSym{text: fmt.Sprintf("%s | %#x", s.text, v), kind: "mark"}, 4)
			return
		}
	}
	text := fmt.Sprintf("%s & %s", s.text, formatConst(e.Mask, s.kind))
	if !isZero(e.Xor) {
		text += " ^ " + formatConst(e.Xor, s.kind)
	}
	x.set(e.DestRegister, &nftSym{text: text, kind: s.kind}, int(e.Len))
}

// ctBitNames name the conntrack state and status bits nft prints.
var ctBitNames = map[string][]string{
	"statebits":  {0: "invalid", 1: "established", 2: "related", 3: "new", 6: "untracked"},
	"statusbits": {0: "expected", 1: "seen-reply", 2: "assured", 3: "confirmed", 4: "snat", 5: "dnat"},
}

// bitsText renders a conntrack bit mask compared with zero: "ct state
// new" when some bit is set, "ct state ! established,related" when none.
func bitsText(s *nftSym, e *expr.Cmp) (string, bool) {
	names := ctBitNames[s.kind]
	if names == nil || !isZero(e.Data) || (e.Op != expr.CmpOpEq && e.Op != expr.CmpOpNeq) {
		return "", false
	}
	var set []string
	for i := 0; i < 32; i++ {
		if s.bits&(1<<i) == 0 {
			continue
		}
		if i < len(names) && names[i] != "" {
			set = append(set, names[i])
		} else {
			set = append(set, fmt.Sprintf("%#x", 1<<i))
		}
	}
	if e.Op == expr.CmpOpEq {
		return s.text + " ! " + strings.Join(set, ","), true
	}
	return s.text + " " + strings.Join(set, ","), true
}

// prefixLen is the length of a prefix mask, -1 when it is not one.
func prefixLen(m []byte) int {
	n, end := 0, false
	for _, b := range m {
		for i := 7; i >= 0; i-- {
			switch set := b&(1<<i) != 0; {
			case set && end:
				return -1
			case set:
				n++
			default:
				end = true
			}
		}
	}
	return n
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

// keyLen is the key length of a set's elements (4 when unknown).
func (x *nftText) keyLen(name string) int {
	if s := x.t.Set(name); s != nil && len(s.Elems) > 0 {
		return len(s.Elems[0].Key)
	}
	return 4
}

func (x *nftText) lookup(e *expr.Lookup) {
	key := x.key(e.SourceRegister, x.keyLen(e.SetName))
	switch {
	case e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT:
		x.parts = append(x.parts, key+" vmap @"+e.SetName)
	case e.IsDestRegSet:
		n := 4
		if s := x.t.Set(e.SetName); s != nil && len(s.Elems) > 0 {
			n = len(s.Elems[0].Data)
		}
		x.set(e.DestRegister, &nftSym{text: key + " map @" + e.SetName, kind: "map"}, n)
	case e.Invert:
		x.parts = append(x.parts, key+" != @"+e.SetName)
	default:
		x.parts = append(x.parts, key+" @"+e.SetName)
	}
}

func (x *nftText) nat(e *expr.NAT) {
	verb := "dnat"
	if e.Type == expr.NATTypeSourceNAT {
		verb = "snat"
	}
	if e.RegAddrMin == 0 {
		x.parts = append(x.parts, verb+" to :"+x.value(x.get(e.RegProtoMin)))
		return
	}
	a := x.get(e.RegAddrMin)
	to := x.value(a)
	if a.kind == "map" {
		x.parts = append(x.parts, verb+" to "+to)
		return
	}
	if e.RegProtoMin != 0 {
		to += ":" + x.value(x.get(e.RegProtoMin))
	}
	x.parts = append(x.parts, verb+" to "+to)
}

// rejectWords names a reject's answer: "icmp port-unreachable", "tcp
// reset", or its type and code.
func rejectWords(e *expr.Reject, fam string) string {
	switch {
	case e.Type == unix.NFT_REJECT_TCP_RST:
		return "tcp reset"
	case e.Type == unix.NFT_REJECT_ICMP_UNREACH && fam == "ip" && e.Code == 3:
		return "icmp port-unreachable"
	case e.Type == unix.NFT_REJECT_ICMP_UNREACH && fam == "ip6" && e.Code == 4:
		return "icmpv6 port-unreachable"
	case e.Type == unix.NFT_REJECT_ICMPX_UNREACH && e.Code == unix.NFT_REJECT_ICMPX_PORT_UNREACH:
		return "icmpx port-unreachable"
	}
	return fmt.Sprintf("icmp type %d code %d", e.Type, e.Code)
}
