package nftables

import (
	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
)

// routeLocalnet is the sysctl (under the agent's --sysctl-root) that lets
// DNAT send 127.0.0.1 NodePort traffic off the host.
const routeLocalnet = "net/ipv4/conf/all/route_localnet"

// localnet sets route_localnet and remembers the value it found, so that
// Cleanup puts it back.
type localnet struct {
	set bool
	was string
}

// enable sets route_localnet to 1. A failure (a read-only /proc/sys in the
// container, say) is returned: the revision asks for localhost NodePorts
// and this node cannot give them, which the agent reports in status.
func (l *localnet) enable() error {
	old, changed, err := sysctl.Ensure(routeLocalnet, "1")
	if err != nil {
		return err
	}
	if changed && !l.set {
		l.set, l.was = true, old
	}
	return nil
}

func (l *localnet) restore() error {
	if !l.set {
		return nil
	}
	l.set = false
	return sysctl.Write(routeLocalnet, l.was)
}
