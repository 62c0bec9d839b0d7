package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nodeOps is everything besides IPVS and the iptables glue that the backend
// changes on the node: the dummy interface holding the VIPs, ipsets,
// sysctls. linuxNode is the real one; unit tests use a fake. The glue goes
// through an xtables.Runner (glue.go).
type nodeOps interface {
	EnsureDummy(name string) error
	DeleteDummy(name string) error
	// DummyAddrs lists the addresses on the dummy (nil if it is absent).
	DummyAddrs(name string) ([]netip.Addr, error)
	AddAddr(name string, a netip.Addr) error
	DelAddr(name string, a netip.Addr) error
	// ReadSet returns a set's members; ok is false when it does not exist.
	ReadSet(s setSpec, v6 bool) (entries map[setEntry]bool, ok bool, err error)
	// WriteSet creates the set if needed and makes its members equal want.
	WriteSet(s setSpec, v6 bool, want map[setEntry]bool) error
	DestroySet(name string) error
	Sysctl(key, value string) error
}

// linuxNode runs every operation inside the network namespace at nsPath
// ("" = the caller's), on a locked OS thread, because ipset netlink
// requests, /proc/sys/net and child processes (the iptables tools of the
// glue) all follow the calling thread's namespace.
type linuxNode struct {
	nsPath string
}

func (n *linuxNode) do(fn func() error) error {
	if n.nsPath == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := vnetns.GetFromPath(n.nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", n.nsPath, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.nsPath, err)
	}
	fnErr := fn()
	if err := vnetns.Set(orig); err != nil {
		// Leave the thread locked so the runtime retires it.
		return errors.Join(fnErr, fmt.Errorf("leave netns %s: %w", n.nsPath, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

func (n *linuxNode) EnsureDummy(name string) error {
	return n.do(func() error {
		if l, err := netlink.LinkByName(name); err == nil {
			if l.Type() != "dummy" {
				return fmt.Errorf("interface %s exists and is a %s, not dummy", name, l.Type())
			}
			return nil
		}
		// The interface stays down: its addresses still get local routes,
		// so IPVS sees the traffic, but it answers nothing by itself.
		err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create dummy %s: %w", name, err)
		}
		return nil
	})
}

func (n *linuxNode) DeleteDummy(name string) error {
	return n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		if l.Type() != "dummy" {
			return fmt.Errorf("interface %s is a %s, not ours", name, l.Type())
		}
		return netlink.LinkDel(l)
	})
}

func (n *linuxNode) DummyAddrs(name string) (out []netip.Addr, err error) {
	err = n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return nil
	})
	return
}

func hostAddr(a netip.Addr) *netlink.Addr {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)}}
}

func (n *linuxNode) AddAddr(name string, a netip.Addr) error {
	return n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to %s: %w", a, name, err)
		}
		return nil
	})
}

func (n *linuxNode) DelAddr(name string, a netip.Addr) error {
	return n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		if err := netlink.AddrDel(l, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", a, name, err)
		}
		return nil
	})
}

func isNoSet(err error) bool {
	msg := strings.ToLower(fmt.Sprint(err))
	return errors.Is(err, unix.ENOENT) || strings.Contains(msg, "does not exist") || strings.Contains(msg, "no such")
}

func (n *linuxNode) readSet(s setSpec) (map[setEntry]bool, bool, error) {
	res, err := netlink.IpsetList(s.Name)
	if err != nil {
		if isNoSet(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("list ipset %s: %w", s.Name, err)
	}
	if res.TypeName != "" && res.TypeName != s.Type {
		return nil, true, fmt.Errorf("ipset %s has type %s, want %s", s.Name, res.TypeName, s.Type)
	}
	out := map[setEntry]bool{}
	for _, e := range res.Entries {
		out[entryFromNetlink(s.Type, e)] = true
	}
	return out, true, nil
}

func (n *linuxNode) ReadSet(s setSpec, v6 bool) (out map[setEntry]bool, ok bool, err error) {
	err = n.do(func() (e error) { out, ok, e = n.readSet(s); return })
	return
}

func (n *linuxNode) WriteSet(s setSpec, v6 bool, want map[setEntry]bool) error {
	return n.do(func() error {
		cur, ok, err := n.readSet(s)
		if err != nil && ok {
			// Wrong type: recreate (fails if a rule still uses it).
			if err := netlink.IpsetDestroy(s.Name); err != nil {
				return fmt.Errorf("recreate ipset %s: %w", s.Name, err)
			}
			ok = false
		} else if err != nil {
			return err
		}
		if !ok {
			fam := uint8(unix.AF_INET)
			if v6 {
				fam = unix.AF_INET6
			}
			if err := netlink.IpsetCreate(s.Name, s.Type, netlink.IpsetCreateOptions{Family: fam}); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("create ipset %s (%s): %w", s.Name, s.Type, err)
			}
			cur = map[setEntry]bool{}
		}
		var errs []error
		for _, e := range sortedEntries(want) {
			if !cur[e] {
				if err := netlink.IpsetAdd(s.Name, entryToNetlink(s.Type, e)); err != nil {
					errs = append(errs, fmt.Errorf("ipset add %s %s: %w", s.Name, e, err))
				}
			}
		}
		for _, e := range sortedEntries(cur) {
			if !want[e] {
				if err := netlink.IpsetDel(s.Name, entryToNetlink(s.Type, e)); err != nil {
					errs = append(errs, fmt.Errorf("ipset del %s %s: %w", s.Name, e, err))
				}
			}
		}
		return errors.Join(errs...)
	})
}

func (n *linuxNode) DestroySet(name string) error {
	return n.do(func() error {
		if err := netlink.IpsetDestroy(name); err != nil && !isNoSet(err) {
			return fmt.Errorf("destroy ipset %s: %w", name, err)
		}
		return nil
	})
}

func entryToNetlink(typ string, e setEntry) *netlink.IPSetEntry {
	out := &netlink.IPSetEntry{IP: net.IP(e.IP.AsSlice())}
	switch typ {
	case typeNet:
		out.CIDR = e.CIDR
		return out
	}
	proto := uint8(e.Proto)
	port := e.Port
	out.Protocol, out.Port = &proto, &port
	if e.IP2.IsValid() {
		out.IP2 = net.IP(e.IP2.AsSlice())
		if typ == typeIPPortNet {
			out.CIDR2 = e.CIDR
		}
	}
	return out
}

func entryFromNetlink(typ string, ne netlink.IPSetEntry) setEntry {
	var e setEntry
	if a, ok := netip.AddrFromSlice(ne.IP); ok {
		e.IP = a.Unmap()
	}
	if typ == typeNet {
		e.CIDR = ne.CIDR
		if e.CIDR == 0 {
			e.CIDR = uint8(e.IP.BitLen())
		}
		return e
	}
	if ne.Protocol != nil {
		e.Proto = uint16(*ne.Protocol)
	}
	if ne.Port != nil {
		e.Port = *ne.Port
	}
	if a, ok := netip.AddrFromSlice(ne.IP2); ok {
		e.IP2 = a.Unmap()
		if typ == typeIPPortNet {
			e.CIDR = ne.CIDR2
			if e.CIDR == 0 {
				e.CIDR = uint8(e.IP2.BitLen())
			}
		}
	}
	return e
}

func (n *linuxNode) Sysctl(key, value string) error {
	return n.do(func() error {
		_, _, err := sysctl.Ensure(key, value)
		return err
	})
}
