#!/usr/bin/env bash
# Entry point of `make test-ipvs-vm`: runs the IPVS real-kernel tests (and any
# other packages given as arguments) inside Debian kernels under qemu.
#
#   hack/vm/run.sh                          # default: ./agent/ipvs/... ./agent/dataplane/... ./test/vm/... on linux-image-amd64
#   VM_KERNELS=linux-image-amd64,linux-image-6.12-amd64 hack/vm/run.sh
#   hack/vm/run.sh -run TestScheduler ./agent/ipvs/...
#
# Idempotent: the kernel, its modules and depmod output are cached in bin/vm.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
[ -x /usr/sbin/xtables-nft-multi ] || need+=(iptables)
[ -x /usr/sbin/ipset ] || need+=(ipset)
command -v ip >/dev/null || need+=(iproute2)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
	echo "hack/vm: installing ${need[*]}" >&2
	if [ "$(id -u)" != 0 ]; then
		echo "hack/vm: need root to apt-get install ${need[*]}" >&2
		exit 2
	fi
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# apt-cache needs package lists to resolve the kernel meta package.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
	apt-get update -q >/dev/null
fi

flags=()
pkgs=()
while [ $# -gt 0 ]; do
	case "$1" in
	-*=*) flags+=("$1"); shift ;;
	-v) flags+=("$1"); shift ;;
	-*) flags+=("$1" "$2"); shift 2 ;;
	*) pkgs+=("$1"); shift ;;
	esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./agent/ipvs/... ./agent/dataplane/... ./test/vm/...)
exec go run ./hack/vm -kernel "${VM_KERNELS:-linux-image-amd64}" "${flags[@]}" "${pkgs[@]}"
