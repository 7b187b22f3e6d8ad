#!/bin/sh
# SPDX-License-Identifier: MIT
#
# mkinitrd.sh KDIR OUT — build the harness initramfs for the kernel unpacked
# in KDIR (by fetch-kernel.sh): busybox-static, the modules the harness
# needs with their dependencies (from modules.dep, loaded in order by /init),
# and tests/vm/init as /init.
set -eu

kdir=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
kver=$(basename "$(ls -d "$kdir"/lib/modules/*/ | head -n1)")
mdir=$kdir/lib/modules/$kver

busybox=/bin/busybox
[ -x "$busybox" ] || { echo "mkinitrd: busybox-static missing" >&2; exit 77; }
# A dynamically linked busybox cannot run from the initramfs.
if ldd "$busybox" >/dev/null 2>&1; then
	echo "mkinitrd: $busybox is not static (install busybox-static)" >&2
	exit 77
fi

# net_tap (tests/dpdk: tap-flow) needs tun (and the test a macvlan), and
# for its rte_flow rules the qdiscs, classifiers and actions of DPDK's
# drivers/net/tap/tap_flow.c and tap_tcmsgs.c: multiq at the root and
# ingress, flower rules with skbedit (QUEUE), gact (DROP, PASSTHRU),
# mirred (remote=) and bpf (RSS).
want="virtio_pci virtio_net 9pnet_virtio 9p veth ipv6 crc32_generic udp_tunnel
ip6_udp_tunnel rdma_rxe ib_uverbs ib_umad rdma_ucm tun macvlan sch_multiq sch_ingress
cls_flower act_skbedit act_gact act_mirred cls_bpf act_bpf"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/lib/modules" "$tmp/root/proc" \
	"$tmp/root/sys" "$tmp/root/dev" "$tmp/root/host" "$tmp/root/job" \
	"$tmp/root/tmp"
cp "$busybox" "$tmp/root/bin/busybox"
cp "$here/init" "$tmp/root/init"
chmod 755 "$tmp/root/init"

# Resolve each wanted module to its path and emit dependencies first
# (modules.dep lists a module's full dependency closure, deepest last).
: > "$tmp/order"
add_path() {
	grep -qxF "$1" "$tmp/order" || echo "$1" >> "$tmp/order"
}
for m in $want; do
	line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$mdir/modules.dep" || true)
	if [ -z "$line" ]; then
		# Built into the kernel (ipv6 is, on Debian): nothing to load.
		if grep -qE "/$m\.ko$" "$mdir/modules.builtin"; then continue; fi
		echo "mkinitrd: module $m not found in $kver" >&2
		exit 1
	fi
	self=${line%%:*}
	deps=${line#*:}
	rev=""
	for d in $deps; do rev="$d $rev"; done
	for d in $rev; do add_path "$d"; done
	add_path "$self"
done
while read -r p; do
	cp "$mdir/$p" "$tmp/root/lib/modules/"
	basename "$p" >> "$tmp/root/modules.list"
done < "$tmp/order"

(cd "$tmp/root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$tmp/out"
mv "$tmp/out" "$out"
