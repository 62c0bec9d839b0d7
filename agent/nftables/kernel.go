package nftables

import (
	"errors"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// kstate is what a full sync reads of our table: chain names and hooks,
// the user data of the shared chains' rules, set definitions and the
// elements of the maps we fill. It never lists the service ports' rules
// (their chains are named by a digest of them) nor the dynamic affinity
// set.
type kstate struct {
	table  bool
	chains map[string]kchain
	udata  map[string][][]byte // shared chain -> its rules' user data, in order
	sets   map[string]setDef
	elems  map[string]map[string]elem // set -> key -> element
	// trusted says the endpoints map holds what its digest says, so it
	// was not listed.
	trusted bool
}

// readKernel reads our table in the socket's network namespace. A missing
// table is not an error.
func readKernel(c *conn, f *family, table string, shared []string, filled []string) (*kstate, error) {
	ks := &kstate{chains: map[string]kchain{}, udata: map[string][][]byte{}, sets: map[string]setDef{},
		elems: map[string]map[string]elem{}}
	err := c.dump("list tables", unix.NFT_MSG_GETTABLE, f.proto, nil, func(data []byte) error {
		name, err := parseTableName(data)
		ks.table = ks.table || name == table
		return err
	})
	if err != nil || !ks.table {
		return ks, err
	}
	tableAttr := func(typ uint16) netlink.Attribute { return netlink.Attribute{Type: typ, Data: cstr(table)} }
	err = c.dump("list chains", unix.NFT_MSG_GETCHAIN, f.proto, []netlink.Attribute{tableAttr(unix.NFTA_CHAIN_TABLE)}, func(data []byte) error {
		ch, err := parseChain(data)
		if err == nil && ch.table == table {
			ks.chains[ch.name] = ch
		}
		return err
	})
	if err != nil {
		return ks, err
	}
	for _, name := range shared {
		if _, ok := ks.chains[name]; !ok {
			continue
		}
		ks.udata[name] = [][]byte{}
		err := c.dump("list rules of chain "+name, unix.NFT_MSG_GETRULE, f.proto,
			[]netlink.Attribute{tableAttr(unix.NFTA_RULE_TABLE), {Type: unix.NFTA_RULE_CHAIN, Data: cstr(name)}},
			func(data []byte) error {
				r, err := parseRule(data)
				if err == nil && r.table == table && r.chain == name {
					ks.udata[name] = append(ks.udata[name], r.udata)
				}
				return err
			})
		if err != nil && !isNotFound(err) {
			return ks, err
		}
	}
	err = c.dump("list sets", unix.NFT_MSG_GETSET, f.proto, []netlink.Attribute{tableAttr(unix.NFTA_SET_TABLE)}, func(data []byte) error {
		t, s, err := parseSet(data)
		if err == nil && t == table {
			ks.sets[s.name] = s
		}
		return err
	})
	if err != nil {
		return ks, err
	}
	for _, name := range filled {
		if _, ok := ks.sets[name]; ok {
			if ks.elems[name], err = readElems(c, f, table, name); err != nil && !isNotFound(err) {
				return ks, err
			}
		}
	}
	return ks, nil
}

// readElems lists the elements of one set. The kernel walks a hash set by
// position and resumes a dump by skipping what it sent, so a dump that
// races with the table's background resize (right after many elements
// were added) repeats some elements and misses as many; a repeated key
// makes readElems list the set again, up to three times.
func readElems(c *conn, f *family, table, set string) (map[string]elem, error) {
	var out map[string]elem
	for try := 0; ; try++ {
		out = map[string]elem{}
		repeated := 0
		err := c.dump("list elements of "+set, unix.NFT_MSG_GETSETELEM, f.proto, []netlink.Attribute{
			{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(table)},
			{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		}, func(data []byte) error {
			t, s, els, err := parseElems(data)
			if err != nil || t != table || s != set {
				return err
			}
			for _, e := range els {
				if _, ok := out[e.key]; ok {
					repeated++
				}
				out[e.key] = e
			}
			return nil
		})
		if err != nil || repeated == 0 || try == 2 {
			return out, err
		}
		time.Sleep(time.Duration(try+1) * 50 * time.Millisecond)
	}
}

// readUdata lists the user data of one chain's rules (the canary check).
func readUdata(c *conn, f *family, table, chain string) ([][]byte, error) {
	var out [][]byte
	err := c.dump("list rules of chain "+chain, unix.NFT_MSG_GETRULE, f.proto, []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: cstr(table)},
		{Type: unix.NFTA_RULE_CHAIN, Data: cstr(chain)},
	}, func(data []byte) error {
		r, err := parseRule(data)
		if err == nil && r.chain == chain {
			out = append(out, r.udata)
		}
		return err
	})
	return out, err
}

// isNotFound reports a kernel ENOENT: the table, chain or set is gone.
func isNotFound(err error) bool { return errors.Is(err, syscall.ENOENT) }
