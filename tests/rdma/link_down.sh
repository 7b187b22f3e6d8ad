#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Inside the VM (tests/vm/run-in-vm.sh): the link under rxe0 goes down in
# the middle of a zero-copy migration over rdma lanes. The lanes must fail
# (the device's port error), the migration must end as not completed with a
# reason, and the source's workload must still be running afterwards.
#
#   link_down.sh TLM CHECK_MIGRATE_PY
set -eu
TLM=$1 CHECK=$2
sent=/sys/class/infiniband/rxe0/ports/1/hw_counters/sent_pkts
[ -r "$sent" ] || { echo "SKIP: rxe0 has no packet counter ($sent)"; exit 77; }
base=$(cat "$sent")
# Mid-migration whatever the build's speed: once 20000 packets (about
# 20 MiB of the 128 MiB, rxe sends 1 KiB packets on a 1500-byte link) went.
(
	n=0
	while [ $(($(cat "$sent") - base)) -lt 20000 ] && [ $n -lt 6000 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	ip link set veth0 down
	echo "link_down.sh: veth0 down after $(($(cat "$sent") - base)) packets"
) &
python3 "$CHECK" "$TLM" --expect not-completed -- --transport rdma \
	--local-addr 198.18.0.1 --policy tlm --workload mg --mem 128M --rate 20000 \
	--epoch-ms 50
