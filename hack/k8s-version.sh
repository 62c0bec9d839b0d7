#!/bin/sh
# Prints the Kubernetes version the project pins: the version of
# k8s.io/kubernetes that hack/k8s/go.mod requires, the one place it is set.
# The Makefile and hack/build-k8s.sh read it here; test/testenv reads the same
# go.mod (K8sVersionOf), and its test checks that both agree. An argument names
# another go.mod to read.
set -eu
gomod=${1:-"$(cd "$(dirname "$0")" && pwd)/k8s/go.mod"}
v=$(awk -v mod=k8s.io/kubernetes '
	{ sub(/\/\/.*/, "") }
	NF == 0 { next }
	!block && NF == 2 && $2 == "(" { block = $1; next }
	block && $1 == ")" { block = ""; next }
	!block && $1 == "require" && NF == 3 && $2 == mod && $3 ~ /^v/ { print $3; exit }
	block == "require" && NF == 2 && $1 == mod && $2 ~ /^v/ { print $2; exit }
' "$gomod")
if [ -z "$v" ]; then
	echo "$gomod requires no version of k8s.io/kubernetes" >&2
	exit 1
fi
echo "$v"
