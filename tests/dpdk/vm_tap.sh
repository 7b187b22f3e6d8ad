#!/bin/sh
# SPDX-License-Identifier: MIT
# Inside the VM harness (tests/vm/run-in-vm.sh: Debian's kernel, with the
# TC flower, multiq and skbedit modules net_tap's rte_flow needs): the
# tap-flow lanes, a queue per lane steered by rte_flow and every packet
# of a lane on its queue, or another case of dpdk_lanes that needs them
# (tap-flow-refused).
#   vm_tap.sh DPDK_LANES [CASE]
set -u
exec "$1" --case "${2:-tap-flow}"
