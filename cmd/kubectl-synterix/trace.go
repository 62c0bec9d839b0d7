package main

import (
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

func newTrace(o *options) *cobra.Command {
	var node, from, to, proto string
	var fromNode bool
	cmd := &cobra.Command{
		Use:   "trace --node N --from SRC --to DST:PORT [--proto tcp|udp]",
		Short: "Walk a packet through a node's real rules: each step, the endpoints with their probabilities, masquerade, and the verdict",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" || from == "" || to == "" {
				return fmt.Errorf("--node, --from and --to are required")
			}
			src, err := netip.ParseAddr(from)
			if err != nil {
				return fmt.Errorf("--from %q: want an IP address", from)
			}
			dst, err := netip.ParseAddrPort(to)
			if err != nil {
				return fmt.Errorf("--to %q: want IP:PORT ([IPv6]:PORT)", to)
			}
			q := url.Values{"src": {src.String()}, "dst": {dst.Addr().String()}, "port": {strconv.Itoa(int(dst.Port()))}, "proto": {strings.ToLower(proto)}}
			if cmd.Flags().Changed("from-node") {
				q.Set("fromNode", strconv.FormatBool(fromNode))
			}
			c, err := o.clients()
			if err != nil {
				return err
			}
			var t report.Trace
			if err := c.agentGet(cmd.Context(), node, report.PathTrace, q, &t); err != nil {
				return err
			}
			return o.emit(t, func(w io.Writer) error { return printTrace(w, &t) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "The node whose rules the packet walks")
	f.StringVar(&from, "from", "", "Source address (a pod, a client, or one of the node's own addresses)")
	f.StringVar(&to, "to", "", "Destination address and port")
	f.StringVar(&proto, "proto", "tcp", "tcp, udp or sctp")
	f.BoolVar(&fromNode, "from-node", false, "The node itself sends the packet (default: when --from is one of its addresses)")
	return cmd
}

// printTrace prints each path: the first in full, the others from where
// they leave the first.
func printTrace(w io.Writer, t *report.Trace) error {
	r := t.Result
	origin := "arriving at"
	if r.Packet.FromNode {
		origin = "sent by"
	}
	fmt.Fprintf(w, "Packet %s %s node %s (%s, %s)\n", r.Packet, origin, t.Node, r.Backend, t.Family)
	var first []trace.Step
	for i, p := range r.Paths {
		fmt.Fprintf(w, "\nPath %d: %s\n", i+1, pathWords(p))
		for _, c := range p.Conditions {
			indent(w, "  if ", c)
		}
		same := 0
		if i > 0 {
			for same < len(first) && same < len(p.Steps) && first[same] == p.Steps[same] {
				same++
			}
			if same > 0 {
				indent(w, "  ", fmt.Sprintf("(steps 1-%d as path 1)", same))
			}
		} else {
			first = p.Steps
		}
		for j, s := range p.Steps[same:] {
			indent(w, "  ", fmt.Sprintf("%d. %s", same+j+1, s))
		}
	}
	for _, n := range r.Notes {
		indent(w, "Note: ", n)
	}
	fmt.Fprintf(w, "\nVerdict: %s\n", t.Summary)
	return nil
}

func pathWords(p *trace.Path) string {
	s := fmt.Sprintf("%s (%s", p.Verdict, trace.Percent(p.Probability))
	if len(p.Conditions) > 0 {
		s += " under its conditions"
	}
	s += ")"
	switch p.Verdict {
	case trace.VerdictDNAT:
		s += " to " + p.Endpoint
		if p.Masquerade {
			s += ", masqueraded"
		} else {
			s += ", not masqueraded"
		}
	case trace.VerdictNoRule:
		s += ", " + p.Delivery
	case trace.VerdictReject:
		if p.Reject != "" {
			s += " with " + p.Reject
		}
	}
	return s
}
