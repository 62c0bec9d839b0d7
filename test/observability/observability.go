// Package observability checks the monitoring artefacts of config/prometheus
// and config/grafana against the metrics the binaries serve: it extracts every
// PromQL expression of the alerts and the dashboard, the metric names each
// uses, and the names a registry serves.
package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"
)

// Root returns the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Expr is one PromQL expression and where it is.
type Expr struct {
	Where string
	Query string
}

// RulesFile is the PrometheusRule of config/prometheus.
func RulesFile() string { return filepath.Join(Root(), "config", "prometheus", "rules.yaml") }

// RuleGroups returns the spec.groups of the PrometheusRule, as a Prometheus
// rules file (what promtool reads).
func RuleGroups() ([]byte, error) {
	data, err := os.ReadFile(RulesFile())
	if err != nil {
		return nil, err
	}
	var pr struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &pr); err != nil {
		return nil, err
	}
	if pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) == 0 {
		return nil, fmt.Errorf("%s is not a PrometheusRule with groups", RulesFile())
	}
	return yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
}

// Expressions returns every expression of the alerts and the dashboards.
func Expressions() ([]Expr, error) {
	rules, err := RuleGroups()
	if err != nil {
		return nil, err
	}
	var rf struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert  string `json:"alert"`
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &rf); err != nil {
		return nil, err
	}
	var out []Expr
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, Expr{Where: "rules.yaml " + g.Name + "/" + r.Alert + r.Record, Query: r.Expr})
		}
	}
	dashboards, err := filepath.Glob(filepath.Join(Root(), "config", "grafana", "*.json"))
	if err != nil {
		return nil, err
	}
	for _, path := range dashboards {
		exprs, err := dashboardExpressions(path)
		if err != nil {
			return nil, err
		}
		out = append(out, exprs...)
	}
	return out, nil
}

// labelValues is Grafana's variable query label_values(series, label).
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

// dashboardExpressions returns the target expressions of a dashboard's
// panels (rows included) and the series of its variable queries.
func dashboardExpressions(path string) ([]Expr, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	name := filepath.Base(path)
	var out []Expr
	var walk func([]json.RawMessage) error
	walk = func(raw []json.RawMessage) error {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			for _, t := range p.Targets {
				out = append(out, Expr{Where: name + " panel " + p.Title, Query: t.Expr})
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			return nil, fmt.Errorf("%s variable %s: %w", path, v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			return nil, fmt.Errorf("%s variable %s: %q is not label_values(series, label)", path, v.Name, q.Query)
		}
		out = append(out, Expr{Where: name + " variable " + v.Name, Query: m[1]})
	}
	return out, nil
}

// keywords are PromQL's words that are not metric names: operators,
// modifiers and aggregations (which may come before their parentheses).
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "offset": true, "bool": true, "atan2": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// grouping matches a label list after by, without, on, ignoring or group_*.
var grouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)

// MetricNames returns the metric names an expression selects, sorted: the
// identifiers left once strings, label matchers, ranges and label lists are
// removed, other than functions (an identifier before "("), keywords and
// Grafana variables.
func MetricNames(q string) []string {
	q = regexp.MustCompile(`"(\\.|[^"\\])*"|'(\\.|[^'\\])*'|`+"`[^`]*`").ReplaceAllString(q, `""`)
	q = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(q, " ")
	q = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(q, " ")
	q = grouping.ReplaceAllString(q, " ")
	seen := map[string]bool{}
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '$':
			i++
			for i < len(q) && isIdent(q[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			// A number or a duration, such as 0.99, 3e2 or 5m.
			for i < len(q) && (isIdent(q[i]) || isDigit(q[i]) || q[i] == '.') {
				i++
			}
		case isIdent(c):
			start := i
			for i < len(q) && (isIdent(q[i]) || isDigit(q[i])) {
				i++
			}
			word := q[start:i]
			rest := strings.TrimLeft(q[i:], " \t\n")
			if !keywords[strings.ToLower(word)] && !strings.HasPrefix(rest, "(") {
				seen[word] = true
			}
		default:
			i++
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdent(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// Served returns the series names a gatherer serves: each family's name, and
// for histograms and summaries the names of their _bucket, _sum and _count
// series.
func Served(g prometheus.Gatherer) (map[string]bool, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		addFamily(out, mf.GetName(), mf.GetType())
	}
	return out, nil
}

func addFamily(out map[string]bool, name string, typ dto.MetricType) {
	out[name] = true
	switch typ {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
	case dto.MetricType_SUMMARY:
		out[name+"_sum"], out[name+"_count"] = true, true
	}
}

// fqName reads a descriptor's name from its String, the only way
// client_golang shows it.
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Registered returns the series names of collectors, whether or not they
// have a series yet (a vector has none until a label value is used): the
// names their descriptors declare, with the series of histograms.
func Registered(cs ...prometheus.Collector) (map[string]bool, error) {
	out := map[string]bool{}
	for _, c := range cs {
		typ := dto.MetricType_UNTYPED
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			typ = dto.MetricType_HISTOGRAM
		case prometheus.Summary, *prometheus.SummaryVec:
			typ = dto.MetricType_SUMMARY
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				return nil, fmt.Errorf("cannot read the name of %s", d)
			}
			addFamily(out, m[1], typ)
		}
	}
	return out, nil
}

// Unserved returns, for each expression, the metric names it uses that no
// set serves.
func Unserved(exprs []Expr, served ...map[string]bool) []string {
	var out []string
	for _, e := range exprs {
		for _, n := range MetricNames(e.Query) {
			found := false
			for _, s := range served {
				found = found || s[n]
			}
			if !found {
				out = append(out, fmt.Sprintf("%s: %s", e.Where, n))
			}
		}
	}
	return out
}
