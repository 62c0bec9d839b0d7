package ipvs

// This file holds FAKES of the IPVS handle and of the node operations, and
// hands out the FAKE xtables runner of package xtablestest for the glue.
// They let the diff logic be unit tested on any machine; they prove nothing
// about the kernel. The real test is the VM suite (kernel_test.go), run by
// `make test-ipvs-vm` inside a Debian kernel that has IPVS.

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/agent/xtables/xtablestest"
)

type fakeSvc struct {
	s     *libipvs.Service
	dests map[rsKey]*libipvs.Destination
}

// fakeHandle is an in-memory IPVS table.
type fakeHandle struct {
	mu     sync.Mutex
	svcs   map[vsKey]*fakeSvc
	writes []string
	// failNew, when set, is returned by NewService.
	failNew error
	// timeouts is the fake's IPVS timeout configuration (the kernel's
	// defaults: 900s, 120s, 300s).
	timeouts libipvs.Config
}

func newFakeHandle() *fakeHandle {
	return &fakeHandle{svcs: map[vsKey]*fakeSvc{}, timeouts: libipvs.Config{
		TimeoutTCP: 900 * time.Second, TimeoutTCPFin: 120 * time.Second, TimeoutUDP: 300 * time.Second}}
}

func (f *fakeHandle) log(format string, a ...any) {
	f.writes = append(f.writes, fmt.Sprintf(format, a...))
}

func copySvc(s *libipvs.Service) *libipvs.Service { c := *s; return &c }
func copyDest(d *libipvs.Destination) *libipvs.Destination {
	c := *d
	return &c
}

func (f *fakeHandle) GetServices() ([]*libipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*libipvs.Service
	for _, s := range f.svcs {
		out = append(out, copySvc(s.s))
	}
	return out, nil
}

func (f *fakeHandle) key(s *libipvs.Service) vsKey {
	k, ok := keyOf(s)
	if !ok {
		panic("fake: service without key")
	}
	return k
}

func (f *fakeHandle) NewService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNew != nil {
		return f.failNew
	}
	k := f.key(s)
	if _, ok := f.svcs[k]; ok {
		return fmt.Errorf("fake: service %s exists", k)
	}
	f.svcs[k] = &fakeSvc{s: copySvc(s), dests: map[rsKey]*libipvs.Destination{}}
	f.log("add-svc %s %s", k, s.SchedName)
	return nil
}

func (f *fakeHandle) UpdateService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(s)
	cur, ok := f.svcs[k]
	if !ok {
		return fmt.Errorf("fake: no service %s", k)
	}
	cur.s = copySvc(s)
	f.log("upd-svc %s %s", k, s.SchedName)
	return nil
}

func (f *fakeHandle) DelService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.key(s)
	if _, ok := f.svcs[k]; !ok {
		return fmt.Errorf("fake: no service %s", k)
	}
	delete(f.svcs, k)
	f.log("del-svc %s", k)
	return nil
}

func (f *fakeHandle) GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.svcs[f.key(s)]
	if !ok {
		return nil, fmt.Errorf("fake: no service")
	}
	var out []*libipvs.Destination
	for _, d := range cur.dests {
		out = append(out, copyDest(d))
	}
	return out, nil
}

func (f *fakeHandle) dest(s *libipvs.Service, d *libipvs.Destination) (*fakeSvc, rsKey, error) {
	cur, ok := f.svcs[f.key(s)]
	if !ok {
		return nil, rsKey{}, fmt.Errorf("fake: no service %s", f.key(s))
	}
	rk, _ := rsKeyOf(d)
	return cur, rk, nil
}

func (f *fakeHandle) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, rk, err := f.dest(s, d)
	if err != nil {
		return err
	}
	if _, ok := cur.dests[rk]; ok {
		return fmt.Errorf("fake: dest exists")
	}
	cur.dests[rk] = copyDest(d)
	f.log("add-dst %s %s w=%d", f.key(s), rk, d.Weight)
	return nil
}

func (f *fakeHandle) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, rk, err := f.dest(s, d)
	if err != nil {
		return err
	}
	old, ok := cur.dests[rk]
	if !ok {
		return fmt.Errorf("fake: no dest %s", rk)
	}
	nd := copyDest(d)
	nd.ActiveConnections, nd.InactiveConnections = old.ActiveConnections, old.InactiveConnections
	cur.dests[rk] = nd
	f.log("upd-dst %s %s w=%d", f.key(s), rk, d.Weight)
	return nil
}

func (f *fakeHandle) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, rk, err := f.dest(s, d)
	if err != nil {
		return err
	}
	if _, ok := cur.dests[rk]; !ok {
		return fmt.Errorf("fake: no dest %s", rk)
	}
	delete(cur.dests, rk)
	f.log("del-dst %s %s", f.key(s), rk)
	return nil
}

func (f *fakeHandle) GetConfig() (*libipvs.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.timeouts
	return &c, nil
}

// SetConfig changes the non-zero fields, as the kernel does.
func (f *fakeHandle) SetConfig(c *libipvs.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.TimeoutTCP != 0 {
		f.timeouts.TimeoutTCP = c.TimeoutTCP
	}
	if c.TimeoutTCPFin != 0 {
		f.timeouts.TimeoutTCPFin = c.TimeoutTCPFin
	}
	if c.TimeoutUDP != 0 {
		f.timeouts.TimeoutUDP = c.TimeoutUDP
	}
	f.log("set-config tcp=%s tcpfin=%s udp=%s", c.TimeoutTCP, c.TimeoutTCPFin, c.TimeoutUDP)
	return nil
}

func (f *fakeHandle) Close() {}

// setConns sets the connection counters of a destination, as the kernel
// would report them.
func (f *fakeHandle) setConns(k vsKey, rk rsKey, active, inactive int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.svcs[k].dests[rk]
	d.ActiveConnections, d.InactiveConnections = active, inactive
}

// table renders the fake table as sorted lines "vs sched -> dest:weight".
func (f *fakeHandle) table() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k, s := range f.svcs {
		line := fmt.Sprintf("%s %s", k, s.s.SchedName)
		if s.s.Flags&svcFlagPersistent != 0 {
			line += fmt.Sprintf(" persistent=%d", s.s.Timeout)
		}
		var ds []string
		for rk, d := range s.dests {
			ds = append(ds, fmt.Sprintf("%s:%d", rk, d.Weight))
		}
		sort.Strings(ds)
		out = append(out, fmt.Sprintf("%s -> %v", line, ds))
	}
	sort.Strings(out)
	return out
}

func (f *fakeHandle) resetWrites() { f.mu.Lock(); f.writes = nil; f.mu.Unlock() }

// fakeNode records node operations in memory.
type fakeNode struct {
	dummy   map[string]map[netip.Addr]bool
	sets    map[string]map[setEntry]bool
	setType map[string]string
	sysctl  map[string]string
}

func newFakeNode() *fakeNode {
	return &fakeNode{dummy: map[string]map[netip.Addr]bool{}, sets: map[string]map[setEntry]bool{},
		setType: map[string]string{}, sysctl: map[string]string{}}
}

func (n *fakeNode) EnsureDummy(name string) error {
	if n.dummy[name] == nil {
		n.dummy[name] = map[netip.Addr]bool{}
	}
	return nil
}
func (n *fakeNode) DeleteDummy(name string) error { delete(n.dummy, name); return nil }
func (n *fakeNode) DummyAddrs(name string) ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range n.dummy[name] {
		out = append(out, a)
	}
	return out, nil
}
func (n *fakeNode) AddAddr(name string, a netip.Addr) error { n.dummy[name][a] = true; return nil }
func (n *fakeNode) DelAddr(name string, a netip.Addr) error {
	delete(n.dummy[name], a)
	return nil
}
func (n *fakeNode) ReadSet(s setSpec, v6 bool) (map[setEntry]bool, bool, error) {
	m, ok := n.sets[s.Name]
	if !ok {
		return nil, false, nil
	}
	c := map[setEntry]bool{}
	for e := range m {
		c[e] = true
	}
	return c, true, nil
}
func (n *fakeNode) WriteSet(s setSpec, v6 bool, want map[setEntry]bool) error {
	c := map[setEntry]bool{}
	for e := range want {
		c[e] = true
	}
	n.sets[s.Name] = c
	n.setType[s.Name] = s.Type
	return nil
}
func (n *fakeNode) DestroySet(name string) error   { delete(n.sets, name); return nil }
func (n *fakeNode) Sysctl(key, value string) error { n.sysctl[key] = value; return nil }

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func netipToIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// fakeGlue is a glueRunner handing out a FAKE xtables runner; it records
// the family and mode the backend asked for.
type fakeGlue struct {
	fam  model.Family
	mode xtables.Mode
	fake *xtablestest.Fake
}

func (g *fakeGlue) runner(fam model.Family, mode xtables.Mode) (xtables.Runner, error) {
	g.fam, g.mode = fam, mode
	g.fake = xtablestest.New(fam, mode)
	return g.fake, nil
}

// fakeRunner returns the FAKE xtables runner of a backend built by a test.
func fakeRunner(b *Backend) *xtablestest.Fake { return b.xt.(*xtablestest.Fake) }
