package explain

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// view is one backend's kernel, read back for one IP family, with what it
// says about a service port and how it compares with a desired state. One
// implementation per backend: iptables, IPVS, nftables.
type view interface {
	// tracer walks packets through what was read.
	tracer() trace.Tracer
	// port is what the kernel holds for a service port.
	port(s *model.Service) report.Kernel
	// diff compares the kernel with st: every object the backend owns, or
	// with key only those of that service port. It returns the
	// differences and how many objects it compared.
	diff(st *model.State, key string) ([]report.Difference, int)
}

// readers builds a backend's view; it runs inside the node's network
// namespace.
var readers = map[v1alpha1.Backend]func(ctx context.Context, snap *daemon.Snapshot, fam model.Family) (view, error){
	v1alpha1.BackendIPTables: readIPTables,
	v1alpha1.BackendIPVS:     readIPVS,
	v1alpha1.BackendNFTables: readNFTables,
}

// readView reads the kernel of the snapshot's backend for a family.
func readView(ctx context.Context, snap *daemon.Snapshot, fam model.Family) (view, error) {
	read := readers[snap.Backend]
	if read == nil {
		return nil, fmt.Errorf("this agent cannot read back the rules of backend %q", snap.Backend)
	}
	var v view
	run := snap.InNetNS
	if run == nil {
		run = func(f func() error) error { return f() }
	}
	err := run(func() (err error) { v, err = read(ctx, snap, fam); return err })
	if err != nil {
		return nil, fmt.Errorf("read the %s rules of %s: %w", snap.Backend, fam, err)
	}
	return v, nil
}

// lineDiff compares two lists of rules as multisets and says what is
// missing from the kernel and what it holds in excess.
func lineDiff(want, got []string) (missing, extra []string) {
	count := map[string]int{}
	for _, r := range got {
		count[r]++
	}
	for _, r := range want {
		if count[r] > 0 {
			count[r]--
			continue
		}
		missing = append(missing, r)
	}
	for _, r := range got {
		if count[r] > 0 {
			count[r]--
			extra = append(extra, r)
		}
	}
	return missing, extra
}

// detail renders what lineDiff found, bounded.
func detail(missing, extra []string) string {
	var parts []string
	add := func(what string, rules []string) {
		for i, r := range rules {
			if i == 3 {
				parts = append(parts, fmt.Sprintf("and %d more %s", len(rules)-3, what))
				break
			}
			parts = append(parts, what+" "+strings.TrimSpace(r))
		}
	}
	add("missing:", missing)
	add("extra:", extra)
	return strings.Join(parts, "; ")
}

// sameOrder reports whether two rule lists are equal in order.
func sameOrder(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sortDiffs(ds []report.Difference) {
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].Object != ds[j].Object {
			return ds[i].Object < ds[j].Object
		}
		if ds[i].Kind != ds[j].Kind {
			return ds[i].Kind < ds[j].Kind
		}
		return ds[i].Service < ds[j].Service
	})
}

// frontendKey names a frontend as the IPVS view indexes it.
func frontendKey(proto string, a netip.Addr, port uint16) string {
	return strings.ToLower(proto) + "/" + netip.AddrPortFrom(a.Unmap(), port).String()
}
