package daemon

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

func TestNodeFamilies(t *testing.T) {
	node := func(addrs ...string) *corev1.Node {
		n := &corev1.Node{}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"})
		return n
	}
	cases := map[string]struct {
		node       *corev1.Node
		v4, v6     bool
		v6Contains string
	}{
		"IPv4 only":          {node: node("10.0.0.1"), v4: true, v6Contains: "no IPv6 address"},
		"IPv6 only":          {node: node("fd00::1"), v6: true},
		"dual-stack":         {node: node("10.0.0.1", "fd00::1"), v4: true, v6: true},
		"IPv4-mapped IPv6":   {node: node("::ffff:10.0.0.1"), v4: true, v6Contains: "no IPv6 address"},
		"no address":         {node: node(), v4: true, v6Contains: "no address"},
		"no Node object yet": {node: nil, v4: true, v6Contains: "no address"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			present, why := nodeFamilies(c.node)
			if present[model.IPv4] != c.v4 || present[model.IPv6] != c.v6 {
				t.Fatalf("present %v, want IPv4=%t IPv6=%t", present, c.v4, c.v6)
			}
			if c.v6Contains != "" && !strings.Contains(why[model.IPv6], c.v6Contains) {
				t.Errorf("IPv6 reason %q, want it to say %q", why[model.IPv6], c.v6Contains)
			}
		})
	}
}
