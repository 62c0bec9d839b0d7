package nftables

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// family holds what differs between the ip and ip6 tables: the backend
// programs one family, and every layout decision is made here, so that an
// IPv6 table is the same code with other offsets and lengths.
type family struct {
	model model.Family
	// proto is the table family and the NAT family (NFPROTO_IPV4/6).
	proto byte
	// name is the table family as nft prints it.
	name string
	// addrLen is the length of an address; saddr and daddr the offsets
	// of the source and destination in the network header.
	addrLen       uint32
	saddr, daddr  uint32
	addrType      uint32 // nft datatype of an address, for set keys
	rejectCode    uint8  // ICMP(v6) port unreachable
	loopback      netip.Prefix
	routeLocalnet bool // localhost NodePorts exist in this family
}

var (
	ipv4 = &family{model: model.IPv4, proto: unix.NFPROTO_IPV4, name: "ip", addrLen: 4, saddr: 12, daddr: 16,
		addrType: typeIPv4Addr, rejectCode: 3, loopback: netip.MustParsePrefix("127.0.0.0/8"), routeLocalnet: true}
	ipv6 = &family{model: model.IPv6, proto: unix.NFPROTO_IPV6, name: "ip6", addrLen: 16, saddr: 8, daddr: 24,
		addrType: typeIPv6Addr, rejectCode: 4, loopback: netip.MustParsePrefix("::1/128")}
)

// familyOf returns the layout of a model family (IPv4 when empty).
func familyOf(f model.Family) (*family, error) {
	switch f {
	case model.IPv4, "":
		return ipv4, nil
	case model.IPv6:
		return ipv6, nil
	}
	return nil, fmt.Errorf("unknown IP family %q", f)
}

// addr returns an address in the family's length, or an error when it is
// of the other family.
func (f *family) addr(a netip.Addr) ([]byte, error) {
	a = a.Unmap()
	if (f.addrLen == 4) != a.Is4() {
		return nil, fmt.Errorf("address %s is not %s", a, f.model)
	}
	return a.AsSlice(), nil
}

// nft datatypes (nftables' include/datatype.h), for set key types.
const (
	typeMark        = 19
	typeIPv4Addr    = 7
	typeIPv6Addr    = 8
	typeInetProto   = 12
	typeInetService = 13
	// concatBits is how far nft shifts each field's type in the type of
	// a concatenated key.
	concatBits = 6
)

// concatType is the nft datatype of a concatenation of types.
func concatType(types ...uint32) uint32 {
	var t uint32
	for _, x := range types {
		t = t<<concatBits | x
	}
	return t
}

// pad4 rounds a field length up to a register's 4 bytes, the way
// concatenated keys are laid out.
func pad4(n uint32) uint32 { return (n + 3) &^ 3 }
