package model

import (
	"fmt"
	"testing"
)

// BenchmarkBuild measures Build for N Services with 10 endpoints each
// (NodePort Services, so every one has ClusterIP and NodePort frontends).
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		in := bigInput(n, 10)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				st := Build(in)
				if len(st.Services) != n {
					b.Fatalf("got %d services", len(st.Services))
				}
			}
		})
	}
}

// BenchmarkDiff measures comparing two 10k-service states that differ in one
// service.
func BenchmarkDiff(b *testing.B) {
	in := bigInput(10000, 10)
	old := Build(in)
	in.EndpointSlices[5000].Endpoints[0].Addresses = []string{"10.250.0.1"}
	cur := Build(in)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if c := Diff(old, cur); len(c.Changed) != 1 {
			b.Fatalf("diff %+v", c)
		}
	}
}
