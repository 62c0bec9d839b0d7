package observability

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/synterix/synterix-kube-proxy/agent/metrics"
)

// AgentServed returns the series names of the agent's metrics: those its
// /metrics handler serves on a fresh registry (metrics.New, scraped over
// HTTP and parsed as Prometheus parses it), and the names of its vectors,
// which have no series until the agent uses a label value.
func AgentServed() (map[string]bool, error) {
	m := metrics.New()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for name, mf := range families {
		addFamily(out, name, mf.GetType())
	}
	var cs []prometheus.Collector
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		if c, ok := v.Field(i).Interface().(prometheus.Collector); ok && v.Type().Field(i).Name != "Registry" {
			cs = append(cs, c)
		}
	}
	reg, err := Registered(cs...)
	if err != nil {
		return nil, err
	}
	for n := range reg {
		out[n] = true
	}
	return out, nil
}
