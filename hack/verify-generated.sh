#!/usr/bin/env bash
# Fails when the generated files (DeepCopy methods, CRDs, RBAC roles, and the
# release artefacts made from them: bundle/, bundle.Dockerfile, dist/) differ
# from what `make generate manifests bundle build-installer` produces from the
# markers in the source and config/.
set -euo pipefail
cd "$(dirname "$0")/.."

generated() {
	local dirs=()
	for d in api config/crd/bases config/rbac config/agent/rbac; do
		[ -d "$d" ] && dirs+=("$d")
	done
	find "${dirs[@]}" -type f \( -name 'zz_generated.*.go' -o -name '*.yaml' \) | sort | xargs -r sha256sum
	for d in bundle dist; do
		[ -d "$d" ] && find "$d" -type f | sort | xargs -r sha256sum
	done
	[ -f bundle.Dockerfile ] && sha256sum bundle.Dockerfile
	true
}

before=$(generated)
make --no-print-directory -s generate manifests bundle build-installer >/dev/null
after=$(generated)
if [ "$before" != "$after" ]; then
	echo "generated files were stale; 'make generate manifests bundle build-installer' has now rewritten them:" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	echo "commit the regenerated files" >&2
	exit 1
fi
echo "generated files are up to date"
