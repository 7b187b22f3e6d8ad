#!/bin/sh
# SPDX-License-Identifier: MIT
# `tlm bench migrate --transport dpdk` between two processes over a port
# whose frames go through a kernel, in a network namespace the test
# creates (198.18.8.x, nothing on the kernel side has an address):
#   afpacket   net_af_packet on each end of a veth pair
#   tap        the destination on net_tap (queues=4; this kernel has no TC
#              flower, so it refuses rte_flow and its lanes share queue
#              0), the source on net_af_packet on a macvlan on the tap
# The destination listens (--listen), the source connects and reports;
# tests/engine/check_migrate.py checks the report: completed, every page
# byte-equal at the destination, the epochs accounted.
#   migrate_ports.sh TLM CHECK_MIGRATE_PY afpacket|tap [EXTRA BENCH ARGS...]
set -u
[ -n "${TLM_TEST_DEBUG:-}" ] && set -x
TLM=$1
CHECK=$2
KIND=$3
shift 3
# shellcheck source=tests/dpdk/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
[ "$(id -u)" = 0 ] || { echo "needs root for a network namespace"; exit 77; }
ns=tlmmig$$
tmp=$(mktemp -d)
dpid=
cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns" 2>/dev/null || { echo "cannot create a network namespace"; exit 77; }
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
ip -n "$ns" link set lo up
case $KIND in
afpacket)
	# far-apart indexes: see bench/dpdk_af_packet.sh (PACKET_FANOUT groups)
	ip -n "$ns" link add tma$$ index 16386 type veth peer name tmb$$ index 3 &&
		ip -n "$ns" link set tma$$ up && ip -n "$ns" link set tmb$$ up ||
		{ echo "cannot set up the veth pair"; exit 77; }
	dst="vdev=net_af_packet0,iface=tma$$,ip=198.18.8.1"
	src="vdev=net_af_packet0,iface=tmb$$,ip=198.18.8.2"
	;;
tap)
	# af_packet on a macvlan on a persistent tap: net_tap gives the tap
	# its port's MAC, and a port ignores frames from its own MAC
	ip -n "$ns" tuntap add dev tmt$$ mode tap multi_queue &&
		ip -n "$ns" link add tmm$$ link tmt$$ type macvlan mode bridge &&
		ip -n "$ns" link set tmm$$ up ||
		{ echo "cannot create a tap with a macvlan on it"; exit 77; }
	dst="vdev=net_tap0,iface=tmt$$,ip=198.18.8.1,queues=4"
	src="vdev=net_af_packet0,iface=tmm$$,ip=198.18.8.2"
	;;
*)
	echo "unknown port kind $KIND"; exit 2 ;;
esac
"$TLM" keygen "$tmp/psk" >/dev/null || { bad "tlm keygen"; exit 1; }

# -v -v: the destination says when its port is up (then it listens at
# once); the source starts only then, so a slow EAL start there does not
# eat the source's connect timeout
ip netns exec "$ns" "$TLM" -v -v bench migrate --listen 198.18.8.1:7400 --transport dpdk \
	--transport-args "$dst" --psk "$tmp/psk" > "$tmp/dest.out" 2> "$tmp/dest.err" &
dpid=$!
i=0
until grep -q 'queue pair(s)' "$tmp/dest.err"; do
	i=$((i + 1))
	[ $i -lt 1200 ] && kill -0 "$dpid" 2>/dev/null ||
		{ cat "$tmp/dest.err"; bad "the destination's port never came up"; exit 1; }
	sleep 0.1
done
ip netns exec "$ns" python3 "$CHECK" "$TLM" -- --connect 198.18.8.1:7400 --transport dpdk \
	--transport-args "$src" --psk "$tmp/psk" --mem 64M --epoch-ms 20 "$@" ||
	bad "the migration over $KIND failed its checks"
wait "$dpid"
rc=$?
dpid=
[ $rc = 0 ] || { cat "$tmp/dest.err"; bad "the destination exited $rc"; }
exit $fail
