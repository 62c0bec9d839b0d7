package nftables

import (
	"encoding/binary"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// txn collects the messages of one nf_tables transaction.
type txn struct {
	fam   byte
	table string
	msgs  []netlink.Message
	// what names each message for errors ("add rule to chain svc-…").
	what []string
	// bytes is the encoded size so far; rules and elems count what the
	// transaction writes.
	bytes        int
	rules, elems int
}

func newTxn(f *family, table string) *txn { return &txn{fam: f.proto, table: table} }

func (t *txn) add(what string, typ int, flags netlink.HeaderFlags, attrs ...netlink.Attribute) {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		// Attributes are built by this package; a failure is a bug.
		panic("nftables: encode " + what + ": " + err.Error())
	}
	t.msgs = append(t.msgs, netlink.Message{Header: netlink.Header{Type: msgType(typ), Flags: netlink.Request | flags},
		Data: append(nfgen(t.fam, 0), data...)})
	t.what = append(t.what, what)
	t.bytes += len(data) + 20
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func nested(typ uint16, attrs ...netlink.Attribute) netlink.Attribute {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		panic("nftables: encode nested attribute: " + err.Error())
	}
	return netlink.Attribute{Type: unix.NLA_F_NESTED | typ, Data: b}
}

// addTable creates the table if it does not exist.
func (t *txn) addTable() {
	t.add("add table "+t.table, unix.NFT_MSG_NEWTABLE, netlink.Create,
		netlink.Attribute{Type: unix.NFTA_TABLE_NAME, Data: cstr(t.table)})
}

// delTable deletes the table and everything in it.
func (t *txn) delTable() {
	t.add("delete table "+t.table, unix.NFT_MSG_DELTABLE, 0,
		netlink.Attribute{Type: unix.NFTA_TABLE_NAME, Data: cstr(t.table)})
}

// addChain creates a chain; a base chain gets its hook.
func (t *txn) addChain(c *chain) {
	attrs := []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.table)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(c.name)},
	}
	if b := c.base; b != nil {
		attrs = append(attrs,
			nested(unix.NFTA_CHAIN_HOOK,
				netlink.Attribute{Type: unix.NFTA_HOOK_HOOKNUM, Data: be32(b.hook)},
				netlink.Attribute{Type: unix.NFTA_HOOK_PRIORITY, Data: be32(uint32(b.prio))}),
			netlink.Attribute{Type: unix.NFTA_CHAIN_TYPE, Data: cstr(b.typ)},
			netlink.Attribute{Type: unix.NFTA_CHAIN_POLICY, Data: be32(nfAccept)})
	}
	t.add("add chain "+c.name, unix.NFT_MSG_NEWCHAIN, netlink.Create, attrs...)
}

// delChain deletes a chain with its rules; nothing may refer to it.
func (t *txn) delChain(name string) {
	t.add("delete chain "+name, unix.NFT_MSG_DELCHAIN, 0,
		netlink.Attribute{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.table)},
		netlink.Attribute{Type: unix.NFTA_CHAIN_NAME, Data: cstr(name)})
}

// flushChain deletes every rule of a chain.
func (t *txn) flushChain(name string) {
	t.add("flush chain "+name, unix.NFT_MSG_DELRULE, 0,
		netlink.Attribute{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.table)},
		netlink.Attribute{Type: unix.NFTA_RULE_CHAIN, Data: cstr(name)})
}

// addRules appends rules to a chain.
func (t *txn) addRules(c *chain) {
	for _, r := range c.rules {
		attrs := []netlink.Attribute{
			{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.table)},
			{Type: unix.NFTA_RULE_CHAIN, Data: cstr(c.name)},
			{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: r.exprs},
		}
		if r.udata != nil {
			attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_RULE_USERDATA, Data: r.udata})
		}
		t.add("add rule to chain "+c.name, unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, attrs...)
		t.rules++
	}
}

// addSet creates a set or map.
func (t *txn) addSet(s *setDef) {
	attrs := []netlink.Attribute{
		{Type: unix.NFTA_SET_TABLE, Data: cstr(t.table)},
		{Type: unix.NFTA_SET_NAME, Data: cstr(s.name)},
		{Type: unix.NFTA_SET_FLAGS, Data: be32(s.flags)},
		{Type: unix.NFTA_SET_KEY_TYPE, Data: be32(s.keyType)},
		{Type: unix.NFTA_SET_KEY_LEN, Data: be32(s.keyLen())},
		{Type: unix.NFTA_SET_ID, Data: be32(uint32(len(t.msgs) + 1))},
	}
	if s.flags&unix.NFT_SET_MAP != 0 {
		attrs = append(attrs,
			netlink.Attribute{Type: unix.NFTA_SET_DATA_TYPE, Data: be32(s.dataType)},
			netlink.Attribute{Type: unix.NFTA_SET_DATA_LEN, Data: be32(s.dataLen)})
	}
	var desc []netlink.Attribute
	if s.size != 0 {
		desc = append(desc, netlink.Attribute{Type: unix.NFTA_SET_DESC_SIZE, Data: be32(s.size)})
	}
	if len(s.fields) > 1 {
		var fields []netlink.Attribute
		for _, l := range s.fields {
			fields = append(fields, nested(unix.NFTA_LIST_ELEM, netlink.Attribute{Type: attrSetFieldLen, Data: be32(l)}))
		}
		desc = append(desc, nested(attrSetDescConcat, fields...))
	}
	if desc != nil {
		attrs = append(attrs, nested(unix.NFTA_SET_DESC, desc...))
	}
	if s.timeout != 0 {
		attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_SET_TIMEOUT, Data: binary.BigEndian.AppendUint64(nil, uint64(s.timeout.Milliseconds()))})
	}
	t.add("add set "+s.name, unix.NFT_MSG_NEWSET, netlink.Create, attrs...)
}

// elems adds (or, with del, deletes) elements of a set or map. One message
// carries many elements.
func (t *txn) setElems(set string, del bool, els []elem) {
	const perMsg = 512
	for len(els) > 0 {
		n := min(len(els), perMsg)
		list := make([]netlink.Attribute, 0, n)
		for i, e := range els[:n] {
			list = append(list, e.attr(uint16(i+1), del))
		}
		typ, flags, what := unix.NFT_MSG_NEWSETELEM, netlink.Create, "add elements to "+set
		if del {
			typ, flags, what = unix.NFT_MSG_DELSETELEM, 0, "delete elements from "+set
		} else {
			t.elems += n
		}
		t.add(what, typ, flags,
			netlink.Attribute{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.table)},
			netlink.Attribute{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
			nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, list...))
		els = els[n:]
	}
}

// attr encodes one element: its key, and for a map its data or verdict.
func (e elem) attr(i uint16, keyOnly bool) netlink.Attribute {
	attrs := []netlink.Attribute{nested(unix.NFTA_SET_ELEM_KEY, netlink.Attribute{Type: unix.NFTA_DATA_VALUE, Data: []byte(e.key)})}
	switch {
	case keyOnly:
	case e.isVerdict:
		v := []netlink.Attribute{{Type: unix.NFTA_VERDICT_CODE, Data: be32(uint32(e.verdict))}}
		if e.chain != "" {
			v = append(v, netlink.Attribute{Type: unix.NFTA_VERDICT_CHAIN, Data: cstr(e.chain)})
		}
		attrs = append(attrs, nested(unix.NFTA_SET_ELEM_DATA, nested(unix.NFTA_DATA_VERDICT, v...)))
	case e.data != "":
		attrs = append(attrs, nested(unix.NFTA_SET_ELEM_DATA, netlink.Attribute{Type: unix.NFTA_DATA_VALUE, Data: []byte(e.data)}))
	}
	return nested(i, attrs...)
}
