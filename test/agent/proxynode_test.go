package agent

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// TestProxyNodeDeleted: when the node's ProxyNode is deleted (its
// GatewayConfig went away), the agent removes its rules, says so, and
// keeps running idle; a new ProxyNode brings the rules back. A live
// revision change is applied without a restart.
func TestProxyNodeDeleted(t *testing.T) {
	requireKernel(t)
	w := startWeb(t, "rev-1", baseSpec())
	spec2 := baseSpec()
	spec2.IPTables = &v1alpha1.IPTablesConfig{MasqueradeBit: ptr(int32(20))}
	w.revision("rev-2", spec2)
	w.startAgent()
	w.waitServing("rev-1")

	// A new revision is applied live.
	w.assign("rev-2")
	w.waitReady("rev-2")
	if save := w.iptablesSave(); !strings.Contains(save, "0x100000/0x100000") {
		t.Errorf("masquerade bit 20 of rev-2 not in the rules:\n%s", save)
	}
	w.waitAnswer(webVIP, webBackend)

	ctx := context.Background()
	pn := w.getProxyNode()
	if err := w.c.Delete(ctx, pn); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rules removed", func() (bool, string) {
		save := w.iptablesSave()
		return !strings.Contains(save, "SYNX"), "SYNX chains still there"
	})
	e := w.waitEvent("RulesRemoved event on the Node", func(e corev1.Event) bool {
		return e.Reason == v1alpha1.ReasonRulesRemoved && e.InvolvedObject.Kind == "Node"
	})
	t.Logf("event: %s", e.Message)

	// Idle, then assigned again.
	w.create(&v1alpha1.ProxyNode{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: v1alpha1.ProxyNodeSpec{GatewayConfig: gcName, Revision: "rev-1"}})
	w.waitServing("rev-1")
}

func ptr[T any](v T) *T { return &v }
