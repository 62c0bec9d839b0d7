package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Expressions are built with github.com/google/nftables/expr, which knows
// every expression's netlink encoding, and marshalled at once: the
// backend keeps bytes, not expression trees.
//
// Registers follow nft's own choices (NFT_REG_1 = 1 for the first value,
// 32-bit registers 8.. for concatenations), so that `nft list` prints the
// rules.
const (
	reg1    = unix.NFT_REG_1
	reg2    = unix.NFT_REG_2
	reg32_0 = unix.NFT_REG32_00
)

// encode marshals the expressions of one rule. A digest of the bytes goes
// into the rule's user data when withDigest is set.
func encode(fam byte, withDigest bool, exprs ...expr.Any) rule {
	list := make([]netlink.Attribute, 0, len(exprs))
	for _, e := range exprs {
		b, err := expr.Marshal(fam, e)
		if err != nil {
			panic("nftables: encode expression: " + err.Error())
		}
		list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
	}
	b, err := netlink.MarshalAttributes(list)
	if err != nil {
		panic("nftables: encode rule: " + err.Error())
	}
	r := rule{exprs: b}
	if withDigest {
		r.udata = digestUdata(b)
	}
	return r
}

// udataDigest is the type of our TLV in a rule's user data. nft prints
// comments (type 0) and ignores the types it does not know.
const udataDigest = 0xd1

// digestUdata is the user data of a shared chain's rule: a TLV holding the
// first 16 bytes of the SHA-256 of its expressions.
func digestUdata(exprs []byte) []byte {
	sum := sha256.Sum256(exprs)
	return append([]byte{udataDigest, 16}, sum[:16]...)
}

func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// protoNum is the IP protocol number of a model protocol.
func protoNum(p model.Protocol) byte {
	switch p {
	case model.UDP:
		return unix.IPPROTO_UDP
	case model.SCTP:
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// l4proto matches the transport protocol ("meta l4proto tcp"). nft needs
// it in a rule before a port mapping to print the rule.
func l4proto(p model.Protocol) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{protoNum(p)}},
	}
}

// dnat translates to addr:port ("dnat to 10.0.0.1:8080").
func (f *family) dnat(addr []byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: addr},
		&expr.Immediate{Register: reg2, Data: be16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.proto), RegAddrMin: reg1, RegProtoMin: reg2},
	}
}

// pickOne matches one new connection in mod: "numgen random mod N 0" (or
// "numgen inc", a strict rotation per rule).
func pickOne(mod uint32, inc bool) []expr.Any {
	typ := uint32(unix.NFT_NG_RANDOM)
	if inc {
		typ = unix.NFT_NG_INCREMENTAL
	}
	return []expr.Any{
		&expr.Numgen{Register: reg1, Modulus: mod, Type: typ},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(0)},
	}
}

// hashOne matches one source address in mod, the same one every time:
// "jhash ip saddr mod N seed S 0".
func (f *family) hashOne(mod, seed uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.addrLen},
		&expr.Hash{SourceRegister: reg1, DestRegister: reg1, Length: f.addrLen, Modulus: mod, Seed: seed, Type: expr.HashTypeJenkins},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(0)},
	}
}

// prefix matches an address field (offset saddr or daddr) against a
// prefix; neq inverts the match.
func (f *family) prefix(offset uint32, p netip.Prefix, neq bool) []expr.Any {
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	out := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: f.addrLen}}
	p = p.Masked()
	if p.Bits() < int(f.addrLen*8) {
		mask := make([]byte, f.addrLen)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)})
	}
	return append(out, &expr.Cmp{Op: op, Register: reg1, Data: p.Addr().AsSlice()})
}

// srcLocal matches packets the node itself sent ("fib saddr type local").
func srcLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(unix.RTN_LOCAL)},
	}
}

// iifname matches the input interface by name, or by name prefix (nft's
// iifname "veth*"): the comparison includes the name's terminating zero
// only for a whole name.
func iifname(name string, prefix bool) []expr.Any {
	data := []byte(name)
	if !prefix {
		data = append(data, 0)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: data},
	}
}

// verdict jumps or goes to a chain, or ends with a verdict code.
func jump(chain string) expr.Any          { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }
func goTo(chain string) expr.Any          { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain} }
func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

// frontendKey loads "ip daddr . meta l4proto . th dport" into the
// registers of a concatenated key starting at reg 1.
func (f *family) frontendKey() []expr.Any {
	r := uint32(reg32_0) + f.addrLen/4
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// dispatch jumps by a verdict map keyed by the frontend
// ("ip daddr . meta l4proto . th dport vmap @set").
func (f *family) dispatch(set string) []expr.Any {
	return append(f.frontendKey(), &expr.Lookup{SourceRegister: reg1, SetName: set, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true})
}

// frontendElemKey is a frontend as a key of the dispatch maps.
func (f *family) frontendElemKey(addr []byte, p model.Protocol, port uint16) string {
	k := make([]byte, 0, f.addrLen+8)
	k = append(k, addr...)
	k = append(k, protoNum(p), 0, 0, 0)
	k = append(k, be16(port)...)
	return string(append(k, 0, 0))
}

// markSet sets bits of the packet mark: mark = (mark & and) ^ xor.
func markSet(and, xor uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(and), Xor: ne32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// markClear matches packets whose mark has none of the bits.
func markClear(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(bits), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(0)},
	}
}

// ctBits matches the conntrack state or status: (ct & bits) != 0, or == 0
// with none.
func ctBits(key expr.CtKey, bits uint32, none bool) []expr.Any {
	op := expr.CmpOpNeq
	if none {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(bits), Xor: ne32(0)},
		&expr.Cmp{Op: op, Register: reg1, Data: ne32(0)},
	}
}

// Conntrack bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
const (
	ctStateEstablished = 1 << 1
	ctStateRelated     = 1 << 2
	ctStateNew         = 1 << 3
	ctStatusDNAT       = 1 << 5
)

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
