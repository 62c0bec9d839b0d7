#!/usr/bin/env bash
# Removes synterix-kube-proxy in the order that leaves nothing stuck: the
# GatewayConfigs and ProxyPolicies first, while the operator still runs to
# release their finalizers (it removes the agent DaemonSets and ProxyNodes,
# and the agents remove their rules); then the operator; then the CRDs.
# Used by `make undeploy`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
KUBECTL=${KUBECTL:-$(command -v kubectl || echo "$root/bin/k8s/${K8S_VERSION:-v1.37.2}/kubectl")}
TIMEOUT=${TIMEOUT:-5m}

if "$KUBECTL" get crd gatewayconfigs.proxy.synterix.io >/dev/null 2>&1; then
	echo "deleting ProxyPolicies and GatewayConfigs (the operator releases their finalizers)"
	"$KUBECTL" delete proxypolicies.proxy.synterix.io --all --all-namespaces --ignore-not-found --wait=true --timeout="$TIMEOUT"
	"$KUBECTL" delete gatewayconfigs.proxy.synterix.io --all --ignore-not-found --wait=true --timeout="$TIMEOUT"
	echo "waiting for the ProxyNodes to go"
	"$KUBECTL" wait --for=delete proxynodes.proxy.synterix.io --all --timeout="$TIMEOUT" 2>/dev/null || true
fi
echo "deleting the operator"
for k in manager rbac agent; do
	"$KUBECTL" delete -k "$root/config/$k" --ignore-not-found --wait=true
done
echo "deleting the CRDs"
"$KUBECTL" delete -k "$root/config/crd" --ignore-not-found --wait=true
