#!/bin/bash
# SPDX-License-Identifier: MIT
#
# smoke-two.sh server|client — one end of an ib_write_bw pair across the
# two VMs of run-two-vms.sh (A: 198.18.0.1 server, B: 198.18.0.2 client).
set -u
fail() { echo "FAIL: $*"; exit 1; }
bw() { ib_write_bw -d rxe0 -R -s 65536 -n 100 -F --report_gbits "$@"; }

rdma link show | grep -q '^link rxe0/1 state ACTIVE.*netdev eth0' || fail "rxe0 on eth0 not ACTIVE"
case ${1:-} in
server)
	timeout 120 bash -c "$(declare -f bw); bw" > /tmp/out 2>&1 || { cat /tmp/out; fail "server"; }
	;;
client)
	ok=0
	for _ in $(seq 60); do
		if bw 198.18.0.1 > /tmp/out 2>&1; then ok=1; break; fi
		sleep 1
	done
	[ $ok = 1 ] || { cat /tmp/out; fail "client never got through"; }
	;;
*) fail "usage: $0 server|client" ;;
esac
cat /tmp/out
grep -q 'GID: .*198:18:00:01' /tmp/out && grep -q 'GID: .*198:18:00:02' /tmp/out ||
	fail "the two ends are not 198.18.0.1 and 198.18.0.2"
grep -Eq '^ *65536 +100 +[0-9.]+ +[0-9.]+' /tmp/out || fail "no bandwidth line"
echo "PASS: ib_write_bw $1 across two VMs"
