package observability_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/synterix/synterix-kube-proxy/test/observability"
)

func TestMetricNames(t *testing.T) {
	for q, want := range map[string][]string{
		`max by (gateway_config, state) (synterix_operator_rollout_nodes{state="failed", x=~"a|b"}) > 0`: {"synterix_operator_rollout_nodes"},
		`histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x"}[$__rate_interval])))`:              {"a_bucket"},
		`sum without (instance) (rate(b_total[5m] offset 1h)) / on (node) group_left (zone) c_info`:      {"b_total", "c_info"},
		`(time() - d_seconds) > 3e2 and d_seconds > 0 unless e:recorded`:                                 {"d_seconds", "e:recorded"},
		`sum by (le) (rate(f[10m:1m]))`:                {"f"},
		`label_replace(g, "dst", "$1", "src", "(.*)")`: {"g"},
		`count_values("v", h) or vector(1)`:            {"h"},
	} {
		if got := observability.MetricNames(q); !reflect.DeepEqual(got, want) {
			t.Errorf("MetricNames(%s) = %v, want %v", q, got, want)
		}
	}
}

// Every alert and panel has an expression naming at least one metric, so
// that the check of the names checks something.
func TestExpressions(t *testing.T) {
	exprs, err := observability.Expressions()
	if err != nil {
		t.Fatal(err)
	}
	rules, panels := 0, 0
	for _, e := range exprs {
		if strings.HasPrefix(e.Where, "rules.yaml") {
			rules++
		} else {
			panels++
		}
		if len(observability.MetricNames(e.Query)) == 0 {
			t.Errorf("%s: %q names no metric", e.Where, e.Query)
		}
	}
	if rules < 7 || panels < 20 {
		t.Fatalf("found %d rule and %d dashboard expressions: the extraction missed some", rules, panels)
	}
}

// The agent's names come from its real registry, and a name it does not
// serve is caught.
func TestAgentServed(t *testing.T) {
	served, err := observability.AgentServed()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"synterix_sync_full_total", "synterix_sync_proxy_rules_duration_seconds_bucket", "synterix_backend_info", "go_goroutines", "process_resident_memory_bytes"} {
		if !served[n] {
			t.Errorf("the agent does not serve %s", n)
		}
	}
	bad := observability.Unserved([]observability.Expr{{Where: "test", Query: "rate(synterix_sync_full_total[5m]) + synterix_made_up_total"}}, served)
	if len(bad) != 1 || !strings.Contains(bad[0], "synterix_made_up_total") {
		t.Errorf("an unserved name went unnoticed: %v", bad)
	}
}

// promtool checks the alerts and runs their unit tests (rules_test.yaml).
func TestRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus): the alerts are neither checked nor tested")
	}
	rules, err := observability.RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "synterix.rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(observability.Root(), "config", "prometheus", "rules_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "synterix.rules.yaml"}, {"test", "rules", "rules_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// config/prometheus and config/grafana are valid kustomizations.
func TestKustomizations(t *testing.T) {
	for dir, want := range map[string]int{"prometheus": 4, "grafana": 1} {
		res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(observability.Root(), "config", dir))
		if err != nil {
			t.Errorf("config/%s: %v", dir, err)
			continue
		}
		if res.Size() != want {
			t.Errorf("config/%s renders %d objects, want %d", dir, res.Size(), want)
		}
	}
}
