package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// Status is the answer of "status": every node and every GatewayConfig.
type Status struct {
	Nodes          []NodeStatus   `json:"nodes"`
	GatewayConfigs []ConfigStatus `json:"gatewayConfigs"`
}

// NodeStatus is one node's proxy state.
type NodeStatus struct {
	Node          string    `json:"node"`
	GatewayConfig string    `json:"gatewayConfig"`
	Backend       string    `json:"backend,omitempty"`
	Assigned      string    `json:"assignedRevision"`
	Applied       string    `json:"appliedRevision,omitempty"`
	Ready         string    `json:"ready"`
	LastSync      time.Time `json:"lastSync,omitempty"`
	Failures      []string  `json:"failures,omitempty"`
	// Drift is "none", a count of differences, or why it is unknown.
	Drift       string              `json:"drift"`
	Differences []report.Difference `json:"differences,omitempty"`
}

// ConfigStatus is one GatewayConfig's rollout.
type ConfigStatus struct {
	Name     string `json:"name"`
	Strategy string `json:"strategy"`
	Current  string `json:"currentRevision,omitempty"`
	Updated  string `json:"updatedRevision,omitempty"`
	Pending  string `json:"pendingRevision,omitempty"`
	Desired  int32  `json:"desiredNodes"`
	UpdatedN int32  `json:"updatedNodes"`
	ReadyN   int32  `json:"readyNodes"`
	FailedN  int32  `json:"failedNodes"`
	// State says where the rollout is, in words.
	State string `json:"state"`
}

func newStatus(o *options) *cobra.Command {
	var noDrift bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every node's backend, revisions, last sync, failures and drift, and every GatewayConfig's rollout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.clients()
			if err != nil {
				return err
			}
			st, err := c.status(cmd.Context(), !noDrift)
			if err != nil {
				return err
			}
			return o.emit(st, func(w io.Writer) error { return o.printStatus(w, st) })
		},
	}
	cmd.Flags().BoolVar(&noDrift, "no-drift", false, "Do not ask every agent for its drift")
	return cmd
}

// status reads the ProxyNodes and GatewayConfigs, and asks each agent
// for its drift (eight at a time).
func (c *clients) status(ctx context.Context, drift bool) (*Status, error) {
	var pns v1alpha1.ProxyNodeList
	if err := c.c.List(ctx, &pns); err != nil {
		return nil, fmt.Errorf("list ProxyNodes: %w", err)
	}
	var gcs v1alpha1.GatewayConfigList
	if err := c.c.List(ctx, &gcs); err != nil {
		return nil, fmt.Errorf("list GatewayConfigs: %w", err)
	}
	st := &Status{}
	for i := range pns.Items {
		st.Nodes = append(st.Nodes, nodeStatus(&pns.Items[i]))
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Node < st.Nodes[j].Node })
	if drift {
		c.drifts(ctx, st.Nodes)
	}
	for i := range gcs.Items {
		st.GatewayConfigs = append(st.GatewayConfigs, configStatus(&gcs.Items[i]))
	}
	sort.Slice(st.GatewayConfigs, func(i, j int) bool { return st.GatewayConfigs[i].Name < st.GatewayConfigs[j].Name })
	return st, nil
}

func nodeStatus(pn *v1alpha1.ProxyNode) NodeStatus {
	s := pn.Status
	n := NodeStatus{Node: pn.Name, GatewayConfig: pn.Spec.GatewayConfig, Backend: string(s.Backend), Assigned: pn.Spec.Revision,
		Applied: s.AppliedRevision, Ready: "Unknown", Drift: "not asked"}
	if c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady); c != nil {
		n.Ready = string(c.Status) + " (" + c.Reason + ")"
	}
	if s.LastSync != nil && s.LastSync.Time != nil {
		n.LastSync = s.LastSync.Time.Time
		if s.LastSync.Error != "" {
			n.Failures = append(n.Failures, "sync: "+s.LastSync.Error)
		}
	}
	if s.FailedPolicyCount > 0 {
		n.Failures = append(n.Failures, plural(int(s.FailedPolicyCount), "policy", "policies")+" not programmed")
	}
	if c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionDegraded); c != nil && c.Status == "True" && len(n.Failures) == 0 {
		n.Failures = append(n.Failures, c.Reason+": "+c.Message)
	}
	return n
}

func (c *clients) drifts(ctx context.Context, nodes []NodeStatus) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range nodes {
		wg.Add(1)
		go func(n *NodeStatus) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var d report.Diff
			if err := c.agentGet(ctx, n.Node, report.PathDiff, nil, &d); err != nil {
				n.Drift = "unknown: " + err.Error()
				return
			}
			n.Drift = "none"
			for _, f := range d.Families {
				n.Differences = append(n.Differences, f.Differences...)
				if f.Error != "" {
					n.Drift = "unknown: " + f.Error
				}
			}
			if len(n.Differences) > 0 {
				n.Drift = plural(len(n.Differences), "difference", "differences")
			}
		}(&nodes[i])
	}
	wg.Wait()
}

func configStatus(gc *v1alpha1.GatewayConfig) ConfigStatus {
	s := gc.Status
	cs := ConfigStatus{Name: gc.Name, Strategy: string(v1alpha1.RolloutAutomatic), Current: s.CurrentRevision, Updated: s.UpdatedRevision, Pending: s.PendingRevision,
		Desired: s.DesiredNodes, UpdatedN: s.UpdatedNodes, ReadyN: s.ReadyNodes, FailedN: s.FailedNodes}
	if r := gc.Spec.Rollout; r != nil && r.Strategy != "" {
		cs.Strategy = string(r.Strategy)
	}
	prog := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionProgressing)
	deg := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionDegraded)
	switch {
	case deg != nil && deg.Status == "True":
		cs.State = "degraded: " + deg.Reason + ": " + deg.Message
	case s.PendingRevision != "":
		cs.State = fmt.Sprintf("held for approval: revision %s waits for spec.rollout.approvedRevision", s.PendingRevision)
	case prog != nil && prog.Status == "True":
		cs.State = "rolling out: " + prog.Message
	default:
		cs.State = "done"
	}
	return cs
}

func (o *options) printStatus(w io.Writer, st *Status) error {
	rows := [][]string{{"NODE", "GATEWAYCONFIG", "BACKEND", "ASSIGNED", "APPLIED", "READY", "LAST SYNC", "FAILURES", "DRIFT"}}
	for _, n := range st.Nodes {
		rows = append(rows, []string{n.Node, n.GatewayConfig, n.Backend, n.Assigned, n.Applied, n.Ready, o.age(n.LastSync),
			strings.Join(n.Failures, "; "), n.Drift})
	}
	if err := table(w, rows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	rows = [][]string{{"GATEWAYCONFIG", "STRATEGY", "CURRENT", "UPDATED", "NODES (READY/UPDATED/DESIRED)", "FAILED", "ROLLOUT"}}
	for _, g := range st.GatewayConfigs {
		rows = append(rows, []string{g.Name, g.Strategy, g.Current, g.Updated, fmt.Sprintf("%d/%d/%d", g.ReadyN, g.UpdatedN, g.Desired),
			fmt.Sprint(g.FailedN), g.State})
	}
	return table(w, rows)
}
