#!/usr/bin/env bash
# Builds the real control-plane binaries the tests and the demo use, from the Go
# module proxy only, into bin/k8s/<version>/. Binaries already present are reused.
# The version is the one hack/k8s/go.mod pins (hack/k8s-version.sh); K8S_VERSION
# may name another folder of binaries built earlier, but only the pinned version
# can be built.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pinned=$("$root/hack/k8s-version.sh")
K8S_VERSION=${K8S_VERSION:-$pinned}
out="$root/bin/k8s/$K8S_VERSION"

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # name package
	if [ -x "$out/$1" ]; then
		echo "reusing $out/$1"
		return
	fi
	if [ "$K8S_VERSION" != "$pinned" ]; then
		echo "cannot build $1 $K8S_VERSION: hack/k8s/go.mod pins k8s.io/kubernetes $pinned; change it there to build another version" >&2
		exit 1
	fi
	mkdir -p "$out"
	echo "building $1 (first build takes minutes)"
	local start=$SECONDS
	(cd "$root/hack/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out/$1.tmp" "$2")
	mv "$out/$1.tmp" "$out/$1"
	echo "built $1 in $((SECONDS - start))s"
}

want=${*:-etcd kube-apiserver kubectl}
for name in $want; do
	case $name in
	etcd) build etcd ./etcd ;;
	kube-apiserver) build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver ;;
	kubectl) build kubectl k8s.io/kubernetes/cmd/kubectl ;;
	kube-controller-manager) build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager ;;
	kube-scheduler) build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler ;;
	kubelet) build kubelet k8s.io/kubernetes/cmd/kubelet ;;
	kube-proxy) build kube-proxy k8s.io/kubernetes/cmd/kube-proxy ;;
	*) echo "unknown binary $name" >&2; exit 2 ;;
	esac
done
