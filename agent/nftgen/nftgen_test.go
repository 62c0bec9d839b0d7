package nftgen

import (
	"context"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// read reads the generation of a namespace from a thread switched into it.
func read(t *testing.T, ns *netns.NS) uint32 {
	t.Helper()
	var g uint32
	if err := ns.Do(func() (err error) { g, err = Read(context.Background()); return }); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGeneration shows, in real namespaces, what the backends rely on:
// reading (by us or by iptables-nft-save) leaves the generation alone;
// every write to any nf_tables table of the namespace moves it, whichever
// tool and family; and namespaces have generations of their own.
func TestGeneration(t *testing.T) {
	netns.Require(t, "nft", "iptables-nft", "iptables-nft-save")
	a, b := netns.New(t, "gena"), netns.New(t, "genb")
	g := read(t, a)
	if again := read(t, a); again != g {
		t.Fatalf("generation moved from %d to %d without a change", g, again)
	}
	a.MustExec("iptables-nft-save")
	a.MustExec("iptables-nft", "-w", "-t", "nat", "-S")
	if got := read(t, a); got != g {
		t.Fatalf("reading the rules moved the generation from %d to %d", g, got)
	}
	for _, cmd := range [][]string{
		{"nft", "add", "table", "inet", "other"},
		{"iptables-nft", "-w", "-t", "nat", "-N", "SOMEONE"},
		{"iptables-nft", "-w", "-t", "nat", "-A", "SOMEONE", "-j", "RETURN"},
		{"nft", "add", "table", "bridge", "br"},
		{"nft", "delete", "table", "inet", "other"},
	} {
		a.MustExec(cmd...)
		got := read(t, a)
		if got == g {
			t.Errorf("%v left the generation at %d", cmd, g)
		}
		g = got
	}
	b.MustExec("nft", "add", "table", "ip", "elsewhere")
	if got := read(t, a); got != g {
		t.Errorf("a change in another namespace moved the generation from %d to %d", g, got)
	}
}

// TestParse checks the decoding of NEWGEN payloads, bad ones included.
func TestParse(t *testing.T) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_GEN_ID, Data: []byte{0, 0, 1, 2}},
		{Type: unix.NFTA_GEN_PROC_PID, Data: []byte{0, 0, 0, 9}},
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 1, 2}
	if g, err := parse(append(hdr, attrs...)); err != nil || g != 0x102 {
		t.Errorf("parse = %d, %v; want 258", g, err)
	}
	other, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_GEN_PROC_PID, Data: []byte{0, 0, 0, 9}}})
	for name, data := range map[string][]byte{
		"short":       {0, 0},
		"no gen id":   append(hdr, other...),
		"truncated":   append(hdr, attrs[:6]...),
		"header only": hdr,
	} {
		if g, err := parse(data); err == nil {
			t.Errorf("%s: parse = %d, want an error", name, g)
		}
	}
}
