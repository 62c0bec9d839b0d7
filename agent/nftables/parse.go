package nftables

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The parsers below read the kernel's answers to our dumps (the payload
// after the nfgenmsg header). They copy what they keep, never panic on
// malformed input and say what was wrong; FuzzParse runs them on random
// bytes.

func decoder(data []byte) (*netlink.AttributeDecoder, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

// kchain is a chain as the kernel lists it.
type kchain struct {
	table, name string
	base        *baseChain
}

// parseChain reads an NFT_MSG_NEWCHAIN message.
func parseChain(data []byte) (kchain, error) {
	var c kchain
	ad, err := decoder(data)
	if err != nil {
		return c, err
	}
	var hooked bool
	var b baseChain
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TABLE:
			c.table = ad.String()
		case unix.NFTA_CHAIN_NAME:
			c.name = ad.String()
		case unix.NFTA_CHAIN_TYPE:
			b.typ = ad.String()
		case unix.NFTA_CHAIN_HOOK:
			hooked = true
			ad.Nested(func(h *netlink.AttributeDecoder) error {
				for h.Next() {
					switch h.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						b.hook = h.Uint32()
					case unix.NFTA_HOOK_PRIORITY:
						b.prio = int32(h.Uint32())
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return c, fmt.Errorf("chain %q: %w", c.name, err)
	}
	if c.name == "" {
		return c, fmt.Errorf("chain without a name")
	}
	if hooked {
		c.base = &b
	}
	return c, nil
}

// krule is a rule as the kernel lists it: where it is, its handle and its
// user data (our digest on shared chains).
type krule struct {
	table, chain string
	handle       uint64
	udata        []byte
}

// parseRule reads an NFT_MSG_NEWRULE message, skipping the expressions.
func parseRule(data []byte) (krule, error) {
	var r krule
	ad, err := decoder(data)
	if err != nil {
		return r, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			r.table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			r.chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			r.handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			r.udata = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return r, fmt.Errorf("rule in chain %q: %w", r.chain, err)
	}
	return r, nil
}

// parseSet reads an NFT_MSG_NEWSET message.
func parseSet(data []byte) (table string, s setDef, err error) {
	ad, err := decoder(data)
	if err != nil {
		return "", s, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_TABLE:
			table = ad.String()
		case unix.NFTA_SET_NAME:
			s.name = ad.String()
		case unix.NFTA_SET_FLAGS:
			s.flags = ad.Uint32()
		case unix.NFTA_SET_KEY_TYPE:
			s.keyType = ad.Uint32()
		case unix.NFTA_SET_DATA_TYPE:
			s.dataType = ad.Uint32()
		case unix.NFTA_SET_DATA_LEN:
			s.dataLen = ad.Uint32()
		case unix.NFTA_SET_TIMEOUT:
			s.timeout = time.Duration(ad.Uint64()) * time.Millisecond
		case unix.NFTA_SET_DESC:
			ad.Nested(func(d *netlink.AttributeDecoder) error { return parseSetDesc(d, &s) })
		}
	}
	if err := ad.Err(); err != nil {
		return table, s, fmt.Errorf("set %q: %w", s.name, err)
	}
	return table, s, nil
}

func parseSetDesc(d *netlink.AttributeDecoder, s *setDef) error {
	for d.Next() {
		switch d.Type() {
		case unix.NFTA_SET_DESC_SIZE:
			s.size = d.Uint32()
		case attrSetDescConcat:
			d.Nested(func(fs *netlink.AttributeDecoder) error {
				for fs.Next() {
					fs.Nested(func(f *netlink.AttributeDecoder) error {
						for f.Next() {
							if f.Type() == attrSetFieldLen {
								s.fields = append(s.fields, f.Uint32())
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	return nil
}

// parseElems reads an NFT_MSG_NEWSETELEM message: the set it belongs to
// and its elements.
func parseElems(data []byte) (table, set string, els []elem, err error) {
	ad, err := decoder(data)
	if err != nil {
		return "", "", nil, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_ELEM_LIST_TABLE:
			table = ad.String()
		case unix.NFTA_SET_ELEM_LIST_SET:
			set = ad.String()
		case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			ad.Nested(func(l *netlink.AttributeDecoder) error {
				for l.Next() {
					var e elem
					l.Nested(func(d *netlink.AttributeDecoder) error { return parseElem(d, &e) })
					els = append(els, e)
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return table, set, nil, fmt.Errorf("elements of set %q: %w", set, err)
	}
	return table, set, els, nil
}

func parseElem(d *netlink.AttributeDecoder, e *elem) error {
	for d.Next() {
		switch d.Type() {
		case unix.NFTA_SET_ELEM_KEY:
			d.Nested(func(k *netlink.AttributeDecoder) error {
				for k.Next() {
					if k.Type() == unix.NFTA_DATA_VALUE {
						e.key = string(k.Bytes())
					}
				}
				return nil
			})
		case unix.NFTA_SET_ELEM_DATA:
			d.Nested(func(v *netlink.AttributeDecoder) error { return parseData(v, e) })
		}
	}
	if e.key == "" {
		return fmt.Errorf("element without a key")
	}
	return nil
}

// parseData reads an element's value: data bytes or a verdict.
func parseData(v *netlink.AttributeDecoder, e *elem) error {
	for v.Next() {
		switch v.Type() {
		case unix.NFTA_DATA_VALUE:
			e.data = string(v.Bytes())
		case unix.NFTA_DATA_VERDICT:
			e.isVerdict = true
			v.Nested(func(x *netlink.AttributeDecoder) error {
				for x.Next() {
					switch x.Type() {
					case unix.NFTA_VERDICT_CODE:
						e.verdict = int32(x.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						e.chain = x.String()
					}
				}
				return nil
			})
		}
	}
	return nil
}

// parseTableName reads the name of an NFT_MSG_NEWTABLE message.
func parseTableName(data []byte) (string, error) {
	ad, err := decoder(data)
	if err != nil {
		return "", err
	}
	var name string
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_NAME {
			name = ad.String()
		}
	}
	return name, ad.Err()
}
