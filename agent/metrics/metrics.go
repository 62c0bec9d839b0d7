// Package metrics holds the agent's Prometheus metrics, in a registry of
// its own, under the namespace "synterix". Where a metric means what a
// kube-proxy metric means, it has kube-proxy's name.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric.
const Namespace = "synterix"

// Metrics are the agent's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	SyncDuration           *prometheus.HistogramVec // type, ip_family
	NetworkProgramming     prometheus.Histogram
	LastSync               prometheus.Gauge
	LastQueued             prometheus.Gauge
	EndpointChangesPending prometheus.Gauge
	EndpointChangesTotal   prometheus.Counter
	ServiceChangesPending  prometheus.Gauge
	ServiceChangesTotal    prometheus.Counter
	SyncFull               *prometheus.CounterVec // ip_family
	SyncPartial            *prometheus.CounterVec // ip_family
	SyncFailures           *prometheus.CounterVec // backend, ip_family
	Services               *prometheus.GaugeVec   // ip_family
	Endpoints              *prometheus.GaugeVec   // ip_family
	Owned                  *prometheus.GaugeVec   // ip_family
	Rules                  *prometheus.GaugeVec   // ip_family
	Problems               prometheus.Gauge
	FailedPolicies         prometheus.Gauge
	Backend                *prometheus.GaugeVec
	RevisionErrors         prometheus.Counter
	StatusWrites           *prometheus.CounterVec
	HealthCheckNodePorts   prometheus.Gauge
	ConntrackDeleted       *prometheus.CounterVec // ip_family
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

// Family is the label of the per-family metrics, as kube-proxy names it.
const Family = "ip_family"

// New creates and registers the metrics, with the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "sync_proxy_rules_duration_seconds",
			Help:    "How long a sync of the kernel rules took, by sync type (full or partial).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"type", Family}),
		NetworkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "network_programming_duration_seconds",
			Help:    "Time from a change of a Service's endpoints (the EndpointSlice's last-change-trigger-time annotation, or the time the agent saw the change) to the rules in the kernel.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300},
		}),
		LastSync:               gauge("sync_proxy_rules_last_timestamp_seconds", "Unix time of the last successful sync of the kernel rules."),
		LastQueued:             gauge("sync_proxy_rules_last_queued_timestamp_seconds", "Unix time of the oldest change not yet in the kernel; 0 when none is pending."),
		EndpointChangesPending: gauge("sync_proxy_rules_endpoint_changes_pending", "EndpointSlice changes seen and not yet in the kernel."),
		EndpointChangesTotal:   counter("sync_proxy_rules_endpoint_changes_total", "EndpointSlice changes seen."),
		ServiceChangesPending:  gauge("sync_proxy_rules_service_changes_pending", "Services with a change (of their own, their slices or their policies) seen and not yet in the kernel."),
		ServiceChangesTotal:    counter("sync_proxy_rules_service_changes_total", "Service changes seen."),
		SyncFull:               counterVec("sync_full_total", "Successful full syncs (kernel re-read and every rule compared), by IP family.", Family),
		SyncPartial:            counterVec("sync_partial_total", "Successful partial syncs (only changed services rewritten), by IP family.", Family),
		SyncFailures: counterVec("sync_proxy_rules_failures_total",
			"Failed syncs of the kernel rules, by backend and IP family.", "backend", Family),
		Services:       gaugeVec("programmed_services", "Service ports in the kernel after the last successful sync, by IP family.", Family),
		Endpoints:      gaugeVec("programmed_endpoints", "(Service port, endpoint) pairs in the kernel after the last successful sync, counted the same way on every backend, by IP family.", Family),
		Owned:          gaugeVec("programmed_rules", "Rules (or kernel objects) the agent owns in the kernel after the last successful sync, by IP family.", Family),
		Rules:          gaugeVec("sync_proxy_rules_written", "Rules (or kernel objects) written by the last successful sync, by IP family.", Family),
		Problems:       gauge("skipped_objects", "Pieces of input (Services, EndpointSlices, ports, addresses) skipped as invalid by the last sync."),
		FailedPolicies: gauge("failed_policies", "ProxyPolicies the agent could not program."),
		Backend: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "backend_info",
			Help: "1 for the backend the agent runs and the revision in the kernel."}, []string{"backend", "revision"}),
		RevisionErrors:       counter("revision_errors_total", "Config revisions the agent refused (undecodable, or asking for a backend the node cannot run)."),
		StatusWrites:         counterVec("status_writes_total", "Writes of the ProxyNode status, by result (ok, conflict, error).", "result"),
		HealthCheckNodePorts: gauge("health_check_node_ports", "HealthCheckNodePort servers the agent runs."),
		ConntrackDeleted: counterVec("conntrack_deleted_entries_total",
			"Conntrack entries deleted after syncs (UDP flows to removed endpoints; un-NATed flows of frontends that became served), by IP family.", Family),
	}
	m.Registry.MustRegister(m.SyncDuration, m.NetworkProgramming, m.LastSync, m.LastQueued,
		m.EndpointChangesPending, m.EndpointChangesTotal, m.ServiceChangesPending, m.ServiceChangesTotal,
		m.SyncFull, m.SyncPartial, m.SyncFailures, m.Services, m.Endpoints, m.Owned, m.Rules, m.Problems,
		m.FailedPolicies, m.Backend, m.RevisionErrors, m.StatusWrites, m.HealthCheckNodePorts, m.ConntrackDeleted,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
