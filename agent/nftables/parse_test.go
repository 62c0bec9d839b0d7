package nftables

import (
	"testing"

	"golang.org/x/sys/unix"
)

// payloads splits a transaction into its messages' payloads (after the
// nfgenmsg header): what the kernel sends back in a dump has the same
// attributes as our requests.
func payloads(t testing.TB, tx *txn) [][]byte {
	msgs, err := splitMessages(tx.buf)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		out = append(out, m.Data[4:])
	}
	return out
}

// seedTxn encodes one of everything the backend writes.
func seedTxn() *txn {
	r := &renderer{f: ipv4, mark: 1 << 17}
	tx := newTxn(ipv4, DefaultTable)
	tx.addTable()
	for _, s := range r.sets() {
		tx.addSet(s)
	}
	for _, c := range r.shared(true) {
		tx.addChain(c)
		tx.addRules(c)
	}
	tx.setElems(setServices, false, []elem{{key: "\x0a\x60\x00\x0a\x06\x00\x00\x00\x00\x50\x00\x00", isVerdict: true, verdict: unix.NFT_GOTO, chain: "pick-4-offcluster"}})
	tx.setElems(setNoEndpoint, false, []elem{{key: "\x0a\x60\x00\x0b\x11\x00\x00\x00\x00\x35\x00\x00", isVerdict: true, verdict: nfDrop}})
	tx.setElems(setEndpoints, false, []elem{{key: "\x0a\x60\x00\x0a\x06\x00\x00\x00\x00\x50\x00\x00\x01\x00\x00\x00", data: "\x0a\xd3\x01\x02\x1f\x90\x00\x00"}})
	tx.setElems(setHairpin, true, []elem{{key: "\x0a\xd3\x01\x02\x0a\xd3\x01\x02"}})
	return tx
}

// TestParsersReadWhatWeWrite: every parser reads back what the encoder
// wrote: chains with their hooks, rules with their digests, sets with
// their key layout, elements with their values.
func TestParsersReadWhatWeWrite(t *testing.T) {
	r := &renderer{f: ipv4, mark: 1 << 17}
	tx := seedTxn()
	msgs, err := splitMessages(tx.buf)
	if err != nil {
		t.Fatal(err)
	}
	chains, rules, sets, elems := 0, 0, 0, 0
	for _, m := range msgs {
		data := m.Data[4:]
		switch int(m.Header.Type) & 0xff {
		case unix.NFT_MSG_NEWCHAIN:
			c, err := parseChain(data)
			if err != nil || c.table != DefaultTable {
				t.Fatalf("chain: %+v %v", c, err)
			}
			chains++
		case unix.NFT_MSG_NEWRULE:
			k, err := parseRule(data)
			if err != nil || len(k.udata) != 18 || k.udata[0] != udataDigest {
				t.Fatalf("rule: %+v %v", k, err)
			}
			rules++
		case unix.NFT_MSG_NEWSET:
			table, s, err := parseSet(data)
			if err != nil || table != DefaultTable {
				t.Fatalf("set: %+v %v", s, err)
			}
			for _, want := range r.sets() {
				if want.name == s.name && !sameSet(s, want) {
					t.Errorf("set %s read back as %+v, want %+v", s.name, s, want)
				}
			}
			sets++
		case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
			_, set, els, err := parseElems(data)
			if err != nil || len(els) != 1 {
				t.Fatalf("elements of %s: %+v %v", set, els, err)
			}
			elems++
		}
	}
	if chains != len(r.shared(true)) || rules == 0 || sets != len(r.sets()) || elems != 4 {
		t.Errorf("read %d chains, %d rules, %d sets, %d element messages", chains, rules, sets, elems)
	}
}

// FuzzParse runs every parser on arbitrary bytes: each returns an error
// or a value, and never panics. The seeds are the messages the backend
// writes, cut and corrupted by the fuzzer. Run it with
//
//	go test ./agent/nftables -run XXX -fuzz FuzzParse -fuzztime 5m
func FuzzParse(f *testing.F) {
	for _, p := range payloads(f, seedTxn()) {
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := parseChain(data); err == nil && c.name == "" {
			t.Errorf("chain without a name accepted")
		}
		_, _ = parseRule(data)
		_, _, _ = decodeRule(unix.NFPROTO_IPV4, data) // read-back: expressions too
		_, _ = decodeExprs(unix.NFPROTO_IPV6, data)
		_ = chainPolicy(data)
		_, _, _ = parseSet(data)
		if _, _, els, err := parseElems(data); err == nil {
			for _, e := range els {
				if e.key == "" {
					t.Errorf("element without a key accepted")
				}
			}
		}
		_, _ = parseTableName(data)
		_, _ = splitMessages(data)
		if len(data) >= 4 {
			_ = errnoOf(data)
		}
	})
}

// FuzzElemRoundTrip: any element the encoder writes reads back equal.
func FuzzElemRoundTrip(f *testing.F) {
	f.Add([]byte("\x0a\x60\x00\x0a\x06\x00\x00\x00\x00\x50\x00\x00"), []byte{}, true, int32(unix.NFT_GOTO), "pick-4-offcluster")
	f.Add([]byte("\x0a\x60\x00\x0b"), []byte("\x0a\xd3\x01\x02\x1f\x90\x00\x00"), false, int32(0), "")
	f.Add([]byte{1}, []byte{}, true, int32(nfDrop), "")
	f.Fuzz(func(t *testing.T, key, data []byte, isVerdict bool, code int32, chain string) {
		if len(key) == 0 || len(key) > 64 || len(data) > 64 || len(chain) > 256 || containsNUL(chain) {
			return
		}
		e := elem{key: string(key), isVerdict: isVerdict}
		if isVerdict {
			e.verdict, e.chain = code, chain
		} else {
			e.data = string(data)
		}
		tx := newTxn(ipv4, DefaultTable)
		tx.setElems("s", false, []elem{e})
		p := payloads(t, tx)
		table, set, els, err := parseElems(p[0])
		if err != nil || table != DefaultTable || set != "s" || len(els) != 1 {
			t.Fatalf("read back %q %q %+v %v", table, set, els, err)
		}
		if els[0].key != e.key || !els[0].sameValue(e) {
			t.Errorf("wrote %+v, read %+v", e, els[0])
		}
	})
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}
