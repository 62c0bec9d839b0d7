// Package kernel reads back, in the calling OS thread's network namespace,
// what package trace walks: the node's addresses and routes, its affinity
// lists, and per backend its rules (iptables-save), IPVS virtual servers
// and ipsets. It only reads; the agent runs it through its InNetNS, tests
// inside a test namespace.
package kernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// recentDir holds the xt_recent lists of the calling thread's network
// namespace (/proc/self/net would show the main thread's).
const recentDir = "/proc/thread-self/net/xt_recent"

// ReadEnv reads the node's addresses and main routing table of a family,
// and the affinity lists of xt_recent.
func ReadEnv(fam model.Family) (trace.Env, error) {
	var env trace.Env
	nlFam := netlink.FAMILY_V4
	if fam == model.IPv6 {
		nlFam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, nlFam)
	if err != nil {
		return env, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			env.LocalAddrs = append(env.LocalAddrs, ip.Unmap())
		}
	}
	if env.Routes, err = routes(nlFam); err != nil {
		return env, err
	}
	env.Recent, err = recentLists(recentDir)
	return env, err
}

// routes lists the main table's routes with their devices.
func routes(nlFam int) ([]trace.Route, error) {
	rs, err := netlink.RouteListFiltered(nlFam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	var out []trace.Route
	for _, r := range rs {
		name, ok := names[r.LinkIndex]
		if !ok {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			names[r.LinkIndex] = name
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if nlFam == netlink.FAMILY_V6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				dst = netip.PrefixFrom(a.Unmap(), ones).Masked()
			}
		}
		out = append(out, trace.Route{Dst: dst, Dev: name})
	}
	trace.SortRoutes(out)
	return out, nil
}

// recentLists reads every xt_recent list of the namespace: lines
// "src=10.1.2.3 ttl: 64 last_seen: ...". No list (the module not loaded) is
// no affinity.
func recentLists(dir string) (map[string][]netip.Addr, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read affinity lists: %w", err)
	}
	out := map[string][]netip.Addr{}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read affinity list %s: %w", e.Name(), err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 {
				continue
			}
			if a, err := netip.ParseAddr(strings.TrimPrefix(fields[0], "src=")); err == nil {
				out[e.Name()] = append(out[e.Name()], a.Unmap())
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read affinity list %s: %w", e.Name(), err)
		}
	}
	return out, nil
}

// Save runs iptables-save of a family and flavour (ModeAuto detects it)
// and returns its text.
func Save(ctx context.Context, fam model.Family, mode xtables.Mode) (string, error) {
	if mode == xtables.ModeAuto {
		var err error
		if mode, err = xtables.DetectMode(ctx); err != nil {
			return "", err
		}
	}
	r, err := xtables.NewRunner(fam, mode)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = r.Save(ctx, func(rd io.Reader) error { _, err := io.Copy(&b, rd); return err })
	return b.String(), err
}

// IPTables reads the iptables ruleset and the Env of a family, for a
// trace of the iptables backend.
func IPTables(ctx context.Context, fam model.Family, mode xtables.Mode) (*trace.IPTables, error) {
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
	return &trace.IPTables{Rules: rs, Env: env}, nil
}
