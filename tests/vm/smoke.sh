#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Runs inside the VM (run-in-vm.sh): the Soft-RoCE devices exist and carry
# RDMA WRITE traffic between rxe0 (198.18.0.1) and rxe1 (198.18.0.2).
set -u
fail() { echo "FAIL: $*"; exit 1; }

rdma link show | tee /tmp/links
grep -q '^link rxe0/1 state ACTIVE' /tmp/links || fail "rxe0 not ACTIVE"
grep -q '^link rxe1/1 state ACTIVE' /tmp/links || fail "rxe1 not ACTIVE"
ibv_devices | tee /tmp/devs
grep -qw rxe0 /tmp/devs && grep -qw rxe1 /tmp/devs || fail "ibv_devices lacks rxe0/rxe1"

# Server on rxe0, client on rxe1 connecting through rdma_cm (-R), so the
# address resolution and RoCE v2 GID selection are exercised too.
ib_write_bw -d rxe0 -R -s 65536 -n 200 -F --report_gbits > /tmp/srv.out 2>&1 &
srv=$!
sleep 1
ib_write_bw -d rxe1 -R -s 65536 -n 200 -F --report_gbits 198.18.0.1 > /tmp/cli.out 2>&1
crc=$?
wait $srv
src=$?
cat /tmp/cli.out
[ $crc -eq 0 ] && [ $src -eq 0 ] || { cat /tmp/srv.out; fail "ib_write_bw exit client=$crc server=$src"; }
# The result line: "#bytes #iterations BW peak BW average MsgRate": 65536 200 ...
grep -Eq '^ *65536 +200 +[0-9.]+ +[0-9.]+' /tmp/cli.out || fail "no bandwidth line"
echo "PASS: ib_write_bw over rxe1 -> rxe0"
