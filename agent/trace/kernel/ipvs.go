package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// IPVS reads what a trace of the IPVS backend needs: the virtual servers
// and destinations of a family (netlink), the ipsets, the iptables glue,
// and the Env.
func IPVS(ctx context.Context, fam model.Family, mode xtables.Mode) (*trace.IPVS, error) {
	servers, err := VirtualServers(fam)
	if err != nil {
		return nil, err
	}
	text, err := Save(ctx, fam, mode)
	if err != nil {
		return nil, err
	}
	rs, err := trace.ParseSave(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	env, err := ReadEnv(fam)
	if err != nil {
		return nil, err
	}
	if env.Sets, err = Sets(); err != nil {
		return nil, err
	}
	return &trace.IPVS{Rules: rs, Env: env, Services: servers}, nil
}

// VirtualServers lists the IPVS services of a family with their
// destinations (address-based services only: firewall-mark services are
// left out).
func VirtualServers(fam model.Family) ([]trace.VirtualServer, error) {
	h, err := libipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS: %w", err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	var out []trace.VirtualServer
	for _, s := range svcs {
		a, ok := netip.AddrFromSlice(s.Address)
		if s.FWMark != 0 || !ok || a.Unmap().Is4() != (fam != model.IPv6) {
			continue
		}
		v := trace.VirtualServer{Addr: a.Unmap(), Proto: protoName(s.Protocol), Port: s.Port, Scheduler: s.SchedName,
			Persistent: s.Flags&1 != 0, Timeout: s.Timeout}
		dests, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("list destinations of %s: %w", v, err)
		}
		for _, d := range dests {
			da, _ := netip.AddrFromSlice(d.Address)
			v.Dests = append(v.Dests, trace.Destination{Addr: da.Unmap(), Port: d.Port, Weight: d.Weight,
				Forward: forwardName(d.ConnectionFlags)})
		}
		out = append(out, v)
	}
	return out, nil
}

func forwardName(flags uint32) string {
	switch flags & libipvs.ConnectionFlagFwdMask {
	case libipvs.ConnectionFlagMasq:
		return "masq"
	case libipvs.ConnectionFlagLocalNode:
		return "local"
	case libipvs.ConnectionFlagTunnel:
		return "tunnel"
	case libipvs.ConnectionFlagDirectRoute:
		return "route"
	}
	return fmt.Sprintf("flags %#x", flags)
}

func protoName(p uint16) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprintf("%d", p)
}

// Sets reads every ipset with its members, as "ipset save" prints them.
// No ipset support in the kernel is no set.
func Sets() (map[string]*trace.Set, error) {
	all, err := netlink.IpsetListAll()
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPROTONOSUPPORT) {
			return nil, nil
		}
		return nil, fmt.Errorf("list ipsets: %w", err)
	}
	out := map[string]*trace.Set{}
	for _, r := range all {
		s := &trace.Set{Name: r.SetName, Type: r.TypeName}
		for _, e := range r.Entries {
			s.Members = append(s.Members, member(r.TypeName, e))
		}
		out[s.Name] = s
	}
	return out, nil
}

// member renders an entry the way "ipset save" prints it for its type.
func member(typ string, e netlink.IPSetEntry) string {
	_, dims, _ := strings.Cut(typ, ":")
	var parts []string
	ip := func(raw []byte, cidr uint8, net bool) string {
		a, _ := netip.AddrFromSlice(raw)
		a = a.Unmap()
		if net && cidr != 0 && int(cidr) != a.BitLen() {
			return netip.PrefixFrom(a, int(cidr)).String()
		}
		return a.String()
	}
	nIP := 0
	for _, d := range strings.Split(dims, ",") {
		switch d {
		case "ip", "net":
			if nIP == 0 {
				parts = append(parts, ip(e.IP, e.CIDR, d == "net"))
			} else {
				parts = append(parts, ip(e.IP2, e.CIDR2, d == "net"))
			}
			nIP++
		case "port":
			proto, port := uint16(unix.IPPROTO_TCP), uint16(0)
			if e.Protocol != nil {
				proto = uint16(*e.Protocol)
			}
			if e.Port != nil {
				port = *e.Port
			}
			parts = append(parts, fmt.Sprintf("%s:%d", protoName(proto), port))
		default:
			parts = append(parts, "?"+d)
		}
	}
	return strings.Join(parts, ",")
}
