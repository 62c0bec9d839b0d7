package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

func newExplain(o *options) *cobra.Command {
	explain := &cobra.Command{Use: "explain", Short: "Explain an object on the nodes"}
	var node string
	svc := &cobra.Command{
		Use:   "service NAME",
		Short: "Everything a node's agent knows and holds of a Service, in plain words, ending with a verdict",
		Long: `Explain a Service on one node (--node), or on every node with a ProxyNode:
its frontends, every endpoint with the reason it is used or not, the policies
that target it, the rules or virtual servers the node's kernel holds for it
(read back), whether they match what the agent programmed, and a verdict.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			nodes, err := c.nodes(cmd.Context(), node)
			if err != nil {
				return err
			}
			reports := c.explainOn(cmd.Context(), nodes, args[0])
			if node != "" {
				r := reports[0]
				if r.err != nil {
					return r.err
				}
				return o.emit(r.rep, func(w io.Writer) error { return o.printService(w, r.rep) })
			}
			return o.emit(perNode(reports), func(w io.Writer) error { return printVerdicts(w, reports) })
		},
	}
	svc.Flags().StringVar(&node, "node", "", "The node to explain the Service on (default: every node, one verdict each)")
	explain.AddCommand(svc)
	return explain
}

// nodes is the named node, or every node with a ProxyNode.
func (c *clients) nodes(ctx context.Context, node string) ([]string, error) {
	if node != "" {
		return []string{node}, nil
	}
	var pns v1alpha1.ProxyNodeList
	if err := c.c.List(ctx, &pns); err != nil {
		return nil, fmt.Errorf("list ProxyNodes: %w", err)
	}
	var out []string
	for _, pn := range pns.Items {
		out = append(out, pn.Name)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("no ProxyNode: no node runs synterix-kube-proxy")
	}
	return out, nil
}

type nodeReport struct {
	node string
	rep  *report.Service
	err  error
}

// explainOn asks every node's agent, eight at a time.
func (c *clients) explainOn(ctx context.Context, nodes []string, name string) []nodeReport {
	out := make([]nodeReport, len(nodes))
	c.each(len(nodes), func(i int) {
		var r report.Service
		err := c.agentGet(ctx, nodes[i], report.PathServices+"/"+c.ns+"/"+name, nil, &r)
		out[i] = nodeReport{node: nodes[i], err: err}
		if err == nil {
			out[i].rep = &r
		}
	})
	return out
}

func perNode(rs []nodeReport) map[string]any {
	out := map[string]any{}
	for _, r := range rs {
		if r.err != nil {
			out[r.node] = map[string]string{"error": r.err.Error()}
		} else {
			out[r.node] = r.rep
		}
	}
	return out
}

func printVerdicts(w io.Writer, rs []nodeReport) error {
	rows := [][]string{{"NODE", "VERDICT"}}
	for _, r := range rs {
		v := "error: " + fmt.Sprint(r.err)
		if r.err == nil {
			v = r.rep.Verdict
		}
		rows = append(rows, []string{r.node, v})
	}
	return table(w, rows)
}

// printService prints one node's explanation of a Service.
func (o *options) printService(w io.Writer, r *report.Service) error {
	fmt.Fprintf(w, "Service %s/%s on node %s (backend %s, revision %s, last sync %s)\n", r.Namespace, r.Name, r.Node,
		dash(r.Backend), dash(r.Revision), o.age(r.LastSync))
	for _, p := range r.Ports {
		fmt.Fprintf(w, "\nPort %s/%s (%s)\n", dash(p.PortName), p.Protocol, p.Family)
		printPortDesired(w, p)
		printKernel(w, p)
	}
	if len(r.Policies) > 0 {
		fmt.Fprintln(w, "\nPolicies:")
		for _, p := range r.Policies {
			state := "applied"
			if !p.Applied {
				state = "NOT programmed: " + p.Reason + " (" + p.Message + ")"
			}
			indent(w, "  ", fmt.Sprintf("%s/%s: %s", p.Namespace, p.Name, state))
		}
	}
	fmt.Fprintln(w, "\nFindings:")
	for _, f := range r.Findings {
		indent(w, "  - ", f)
	}
	fmt.Fprintf(w, "\nVerdict: %s\n", r.Verdict)
	return nil
}

func printPortDesired(w io.Writer, p report.Port) {
	fmt.Fprintln(w, "  Frontends:")
	rows := [][]string{{"    KIND", "ADDRESS", "MASQUERADE", "SOURCE RANGES"}}
	for _, f := range p.Frontends {
		rows = append(rows, []string{"    " + f.Kind, f.Address, f.Masquerade, strings.Join(f.SourceRanges, ",")})
	}
	_ = table(w, rows)
	var policy []string
	if p.InternalTrafficPolicyLocal {
		policy = append(policy, "internalTrafficPolicy Local")
	}
	if p.ExternalTrafficPolicyLocal {
		policy = append(policy, "externalTrafficPolicy Local")
	}
	if p.Algorithm != "" {
		policy = append(policy, "algorithm "+p.Algorithm)
	}
	if p.Affinity != "" {
		policy = append(policy, "affinity "+p.Affinity)
	}
	if len(policy) > 0 {
		fmt.Fprintf(w, "  Traffic: %s\n", strings.Join(policy, ", "))
	}
	fmt.Fprintln(w, "  Endpoints:")
	if len(p.Endpoints) == 0 {
		fmt.Fprintln(w, "    (none)")
		return
	}
	rows = [][]string{{"    ADDRESS", "NODE", "ZONE", "CATEGORY", "CLUSTERIP", "EXTERNAL"}}
	for _, e := range p.Endpoints {
		rows = append(rows, []string{"    " + e.Address, e.Node, e.Zone, e.Category, e.ClusterIP, e.External})
	}
	_ = table(w, rows)
}

func printKernel(w io.Writer, p report.Port) {
	k := p.Kernel
	fmt.Fprintf(w, "  Kernel (%s, read back):\n", k.Backend)
	if k.Error != "" {
		indent(w, "    ", "could not be read: "+k.Error)
		return
	}
	var chains []string
	for c := range k.Rules {
		chains = append(chains, c)
	}
	sort.Strings(chains)
	for _, c := range chains {
		indent(w, "    ", c+":")
		indent(w, "      ", k.Rules[c]...)
	}
	for _, v := range k.VirtualServers {
		indent(w, "    ", fmt.Sprintf("virtual server %s scheduler %s persistent %t", v, v.Scheduler, v.Persistent))
		for _, d := range v.Dests {
			indent(w, "      ", fmt.Sprintf("-> %s:%d weight %d (%s)", d.Addr, d.Port, d.Weight, d.Forward))
		}
	}
	var sets []string
	for s := range k.SetEntries {
		sets = append(sets, s)
	}
	sort.Strings(sets)
	for _, s := range sets {
		if k.Backend == "nftables" {
			indent(w, "    ", "map "+s+":")
			indent(w, "      ", k.SetEntries[s]...)
			continue
		}
		indent(w, "    ", "ipset "+s+": "+strings.Join(k.SetEntries[s], " "))
	}
	if len(p.Drift) == 0 {
		indent(w, "  ", "Drift: none")
		return
	}
	indent(w, "  ", "Drift:")
	for _, d := range p.Drift {
		indent(w, "    ", fmt.Sprintf("%s %s %s", d.Kind, d.Object, d.Detail))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// each runs f for 0..n-1, eight at a time.
func (c *clients) each(n int, f func(i int)) {
	done := make(chan struct{})
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		go func(i int) {
			sem <- struct{}{}
			f(i)
			<-sem
			done <- struct{}{}
		}(i)
	}
	for i := 0; i < n; i++ {
		<-done
	}
}
