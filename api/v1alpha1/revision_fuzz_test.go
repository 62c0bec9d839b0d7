package v1alpha1_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// FuzzDecodeRevision decodes arbitrary ControllerRevision data. The API
// server does not validate a ControllerRevision's data, so an agent may read
// anything there: decoding never panics, fails with an error that says what
// the data is not, and what it accepts survives being written again and
// read back unchanged (the operator's snapshot and the agent's view agree).
func FuzzDecodeRevision(f *testing.F) {
	for _, seed := range []string{
		`{"spec":{"mode":"IPTables","minSyncPeriod":"1s","syncPeriod":"30s","iptables":{"masqueradeAll":true}}}`,
		`{"spec":{"mode":"IPVS","ipvs":{"scheduler":"rr","tcpTimeout":"900s"},"nodePortAddresses":["10.0.0.0/8","primary"]}}`,
		`{"spec":{"agent":{"image":"registry.example/agent:1","resources":{"limits":{"memory":"128Mi"}}},"rollout":{"maxUnavailable":"10%"}}}`,
		`{"spec":{"nodeSelector":{"matchExpressions":[{"key":"a","operator":"In","values":["b"]}]},"localTrafficDetection":{"mode":"ClusterCIDR","clusterCIDRs":["10.244.0.0/16"]}}}`,
		`{"spec":{"conntrack":{"maxPerCore":32768},"agent":{"logVerbosity":4,"tolerations":[{"operator":"Exists"}]}}}`,
		`{"spec":{"minSyncPeriod":"-1s"}}`,
		`{"spec":{"mode":"Auto"},"agentPod":{"metadata":{"labels":{"app.kubernetes.io/name":"synterix-agent"}},"spec":{"containers":[{"name":"agent","image":"registry.example/agent:2"}]}}}`,
		`null`, `{}`, `[]`, `{"spec":null}`, `{"spec":{"mode":7}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := v1alpha1.DecodeRevision(data)
		if err != nil {
			if spec != nil {
				t.Fatalf("an error and a spec: %v", err)
			}
			return
		}
		if spec == nil {
			t.Fatal("no error and no spec")
		}
		enc, err := v1alpha1.EncodeRevision(spec)
		if err != nil {
			t.Fatalf("a decoded spec does not encode: %v", err)
		}
		again, err := v1alpha1.DecodeRevision(enc)
		if err != nil {
			t.Fatalf("our own encoding %s does not decode: %v", enc, err)
		}
		if !equality.Semantic.DeepEqual(spec, again) {
			t.Fatalf("written and read back, the spec changed:\n%+v\n%+v\n(%s)", spec, again, enc)
		}
	})
}
