package kubenode

import (
	"context"
	"net"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// NetNSPath is a network namespace by file, such as /proc/<pid>/ns/net of a
// pod's process, for HTTPGet from inside a pod.
type NetNSPath string

// HTTPGet sends one GET from inside the namespace and returns the body.
func (p NetNSPath) HTTPGet(ctx context.Context, url string) (string, error) {
	return httpGet(ctx, string(p), p.Dial, url)
}

// Dial opens a connection from inside the namespace.
func (p NetNSPath) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return netns.DialIn(ctx, string(p), network, addr)
}
