// Package nftables is the nftables backend of the synterix agent. It
// programs one table of its own per address family ("ip synterix", "ip6
// synterix") over netlink, and touches no other table: kube-proxy's "ip
// kube-proxy", iptables-nft's tables and any firewall's stay as they are.
//
// The layout is designed for 10k+ Services (docs/backends.md):
//
//   - dispatch is two verdict maps keyed by "address . protocol . port"
//     (service-ips, no-endpoint-services), looked up from one rule each;
//   - a service port has a chain for its ClusterIPs (svc-…) and one for its
//     external frontends (ext-…), plus fw-… for load balancer source
//     ranges; endpoints are rules in them ("numgen … dnat to"), never
//     chains or sets of their own;
//   - ClientIP affinity is one dynamic set for the whole table;
//   - a service port's chain is named by a digest of its rules, so a full
//     sync (and a restarted agent's adoption) compares names and map
//     elements and never lists the rules of 10k chains;
//   - a cold start is split into transactions of bounded size; other
//     syncs are one transaction each, applied whole or not at all.
//
// Every method runs in the network namespace of the calling OS thread: it
// opens its netlink socket there and closes it before returning.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftgen"
)

// DefaultTable is the name of our table in each family.
const DefaultTable = "synterix"

// Options configure the backend.
type Options struct {
	// Family is the address family the backend programs (default IPv4);
	// a dual-stack node runs one backend per family.
	Family model.Family
	// Table overrides DefaultTable (tests).
	Table string
	// MasqueradeBit is the packet mark bit that requests masquerade.
	// Default 17 (0x20000), away from kube-proxy's 0x4000.
	MasqueradeBit int
	// ChunkBytes bounds a cold start's transactions (default 2 MiB).
	ChunkBytes int
}

// Backend implements backend.Backend with nftables.
type Backend struct {
	f     *family
	table string
	mark  uint32
	chunk int

	// What the kernel holds after the last successful sync; partial syncs
	// diff against it.
	frags   map[string]*fragment
	key     renderKey
	hairpin map[string]elem
	sum     epsSum           // digest of the endpoints map
	picks   map[pickSpec]int // pick chains and how many fragments use them
	shared  int              // rules in the shared chains, pick chains included
	last    *model.State
	synced  bool

	localnet localnet
	// sock is kept between calls: closing the netlink socket took 13 ms
	// of a 13.6 ms partial sync here.
	sock *conn

	// gens remembers the nf_tables generation at which a full sync read
	// b.last's table back and found it in the kernel (generation.go).
	// readBacks counts the full syncs that read the kernel (tests).
	gens      nftgen.Tracker
	readBacks int
}

var _ backend.Backend = (*Backend)(nil)

// New prepares a backend. It does not touch the kernel.
func New(opts Options) (*Backend, error) {
	f, err := familyOf(opts.Family)
	if err != nil {
		return nil, err
	}
	bit := opts.MasqueradeBit
	if bit == 0 {
		bit = 17
	}
	if bit < 0 || bit > 31 {
		return nil, fmt.Errorf("masquerade bit %d out of range 0-31", bit)
	}
	b := &Backend{f: f, table: opts.Table, mark: 1 << bit, chunk: opts.ChunkBytes, frags: map[string]*fragment{},
		gens: nftgen.Tracker{Read: nftgen.Read, What: "nftables"}}
	if b.table == "" {
		b.table = DefaultTable
	}
	if b.chunk <= 0 {
		b.chunk = 2 << 20
	}
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "nftables" }

// Table names the table the backend owns, e.g. "ip synterix".
func (b *Backend) Table() string { return b.f.name + " " + b.table }

// Unsupported implements backend.Backend.
func (b *Backend) Unsupported(p model.Policy) error { return Features.Check(b.Name(), p) }

// renderKey is what shapes every chain besides the service ports
// themselves; when it changes, everything is rendered again.
type renderKey struct {
	mark      uint32
	local     string // the local traffic detection
	localhost bool
}

func (b *Backend) renderer(st *model.State) (*renderer, renderKey) {
	r := &renderer{f: b.f, mark: b.mark, local: st.Local}
	// Only CIDRs of the table's family fit its address matches.
	r.local.CIDRs = nil
	for _, p := range st.Local.CIDRs {
		if p.Addr().Is4() == (b.f.addrLen == 4) {
			r.local.CIDRs = append(r.local.CIDRs, p.Masked())
		}
	}
	k := renderKey{mark: b.mark}
	if r.local.Detects() {
		k.local = r.local.String()
	}
	for _, s := range st.Services {
		for _, fe := range s.Frontends {
			k.localhost = k.localhost || fe.Localhost
		}
	}
	return r, k
}

// Sync implements backend.Backend. The backend keeps st to diff the next
// sync against; callers must not modify it afterwards. A partial sync
// that fails, or finds the canary rule gone, is retried at once as a full
// sync.
func (b *Backend) Sync(ctx context.Context, st *model.State, opts backend.SyncOptions) (backend.SyncResult, error) {
	start := time.Now()
	if st == nil {
		st = &model.State{Family: b.f.model}
	}
	if f, err := familyOf(st.Family); err != nil || f != b.f {
		return backend.SyncResult{}, fmt.Errorf("state of family %q given to the %s backend", st.Family, b.f.model)
	}
	c, err := b.socket(ctx)
	if err != nil {
		return backend.SyncResult{}, err
	}
	full := opts.Full || !b.synced
	var res backend.SyncResult
	if full {
		if gen, ok := b.unchangedSinceVerified(ctx, st); ok {
			klog.V(2).InfoS("Full nftables sync verified by the nf_tables generation, nothing read back", "table", b.Table(), "generation", gen)
			return b.done(st, backend.SyncResult{Full: true}, start)
		}
	}
	b.gens.Forget()
	if !full {
		res, err = b.partialSync(c, st)
		if err != nil {
			if errors.Is(err, errCanary) {
				klog.InfoS("Our nftables rules were flushed or deleted by someone else, doing a full resync", "table", b.Table(), "err", err)
			} else {
				klog.ErrorS(err, "Partial nftables sync failed, retrying as a full sync", "table", b.Table())
			}
			full = true
		}
	}
	if full {
		res, err = b.verifyingFullSync(ctx, c, st)
	}
	if err != nil {
		res.Duration = time.Since(start)
		b.synced = false
		b.gens.Forget()
		b.dropSocket(err)
		return res, err
	}
	return b.done(st, res, start)
}

// done finishes a successful sync of st: it records st and reports.
func (b *Backend) done(st *model.State, res backend.SyncResult, start time.Time) (backend.SyncResult, error) {
	res.Duration = time.Since(start)
	ch := model.Diff(b.last, st)
	res.Changed = len(ch.Added) + len(ch.Removed) + len(ch.Changed)
	res.Owned = b.owned()
	b.last, b.synced = st, true
	if b.key.localhost && b.f.routeLocalnet {
		if err := b.localnet.enable(); err != nil {
			return res, fmt.Errorf("rules in place, but localhost NodePorts cannot work: %w", err)
		}
	}
	klog.V(2).InfoS("nftables sync done", "table", b.Table(), "full", res.Full, "services", len(st.Services),
		"changed", res.Changed, "written", res.Rules, "duration", res.Duration)
	return res, nil
}

// owned counts the rules and map elements the backend holds.
func (b *Backend) owned() int {
	n := b.shared + len(b.hairpin)
	for _, f := range b.frags {
		n += f.rules + len(f.dispatch) + len(f.noEps) + len(f.eps)
	}
	return n
}

// Cleanup implements backend.Backend: it deletes our table, and nothing
// else, and restores route_localnet if it set it.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	c, err := b.socket(ctx)
	if err != nil {
		return err
	}
	defer b.dropSocket(nil)
	ks, err := readKernel(c, b.f, b.table, nil, nil)
	if err != nil {
		errs = append(errs, err)
	} else if ks.table {
		t := newTxn(b.f, b.table)
		t.delTable()
		if err := c.commit(t); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := b.localnet.restore(); err != nil {
		errs = append(errs, err)
	}
	b.frags, b.hairpin, b.picks, b.sum, b.last, b.synced, b.shared = map[string]*fragment{}, nil, nil, epsSum{}, nil, false, 0
	b.gens.Forget()
	return errors.Join(errs...)
}

// local endpoints of the state, as keys of the hairpin set.
func (b *Backend) hairpinElems(st *model.State) map[string]elem {
	out := map[string]elem{}
	for _, s := range st.Services {
		for _, eps := range [][]model.Endpoint{s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints} {
			for _, e := range eps {
				if !e.Local {
					continue
				}
				if a, err := b.f.addr(e.Addr); err == nil {
					k := hairpinKey(a)
					out[k] = elem{key: k}
				}
			}
		}
	}
	return out
}
