package netns

import (
	"strings"
	"testing"
)

// TestRoutedRequest builds client - router - server, serves TCP and UDP on
// two addresses, and checks replies name the right server and the real
// client address. The namespaces must be gone once the subtest ends.
func TestRoutedRequest(t *testing.T) {
	Require(t)
	var names []string
	t.Run("topology", func(t *testing.T) {
		router, client, server := New(t, "rt"), New(t, "cl"), New(t, "sv")
		names = []string{router.Name, client.Name, server.Name}
		Link(t, router, "to-cl", "10.201.1.1/24", client, "eth0", "10.201.1.2/24")
		Link(t, router, "to-sv", "10.201.2.1/24", server, "eth0", "10.201.2.2/24")
		server.AddAddr("eth0", "10.201.2.3/24")
		router.EnableForwarding()
		server.Serve(t, "tcp", "10.201.2.2:8080", "a")
		server.Serve(t, "tcp", "10.201.2.3:8080", "b")
		server.Serve(t, "udp", "10.201.2.2:8080", "a-udp")
		for _, tc := range []struct{ proto, target, want string }{
			{"tcp", "10.201.2.2:8080", "a"}, {"tcp", "10.201.2.3:8080", "b"}, {"udp", "10.201.2.2:8080", "a-udp"},
		} {
			r, err := client.Request(tc.proto, tc.target, RequestOptions{})
			if err != nil {
				t.Fatalf("%s %s: %v", tc.proto, tc.target, err)
			}
			if r.Server != tc.want || r.ClientIP() != "10.201.1.2" {
				t.Errorf("%s %s: got %+v, want server %s from 10.201.1.2", tc.proto, tc.target, r, tc.want)
			}
		}
		// Nothing listens on 9999: TCP gets a RST, UDP an ICMP port unreachable.
		for _, proto := range []string{"tcp", "udp"} {
			if _, err := client.Request(proto, "10.201.2.2:9999", RequestOptions{}); Outcome(err) != "refused" {
				t.Errorf("%s to closed port: outcome %s (%v), want refused", proto, Outcome(err), err)
			}
		}
		// A fixed local port is honoured.
		r, err := client.Request("udp", "10.201.2.2:8080", RequestOptions{Local: "10.201.1.2:40000"})
		if err != nil || !strings.HasSuffix(r.Client, ":40000") {
			t.Errorf("fixed local port: %+v %v", r, err)
		}
		if out := client.MustExec("ip", "-o", "addr"); !strings.Contains(out, "10.201.1.2") {
			t.Errorf("Exec did not run inside the client namespace: %s", out)
		}
	})
	for _, n := range names {
		if Exists(n) {
			t.Errorf("namespace %s still exists after its test ended", n)
		}
	}
}
