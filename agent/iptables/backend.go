// Package iptables is the iptables backend of the synterix agent. It renders
// a model.State into chains prefixed SYNX- in the nat and filter tables and
// applies them with one iptables-restore --noflush per table.
//
// Like Calico's felix it keeps the rules it wrote in memory and re-reads the
// kernel (iptables-save) on full syncs, so a restarted agent adopts the
// rules already there and writes only the chains that differ. Partial syncs
// trust the cache, rewrite the chains of changed services only and edit the
// dispatch chain with -A/-D lines. A canary chain detects flushes by
// someone else and turns the next sync into a full one. With the nft
// flavour, a full sync of an unchanged state skips the read-back when the
// namespace's nf_tables generation has not moved since a read-back found
// the kernel as desired: nothing in nf_tables changed, so nothing drifted.
//
// Every method runs its commands in the network namespace of the calling
// OS thread; tests call it from a thread switched into a test namespace.
// The backend starts no goroutine that runs commands.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/nftgen"
	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Options configure the backend.
type Options struct {
	// Mode selects legacy or nft; empty detects it.
	Mode xtables.Mode
	// MasqueradeBit is the packet mark bit used to request masquerade.
	// Default 17 (0x20000), away from kube-proxy's 0x4000.
	MasqueradeBit int
	// Family is the IP family the backend programs (iptables or
	// ip6tables); default IPv4.
	Family model.Family
}

// Backend implements backend.Backend with iptables.
type Backend struct {
	opts        Options
	mode        xtables.Mode
	bins        xtables.Binaries // the tools xt runs, for logs and tests
	xt          xtables.Runner
	randomFully bool
	masqMark    string

	// frags holds every service port as last written to the kernel;
	// globals the shared chains. Partial syncs diff against them.
	frags      map[string]*fragment
	globals    ruleset
	renderOpts renderOptions
	last       *model.State
	synced     bool
	// lastPayload keeps the restore input of the last sync per table when
	// keepPayload is set (tests and benchmarks): a full payload at 10k
	// Services is ~15 MB a node agent should not hold between syncs.
	keepPayload bool
	lastPayload map[string][]byte

	localnetSet bool
	localnetWas string

	// gens remembers the nf_tables generation at which a full sync read
	// b.last's rules back and found them in the kernel; its reader is nil
	// for a flavour whose rules are not in nf_tables (legacy, plain). See
	// unchangedSinceVerified.
	gens nftgen.Tracker
}

var _ backend.Backend = (*Backend)(nil)

// New prepares a backend for the calling thread's network namespace, with
// the tools of the configured or detected iptables flavour.
func New(ctx context.Context, opts Options) (*Backend, error) {
	mode := opts.Mode
	if mode == xtables.ModeAuto {
		var err error
		if mode, err = xtables.DetectMode(ctx); err != nil {
			return nil, err
		}
	}
	fam := opts.Family
	if fam == "" {
		fam = model.IPv4
	}
	xt, err := xtables.NewRunner(fam, mode)
	if err != nil {
		return nil, err
	}
	b, err := newBackend(ctx, opts, mode, xt)
	if err == nil && mode == xtables.ModeNFT {
		// The real tools of the nft flavour keep our rules in nf_tables.
		b.gens.Read = nftgen.Read
	}
	return b, err
}

// newBackend wires a backend to a runner of the given mode; unit tests
// pass a FAKE runner (whose tables are not in nf_tables: no generation).
func newBackend(ctx context.Context, opts Options, mode xtables.Mode, xt xtables.Runner) (*Backend, error) {
	if opts.Family == "" {
		opts.Family = model.IPv4
	}
	bit := opts.MasqueradeBit
	if bit == 0 {
		bit = 17
	}
	if bit < 0 || bit > 31 {
		return nil, fmt.Errorf("masquerade bit %d out of range 0-31", bit)
	}
	randomFully, err := xtables.HasRandomFully(ctx, xt)
	if err != nil {
		return nil, err
	}
	m := uint32(1) << bit
	b := &Backend{
		opts:        opts,
		mode:        mode,
		bins:        xtables.BinariesFor(opts.Family, mode),
		xt:          xt,
		randomFully: randomFully,
		masqMark:    fmt.Sprintf("%#x/%#x", m, m),
		frags:       map[string]*fragment{},
	}
	klog.V(2).InfoS("iptables backend ready", "family", opts.Family, "mode", mode, "randomFully", b.randomFully, "masqueradeMark", b.masqMark)
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "iptables" }

// Mode returns the iptables flavour in use.
func (b *Backend) Mode() xtables.Mode { return b.mode }

// Unsupported implements backend.Backend.
func (b *Backend) Unsupported(p model.Policy) error { return Features.Check(b.Name(), p) }

// hooks are the jumps from built-in chains into ours.
var hooks = []xtables.Jump{
	{Table: tableNAT, Chain: "PREROUTING", Args: []string{"-m", "comment", "--comment", "synterix service portals", "-j", chainServices}},
	{Table: tableNAT, Chain: "OUTPUT", Args: []string{"-m", "comment", "--comment", "synterix service portals", "-j", chainServices}},
	{Table: tableNAT, Chain: "POSTROUTING", Args: []string{"-m", "comment", "--comment", "synterix postrouting rules", "-j", chainPostrouting}},
	{Table: tableFilter, Chain: "INPUT", Args: []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "synterix service filters", "-j", chainFilter}},
	{Table: tableFilter, Chain: "FORWARD", Args: []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "synterix service filters", "-j", chainFilter}},
	{Table: tableFilter, Chain: "OUTPUT", Args: []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "synterix service filters", "-j", chainFilter}},
}

func (b *Backend) renderOptions(st *model.State) renderOptions {
	return renderOptions{masqMark: b.masqMark, family: b.opts.Family, local: st.Local}
}

func sameOptions(a, b renderOptions) bool {
	return a.masqMark == b.masqMark && a.family == b.family && a.local.Equal(b.local)
}

func (b *Backend) globalsFor(st *model.State, o renderOptions) ruleset {
	localhost := false
	for _, s := range st.Services {
		for _, fe := range s.Frontends {
			localhost = localhost || fe.Localhost
		}
	}
	return globalChains(st, o, b.randomFully, localhost)
}

// desired assembles the complete ruleset for a full sync, re-rendering only
// services whose hash changed since they were last rendered.
func (b *Backend) desired(st *model.State) ruleset {
	o := b.renderOptions(st)
	if !sameOptions(o, b.renderOpts) {
		b.frags = map[string]*fragment{}
		b.renderOpts = o
	}
	frags := make(map[string]*fragment, len(st.Services))
	nChains := 0
	for _, s := range st.Services {
		f := b.frags[s.Key]
		if f == nil || f.hash != s.Hash || s.Hash == "" {
			f = renderService(s, o)
		}
		frags[s.Key] = f
		nChains += len(f.nat)
	}
	b.frags = frags
	b.globals = b.globalsFor(st, o)
	nat := make(map[string][]string, nChains+len(b.globals[tableNAT]))
	filter := make(map[string][]string, len(b.globals[tableFilter]))
	for c, r := range b.globals[tableNAT] {
		nat[c] = r
	}
	for c, r := range b.globals[tableFilter] {
		filter[c] = r
	}
	services := make([]string, 0, len(st.Services))
	filterRules := append([]string(nil), filter[chainFilter]...)
	for _, s := range st.Services {
		f := frags[s.Key]
		for c, rules := range f.nat {
			nat[c] = rules
		}
		services = append(services, f.services...)
		filterRules = append(filterRules, f.filter...)
	}
	nat[chainServices] = services
	filter[chainFilter] = filterRules
	return ruleset{tableNAT: nat, tableFilter: filter}
}

// partialPlans plans a partial sync from the services that changed since
// the last sync, without looking at the others. ok is false when a partial
// sync cannot be planned (render options changed).
func (b *Backend) partialPlans(st *model.State, ch model.Changes) (plans map[string]*tablePlan, ok bool) {
	o := b.renderOptions(st)
	if !sameOptions(o, b.renderOpts) {
		return nil, false
	}
	nat, filter := newPlan(), newPlan()
	plans = map[string]*tablePlan{tableNAT: nat, tableFilter: filter}
	globals := b.globalsFor(st, o)
	for table, chains := range globals {
		p := plans[table]
		for c, rules := range chains {
			old := b.globals[table][c]
			if listChains[c] {
				del, add := listEdits(old, rules)
				p.edit(c, del, add)
			} else if !equalRules(old, rules) {
				p.rewrite[c] = rules
			}
		}
	}
	b.globals = globals
	for _, key := range ch.Removed {
		old := b.frags[key]
		if old == nil {
			continue
		}
		for c := range old.nat {
			nat.stale[c] = true
		}
		nat.edit(chainServices, old.services, nil)
		filter.edit(chainFilter, old.filter, nil)
		delete(b.frags, key)
	}
	for _, keys := range [][]string{ch.Added, ch.Changed} {
		for _, key := range keys {
			s := st.Service(key)
			nf := renderService(s, o)
			old := b.frags[key]
			if old == nil {
				old = &fragment{}
			}
			for c, rules := range nf.nat {
				if !equalRules(old.nat[c], rules) || old.nat[c] == nil {
					nat.rewrite[c] = rules
				}
			}
			for c := range old.nat {
				if _, ok := nf.nat[c]; !ok {
					nat.stale[c] = true
				}
			}
			del, add := listEdits(old.services, nf.services)
			nat.edit(chainServices, del, add)
			del, add = listEdits(old.filter, nf.filter)
			filter.edit(chainFilter, del, add)
			b.frags[key] = nf
		}
	}
	return plans, true
}

// Sync implements backend.Backend. The backend keeps st to diff the next
// sync against; callers must not modify it afterwards (model.Build returns
// a fresh State every time). A failed partial sync, or one that finds the
// canary gone, is retried at once as a full sync.
func (b *Backend) Sync(ctx context.Context, st *model.State, opts backend.SyncOptions) (backend.SyncResult, error) {
	start := time.Now()
	if st == nil {
		st = &model.State{Family: b.opts.Family}
	}
	if fam := st.Family; fam != b.opts.Family && (fam != "" || b.opts.Family != model.IPv4) {
		return backend.SyncResult{}, fmt.Errorf("state of family %q given to the %s iptables backend", fam, b.opts.Family)
	}
	full := opts.Full || !b.synced
	res, err := b.sync(ctx, st, full)
	if err != nil && !full {
		if errors.Is(err, errCanary) {
			klog.InfoS("Our iptables chains were flushed or deleted by someone else, doing a full resync", "err", err)
		} else {
			klog.ErrorS(err, "Partial iptables sync failed, retrying as a full sync")
		}
		res, err = b.sync(ctx, st, true)
	}
	if err != nil {
		res.Duration = time.Since(start)
		b.synced = false
		b.gens.Forget()
		return res, err
	}
	ch := model.Diff(b.last, st)
	res.Changed = len(ch.Added) + len(ch.Removed) + len(ch.Changed)
	res.Owned = b.owned()
	b.last = st
	b.synced = true
	res.Duration = time.Since(start)
	klog.V(2).InfoS("iptables sync done", "full", res.Full, "services", len(st.Services), "changed", res.Changed,
		"rules", res.Rules, "duration", res.Duration)
	return res, nil
}

// errCanary reports a missing canary rule: someone flushed our chains.
var errCanary = errors.New("canary rule missing")

// canaryGuard, placed in a partial restore, makes the whole transaction fail
// when the canary rule is gone, so a flush is noticed without an extra
// command and nothing is applied on top of a half-deleted ruleset.
const canaryGuard = "-D " + chainCanary + " -j RETURN\n-A " + chainCanary + " -j RETURN\n"

// tables are the tables this backend writes, in the order it writes them.
var tables = []string{tableNAT, tableFilter}

// sync plans a full or partial sync and applies it. A partial sync that
// cannot be planned becomes a full one. A full sync skips the read-back
// when the kernel is known unchanged since one verified it (see
// unchangedSinceVerified), and records a read-back that found nothing to
// write under a generation that held still around it.
func (b *Backend) sync(ctx context.Context, st *model.State, full bool) (backend.SyncResult, error) {
	res := backend.SyncResult{Full: full}
	if full {
		if gen, ok := b.unchangedSinceVerified(ctx, st); ok {
			klog.V(2).InfoS("Full iptables sync verified by the nf_tables generation, nothing read back", "generation", gen)
			return res, b.localhostNodePorts(st)
		}
	}
	b.gens.Forget()
	var plans map[string]*tablePlan
	if !full {
		var ok bool
		if plans, ok = b.partialPlans(st, model.Diff(b.last, st)); !ok {
			full, res.Full = true, true
		}
	}
	var rb readBack
	if full {
		var err error
		plans, rb, err = b.fullPlans(ctx, st)
		res.Rules = rb.hooks
		if err != nil {
			return res, err
		}
	}
	n, err := b.apply(ctx, plans, full)
	res.Rules += n
	if err != nil {
		return res, err
	}
	if err := b.localhostNodePorts(st); err != nil {
		return res, err
	}
	if full && rb.clean(plans) {
		b.gens.Mark(rb.gen)
	}
	return res, nil
}

// localhostNodePorts turns route_localnet on when the state asks for
// localhost NodePorts.
func (b *Backend) localhostNodePorts(st *model.State) error {
	if !st.LocalhostNodePorts {
		return nil
	}
	if err := b.enableRouteLocalnet(); err != nil {
		return fmt.Errorf("rules in place, but localhost NodePorts cannot work: %w", err)
	}
	return nil
}

// unchangedSinceVerified reports whether a full sync of st may skip the
// read-back: the last sync was a full one that read b.last's rules back and
// found nothing to write; st renders the same rules (no service port
// changed by content hash, same render options); and the nf_tables
// generation has not moved since, so nothing in any nf_tables table of the
// namespace (ours, kube-proxy's, anyone's) changed. Drift is impossible
// without a write, and every write moves the generation.
func (b *Backend) unchangedSinceVerified(ctx context.Context, st *model.State) (uint32, bool) {
	if !b.gens.Marked() || !sameOptions(b.renderOptions(st), b.renderOpts) || !model.Diff(b.last, st).Empty() {
		return 0, false
	}
	for _, s := range st.Services {
		if s.Hash == "" { // no hash: Diff cannot tell a change
			return 0, false
		}
	}
	return b.gens.Holds(ctx)
}

// readBack is what a full sync's read of the kernel saw: the jumps it had
// to put back, and whether the nf_tables generation held still (at gen)
// from before iptables-save to after it.
type readBack struct {
	hooks  int
	gen    uint32
	stable bool
}

// clean reports whether the read-back verified the kernel: the generation
// held still around it, and it found nothing to write.
func (rb readBack) clean(plans map[string]*tablePlan) bool {
	if !rb.stable || rb.hooks != 0 {
		return false
	}
	for _, p := range plans {
		if !p.empty() {
			return false
		}
	}
	return true
}

// fullPlans reads the kernel (one iptables-save for all tables: a process
// less than per table), puts back missing jumps from the built-in chains,
// and plans turning the chains found into the desired ones. It returns the
// number of jumps it wrote and the nf_tables generation around the save.
func (b *Backend) fullPlans(ctx context.Context, st *model.State) (map[string]*tablePlan, readBack, error) {
	var rb readBack
	want := b.desired(st)
	before, ok := b.gens.Current(ctx)
	saved, err := b.save(ctx)
	if err != nil {
		return nil, rb, err
	}
	if ok {
		after, ok := b.gens.Current(ctx)
		rb.gen, rb.stable = before, ok && after == before
	}
	current := map[string]map[string]*chainSum{}
	var missing []xtables.Jump
	for _, table := range tables {
		ts := saved[table]
		if ts.chains == nil {
			ts.chains = map[string]*chainSum{} // table not initialised yet (legacy)
		}
		current[table] = ts.chains
		for _, h := range hooks {
			if h.Table == table && !slices.Contains(ts.hooks[h.Chain], h.Saved()) {
				missing = append(missing, h)
			}
		}
	}
	rb.hooks, err = b.installHooks(ctx, current, missing)
	if err != nil {
		return nil, rb, err
	}
	plans := map[string]*tablePlan{}
	for _, table := range tables {
		plans[table] = diffPlan(want[table], current[table])
	}
	return plans, rb, nil
}

// apply writes the plans with one iptables-restore --noflush per table
// that has something to change. A partial sync guards each restore with
// the canary rule, or checks the canary when it writes nothing, so that a
// flush by someone else turns into errCanary.
func (b *Backend) apply(ctx context.Context, plans map[string]*tablePlan, full bool) (int, error) {
	if b.keepPayload {
		b.lastPayload = map[string][]byte{}
	}
	rules := 0
	for _, table := range tables {
		guard := ""
		if !full {
			guard = canaryGuard
		}
		payload, n := plans[table].payload(table, guard)
		if payload == nil {
			if !full {
				if ok, err := b.canaryIntact(ctx, table); err != nil {
					return rules, err
				} else if !ok {
					return rules, fmt.Errorf("%s table: %w", table, errCanary)
				}
			}
			continue
		}
		if b.keepPayload {
			b.lastPayload[table] = payload
		}
		if err := b.xt.Restore(ctx, payload, "-w", "--noflush"); err != nil {
			if !full && strings.Contains(err.Error(), chainCanary) {
				return rules, fmt.Errorf("%s table: %w: %v", table, errCanary, err)
			}
			return rules, err
		}
		rules += n
	}
	return rules, nil
}

// installHooks adds the missing jumps from built-in chains. The target
// chains are created empty first if they do not exist, while the tables
// are still small, so the inserts stay cheap; the big restore fills them
// afterwards.
func (b *Backend) installHooks(ctx context.Context, current map[string]map[string]*chainSum, missing []xtables.Jump) (int, error) {
	for _, table := range tables {
		var buf bytes.Buffer
		for _, h := range missing {
			target := h.Target()
			if _, ok := current[table][target]; h.Table != table || ok {
				continue
			}
			buf.WriteString(":" + target + " - [0:0]\n")
			current[table][target] = &chainSum{}
		}
		if buf.Len() == 0 {
			continue
		}
		payload := append([]byte("*"+table+"\n"), buf.Bytes()...)
		payload = append(payload, "COMMIT\n"...)
		if err := b.xt.Restore(ctx, payload, "-w", "--noflush"); err != nil {
			return 0, err
		}
	}
	for i, h := range missing {
		if err := xtables.Insert(ctx, b.xt, h); err != nil {
			return i, err
		}
	}
	return len(missing), nil
}

// canaryIntact checks the canary rule of a table: it is gone after
// "iptables -F", a table deletion or a firewall reload.
func (b *Backend) canaryIntact(ctx context.Context, table string) (bool, error) {
	out, err := b.xt.Exec(ctx, "-w", "-t", table, "-S", chainCanary)
	if err != nil {
		if strings.Contains(err.Error(), "No chain") || strings.Contains(err.Error(), "does not exist") {
			return false, nil
		}
		return false, err
	}
	return bytes.Contains(out, []byte("-A "+chainCanary+" -j RETURN")), nil
}

const routeLocalnet = "net/ipv4/conf/all/route_localnet"

// enableRouteLocalnet lets DNAT send 127.0.0.1 NodePort traffic off the
// host. The previous value is restored by Cleanup. A failure is returned:
// the revision asks for localhost NodePorts and this node cannot give them.
func (b *Backend) enableRouteLocalnet() error {
	old, changed, err := sysctl.Ensure(routeLocalnet, "1")
	if err != nil {
		return err
	}
	if changed && !b.localnetSet {
		b.localnetSet, b.localnetWas = true, old
	}
	return nil
}

// Cleanup implements backend.Backend: it removes every jump into our chains
// and every SYNX- chain, in one restore per table, and nothing else.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	for _, h := range hooks {
		if err := xtables.Delete(ctx, b.xt, h); err != nil {
			errs = append(errs, err)
		}
	}
	for _, table := range tables {
		if err := b.cleanTable(ctx, table); err != nil {
			errs = append(errs, err)
		}
	}
	if b.localnetSet {
		if err := sysctl.Write(routeLocalnet, b.localnetWas); err != nil {
			errs = append(errs, err)
		}
		b.localnetSet = false
	}
	b.frags = map[string]*fragment{}
	b.globals = nil
	b.last = nil
	b.synced = false
	b.gens.Forget()
	return errors.Join(errs...)
}

// cleanTable deletes, in one restore, every SYNX- chain of a table and
// every jump into one left in other chains, e.g. added by an older version
// with another rule text.
func (b *Backend) cleanTable(ctx context.Context, table string) error {
	var saved map[string]tableState
	err := b.xt.Save(ctx, func(r io.Reader) (err error) { saved, err = parseSaveAll(r); return }, "-t", table)
	if err != nil {
		return err
	}
	ts := saved[table]
	if len(ts.chains) == 0 && len(ts.hooks) == 0 {
		return nil
	}
	var buf bytes.Buffer
	buf.WriteString("*" + table + "\n")
	for c := range ts.chains {
		buf.WriteString(":" + c + " - [0:0]\n")
	}
	for chain, rules := range ts.hooks {
		for _, r := range rules {
			buf.WriteString("-D " + chain + " " + r + "\n")
		}
	}
	for c := range ts.chains {
		buf.WriteString("-X " + c + "\n")
	}
	buf.WriteString("COMMIT\n")
	return b.xt.Restore(ctx, buf.Bytes(), "-w", "--noflush")
}

// save runs iptables-save and parses its output as it streams in, so the
// output of a large ruleset (~15 MB at 10k Services) is never held whole.
func (b *Backend) save(ctx context.Context) (map[string]tableState, error) {
	var saved map[string]tableState
	err := b.xt.Save(ctx, func(r io.Reader) (err error) { saved, err = parseSaveAll(r); return })
	return saved, err
}

// owned counts the rules the backend holds in the kernel: every service
// port's chains and dispatch entries, and the shared chains.
func (b *Backend) owned() int {
	n := 0
	for _, f := range b.frags {
		for _, rules := range f.nat {
			n += len(rules)
		}
		n += len(f.services) + len(f.filter)
	}
	for _, chains := range b.globals {
		for _, rules := range chains {
			n += len(rules)
		}
	}
	return n
}
