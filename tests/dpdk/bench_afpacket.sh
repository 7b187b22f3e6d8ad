#!/bin/sh
# SPDX-License-Identifier: MIT
# `tlm bench transport --transport dpdk` on loopback from one vdev to
# another: net_af_packet on the two ends of a veth pair, both in a network
# namespace the test creates (no addresses on the kernel side). Every page
# verified; the raw blast runs over the same pair (raw_pmd net_af_packet,
# raw_Bps, raw_copy_Bps and their ratios) and, being the zero-copy memif
# client's, no raw_place; the sender connects to the receiver's ip=.
# The blast's frames are the lanes' (IPv4 to the receiver's port): the
# namespace's kernel counts them as IPv4 received, as it counts the lanes'.
# Behaviour only: no figure is compared with a threshold.
#   bench_afpacket.sh PATH-TO-tlm
set -u
TLM=$1
# shellcheck source=tests/dpdk/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
[ "$(id -u)" = 0 ] || { echo "needs root for a network namespace"; exit 77; }
ns=tlmbaf$$
ip netns add "$ns" 2>/dev/null || { echo "cannot create a network namespace"; exit 77; }
trap 'ip netns del "$ns" 2>/dev/null' EXIT
# far-apart indexes: net_af_packet's PACKET_FANOUT group is pid ^ ifindex,
# and processes forked in turn (pids n, n ^ 1) on interfaces 2 and 3
# would name the same group, which the kernel refuses the second
ip -n "$ns" link add tba$$ index 16386 type veth peer name tbb$$ index 3 &&
	ip -n "$ns" link set tba$$ up && ip -n "$ns" link set tbb$$ up &&
	ip -n "$ns" link set lo up &&
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 ||
	{ echo "cannot set up the veth pair"; exit 77; }

tx="vdev=net_af_packet0,iface=tba$$,ip=198.18.8.1"
rx="vdev=net_af_packet0,iface=tbb$$,ip=198.18.8.2"
# IPv4 datagrams the namespace's kernel took in (Ip: InReceives)
ip_in() { ip netns exec "$ns" awk '/^Ip:/ { if (h) print $4; h = 1 }' /proc/net/snmp; }
in0=$(ip_in)
out=$(ip netns exec "$ns" "$TLM" bench transport --transport dpdk --lanes 2 --bytes 16M \
	--raw-seconds 0.3 --transport-args "$tx" --rx-transport-args "$rx" --json) ||
	bad "bench exited $?"
echo "$out"
echo "$out" | grep -q '"verified":true' || bad "not verified"
echo "$out" | grep -q '"pages":4096,' || bad "wrong page count"
echo "$out" | grep -q '"raw_pmd":"net_af_packet"' || bad "raw_pmd is not net_af_packet"
echo "$out" | grep -q '"raw_frame_bytes":1514,' || bad "raw frames are not of mtu 1500"
for k in raw_Bps ratio raw_copy_Bps ratio_raw_copy; do
	positive "$(num "$out" $k)" || bad "$k missing or 0"
done
# the blasts' own cost (0 where a side's frames all came within a
# millisecond, as on a loaded machine)
for k in raw_cycles_per_page_tx raw_cycles_per_page_rx raw_copy_cycles_per_page_tx \
	raw_copy_cycles_per_page_rx; do
	[ -n "$(num "$out" $k)" ] || bad "$k missing"
done
echo "$out" | grep -q 'raw_place' && bad "raw_place reported for af_packet"
echo "$out" | grep -q '"headline":"ratio",' || bad "af_packet headline is not ratio"
[ "$(num "$out" headline_ratio)" = "$(num "$out" ratio)" ] || bad "headline_ratio is not ratio"
# at least the lanes' data frames (16 MiB in 1434-byte payloads) and the
# plain blast's frames went up the kernel's IPv4 input
raw_frames=$(awk -v f="$(num "$out" raw_frames_per_s)" -v s="$(num "$out" raw_seconds)" \
	'BEGIN { printf "%d", f * s * 0.99 }')
in1=$(ip_in)
[ "$((in1 - in0))" -ge "$((16777216 / 1434 + raw_frames))" ] ||
	bad "IPv4 in: $((in1 - in0)) datagrams, fewer than the lanes' and the raw blast's frames (raw $raw_frames)"

exit $fail
