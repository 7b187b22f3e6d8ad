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
# Registration (pinning) of 128 MiB under TCG takes about a second per
# side; the copy pass several more: 4 s in is mid-migration.
( sleep 4; ip link set veth0 down; echo "link_down.sh: veth0 down" ) &
python3 "$CHECK" "$TLM" --expect not-completed -- --transport rdma \
	--local-addr 198.18.0.1 --policy tlm --workload mg --mem 128M --rate 20000 \
	--epoch-ms 50
