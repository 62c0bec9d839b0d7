package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
)

func newDiff(o *options) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Compare each node's kernel with what its agent programmed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			nodes, err := c.nodes(cmd.Context(), node)
			if err != nil {
				return err
			}
			out := make([]diffOf, len(nodes))
			c.each(len(nodes), func(i int) {
				out[i].Node = nodes[i]
				var d report.Diff
				if err := c.agentGet(cmd.Context(), nodes[i], report.PathDiff, nil, &d); err != nil {
					out[i].Error = err.Error()
					return
				}
				out[i].Diff = &d
			})
			if err := o.emit(out, func(w io.Writer) error { return printDiffs(w, out) }); err != nil {
				return err
			}
			for _, d := range out {
				if d.Error != "" || !d.inSync() {
					return errDrift
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "The node to compare (default: every node with a ProxyNode)")
	return cmd
}

// errDrift makes the command exit non-zero, as diff(1) does, once the
// differences are printed.
var errDrift = fmt.Errorf("the kernel differs from what the agent programmed, or could not be compared")

// diffOf is one node's diff.
type diffOf struct {
	Node  string       `json:"node"`
	Diff  *report.Diff `json:"diff,omitempty"`
	Error string       `json:"error,omitempty"`
}

func (d diffOf) inSync() bool {
	if d.Diff == nil {
		return false
	}
	for _, f := range d.Diff.Families {
		if f.Programmed && !f.InSync {
			return false
		}
	}
	return true
}

func printDiffs(w io.Writer, ds []diffOf) error {
	for i, d := range ds {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if d.Error != "" {
			fmt.Fprintf(w, "Node %s: %s\n", d.Node, d.Error)
			continue
		}
		fmt.Fprintf(w, "Node %s (backend %s, revision %s)\n", d.Node, dash(d.Diff.Backend), dash(d.Diff.Revision))
		for _, f := range d.Diff.Families {
			switch {
			case !f.Programmed:
				indent(w, "  ", f.Family+": not programmed")
			case f.Error != "":
				indent(w, "  ", f.Family+": could not compare: "+f.Error)
			case f.InSync:
				indent(w, "  ", fmt.Sprintf("%s: in sync (%d objects compared)", f.Family, f.Compared))
			default:
				indent(w, "  ", fmt.Sprintf("%s: %s (%d objects compared)", f.Family, plural(len(f.Differences), "difference", "differences"), f.Compared))
				rows := [][]string{{"    KIND", "OBJECT", "SERVICE", "DETAIL"}}
				for _, x := range f.Differences {
					rows = append(rows, []string{"    " + x.Kind, x.Object, x.Service, x.Detail})
				}
				if err := table(w, rows); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
