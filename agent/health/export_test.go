package health

import "net"

type netListener = net.Listener

// listenLoopback ignores the port: tests cannot rely on a node port being
// free on the host, so the server listens on a random loopback port.
func listenLoopback(network string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }

func (n *NodePorts) addr(port int32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.servers[port].addr
}
