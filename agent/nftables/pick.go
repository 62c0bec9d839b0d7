package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// masqMode is the masquerade a pick chain requests before it picks.
type masqMode string

const (
	masqNone       masqMode = ""
	masqOffCluster masqMode = "offcluster" // sources outside the cluster CIDRs
	masqAlways     masqMode = "masq"
)

// pickSpec names a shared pick chain: the masquerade it requests and the
// number of endpoints it picks from.
type pickSpec struct {
	mode masqMode
	n    int
}

func (p pickSpec) name() string {
	n := prefixPick + strconv.Itoa(p.n)
	if p.mode != masqNone {
		n += "-" + string(p.mode)
	}
	return n
}

// pick records that the fragment uses a pick chain and returns its name.
func (f *fragment) pick(p pickSpec) string {
	for _, q := range f.picks {
		if q == p {
			return p.name()
		}
	}
	f.picks = append(f.picks, p)
	return p.name()
}

// pickChain renders a shared pick chain: the masquerade request, then
// "dnat to ip daddr . meta l4proto . th dport . numgen random mod n map
// @endpoints" — the frontend the packet was sent to and a random index
// find the endpoint.
func (r *renderer) pickChain(p pickSpec) *chain {
	fam := r.f.proto
	var rules []rule
	switch p.mode {
	case masqAlways:
		rules = append(rules, encode(fam, true, jump(chainMarkMasq)))
	case masqOffCluster:
		rules = append(rules, encode(fam, true, jump(chainOffCluster)))
	}
	port := uint32(reg32_0) + r.f.addrLen/4 // the l4proto field of the key, the port of the data
	exprs := append(r.f.frontendKey(),
		&expr.Numgen{Register: port + 2, Modulus: uint32(p.n), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: reg1, SetName: setEndpoints, DestRegister: reg1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(fam), RegAddrMin: reg1, RegProtoMin: port})
	rules = append(rules, encode(fam, true, exprs...))
	return &chain{name: p.name(), rules: rules}
}

// endpointElems adds the endpoints map entries of a frontend: index i of
// the list maps to its i-th endpoint.
func (r *renderer) endpointElems(frag *fragment, s *model.Service, frontend string, list []model.Endpoint) {
	if frag.eps == nil {
		frag.eps = make([]elem, 0, len(list)*len(s.Frontends))
	}
	var kb, db [32]byte
	i := uint32(0)
	for _, e := range list {
		a := e.Addr.Unmap()
		if a.Is4() != (r.f.addrLen == 4) {
			continue // reported by balance for the same list
		}
		k := binary.NativeEndian.AppendUint32(append(kb[:0], frontend...), i)
		var d []byte
		if a.Is4() {
			a4 := a.As4()
			d = append(db[:0], a4[:]...)
		} else {
			a16 := a.As16()
			d = append(db[:0], a16[:]...)
		}
		d = append(d, byte(e.Port>>8), byte(e.Port), 0, 0)
		el := elem{key: string(k), data: string(d)}
		frag.eps = append(frag.eps, el)
		frag.sum.add(el)
		i++
	}
}

// epsSum is an order-independent digest of endpoints map elements: the
// sums of two 64-bit halves of each element's SHA-256. The backend keeps
// the digest of the whole map in the endpoints-digest set, so that a full
// sync (and a restarted agent) verifies the largest map without listing
// it. Every transaction that changes the map replaces the digest with it.
type epsSum [2]uint64

// digestVersion is counted into the digest element as one more element.
// Agents before it did not replace the digest on partial syncs, so their
// digest could match a later state while the map held more; with the
// version, no such digest matches, and the first full sync after an
// upgrade lists the map once.
var digestVersion = elemHash(elem{key: "synterix endpoints-digest v2"})

func elemHash(e elem) epsSum {
	var buf [128]byte
	b := append(append(append(buf[:0], e.key...), 0), e.data...)
	h := sha256.Sum256(b)
	return epsSum{binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:16])}
}

func (s *epsSum) add(e elem) { h := elemHash(e); s[0] += h[0]; s[1] += h[1] }

func (s *epsSum) plus(o epsSum)  { s[0] += o[0]; s[1] += o[1] }
func (s *epsSum) minus(o epsSum) { s[0] -= o[0]; s[1] -= o[1] }

// elem is the digest as the endpoints-digest set's one element.
func (s epsSum) elem() elem {
	s.plus(digestVersion)
	return elem{key: string(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, s[0]), s[1]))}
}
