#!/usr/bin/env bash
# Installs the Debian packages a target needs, when they are missing, so
# that `make test`, `make demo` and CI do their own set-up on a fresh
# machine (it has only Go, gcc and Debian's archive).
#   hack/deps.sh kernel cluster images promtool vm
set -euo pipefail
declare -A groups=(
	# the userspace the agent drives, and network namespaces
	[kernel]="iptables ipset nftables conntrack iproute2"
	# real nodes: a container runtime and the CNI plugins
	[cluster]="containerd runc containernetworking-plugins"
	# the Debian bases of the images (hack/image)
	[images]="mmdebstrap"
	# promtool checks the metrics and the Prometheus rules
	[promtool]="prometheus"
	# the IPVS test VM
	[vm]="qemu-system-x86 busybox-static kmod cpio xz-utils zstd"
)
missing=()
for g in "$@"; do
	[ -n "${groups[$g]+x}" ] || { echo "hack/deps.sh: unknown group $g" >&2; exit 2; }
	for p in ${groups[$g]}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "hack/deps.sh: need root to apt-get install ${missing[*]}" >&2
	exit 2
fi
echo "hack/deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
