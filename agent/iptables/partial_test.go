package iptables

import (
	"fmt"
	"math/rand"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// applyPlan plays a restore plan onto an in-memory table the way
// iptables-restore --noflush does: declared chains are flushed, -D removes
// one matching rule (and fails if there is none), -A appends, -X deletes.
func applyPlan(t *testing.T, table map[string][]string, p *tablePlan) {
	t.Helper()
	for c := range p.rewrite {
		table[c] = nil
	}
	for c := range p.stale {
		table[c] = nil
	}
	for c, rules := range p.del {
		for _, r := range rules {
			found := false
			for i, x := range table[c] {
				if x == r {
					table[c] = append(table[c][:i:i], table[c][i+1:]...)
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("-D %s %s: no such rule", c, r)
			}
		}
	}
	for c, rules := range p.rewrite {
		table[c] = append([]string(nil), rules...)
	}
	for c, rules := range p.add {
		table[c] = append(table[c], rules...)
	}
	for c := range p.stale {
		delete(table, c)
	}
}

func sortedCopy(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for c, r := range m {
		r = append([]string(nil), r...)
		if listChains[c] {
			sort.Strings(r)
		}
		out[c] = r
	}
	return out
}

// randomState makes a state of up to 30 service ports with random
// endpoints, locality, affinity, algorithms and frontends.
func randomState(r *rand.Rand) *model.State {
	st := &model.State{Family: model.IPv4, Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/9")}}}
	for i := 0; i < 30; i++ {
		if r.Intn(4) == 0 {
			continue
		}
		s := &model.Service{Key: fmt.Sprintf("ns/s%02d:p/TCP", i), Protocol: model.TCP}
		s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindClusterIP, Addr: netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)}),
			Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster})
		if r.Intn(2) == 0 {
			s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindNodePort, Addr: netip.MustParseAddr("192.168.0.1"),
				Port: int32(30000 + i), Protocol: model.TCP, Masquerade: model.MasqueradeAlways})
		}
		if r.Intn(3) == 0 {
			s.Frontends = append(s.Frontends, model.Frontend{Kind: model.KindLoadBalancer, Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}),
				Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeAlways,
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
		}
		for j := 0; j < r.Intn(4); j++ {
			s.ClusterEndpoints = append(s.ClusterEndpoints, model.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 128, byte(j), byte(r.Intn(5) + 1)}),
				Port: 8080, Ready: true, Local: r.Intn(2) == 0})
		}
		s.InternalEndpoints, s.ExternalEndpoints = s.ClusterEndpoints, s.ClusterEndpoints
		if r.Intn(4) == 0 {
			s.ExternalLocal = true
			s.ExternalEndpoints = nil
			for _, e := range s.ClusterEndpoints {
				if e.Local {
					s.ExternalEndpoints = append(s.ExternalEndpoints, e)
				}
			}
		}
		if r.Intn(4) == 0 {
			s.Affinity = model.Affinity{ClientIP: true, Timeout: time.Duration(r.Intn(3)+1) * time.Minute}
		}
		if r.Intn(4) == 0 {
			s.Algorithm = model.AlgorithmRoundRobin
		}
		st.Services = append(st.Services, s)
	}
	// Content hashes as the model would compute them.
	for _, s := range st.Services {
		s.Hash = fmt.Sprint(s.Frontends, s.InternalEndpoints, s.ExternalEndpoints, s.ClusterEndpoints, s.ExternalLocal, s.Affinity, s.Algorithm)
	}
	return st
}

// TestPartialPlansConverge: a chain of random states synced partially must
// leave exactly what a full sync from scratch renders, for 200 steps. The
// kernel is simulated by applyPlan (a fake of iptables-restore semantics);
// the real-kernel version of this check is TestScenarios/PartialSync.
func TestPartialPlansConverge(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	be := &Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}
	prev := randomState(r)
	kernel := be.desired(prev)
	for step := 0; step < 200; step++ {
		cur := randomState(r)
		plans, ok := be.partialPlans(cur, model.Diff(prev, cur))
		if !ok {
			t.Fatalf("step %d: no partial plan", step)
		}
		for _, table := range []string{tableNAT, tableFilter} {
			applyPlan(t, kernel[table], plans[table])
		}
		fresh := (&Backend{masqMark: "0x20000/0x20000", frags: map[string]*fragment{}}).desired(cur)
		for _, table := range []string{tableNAT, tableFilter} {
			got, want := sortedCopy(kernel[table]), sortedCopy(fresh[table])
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("step %d, table %s: partial syncs drifted from a full render\n got: %v\nwant: %v", step, table, got, want)
			}
		}
		prev = cur
	}
}
