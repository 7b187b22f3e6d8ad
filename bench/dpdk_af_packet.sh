#!/bin/sh
# SPDX-License-Identifier: MIT
#
# DPDK lanes over net_af_packet, a PMD whose frames go through the
# kernel (a syscall per burst, a copy each way), against the raw blast of
# the same PMD between the same two ends, in one run:
#
#   bench/dpdk_af_packet.sh [TLM_BINARY] [SIZE] [LANES] [ROUNDS]
#
#   TLM_BINARY   default build/cli/tlm (builds nothing)
#   SIZE         page data per round (default 1G)
#   LANES        data lanes (default 1)
#   ROUNDS       raw blasts and lanes, ROUNDS times (default 3)
#   TLM_ARGS     (environment) more arguments for tlm bench transport
#                (--protect encrypt: sealed lanes, against the same blast)
#
# Makes a network namespace with a veth pair in it (no addresses on the
# kernel side; the lanes' ip= are 198.18.8.1 and .2), runs
# `tlm bench transport --transport dpdk` from one end to the other with
# --compare tcp (tcp lanes on the namespace's loopback), prints its JSON
# (raw_pmd net_af_packet, raw_Bps, ratio, per_round, best) and removes the
# namespace. Needs root and iproute2.
#
# Like for like: the lanes run --protect none (crc32c on every record, no
# cipher), since the blast seals nothing; its frames are the lanes' size
# (mtu 1500) and carry the lanes' Ethernet, IPv4 and UDP headers to the
# receiver's port, so the kernel takes each up its IPv4 input as it does
# the lanes' (no route there: dropped after the af_packet copy).
set -eu

TLM=${1:-build/cli/tlm}
SIZE=${2:-1G}
LANES=${3:-1}
ROUNDS=${4:-3}
TLM_ARGS=${TLM_ARGS:-}

die() { echo "dpdk_af_packet: $*" >&2; exit 1; }
[ -x "$TLM" ] || die "no tlm binary at $TLM (build first, or pass its path)"
[ "$(id -u)" = 0 ] || die "needs root (a network namespace)"
command -v ip >/dev/null || die "iproute2 not installed"

ns=tlmbench$$
ip netns add "$ns" || die "cannot create a network namespace"
trap 'ip netns del "$ns" 2>/dev/null' EXIT INT TERM
# Far-apart interface indexes: net_af_packet names its PACKET_FANOUT
# group pid ^ ifindex, and two of our processes forked one after the other
# (pids n and n ^ 1) on interfaces 2 and 3 of one namespace would name the
# same group, which the kernel refuses (EINVAL) for the second.
ip -n "$ns" link add tbx0 index 16386 type veth peer name tbx1 index 3
ip -n "$ns" link set tbx0 up
ip -n "$ns" link set tbx1 up
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1

# shellcheck disable=SC2086
ip netns exec "$ns" "$TLM" bench transport --transport dpdk --lanes "$LANES" \
	--bytes "$SIZE" --rounds "$ROUNDS" --raw-seconds 1 --compare tcp --json --protect none \
	--transport-args "vdev=net_af_packet0,iface=tbx0,ip=198.18.8.1" \
	--rx-transport-args "vdev=net_af_packet0,iface=tbx1,ip=198.18.8.2" $TLM_ARGS
