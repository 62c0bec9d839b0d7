package model

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestIncrementalMatchesFullBuild applies random changes (endpoints moved,
// readiness flipped, Services added, deleted and retyped, policies
// retargeted or changed, the node's zone changed, config changed) and
// checks after each that the incremental build equals a build from
// scratch of the same input, and that unchanged Services were reused.
func TestIncrementalMatchesFullBuild(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	in := bigInput(40, 3)
	in.Node = nodeObj("zone-a", "192.168.1.10")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in.Policies = []Policy{{Namespace: "ns", Name: "p", Services: []ServiceRef{{Namespace: "ns", Name: "svc-00001"}},
		Algorithm: AlgorithmRandom, Created: t0}}
	var m Builder
	globals := func() Globals { return Globals{Config: in.Config, Node: in.Node, Policies: in.Policies} }
	prev := m.Build(globals(), newListSource(in), nil)
	reused := 0
	for step := 0; step < 400; step++ {
		changed, what := mutate(r, &in, step)
		got := m.Build(globals(), newListSource(in), changed)
		want := Build(in)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d (%s): incremental state differs from a full build\n got %d services %v\nwant %d services %v",
				step, what, len(got.Services), got.Problems, len(want.Services), want.Problems)
		}
		reused += sharedServices(prev, got)
		prev = got
	}
	if reused == 0 {
		t.Fatal("no Service was ever reused: the build is not incremental")
	}
}

// sharedServices counts the service ports two states share by pointer.
func sharedServices(a, b *State) int {
	seen := map[*Service]bool{}
	for _, s := range a.Services {
		seen[s] = true
	}
	n := 0
	for _, s := range b.Services {
		if seen[s] {
			n++
		}
	}
	return n
}

// mutate changes the input at random and returns the Services it touched.
func mutate(r *rand.Rand, in *Input, step int) ([]ServiceRef, string) {
	i := r.Intn(len(in.Services))
	svc := in.Services[i]
	ref := ServiceRef{Namespace: svc.Namespace, Name: svc.Name}
	switch r.Intn(9) {
	case 0: // move an endpoint
		es := in.EndpointSlices[i]
		es.Endpoints[r.Intn(len(es.Endpoints))].Addresses = []string{fmt.Sprintf("10.200.%d.%d", step/250, step%250+1)}
		return []ServiceRef{ref}, "endpoint moved"
	case 1: // flip readiness
		es := in.EndpointSlices[i]
		e := &es.Endpoints[r.Intn(len(es.Endpoints))]
		e.Conditions.Ready = ptr(e.Conditions.Ready != nil && !*e.Conditions.Ready)
		return []ServiceRef{ref}, "readiness flipped"
	case 2: // retype a Service
		s := svc.DeepCopy()
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Spec.Ports[0].NodePort = 0
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		in.Services[i] = s
		return []ServiceRef{ref}, "service retyped"
	case 3: // delete a Service and add another
		name := fmt.Sprintf("new-%d", step)
		extra := bigInput(1, 2)
		s, es := extra.Services[0], extra.EndpointSlices[0]
		s.Name, es.Name, es.Labels = name, name+"-1", map[string]string{"kubernetes.io/service-name": name}
		in.Services[i], in.EndpointSlices[i] = s, es
		return []ServiceRef{ref, {Namespace: "ns", Name: name}}, "service replaced"
	case 4: // retarget the policy
		in.Policies[0].Services = []ServiceRef{ref}
		return []ServiceRef{}, "policy retargeted"
	case 5: // change the policy itself
		if in.Policies[0].Algorithm == AlgorithmRandom {
			in.Policies[0].Algorithm = AlgorithmRoundRobin
		} else {
			in.Policies[0].Algorithm = AlgorithmRandom
		}
		return []ServiceRef{}, "policy changed"
	case 6: // change the node's zone
		in.Node = nodeObj(fmt.Sprintf("zone-%d", r.Intn(2)), "192.168.1.10")
		return []ServiceRef{}, "node changed"
	case 7: // change the config
		in.Config.MasqueradeAll = !in.Config.MasqueradeAll
		return []ServiceRef{}, "config changed"
	default: // nothing
		return []ServiceRef{}, "no change"
	}
}

// BenchmarkBuildIncremental measures one incremental build at N Services
// x 10 endpoints after a one-endpoint change, against BenchmarkBuild's
// full build of the same input.
func BenchmarkBuildIncremental(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		in := bigInput(n, 10)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var m Builder
			g := Globals{Config: in.Config}
			src := newListSource(in)
			m.Build(g, src, nil)
			ref := []ServiceRef{{Namespace: "ns", Name: in.Services[n/2].Name}}
			es := in.EndpointSlices[n/2]
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				es.Endpoints[0].Addresses = []string{fmt.Sprintf("10.250.%d.%d", i/250%250, i%250+1)}
				if st := m.Build(g, src, ref); len(st.Services) != n {
					b.Fatalf("got %d services", len(st.Services))
				}
			}
		})
	}
}
