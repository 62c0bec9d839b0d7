package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestProxyNodeDeleted: when the node's ProxyNode is deleted (its
// GatewayConfig went away), the agent removes its rules, says so, and
// keeps running idle; a new ProxyNode brings the rules back. A live
// revision change is applied without a restart.
func TestProxyNodeDeleted(t *testing.T) {
	requireKernel(t)
	w := startAPI(t)
	w.topology()
	w.revision("rev-1", baseSpec())
	spec2 := baseSpec()
	spec2.IPTables = &v1alpha1.IPTablesConfig{MasqueradeBit: ptr(int32(20))}
	w.revision("rev-2", spec2)
	w.nodeObjects("rev-1")
	w.service("web", "10.0.0.10", "10.211.1.2")
	w.startAgent()
	w.waitReady("rev-1")
	w.waitAnswer("10.0.0.10:80", "10.211.1.2")

	// A new revision is applied live.
	w.assign("rev-2")
	w.waitReady("rev-2")
	if save := w.iptablesSave(); !strings.Contains(save, "0x100000/0x100000") {
		t.Errorf("masquerade bit 20 of rev-2 not in the rules:\n%s", save)
	}
	w.waitAnswer("10.0.0.10:80", "10.211.1.2")

	ctx := context.Background()
	pn := w.getProxyNode()
	if err := w.c.Delete(ctx, pn); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rules removed", func() (bool, string) {
		save := w.iptablesSave()
		return !strings.Contains(save, "SYNX"), "SYNX chains still there"
	})
	eventually(t, "RulesRemoved event on the Node", func() (bool, string) {
		evs, err := w.cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.Reason == v1alpha1.ReasonRulesRemoved && e.InvolvedObject.Kind == "Node" {
				t.Logf("event: %s", e.Message)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})

	// Idle, then assigned again.
	w.create(&v1alpha1.ProxyNode{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: gcName, Revision: "rev-1"}})
	w.waitReady("rev-1")
	w.waitAnswer("10.0.0.10:80", "10.211.1.2")
}

func ptr[T any](v T) *T { return &v }
