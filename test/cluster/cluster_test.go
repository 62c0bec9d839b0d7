package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

func TestMain(m *testing.M) {
	RunHelperIfRequested()
	os.Exit(m.Run())
}

// TestHarnessNetwork brings a two-node cluster up without the manager and the
// agents and checks what the harness promises on its own: the API server is
// reachable, Nodes are registered, pods answer across nodes and from the
// client through the host-gateway routes, and teardown leaves no namespace.
func TestHarnessNetwork(t *testing.T) {
	if os.Getenv("E2E") == "" {
		t.Skip("SKIPPING HARNESS TEST: set E2E=1 (make test-e2e) to build a cluster of network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Up(ctx, Options{Nodes: 2, Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Down(); err != nil {
			t.Error(err)
		}
		if left := c.Leftovers(); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
		c.RemoveDir()
	}()
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 || len(nodes.Items[0].Status.Addresses) == 0 || nodes.Items[0].Spec.PodCIDR == "" {
		t.Fatalf("nodes not registered with addresses and podCIDRs: %+v", nodes.Items)
	}
	p1, err := c.AddPod(ctx, c.Nodes[0], "a", []int{8080}, []int{5353})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.AddPod(ctx, c.Nodes[1], "b", []int{8080}, []int{5353})
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []*netns.NS{c.Nodes[0].NS, c.Nodes[1].NS, p1.NS} {
		for _, proto := range []string{"tcp", "udp"} {
			port := 8080
			if proto == "udp" {
				port = 5353
			}
			r, err := from.Request(proto, fmt.Sprintf("%s:%d", p2.IP, port), netns.RequestOptions{})
			if err != nil || r.Server != "b" {
				t.Errorf("%s %s -> pod b: %+v %v", from.Name, proto, r, err)
			}
		}
	}
	if r, err := p2.NS.Request("tcp", p1.IP+":8080", netns.RequestOptions{}); err != nil || r.Server != "a" || r.ClientIP() != p2.IP {
		t.Errorf("pod b -> pod a: %+v %v", r, err)
	}
	if out, err := c.Kubectl("get", "nodes", "-o", "wide"); err != nil {
		t.Error(err)
	} else {
		t.Log(out)
	}
}
