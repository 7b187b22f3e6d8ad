#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-two-vms.sh [--mem 1G] [--smp 1] [--timeout S] [--rw DIR]... CMD_A CMD_B
#
# Two VMs of the run-in-vm.sh kind joined by a QEMU socket netdev (a wire
# between two virtio-net NICs, nothing else on it): VM A has eth0
# 198.18.0.1/24 and VM B 198.18.0.2/24, each with rxe0 on eth0, so RoCE
# traffic really crosses a link between two kernels. CMD_A and CMD_B are
# bash command strings run in each (cwd preserved); they coordinate by
# themselves (B's client should retry until A's server listens). Output is
# prefixed with [A] / [B]. Exit status: A's if it failed, else B's if it
# failed, else 77 if either skipped (or the VMs cannot run), else 0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
opts=(--mem 1G --smp 1)
tmo=600
while [ $# -gt 0 ]; do
	case $1 in
	--mem|--smp|--rw) opts+=("$1" "$2"); shift 2 ;;
	--timeout) tmo=$2; shift 2 ;;
	--) shift; break ;;
	-*) echo "usage: $0 [--mem 1G] [--smp 1] [--timeout S] CMD_A CMD_B" >&2; exit 2 ;;
	*) break ;;
	esac
done
[ $# -eq 2 ] || { echo "usage: $0 [--mem 1G] [--smp 1] [--timeout S] CMD_A CMD_B" >&2; exit 2; }

# Fetch and build once up front, not in both VMs at the same time.
"$here/run-in-vm.sh" --timeout 60 -- true >/dev/null 2>&1 || {
	rc=$?
	[ $rc -eq 77 ] && { echo "SKIP: run-two-vms: the VM harness cannot run here"; exit 77; }
}

pa=
pb=
cleanup() {
	# run-in-vm.sh stops its QEMU on TERM.
	[ -n "$pa" ] && kill "$pa" 2>/dev/null
	[ -n "$pb" ] && kill "$pb" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free-looking port on loopback; QEMU A fails at once if it is taken,
# and we try another. QEMU A listens before its guest boots, so B may
# connect as soon as A is seen alive.
for _ in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 30000))
	"$here/run-in-vm.sh" "${opts[@]}" --timeout "$tmo" \
		--net 198.18.0.1/24 --netdev "socket,id=n0,listen=127.0.0.1:$port" \
		-- bash -c "$1" > >(sed -u 's/^/[A] /') 2>&1 &
	pa=$!
	sleep 1
	kill -0 "$pa" 2>/dev/null && break
	wait "$pa" || true
	pa=
done
[ -n "$pa" ] || { echo "run-two-vms: VM A did not start" >&2; exit 125; }
"$here/run-in-vm.sh" "${opts[@]}" --timeout "$tmo" \
	--net 198.18.0.2/24 --netdev "socket,id=n0,connect=127.0.0.1:$port" \
	-- bash -c "$2" > >(sed -u 's/^/[B] /') 2>&1 &
pb=$!
ra=0
rb=0
wait "$pa" || ra=$?
pa=
wait "$pb" || rb=$?
pb=
echo "run-two-vms: A exited $ra, B exited $rb" >&2
# A failure on either side is the result, whatever the other did: a skip
# (77) on one side must not hide a failure on the other.
[ "$ra" -ne 0 ] && [ "$ra" -ne 77 ] && exit "$ra"
[ "$rb" -ne 0 ] && [ "$rb" -ne 77 ] && exit "$rb"
[ "$ra" -eq 77 ] || [ "$rb" -eq 77 ] && exit 77
exit 0
