package backendtest

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// The scenarios are written once, with the IPv4 addresses of the test
// plan; IP translates each into the family the scenario runs in. IPv6
// maps a.b.c.d to fd00:a:b:c::d (the decimal digits read as hex groups:
// 10.211.1.2 is fd00:10:211:1::2) and a /8, /16 or /24 network to the /32,
// /48 or /64 that holds the translated addresses; 127.0.0.1 is ::1. The
// same test plan therefore reads the same in both families.

// IP returns the address or network of the IPv4 test plan in fam.
func IP(fam model.Family, v4 string) string {
	if fam != model.IPv6 {
		return v4
	}
	if v4 == "127.0.0.1" {
		return "::1"
	}
	addr, bits, isPrefix := strings.Cut(v4, "/")
	o := strings.Split(addr, ".")
	if len(o) != 4 {
		panic("backendtest: not an IPv4 test address: " + v4)
	}
	a := netip.MustParseAddr("fd00:" + o[0] + ":" + o[1] + ":" + o[2] + "::" + o[3])
	if !isPrefix {
		return a.String()
	}
	n, err := strconv.Atoi(bits)
	if err != nil {
		panic("backendtest: bad prefix " + v4)
	}
	n6 := 128
	if n < 32 {
		n6 = 16 + 16*(n/8)
	}
	return netip.PrefixFrom(a, n6).String() // not masked: "ip addr add" takes it too
}

// At returns "ip:port" (or "[ip]:port") of a test plan address in fam.
func At(fam model.Family, v4 string, port int) string {
	return net.JoinHostPort(IP(fam, v4), strconv.Itoa(port))
}

// IP translates a test plan address into the topology's family.
func (tp *Topo) IP(v4 string) string { return IP(tp.Fam, v4) }

// At is "ip:port" of a test plan address in the topology's family.
func (tp *Topo) At(v4 string, port int) string { return At(tp.Fam, v4, port) }

// IPs translates a list of test plan addresses.
func (tp *Topo) IPs(v4 ...string) []string {
	out := make([]string, len(v4))
	for i, a := range v4 {
		out[i] = tp.IP(a)
	}
	return out
}
