// Package selection decides which GatewayConfig runs on which node, and which
// ProxyPolicy wins a Service, by age: the older object (creationTimestamp, then
// name) wins. It is pure: no API calls.
package selection

import (
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Config is a GatewayConfig as the node selection sees it.
type Config struct {
	Name     string
	Created  time.Time
	Selector labels.Selector
	// Deleting configs select no node, so that their nodes go to the next one.
	Deleting bool
}

// Node is a node as the node selection sees it.
type Node struct {
	Name   string
	Labels map[string]string
}

// Older reports whether the object (aCreated, aName) is older than (bCreated,
// bName): earlier creationTimestamp, then smaller name.
func Older(aCreated time.Time, aName string, bCreated time.Time, bName string) bool {
	if !aCreated.Equal(bCreated) {
		return aCreated.Before(bCreated)
	}
	return aName < bName
}

// Result is the outcome of node selection for one GatewayConfig.
type Result struct {
	// Won names, sorted, the nodes the config runs on.
	Won []string
	// Lost maps, sorted by node, the nodes the config selects but an older
	// config won, to that config's name.
	Lost []Lost
}

// Lost is one node a config selects but does not run on.
type Lost struct {
	Node   string
	Winner string
}

// Assign returns, for every config, the nodes it wins and loses.
func Assign(configs []Config, nodes []Node) map[string]*Result {
	sorted := append([]Config(nil), configs...)
	sort.Slice(sorted, func(i, j int) bool {
		return Older(sorted[i].Created, sorted[i].Name, sorted[j].Created, sorted[j].Name)
	})
	out := make(map[string]*Result, len(configs))
	for _, c := range sorted {
		out[c.Name] = &Result{}
	}
	ns := append([]Node(nil), nodes...)
	sort.Slice(ns, func(i, j int) bool { return ns[i].Name < ns[j].Name })
	for _, n := range ns {
		winner := ""
		set := labels.Set(n.Labels)
		for _, c := range sorted {
			if c.Deleting || c.Selector == nil || !c.Selector.Matches(set) {
				continue
			}
			if winner == "" {
				winner = c.Name
				out[c.Name].Won = append(out[c.Name].Won, n.Name)
			} else {
				out[c.Name].Lost = append(out[c.Name].Lost, Lost{Node: n.Name, Winner: winner})
			}
		}
	}
	return out
}

// Selector turns a GatewayConfig's node selector into a labels.Selector: nil or
// empty selects every node.
func Selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return nil, fmt.Errorf("invalid node selector: %w", err)
	}
	return sel, nil
}
