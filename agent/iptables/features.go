package iptables

import (
	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Features is the iptables backend's feature support table. Algorithms it
// does not support fall back to Random when rendered; Unsupported reports
// them so the operator can surface UnsupportedByBackend.
var Features = backend.FeatureTable{
	{Feature: backend.AlgorithmFeature(model.AlgorithmRandom), Supported: true,
		Note: "statistic match, mode random; the default"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmRoundRobin), Supported: true,
		Note: "statistic match, mode nth: strict rotation over new connections; counters restart when the service's chain is rewritten"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmWeightedRoundRobin), Note: "endpoints carry no weights in iptables rules; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmLeastConnections), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmWeightedLeastConnections), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmSourceHashing), Note: "no hashing target in iptables; ClientIP affinity gives stickiness"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmDestinationHashing), Note: "no hashing target in iptables"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmMaglev), Note: "no consistent hashing in iptables; use IPVS (mh)"},
	{Feature: backend.FeatureClientIPAffinity, Supported: true,
		Note: "recent match, one list per endpoint; each list holds xt_recent ip_list_tot (default 100) clients"},
	{Feature: backend.FeatureSourceRanges, Supported: true, Note: "LoadBalancer ingress IPs; other clients are dropped"},
}
