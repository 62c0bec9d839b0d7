package nftables

import (
	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Features is the nftables backend's feature support table. Algorithms it
// does not support fall back to Random when rendered; Unsupported reports
// them so the operator can surface UnsupportedByBackend.
var Features = backend.FeatureTable{
	{Feature: backend.AlgorithmFeature(model.AlgorithmRandom), Supported: true,
		Note: "numgen random per endpoint rule; the default"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmRoundRobin), Supported: true,
		Note: "numgen inc per endpoint rule: strict rotation over new connections; counters restart when the service's chain is rewritten"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmSourceHashing), Supported: true,
		Note: "jhash of the source address per endpoint rule: a client keeps its endpoint while the endpoints stay the same"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmWeightedRoundRobin), Note: "endpoints carry no weights; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmLeastConnections), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmWeightedLeastConnections), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmDestinationHashing), Note: "every packet of a Service has the same destination; use IPVS (dh)"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmMaglev), Note: "no consistent hashing; use IPVS (mh)"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmShortestExpectedDelay), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.AlgorithmFeature(model.AlgorithmNeverQueue), Note: "needs per-endpoint connection counts; use IPVS"},
	{Feature: backend.FeatureClientIPAffinity, Supported: true,
		Note: "one dynamic set for the table (client . service . endpoint, per-element timeout); up to 1,048,576 bindings"},
	{Feature: backend.FeatureSourceRanges, Supported: true, Note: "LoadBalancer ingress IPs; other clients are dropped"},
}
