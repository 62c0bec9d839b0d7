package nftables

import "time"

// baseChain is the hook of a base chain.
type baseChain struct {
	typ  string // "nat" or "filter"
	hook uint32 // NF_INET_*
	prio int32
}

// rule is one rule as written: its encoded expressions and user data.
type rule struct {
	// exprs is the NFTA_RULE_EXPRESSIONS payload.
	exprs []byte
	// udata carries a digest of exprs on the rules of the shared chains,
	// so that a full sync compares them without decoding expressions.
	udata []byte
}

// chain is a chain with its rules.
type chain struct {
	name  string
	base  *baseChain
	rules []rule
}

// setDef is the definition of a set or map.
type setDef struct {
	name    string
	flags   uint32 // NFT_SET_*
	keyType uint32
	// fields are the lengths of the key's fields (before padding).
	fields   []uint32
	dataType uint32
	dataLen  uint32
	size     uint32
	timeout  time.Duration
}

// keyLen is the length of the key: every field padded to 4 bytes.
func (s *setDef) keyLen() uint32 {
	var n uint32
	for _, l := range s.fields {
		n += pad4(l)
	}
	return n
}

// elem is a set element: its key and, for a map, its value (a verdict with
// an optional chain, or data). Byte strings are kept as strings so that
// elements are comparable and usable as map keys.
type elem struct {
	key       string
	isVerdict bool
	verdict   int32
	chain     string
	data      string
}

// sameValue reports whether two elements map to the same value.
func (e elem) sameValue(o elem) bool {
	return e.isVerdict == o.isVerdict && e.verdict == o.verdict && e.chain == o.chain && e.data == o.data
}

// Kernel constants golang.org/x/sys/unix does not name.
const (
	nfDrop   = 0 // NF_DROP verdict
	nfAccept = 1 // NF_ACCEPT verdict, a base chain's policy

	setConcat = 0x80 // NFT_SET_CONCAT: the key is a concatenation

	attrSetDescConcat = 2 // NFTA_SET_DESC_CONCAT
	attrSetFieldLen   = 1 // NFTA_SET_FIELD_LEN
)
