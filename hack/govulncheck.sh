#!/usr/bin/env bash
# Checks the module for known vulnerabilities with govulncheck (source mode:
# only vulnerable code the binaries can reach counts), from the Go
# vulnerability database.
#
#   hack/govulncheck.sh                 # CI: run when the database is reachable
#   REQUIRE_GOVULNCHECK=1 hack/govulncheck.sh   # fail when it is not (releases)
#   GOVULNDB=file:///path/to/vulndb hack/govulncheck.sh   # a local copy
#
# govulncheck itself comes from the Go module proxy (golang.org/x/vuln); its
# database does not: it is https://vuln.go.dev unless GOVULNDB names another
# (an HTTPS mirror or a file:// copy holding index/db.json). When the
# database cannot be reached the script prints a SKIP line and exits 0, so
# that an offline CI is not red for it, and never reports "no
# vulnerabilities" it did not check; REQUIRE_GOVULNCHECK=1 makes that a
# failure.
#
# Findings fail the step, except those listed in hack/govulncheck.accepted
# ("GO-YYYY-NNNN reason" per line), each with why it does not apply; the
# same explanation goes in docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${GOVULNCHECK_VERSION:-v1.9.0}
db=${GOVULNDB:-https://vuln.go.dev}
accepted=hack/govulncheck.accepted

skip() {
	echo "SKIP: govulncheck: $*"
	if [ "${REQUIRE_GOVULNCHECK:-}" = 1 ]; then
		echo "FAIL: REQUIRE_GOVULNCHECK=1 and the vulnerability database was not checked" >&2
		exit 1
	fi
	exit 0
}

# A file:// database must be a real one: govulncheck reads an empty folder
# as a database without entries and reports nothing.
case $db in
file://*)
	dir=${db#file://}
	[ -f "$dir/index/db.json" ] || skip "GOVULNDB=$db holds no index/db.json: not a vulnerability database"
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

# Findings: each must be accepted with a reason.
unexplained=0
for id in $(grep -oE 'GO-[0-9]{4}-[0-9]+' "$out" | sort -u); do
	reason=$( { grep -E "^$id[[:space:]]" "$accepted" 2>/dev/null || true; } | head -1 | cut -d' ' -f2-)
	if [ -n "$reason" ]; then
		echo "accepted: $id: $reason"
	else
		echo "FAIL: $id is not explained in $accepted" >&2
		unexplained=1
	fi
done
exit $unexplained
