package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The operator's own metrics, next to controller-runtime's reconcile metrics
// (controller_runtime_reconcile_total, _errors_total, _time_seconds).
var (
	rolloutNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "synterix_operator_rollout_nodes",
		Help: "Nodes of a GatewayConfig by rollout state (desired, updated, ready, failed).",
	}, []string{"gateway_config", "state"})
	revisionsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "synterix_operator_revisions_created_total",
		Help: "Config revisions created, per GatewayConfig.",
	}, []string{"gateway_config"})
	rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "synterix_operator_rollbacks_total",
		Help: "Automatic rollbacks of a failed rollout, per GatewayConfig.",
	}, []string{"gateway_config"})
	agentPodsReplaced = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "synterix_operator_agent_pods_replaced_total",
		Help: "Nodes whose agent pod the rollout deleted for the DaemonSet controller to replace with the target revision's pod template, per GatewayConfig.",
	}, []string{"gateway_config"})
	proxyNodeWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "synterix_operator_proxynode_writes_total",
		Help: "ProxyNode writes of the operator, by operation (create, update, delete).",
	}, []string{"operation"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(rolloutNodes, revisionsCreated, rollbacks, agentPodsReplaced, proxyNodeWrites)
}
