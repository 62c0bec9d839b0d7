#!/bin/busybox sh
# PID 1 inside the test VM. Mounts the pseudo file systems, loads the kernel
# modules listed in /etc/synx/modules, runs every test binary listed in
# /tests/list with -test.v and reports on the serial console (ttyS0) between
# "SYNX-VM:" marker lines, which the host runner parses. Then powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /var
ln -sf /run /var/run
exec </dev/console >/dev/console 2>&1
echo "SYNX-VM: INIT-START uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
echo 4 > /proc/sys/kernel/printk
echo /sbin/modprobe > /proc/sys/kernel/modprobe

failed_mods=""
while read -r mod; do
	[ -z "$mod" ] && continue
	if ! modprobe "$mod" 2>/tmp/modprobe.err; then
		failed_mods="$failed_mods $mod"
		echo "SYNX-VM: MODULE-FAIL $mod: $(cat /tmp/modprobe.err)"
	fi
done < /etc/synx/modules
echo "SYNX-VM: MODULES-LOADED uptime=$(cut -d' ' -f1 /proc/uptime) count=$(wc -l < /proc/modules) failed=[${failed_mods}]"
ip link set lo up

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp GOTRACEBACK=all SYNX_IN_VM=1
args="$(cat /tests/args 2>/dev/null)"
while read -r name bin; do
	[ -z "$name" ] && continue
	echo "SYNX-VM: BEGIN $name uptime=$(cut -d' ' -f1 /proc/uptime)"
	( cd "/tests/$name" && "./$bin" -test.v $args ) </dev/null 2>&1
	rc=$?
	echo "SYNX-VM: END $name rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
done < /tests/list
echo "SYNX-VM: ALL-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
