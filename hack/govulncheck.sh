#!/usr/bin/env bash
# Checks the module for known vulnerabilities with govulncheck (source mode:
# only vulnerable code the binaries can reach counts).
#
#   hack/govulncheck.sh                          # CI: the database of the pinned golang.org/x/vulndb
#   GOVULNDB=https://vuln.go.dev hack/govulncheck.sh   # the live database, where it is reachable
#   GOVULNDB=file:///path/to/vulndb hack/govulncheck.sh  # a copy holding index/db.json
#
# govulncheck comes from the Go module proxy (golang.org/x/vuln). So does, by
# default, its database: the module golang.org/x/vulndb holds every report as
# OSV JSON (data/osv), and its cmd/indexdb writes the database govulncheck
# reads (index/ and ID/), into bin/vulndb/<version>, reused when present. That
# copy is as new as VULNDB_VERSION: move it forward with the modules (the
# date is in the version). With GOVULNDB=https://... and no network the
# script prints a SKIP line and exits 0, never a clean result it did not
# check; REQUIRE_GOVULNCHECK=1 makes that a failure.
#
# Findings fail the step, except those listed in hack/govulncheck.accepted
# ("GO-YYYY-NNNN reason" per line), each with why it does not apply; the
# same explanation goes in docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${GOVULNCHECK_VERSION:-v1.9.0}
vulndb_version=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
accepted=hack/govulncheck.accepted

skip() {
	echo "SKIP: govulncheck: $*"
	if [ "${REQUIRE_GOVULNCHECK:-}" = 1 ]; then
		echo "FAIL: REQUIRE_GOVULNCHECK=1 and the vulnerability database was not checked" >&2
		exit 1
	fi
	exit 0
}

# localdb writes the database of golang.org/x/vulndb@$vulndb_version into
# bin/vulndb/ (once) and prints its file:// URL.
localdb() {
	local out=$PWD/bin/vulndb/$vulndb_version
	if [ ! -f "$out/index/db.json" ]; then
		local src
		src=$(GOFLAGS=-mod=mod go mod download -json "golang.org/x/vulndb@$vulndb_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -d "$src/data/osv" ] || { echo "FAIL: golang.org/x/vulndb@$vulndb_version has no data/osv" >&2; exit 1; }
		rm -rf "$out.tmp"
		go run "golang.org/x/vulndb/cmd/indexdb@$vulndb_version" -vulns "$src/data/osv" -out "$out.tmp" >&2
		mv "$out.tmp" "$out"
	fi
	echo "file://$out"
}

db=${GOVULNDB:-$(localdb)}
echo "govulncheck $version, database $db"

# A file:// database must be a real one: govulncheck reads an empty folder
# as a database without entries and reports nothing.
case $db in
file://*)
	dir=${db#file://}
	[ -f "$dir/index/db.json" ] || skip "GOVULNDB=$db holds no index/db.json: not a vulnerability database"
	n=$(find "$dir/ID" -name 'GO-*.json' | wc -l)
	[ "$n" -gt 1000 ] || { echo "FAIL: $db holds only $n reports" >&2; exit 1; }
	echo "the database holds $n reports"
	;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
# Built, not run with go run, which turns its exit status 3 (findings) into 1.
GOBIN=$tmp go install "golang.org/x/vuln/cmd/govulncheck@$version"
set +e
"$tmp/govulncheck" -db "$db" ./... >"$out" 2>&1
rc=$?
set -e

if [ $rc -ne 0 ] && [ $rc -ne 3 ] && grep -qE 'fetching vulnerabilities|no such host|dial tcp|connection refused|i/o timeout|TLS handshake' "$out"; then
	skip "the vulnerability database $db is not reachable from this machine, nothing was checked: $(grep -m1 -E 'fetching vulnerabilities|no such host|dial tcp' "$out")"
fi
cat "$out"
case $rc in
0)
	echo "govulncheck: no known vulnerability reachable from the module ($db)"
	exit 0
	;;
3) ;;
*)
	echo "FAIL: govulncheck exited $rc" >&2
	exit "$rc"
	;;
esac

# stdlib lists the findings that are in the standard library alone (every
# "Found in" of the finding is a package of the Go toolchain, pkg@goX.Y.Z),
# each with the Go that fixes it.
stdlib() {
	awk '/^Vulnerability #/ { if (id != "" && std) print id, fix; id = $3; std = 1; fix = "" }
		/^ *Found in: / { if ($3 !~ /@go[0-9]/) std = 0 }
		/^ *Fixed in: / { fix = $3 }
		END { if (id != "" && std) print id, fix }' "$out"
}

# Findings: each must be accepted with a reason. A finding in the standard
# library only is fixed by a newer Go, not by this module: it is reported
# as a toolchain finding and fails only releases (REQUIRE_GOVULNCHECK=1),
# which must be built with the Go that fixes it (the Dockerfile's
# golang:1.26 image takes the newest 1.26 patch).
unexplained=0
goversion=$(go env GOVERSION)
for id in $(grep -oE 'GO-[0-9]{4}-[0-9]+' "$out" | sort -u); do
	reason=$( { grep -E "^$id[[:space:]]" "$accepted" 2>/dev/null || true; } | head -1 | cut -d' ' -f2-)
	fix=$(stdlib | awk -v id="$id" '$1 == id { print $2 }')
	if [ -n "$reason" ]; then
		echo "accepted: $id: $reason"
	elif [ -n "$fix" ] && [ "${REQUIRE_GOVULNCHECK:-}" != 1 ]; then
		echo "toolchain: $id is in the standard library of $goversion, fixed in $fix: build releases with that Go or newer"
	else
		echo "FAIL: $id is not explained in $accepted" >&2
		unexplained=1
	fi
done
exit $unexplained
