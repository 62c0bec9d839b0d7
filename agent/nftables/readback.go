package nftables

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// Read-back for the tools that show what a node holds (the packet tracer,
// the explain view): the tables as the kernel lists them, and ours as the
// backend would write it for a state, in the same form (package trace's
// NFTable), so that they can be walked and compared.

// ReadBack lists every table of a family (ip or ip6, and inet, which
// also sees that family's packets) in the calling thread's network
// namespace, with chains, rules (their expressions decoded), sets and
// elements, the affinity set's included. It reads through the backend's
// own netlink socket code and only reads.
func ReadBack(ctx context.Context, fam model.Family) ([]*trace.NFTable, error) {
	f, err := familyOf(fam)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var out []*trace.NFTable
	for _, p := range []struct {
		proto byte
		name  string
	}{{f.proto, f.name}, {unix.NFPROTO_INET, "inet"}} {
		var names []string
		err := c.dump("list tables", unix.NFT_MSG_GETTABLE, p.proto, nil, func(data []byte) error {
			name, err := parseTableName(data)
			names = append(names, name)
			return err
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, name := range names {
			t, err := readTable(c, p.proto, p.name, name)
			if err != nil {
				return nil, fmt.Errorf("table %s %s: %w", p.name, name, err)
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// readTable lists one table.
func readTable(c *conn, proto byte, famName, name string) (*trace.NFTable, error) {
	t := &trace.NFTable{Family: famName, Name: name}
	tableAttr := func(typ uint16) []netlink.Attribute { return []netlink.Attribute{{Type: typ, Data: cstr(name)}} }
	var chains []kchain
	policies := map[string]string{}
	err := c.dump("list chains", unix.NFT_MSG_GETCHAIN, proto, tableAttr(unix.NFTA_CHAIN_TABLE), func(data []byte) error {
		ch, err := parseChain(data)
		if err == nil && ch.table == name {
			chains = append(chains, ch)
			policies[ch.name] = chainPolicy(data)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	byName := map[string]*trace.NFChain{}
	for _, ch := range chains {
		tc := &trace.NFChain{Name: ch.name}
		if ch.base != nil {
			tc.Hook, tc.Type, tc.Priority, tc.Policy = hookName(ch.base.hook), ch.base.typ, ch.base.prio, policies[ch.name]
		}
		byName[ch.name] = tc
		t.Chains = append(t.Chains, tc)
	}
	err = c.dump("list rules", unix.NFT_MSG_GETRULE, proto, tableAttr(unix.NFTA_RULE_TABLE), func(data []byte) error {
		tbl, ch, r := decodeRule(proto, data)
		if tc := byName[ch]; tc != nil && tbl == name {
			tc.Rules = append(tc.Rules, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var sets []setDef
	err = c.dump("list sets", unix.NFT_MSG_GETSET, proto, tableAttr(unix.NFTA_SET_TABLE), func(data []byte) error {
		tbl, s, err := parseSet(data)
		if err == nil && tbl == name {
			sets = append(sets, s)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		els, err := readElems(c, &family{proto: proto}, name, s.name)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		t.Sets = append(t.Sets, traceSet(s, els))
	}
	return t, nil
}

// traceSet turns a set and its elements into package trace's form, in
// key order.
func traceSet(s setDef, els map[string]elem) *trace.NFSet {
	ts := &trace.NFSet{Name: s.name, Map: s.flags&unix.NFT_SET_MAP != 0, Timeout: s.flags&unix.NFT_SET_TIMEOUT != 0}
	keys := make([]string, 0, len(els))
	for k := range els {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ts.Elems = append(ts.Elems, traceElem(els[k]))
	}
	return ts
}

func traceElem(e elem) trace.NFElem {
	te := trace.NFElem{Key: []byte(e.key)}
	if e.data != "" {
		te.Data = []byte(e.data)
	}
	if e.isVerdict {
		te.Verdict = &expr.Verdict{Kind: expr.VerdictKind(e.verdict), Chain: e.chain}
	}
	return te
}

// chainPolicy reads a base chain's policy (accept when absent).
func chainPolicy(data []byte) string {
	ad, err := decoder(data)
	if err != nil {
		return "accept"
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_CHAIN_POLICY && ad.Uint32() == nfDrop {
			return "drop"
		}
	}
	return "accept"
}

// hookName names a hook as the tracer does.
func hookName(h uint32) string {
	switch h {
	case unix.NF_INET_PRE_ROUTING:
		return "PREROUTING"
	case unix.NF_INET_LOCAL_IN:
		return "INPUT"
	case unix.NF_INET_FORWARD:
		return "FORWARD"
	case unix.NF_INET_LOCAL_OUT:
		return "OUTPUT"
	case unix.NF_INET_POST_ROUTING:
		return "POSTROUTING"
	}
	return ""
}

// decodeRule reads an NFT_MSG_NEWRULE message with its expressions. What
// cannot be decoded is said in the rule's Bad, never a failure of the
// whole read.
func decodeRule(proto byte, data []byte) (table, chain string, r trace.NFRule) {
	ad, err := decoder(data)
	if err != nil {
		r.Bad = err.Error()
		return "", "", r
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			r.Handle = ad.Uint64()
		case unix.NFTA_RULE_EXPRESSIONS:
			r.Exprs, r.Bad = decodeExprs(proto, ad.Bytes())
		}
	}
	if err := ad.Err(); err != nil && r.Bad == "" {
		r.Bad = err.Error()
	}
	return table, chain, r
}

// decodeExprs decodes a rule's expression list; an expression of a kind
// it does not know, or that does not decode, is reported in bad.
func decodeExprs(proto byte, b []byte) (out []expr.Any, bad string) {
	ad, err := decoder(b)
	if err != nil {
		return nil, err.Error()
	}
	for ad.Next() {
		var name string
		var body []byte
		ad.Nested(func(e *netlink.AttributeDecoder) error {
			for e.Next() {
				switch e.Type() {
				case unix.NFTA_EXPR_NAME:
					name = e.String()
				case unix.NFTA_EXPR_DATA:
					body = e.Bytes()
				}
			}
			return nil
		})
		x, err := decodeExpr(proto, name, body)
		if err != nil {
			if bad == "" {
				bad = err.Error()
			}
			continue
		}
		out = append(out, x)
	}
	if err := ad.Err(); err != nil && bad == "" {
		bad = err.Error()
	}
	return out, bad
}

// decodeExpr decodes one expression by name. An immediate that loads the
// verdict register is a verdict.
func decodeExpr(proto byte, name string, body []byte) (expr.Any, error) {
	var x expr.Any
	switch name {
	case "payload":
		x = &expr.Payload{}
	case "meta":
		x = &expr.Meta{}
	case "cmp":
		x = &expr.Cmp{}
	case "bitwise":
		x = &expr.Bitwise{}
	case "immediate":
		x = &expr.Immediate{}
	case "lookup":
		x = &expr.Lookup{}
	case "dynset":
		x = &expr.Dynset{}
	case "numgen":
		x = &expr.Numgen{}
	case "hash":
		x = &expr.Hash{}
	case "ct":
		x = &expr.Ct{}
	case "fib":
		x = &expr.Fib{}
	case "nat":
		x = &expr.NAT{}
	case "masq":
		x = &expr.Masq{}
	case "reject":
		x = &expr.Reject{}
	case "counter":
		x = &expr.Counter{}
	case "log":
		x = &expr.Log{}
	case "match":
		x = &expr.Match{}
	case "notrack":
		return &expr.Notrack{}, nil
	default:
		return nil, fmt.Errorf("expression %q not decoded", name)
	}
	if err := unmarshalSafe(proto, body, x); err != nil {
		return nil, fmt.Errorf("expression %s: %w", name, err)
	}
	if imm, ok := x.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT {
		v := &expr.Verdict{}
		if err := unmarshalSafe(proto, body, v); err != nil {
			return nil, fmt.Errorf("verdict: %w", err)
		}
		return v, nil
	}
	return x, nil
}

// unmarshalSafe runs the library's decoder, turning a panic on bytes it
// did not expect into an error.
func unmarshalSafe(proto byte, body []byte, x expr.Any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder panic: %v", r)
		}
	}()
	return expr.Unmarshal(proto, body, x)
}

// DesiredTable is our table as the backend would write it for st: the
// same chains, rules and elements a full sync from scratch leaves (the
// affinity set empty), in the form ReadBack returns.
func DesiredTable(st *model.State, opts Options) (*trace.NFTable, error) {
	b, err := New(opts)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &model.State{Family: b.f.model}
	}
	d := b.desired(st)
	t := &trace.NFTable{Family: b.f.name, Name: b.table}
	for _, c := range d.shared {
		t.Chains = append(t.Chains, traceChain(b.f.proto, c))
	}
	eps := map[string]elem{}
	for _, s := range st.Services {
		frag, chains := d.r.service(s)
		for _, c := range chains {
			t.Chains = append(t.Chains, traceChain(b.f.proto, c))
		}
		for _, e := range frag.eps {
			eps[e.key] = e
		}
	}
	for _, s := range d.sets {
		els := d.elems[s.name]
		switch s.name {
		case setEndpoints:
			els = eps
		case setDigest:
			els = map[string]elem{d.sum.elem().key: d.sum.elem()}
		}
		t.Sets = append(t.Sets, traceSet(*s, els))
	}
	return t, nil
}

// traceChain decodes a rendered chain's rules.
func traceChain(proto byte, c *chain) *trace.NFChain {
	tc := &trace.NFChain{Name: c.name}
	if c.base != nil {
		tc.Hook, tc.Type, tc.Priority, tc.Policy = hookName(c.base.hook), c.base.typ, c.base.prio, "accept"
	}
	for _, r := range c.rules {
		var tr trace.NFRule
		tr.Exprs, tr.Bad = decodeExprs(proto, r.exprs)
		tc.Rules = append(tc.Rules, tr)
	}
	return tc
}

// Names of the maps a service port has elements in, for read-back tools.
const (
	// MapServices is the dispatch verdict map: frontend -> its chain.
	MapServices = setServices
	// MapNoEndpoints is frontend -> drop or reject.
	MapNoEndpoints = setNoEndpoint
	// MapEndpoints is frontend . index -> endpoint.
	MapEndpoints = setEndpoints
	// SetAffinity holds the ClientIP bindings (dynamic).
	SetAffinity = setAffinity
)

// FrontendKey is a frontend as our maps key it: "address . protocol .
// port"; the endpoints map's keys start with it.
func FrontendKey(fe model.Frontend, p model.Protocol) ([]byte, error) {
	fam := model.IPv4
	if !fe.Addr.Unmap().Is4() {
		fam = model.IPv6
	}
	f, err := familyOf(fam)
	if err != nil {
		return nil, err
	}
	a, err := f.addr(fe.Addr)
	if err != nil {
		return nil, err
	}
	return []byte(f.frontendElemKey(a, p, uint16(fe.Port))), nil
}

// ElemText renders an element of one of our sets the way nft lists it,
// e.g. "10.96.0.10 . tcp . 80 : goto svc-…" or "10.96.0.10 . tcp . 80 .
// 0 : 10.211.1.2 . 8080".
func ElemText(set string, e trace.NFElem) string {
	key := e.Key
	alen := 4
	switch len(key) {
	case 24, 28, 32, 56: // an IPv6 frontend, endpoint key, hairpin pair or binding
		alen = 16
	}
	var fields []string
	switch set {
	case setServices, setNoEndpoint, setEndpoints:
		fields = frontendText(key, alen)
	case setHairpin:
		fields = addrFields(key, len(key)/2)
	case setAffinity:
		alen = (len(key) - 8) / 3
		if alen == 4 || alen == 16 {
			fields = append(addrFields(key[:2*alen], alen), port(key[2*alen:]), addrText(key[2*alen+4:3*alen+4]), port(key[3*alen+4:]))
		}
	}
	if fields == nil {
		fields = []string{fmt.Sprintf("0x%x", key)}
	}
	out := strings.Join(fields, " . ")
	switch {
	case e.Verdict != nil:
		out += " : " + verdictWords(e.Verdict)
	case len(e.Data) == alen+4:
		out += " : " + addrText(e.Data[:alen]) + " . " + port(e.Data[alen:])
	case len(e.Data) > 0:
		out += fmt.Sprintf(" : 0x%x", e.Data)
	}
	return out
}

func frontendText(key []byte, alen int) []string {
	if len(key) < alen+8 {
		return nil
	}
	proto := strconv.Itoa(int(key[alen]))
	switch key[alen] {
	case unix.IPPROTO_TCP:
		proto = "tcp"
	case unix.IPPROTO_UDP:
		proto = "udp"
	case unix.IPPROTO_SCTP:
		proto = "sctp"
	}
	out := []string{addrText(key[:alen]), proto, port(key[alen+4:])}
	if len(key) == alen+12 {
		out = append(out, strconv.Itoa(int(binary.NativeEndian.Uint32(key[alen+8:]))))
	}
	return out
}

func addrFields(b []byte, alen int) []string {
	var out []string
	for i := 0; i+alen <= len(b); i += alen {
		out = append(out, addrText(b[i:i+alen]))
	}
	return out
}

func addrText(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return fmt.Sprintf("0x%x", b)
	}
	return a.String()
}

func port(b []byte) string {
	if len(b) < 2 {
		return "?"
	}
	return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
}

func verdictWords(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictAccept:
		return "accept"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
