package cluster

// ExternalNode is the node the client routes external IPs through.
func (c *Cluster) ExternalNode() *Node {
	if len(c.Nodes) > 1 {
		return c.Nodes[1]
	}
	return c.Nodes[0]
}
