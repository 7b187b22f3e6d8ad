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
# Only this failure counts: the link must really have gone down mid-run,
# the device must have reported it, and the engine must blame a lane.
out=/tmp/link_down.$$
(
	n=0
	while [ $(($(cat "$sent") - base)) -lt 20000 ] && [ $n -lt 6000 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	if [ $n -ge 6000 ]; then
		echo "link_down.sh: the migration never reached 20000 packets"
		exit 1
	fi
	ip link set veth0 down
	echo "link_down.sh: veth0 down after $(($(cat "$sent") - base)) packets"
) >"$out.link" &
cut=$!
# A data lane names the port error; the control lane (core/keepalive.c reads it
# while the source works) may see the destination close first. Either way
# the migration did not complete and the source runs on.
rc=0
python3 "$CHECK" "$TLM" --expect not-completed --expect-error '^(control )?lane( [0-9]+)?: ' -- \
	--transport rdma --protect none --local-addr 198.18.0.1 --policy tlm --workload mg --mem 128M \
	--rate 20000 --epoch-ms 50 >"$out" 2>&1 || rc=$?
wait "$cut" || true
cat "$out.link" "$out"
fail() { echo "FAIL: link_down.sh: $*"; rm -f "$out" "$out.link"; exit 1; }
[ "$rc" = 0 ] || fail "check_migrate.py failed"
grep -q "veth0 down after" "$out.link" || fail "the link was never taken down"
grep -q "port error" "$out" || fail "no lane saw the device's port error"
rm -f "$out" "$out.link"
