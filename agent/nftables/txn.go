package nftables

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// txn is one nf_tables transaction, encoded as it goes onto the socket:
// netlink messages in one buffer, their attributes written in place. A
// cold start at 10k Services writes ~100k rules and elements; encoding
// them directly keeps the backend's allocations near the size of the
// transaction itself.
type txn struct {
	fam   byte
	table string
	buf   []byte
	last  int // offset of the last message
	// what names each message for errors, e.g. {"add rule to chain", name}.
	what []msgInfo
	// rules and elems count what the transaction writes.
	rules, elems int
}

type msgInfo struct{ op, name string }

func (m msgInfo) String() string { return m.op + " " + m.name }

func newTxn(f *family, table string) *txn { return &txn{fam: f.proto, table: table} }

// bytes is the encoded size so far.
func (t *txn) bytes() int { return len(t.buf) }

// msg starts a message; its sequence number is its index (1-based) in the
// transaction, so that an error names the message. end finishes it.
func (t *txn) msg(typ int, flags uint16, op, name string) int {
	start := len(t.buf)
	t.last = start
	t.what = append(t.what, msgInfo{op, name})
	var h [unix.NLMSG_HDRLEN]byte
	binary.NativeEndian.PutUint16(h[4:], uint16(unix.NFNL_SUBSYS_NFTABLES<<8|typ))
	binary.NativeEndian.PutUint16(h[6:], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(h[8:], uint32(len(t.what)))
	t.buf = append(append(t.buf, h[:]...), nfgen(t.fam, 0)...)
	return start
}

func (t *txn) end(start int) {
	binary.NativeEndian.PutUint32(t.buf[start:], uint32(len(t.buf)-start))
}

// attr appends a netlink attribute, padded to 4 bytes.
func (t *txn) attr(typ uint16, data []byte) {
	l := unix.SizeofNlAttr + len(data)
	t.buf = binary.NativeEndian.AppendUint16(t.buf, uint16(l))
	t.buf = binary.NativeEndian.AppendUint16(t.buf, typ)
	t.buf = append(t.buf, data...)
	for ; l%4 != 0; l++ {
		t.buf = append(t.buf, 0)
	}
}

func (t *txn) str(typ uint16, s string) {
	l := unix.SizeofNlAttr + len(s) + 1
	t.buf = binary.NativeEndian.AppendUint16(t.buf, uint16(l))
	t.buf = binary.NativeEndian.AppendUint16(t.buf, typ)
	t.buf = append(append(t.buf, s...), 0)
	for ; l%4 != 0; l++ {
		t.buf = append(t.buf, 0)
	}
}

// attrS is attr with the data in a string (keys and values are kept as
// strings).
func (t *txn) attrS(typ uint16, data string) {
	l := unix.SizeofNlAttr + len(data)
	t.buf = binary.NativeEndian.AppendUint16(t.buf, uint16(l))
	t.buf = binary.NativeEndian.AppendUint16(t.buf, typ)
	t.buf = append(t.buf, data...)
	for ; l%4 != 0; l++ {
		t.buf = append(t.buf, 0)
	}
}

func (t *txn) u32(typ uint16, v uint32) { t.attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

// nest starts a nested attribute; unnest finishes it.
func (t *txn) nest(typ uint16) int {
	start := len(t.buf)
	t.buf = append(t.buf, 0, 0, 0, 0)
	binary.NativeEndian.PutUint16(t.buf[start+2:], unix.NLA_F_NESTED|typ)
	return start
}

func (t *txn) unnest(start int) {
	l := len(t.buf) - start
	if l > 0xffff {
		panic(fmt.Sprintf("nftables: nested attribute of %d bytes", l))
	}
	binary.NativeEndian.PutUint16(t.buf[start:], uint16(l))
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// addTable creates the table if it does not exist.
func (t *txn) addTable() {
	m := t.msg(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, "add table", t.table)
	t.str(unix.NFTA_TABLE_NAME, t.table)
	t.end(m)
}

// delTable deletes the table and everything in it.
func (t *txn) delTable() {
	m := t.msg(unix.NFT_MSG_DELTABLE, 0, "delete table", t.table)
	t.str(unix.NFTA_TABLE_NAME, t.table)
	t.end(m)
}

// addChain creates a chain; a base chain gets its hook.
func (t *txn) addChain(c *chain) {
	m := t.msg(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, "add chain", c.name)
	t.str(unix.NFTA_CHAIN_TABLE, t.table)
	t.str(unix.NFTA_CHAIN_NAME, c.name)
	if b := c.base; b != nil {
		h := t.nest(unix.NFTA_CHAIN_HOOK)
		t.u32(unix.NFTA_HOOK_HOOKNUM, b.hook)
		t.u32(unix.NFTA_HOOK_PRIORITY, uint32(b.prio))
		t.unnest(h)
		t.str(unix.NFTA_CHAIN_TYPE, b.typ)
		t.u32(unix.NFTA_CHAIN_POLICY, nfAccept)
	}
	t.end(m)
}

// delChain deletes a chain with its rules; nothing may refer to it.
func (t *txn) delChain(name string) {
	m := t.msg(unix.NFT_MSG_DELCHAIN, 0, "delete chain", name)
	t.str(unix.NFTA_CHAIN_TABLE, t.table)
	t.str(unix.NFTA_CHAIN_NAME, name)
	t.end(m)
}

// flushChain deletes every rule of a chain.
func (t *txn) flushChain(name string) {
	m := t.msg(unix.NFT_MSG_DELRULE, 0, "flush chain", name)
	t.str(unix.NFTA_RULE_TABLE, t.table)
	t.str(unix.NFTA_RULE_CHAIN, name)
	t.end(m)
}

// addRules appends a chain's rules to it.
func (t *txn) addRules(c *chain) {
	for _, r := range c.rules {
		m := t.msg(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, "add rule to chain", c.name)
		t.str(unix.NFTA_RULE_TABLE, t.table)
		t.str(unix.NFTA_RULE_CHAIN, c.name)
		t.attr(unix.NLA_F_NESTED|unix.NFTA_RULE_EXPRESSIONS, r.exprs)
		if r.udata != nil {
			t.attr(unix.NFTA_RULE_USERDATA, r.udata)
		}
		t.end(m)
		t.rules++
	}
}

// addSet creates a set or map.
func (t *txn) addSet(s *setDef) {
	m := t.msg(unix.NFT_MSG_NEWSET, unix.NLM_F_CREATE, "add set", s.name)
	t.str(unix.NFTA_SET_TABLE, t.table)
	t.str(unix.NFTA_SET_NAME, s.name)
	t.u32(unix.NFTA_SET_FLAGS, s.flags)
	t.u32(unix.NFTA_SET_KEY_TYPE, s.keyType)
	t.u32(unix.NFTA_SET_KEY_LEN, s.keyLen())
	t.u32(unix.NFTA_SET_ID, uint32(len(t.what)))
	if s.flags&unix.NFT_SET_MAP != 0 {
		t.u32(unix.NFTA_SET_DATA_TYPE, s.dataType)
		t.u32(unix.NFTA_SET_DATA_LEN, s.dataLen)
	}
	if s.size != 0 || len(s.fields) > 1 {
		d := t.nest(unix.NFTA_SET_DESC)
		if s.size != 0 {
			t.u32(unix.NFTA_SET_DESC_SIZE, s.size)
		}
		if len(s.fields) > 1 {
			c := t.nest(attrSetDescConcat)
			for _, l := range s.fields {
				f := t.nest(unix.NFTA_LIST_ELEM)
				t.u32(attrSetFieldLen, l)
				t.unnest(f)
			}
			t.unnest(c)
		}
		t.unnest(d)
	}
	if s.timeout != 0 {
		t.attr(unix.NFTA_SET_TIMEOUT, binary.BigEndian.AppendUint64(nil, uint64(s.timeout.Milliseconds())))
	}
	t.end(m)
}

// setElems adds (or, with del, deletes) elements of a set or map, as many
// per message as the 16-bit length of the list attribute allows.
func (t *txn) setElems(set string, del bool, els []elem) {
	const maxList = 60 << 10
	for len(els) > 0 {
		typ, flags, op := unix.NFT_MSG_NEWSETELEM, uint16(unix.NLM_F_CREATE), "add elements to"
		if del {
			typ, flags, op = unix.NFT_MSG_DELSETELEM, 0, "delete elements from"
		}
		m := t.msg(typ, flags, op, set)
		t.str(unix.NFTA_SET_ELEM_LIST_TABLE, t.table)
		t.str(unix.NFTA_SET_ELEM_LIST_SET, set)
		l := t.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		n := 0
		for n < len(els) && len(t.buf)-l < maxList {
			t.elem(uint16(n+1), els[n], del)
			n++
		}
		t.unnest(l)
		t.end(m)
		if !del && set != setDigest { // the digest is bookkeeping, not something traffic uses
			t.elems += n
		}
		els = els[n:]
	}
}

// elem encodes one element: its key, and for a map its data or verdict.
func (t *txn) elem(i uint16, e elem, keyOnly bool) {
	n := t.nest(i)
	k := t.nest(unix.NFTA_SET_ELEM_KEY)
	t.attrS(unix.NFTA_DATA_VALUE, e.key)
	t.unnest(k)
	switch {
	case keyOnly:
	case e.isVerdict:
		d := t.nest(unix.NFTA_SET_ELEM_DATA)
		v := t.nest(unix.NFTA_DATA_VERDICT)
		t.u32(unix.NFTA_VERDICT_CODE, uint32(e.verdict))
		if e.chain != "" {
			t.str(unix.NFTA_VERDICT_CHAIN, e.chain)
		}
		t.unnest(v)
		t.unnest(d)
	case e.data != "":
		d := t.nest(unix.NFTA_SET_ELEM_DATA)
		t.attrS(unix.NFTA_DATA_VALUE, e.data)
		t.unnest(d)
	}
	t.unnest(n)
}

// describe names message seq (1-based) of the transaction.
func (t *txn) describe(seq uint32) string {
	if seq >= 1 && int(seq) <= len(t.what) {
		return t.what[seq-1].String()
	}
	return fmt.Sprintf("commit of %d messages", len(t.what))
}
