// Package ipvs is the IPVS backend: it programs a node's kernel from a
// model.State with IPVS virtual servers (moby/ipvs over netlink), a dummy
// interface holding the service VIPs, ipsets (vishvananda/netlink) and a
// few iptables glue rules for masquerade, hairpin, source ranges and
// services without endpoints.
package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Defaults.
const (
	DefaultDummyInterface  = "synx-ipvs0"
	DefaultScheduler       = "rr"
	DefaultMasqueradeMark  = 0x1000
	DefaultGracefulTimeout = 15 * time.Minute
	DefaultCallTimeout     = 10 * time.Second
	// detectTimeout bounds the iptables flavour detection, which reads
	// every rule of both flavours on a node without our canary.
	detectTimeout = 2 * time.Minute
)

// Config configures the IPVS backend.
type Config struct {
	// NetNSPath is the network namespace to program ("" = the agent's).
	NetNSPath string
	// Scheduler is the IPVS scheduler for services without an algorithm
	// from a policy: one of Schedulers. Default rr.
	Scheduler string
	// StrictARP sets arp_ignore=1 and arp_announce=2 so that the node does
	// not answer ARP for the VIPs on the dummy interface.
	StrictARP bool
	// GracefulTimeout bounds how long a removed TCP destination is kept at
	// weight 0 while it still has connections. Default 15m; a negative
	// value deletes removed destinations at once.
	GracefulTimeout time.Duration
	// CallTimeout bounds every IPVS netlink call. Default 10s.
	CallTimeout time.Duration
	// DummyInterface holds the VIPs. Default synx-ipvs0.
	DummyInterface string
	// MasqueradeMark is the packet mark bit that requests SNAT. Default
	// 0x1000: not kube-proxy's 0x4000 (masquerade) or 0x8000 (drop, still
	// dropped by older kubelets' KUBE-FIREWALL), not the iptables backend's,
	// outside Cilium's 0x0F00. Set it when a CNI uses that bit.
	MasqueradeMark uint32
	// Family is IPv4 (default) or IPv6; one backend instance per family.
	Family model.Family
	// TCPTimeout, TCPFinTimeout and UDPTimeout are the IPVS connection
	// timeouts (ipvsadm --set). 0 keeps the kernel's value. The kernel
	// counts whole seconds: a fraction is rounded up.
	TCPTimeout, TCPFinTimeout, UDPTimeout time.Duration
	// ExcludeCIDRs are networks whose virtual servers the backend never
	// deletes, in a sync or in a cleanup, even when it recorded them as
	// its own: other software may keep virtual servers there.
	ExcludeCIDRs []netip.Prefix
	// IPTablesMode is the iptables flavour (legacy or nft) of the glue
	// rules; empty detects it in the namespace, as the iptables backend
	// does, so that the glue lands where the node's other rules are.
	IPTablesMode xtables.Mode
}

func (c *Config) defaults() error {
	if c.Scheduler == "" {
		c.Scheduler = DefaultScheduler
	}
	if !slices.Contains(Schedulers, c.Scheduler) {
		return fmt.Errorf("unknown IPVS scheduler %q (one of %v)", c.Scheduler, Schedulers)
	}
	if c.GracefulTimeout == 0 {
		c.GracefulTimeout = DefaultGracefulTimeout
	}
	if c.GracefulTimeout < 0 {
		c.GracefulTimeout = 0
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.DummyInterface == "" {
		c.DummyInterface = DefaultDummyInterface
	}
	if c.MasqueradeMark == 0 {
		c.MasqueradeMark = DefaultMasqueradeMark
	}
	if c.MasqueradeMark&(c.MasqueradeMark-1) != 0 {
		return fmt.Errorf("masquerade mark %#x must be a single bit", c.MasqueradeMark)
	}
	if c.Family == "" {
		c.Family = model.IPv4
	}
	if c.TCPTimeout < 0 || c.TCPFinTimeout < 0 || c.UDPTimeout < 0 {
		return fmt.Errorf("IPVS timeouts must not be negative (tcp %s, tcpFin %s, udp %s)", c.TCPTimeout, c.TCPFinTimeout, c.UDPTimeout)
	}
	for _, p := range c.ExcludeCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("invalid exclude CIDR %v", p)
		}
	}
	return nil
}

// excluded reports whether a is inside one of the exclude CIDRs.
func (c *Config) excluded(a netip.Addr) bool {
	for _, p := range c.ExcludeCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// wholeSeconds rounds d up to whole seconds, the kernel's unit.
func wholeSeconds(d time.Duration) time.Duration {
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return d
}

// applyTimeouts sets the configured IPVS timeouts that differ from the
// kernel's; zero fields are left alone. It reads first, so a sync that
// changes nothing writes nothing.
func (b *Backend) applyTimeouts() error {
	want := libipvs.Config{
		TimeoutTCP:    wholeSeconds(b.cfg.TCPTimeout),
		TimeoutTCPFin: wholeSeconds(b.cfg.TCPFinTimeout),
		TimeoutUDP:    wholeSeconds(b.cfg.UDPTimeout),
	}
	if want == (libipvs.Config{}) {
		return nil
	}
	cur, err := b.ipvs.GetConfig()
	if err != nil {
		return fmt.Errorf("read ipvs timeouts: %w", err)
	}
	var set libipvs.Config
	if want.TimeoutTCP != 0 && want.TimeoutTCP != cur.TimeoutTCP {
		set.TimeoutTCP = want.TimeoutTCP
	}
	if want.TimeoutTCPFin != 0 && want.TimeoutTCPFin != cur.TimeoutTCPFin {
		set.TimeoutTCPFin = want.TimeoutTCPFin
	}
	if want.TimeoutUDP != 0 && want.TimeoutUDP != cur.TimeoutUDP {
		set.TimeoutUDP = want.TimeoutUDP
	}
	if set == (libipvs.Config{}) {
		return nil
	}
	if err := b.ipvs.SetConfig(&set); err != nil {
		return fmt.Errorf("set ipvs timeouts (tcp %s, tcpFin %s, udp %s): %w", set.TimeoutTCP, set.TimeoutTCPFin, set.TimeoutUDP, err)
	}
	return nil
}

// Backend implements backend.Backend with IPVS.
type Backend struct {
	cfg    Config
	v6     bool
	prefix string
	sets   setNames
	ipvs   Handle
	node   nodeOps
	xt     xtables.Runner // the glue's iptables tools
	rec    *reconciler

	mu sync.Mutex
}

var _ backend.Backend = (*Backend)(nil)

// New opens the IPVS netlink handle in the configured namespace and picks
// the iptables tools of the glue: those of the configured flavour, or of
// the one detected in the namespace.
func New(cfg Config) (*Backend, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	node := &linuxNode{nsPath: cfg.NetNSPath}
	if err := node.do(Probe); err != nil {
		return nil, err
	}
	if cfg.IPTablesMode == xtables.ModeAuto {
		ctx, cancel := context.WithTimeout(context.Background(), detectTimeout)
		mode, err := detectMode(ctx, node)
		cancel()
		if err != nil {
			return nil, err
		}
		cfg.IPTablesMode = mode
	}
	h, err := NewNetlinkHandle(cfg.NetNSPath, cfg.CallTimeout)
	if err != nil {
		return nil, err
	}
	b, err := newBackend(cfg, h, node, nodeGlue(node), nil)
	if err != nil {
		h.Close()
		return nil, err
	}
	return b, nil
}

// newBackend wires a backend from parts; tests pass fakes.
func newBackend(cfg Config, h Handle, node nodeOps, glue glueRunner, now func() time.Time) (*Backend, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	xt, err := glue(cfg.Family, cfg.IPTablesMode)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, ipvs: h, node: node, xt: xt, v6: cfg.Family == model.IPv6}
	// Not "SYNX-": the iptables backend owns every chain with that prefix.
	b.prefix = "SYNXIPVS-"
	if b.v6 {
		b.prefix = "SYNXIPVS6-"
	}
	b.sets = newSetNames(b.prefix)
	b.rec = newReconciler(h, cfg.GracefulTimeout, now)
	klog.V(2).InfoS("IPVS backend ready", "family", cfg.Family, "iptablesMode", cfg.IPTablesMode)
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "ipvs" }

// Features is the IPVS backend's feature table.
func Features() backend.FeatureTable {
	t := backend.FeatureTable{
		{Feature: backend.FeatureClientIPAffinity, Supported: true, Note: "IPVS persistence with the affinity timeout"},
		{Feature: backend.FeatureSourceRanges, Supported: true, Note: "ipset hash:ip,port,net checked in filter INPUT"},
	}
	for _, a := range model.KnownAlgorithms {
		sched, ok := schedulerFor(a, DefaultScheduler)
		note := "IPVS scheduler " + sched
		if !ok {
			note = "IPVS has no random scheduler"
		}
		t = append(t, backend.FeatureSupport{Feature: backend.AlgorithmFeature(a), Supported: ok, Note: note})
	}
	return t
}

// Unsupported implements backend.Backend.
func (b *Backend) Unsupported(p model.Policy) error { return Features().Check(b.Name(), p) }

func (b *Backend) rules(st *model.State) rulesConfig {
	return glueConfig(b.prefix, b.sets, b.cfg.MasqueradeMark, b.v6, st)
}

// glueConfig is the glue of one family's backend for a state (nil: only
// the chains and jumps, for Cleanup); the backend and DesiredFor render it.
func glueConfig(prefix string, sets setNames, mark uint32, v6 bool, st *model.State) rulesConfig {
	rc := rulesConfig{Prefix: prefix, Sets: sets, MasqMark: mark, ClusterCIDRs: st != nil && len(st.Local.CIDRs) > 0, V6: v6}
	if st != nil && st.Local.Interface != "" {
		rc.LocalIface = st.Local.Interface
		if st.Local.InterfacePrefix {
			rc.LocalIface += "+" // iptables' interface name wildcard
		}
	}
	return rc
}

func (b *Backend) sysctls() [][2]string {
	s := [][2]string{
		// Keep conntrack entries for IPVS connections so that nat
		// POSTROUTING (masquerade) applies to them.
		{"net/ipv4/vs/conntrack", "1"},
		// Drop connections to deleted destinations and stale persistence
		// templates of weight-0 destinations instead of blackholing.
		{"net/ipv4/vs/expire_nodest_conn", "1"},
		{"net/ipv4/vs/expire_quiescent_template", "1"},
	}
	if b.cfg.StrictARP {
		s = append(s, [2]string{"net/ipv4/conf/all/arp_ignore", "1"}, [2]string{"net/ipv4/conf/all/arp_announce", "2"})
	}
	return s
}

// Sync implements backend.Backend. It always diffs against the kernel, so
// every call is "full"; opts.Full changes nothing. The order of its steps
// keeps traffic flowing and ownership known at every point: VIPs, then
// ownership, then sets and glue, then IPVS, then what became stale.
func (b *Backend) Sync(ctx context.Context, st *model.State, opts backend.SyncOptions) (backend.SyncResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := time.Now()
	res := backend.SyncResult{Full: true}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	errs := b.tuneKernel()
	d := buildDesired(st, b.cfg.Scheduler)
	// 1. VIPs on the dummy interface.
	bound, added, err := b.bindVIPs(d, &errs)
	res.Rules += added
	if err != nil {
		return res, err
	}
	// 2. Record ownership before creating virtual servers, so that a crash
	// between the two steps cannot leave a server we do not know is ours.
	ownedBefore, err := b.recordOwnership(d)
	if err != nil {
		return res, err
	}
	// 3. The other sets and the glue rules, before traffic can reach new
	// virtual servers.
	errs = append(errs, b.writeSets(st, d)...)
	errs = append(errs, b.writeGlue(ctx, st)...)
	// 4. IPVS by diff.
	isOwned := func(k vsKey) bool {
		return b.ofFamily(k.Addr) && !b.cfg.excluded(k.Addr) && (ownedBefore[ownedEntry(k)] || bound[k.Addr])
	}
	rs, err := b.rec.reconcile(d.Servers, isOwned)
	if err != nil {
		errs = append(errs, err)
	}
	res.Rules += rs.writes()
	// Service ports whose virtual servers or destinations were written,
	// and virtual servers deleted.
	res.Changed = len(rs.Changed) + rs.ServicesDeleted
	for _, vs := range d.Servers {
		res.Owned += 1 + len(vs.Dests)
	}
	// 5. Shrink ownership to what exists, then unbind stale VIPs.
	errs = append(errs, b.releaseStale(d, rs, bound)...)
	res.Duration = time.Since(start)
	return res, errors.Join(errs...)
}

// tuneKernel sets the sysctls and IPVS timeouts the backend needs.
func (b *Backend) tuneKernel() []error {
	var errs []error
	for _, kv := range b.sysctls() {
		if err := b.node.Sysctl(kv[0], kv[1]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.applyTimeouts(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// bindVIPs puts every VIP on the dummy interface, creating it if needed.
// It returns the addresses bound before and how many it added; failures
// to add one address go to errs, the others are fatal.
func (b *Backend) bindVIPs(d desiredState, errs *[]error) (bound map[netip.Addr]bool, added int, err error) {
	if err := b.node.EnsureDummy(b.cfg.DummyInterface); err != nil {
		return nil, 0, err
	}
	bound, err = b.boundAddrs()
	if err != nil {
		return nil, 0, err
	}
	for a := range d.VIPs {
		if bound[a] {
			continue
		}
		if err := b.node.AddAddr(b.cfg.DummyInterface, a); err != nil {
			*errs = append(*errs, err)
		} else {
			added++
		}
	}
	return bound, added, nil
}

// ofFamily reports whether a is of the backend's family. The IPv4 and
// IPv6 instances share the dummy interface and the kernel's IPVS table, so
// each one reads, deletes and unbinds only what is of its own family.
func (b *Backend) ofFamily(a netip.Addr) bool {
	return a.IsValid() && a.Is6() == b.v6 && !a.IsLinkLocalUnicast()
}

// boundAddrs returns the addresses of the backend's family on the dummy.
func (b *Backend) boundAddrs() (map[netip.Addr]bool, error) {
	addrs, err := b.node.DummyAddrs(b.cfg.DummyInterface)
	if err != nil {
		return nil, err
	}
	bound := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if b.ofFamily(a) {
			bound[a] = true
		}
	}
	return bound, nil
}

// recordOwnership adds the desired virtual servers to the OWNED set and
// returns what it held before.
func (b *Backend) recordOwnership(d desiredState) (map[setEntry]bool, error) {
	ownedBefore, _, err := b.node.ReadSet(b.sets.Owned, b.v6)
	if err != nil {
		return nil, err
	}
	owned := map[setEntry]bool{}
	for e := range ownedBefore {
		owned[e] = true
	}
	for k := range d.Servers {
		owned[ownedEntry(k)] = true
	}
	return ownedBefore, b.node.WriteSet(b.sets.Owned, b.v6, owned)
}

// writeSets writes every set but OWNED.
func (b *Backend) writeSets(st *model.State, d desiredState) []error {
	var errs []error
	members := buildSets(b.sets, st, d)
	for _, s := range b.sets.all() {
		if s.Name == b.sets.Owned.Name {
			continue
		}
		if err := b.node.WriteSet(s, b.v6, members[s.Name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// releaseStale shrinks the OWNED set to the virtual servers that exist,
// then unbinds the VIPs no virtual server uses any more (after those on
// them are gone).
func (b *Backend) releaseStale(d desiredState, rs reconcileStats, bound map[netip.Addr]bool) []error {
	var errs []error
	final := map[setEntry]bool{}
	for k := range d.Servers {
		final[ownedEntry(k)] = true
	}
	leftoverAddr := map[netip.Addr]bool{}
	for _, k := range rs.Leftover {
		final[ownedEntry(k)] = true
		leftoverAddr[k.Addr] = true
	}
	if err := b.node.WriteSet(b.sets.Owned, b.v6, final); err != nil {
		errs = append(errs, err)
	}
	for a := range bound {
		if !d.VIPs[a] && !leftoverAddr[a] {
			if err := b.node.DelAddr(b.cfg.DummyInterface, a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// Draining returns how many destinations are at weight 0 waiting for their
// connections to end.
func (b *Backend) Draining() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rec.drainingCount()
}

// Cleanup implements backend.Backend: it deletes the virtual servers this
// backend owns (recorded in its OWNED ipset, or bound to its dummy
// interface), the glue rules and chains, the ipsets and the dummy
// interface. Other IPVS services, rules and sets are left alone.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	owned, _, err := b.node.ReadSet(b.sets.Owned, b.v6)
	if err != nil {
		errs = append(errs, err)
	}
	boundSet, err := b.boundAddrs()
	if err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	svcs, err := b.ipvs.GetServices()
	if err != nil {
		errs = append(errs, fmt.Errorf("list ipvs services: %w", err))
	}
	for _, s := range svcs {
		k, ok := keyOf(s)
		if !ok || !b.ofFamily(k.Addr) || b.cfg.excluded(k.Addr) || !(owned[ownedEntry(k)] || boundSet[k.Addr]) {
			continue
		}
		if err := b.ipvs.DelService(s); err != nil {
			errs = append(errs, fmt.Errorf("delete virtual server %s: %w", k, err))
		}
	}
	b.rec.draining = map[vsKey]map[rsKey]time.Time{}
	errs = append(errs, b.deleteGlue(ctx)...)
	for _, s := range b.sets.all() {
		if err := b.node.DestroySet(s.Name); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, b.releaseDummy(boundSet)...)
	return errors.Join(errs...)
}

// releaseDummy unbinds the backend's addresses from the dummy interface,
// and deletes the interface once no other family's instance has addresses
// on it: the other family's VIPs keep serving.
func (b *Backend) releaseDummy(bound map[netip.Addr]bool) []error {
	addrs, err := b.node.DummyAddrs(b.cfg.DummyInterface)
	if err != nil {
		return []error{err}
	}
	shared := false
	for _, a := range addrs {
		if !bound[a] && !b.ofFamily(a) && !a.IsLinkLocalUnicast() {
			shared = true
		}
	}
	if !shared {
		if err := b.node.DeleteDummy(b.cfg.DummyInterface); err != nil {
			return []error{err}
		}
		return nil
	}
	var errs []error
	for _, a := range addrs {
		if b.ofFamily(a) {
			if err := b.node.DelAddr(b.cfg.DummyInterface, a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// Close releases the netlink handle.
func (b *Backend) Close() { b.ipvs.Close() }
