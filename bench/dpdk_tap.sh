#!/bin/sh
# SPDX-License-Identifier: MIT
#
# DPDK lanes received on net_tap with a queue per lane steered by
# rte_flow, against the raw blast between the same two ports, in one run:
#
#   bench/dpdk_tap.sh [TLM_BINARY] [SIZE] [LANES] [ROUNDS]
#
#   TLM_BINARY   default build/cli/tlm (builds nothing)
#   SIZE         page data per round (default 64M: TCG moves 1-3 MB/s)
#   LANES        data lanes (default 2)
#   ROUNDS       raw blasts and lanes, ROUNDS times (default 3)
#   TLM_ARGS     (environment) more arguments for tlm bench transport
#   TLM_BENCH_TIMEOUT_MS
#                (environment) tlm bench transport --timeout (default
#                300000: under TCG on a loaded host one EAL start takes
#                a minute, and the receiver waits for the sender's)
#
# net_tap's rte_flow rules are TC flower rules on the tap; a kernel
# without cls_flower, sch_multiq and act_skbedit (this host's) gets none,
# so the script then runs itself inside the VM harness (tests/vm, Debian's
# kernel under QEMU TCG: figures from there are TCG's, compare only the
# ratio). It makes a network namespace with a veth pair; the receiving
# end is net_tap (queues=LANES+2: the control lane and every data lane on
# a queue of its own) with remote= one end of the pair (net_tap's TC rules
# redirect what comes in there to the tap, through its queue rules, and
# what it sends goes out there), the sending end net_af_packet on the
# other end. Prints the JSON of `tlm bench transport --transport dpdk`
# (raw_pmd, raw_Bps, ratio, per_round, best) with, added, lane_queues:
# each receiving lane's queue and the share of its packets that came in on
# it (the last round's), and steered: true when every data lane had a
# queue of its own.
# Needs root and iproute2.
set -eu

TLM=${1:-build/cli/tlm}
SIZE=${2:-64M}
LANES=${3:-2}
ROUNDS=${4:-3}
TLM_ARGS=${TLM_ARGS:-}
TLM_BENCH_TIMEOUT_MS=${TLM_BENCH_TIMEOUT_MS:-300000}

die() { echo "dpdk_tap: $*" >&2; exit 1; }
[ -x "$TLM" ] || die "no tlm binary at $TLM (build first, or pass its path)"
[ "$(id -u)" = 0 ] || die "needs root (a network namespace)"
command -v ip >/dev/null || die "iproute2 not installed"

here=$(cd "$(dirname "$0")" && pwd)
has_flower() {
	for m in cls_flower sch_multiq act_skbedit; do
		[ -e /sys/module/$m ] || return 1
	done
}
if ! has_flower; then
	[ -z "${TLM_DPDK_TAP_IN_VM:-}" ] || die "no TC flower in the VM either"
	tlm=$(cd "$(dirname "$TLM")" && pwd)/$(basename "$TLM")
	export TLM_DPDK_TAP_IN_VM=1 TLM_ARGS TLM_BENCH_TIMEOUT_MS
	exec "$here/../tests/vm/run-in-vm.sh" --mem 2G --timeout 3000 -- \
		/bin/sh "$here/dpdk_tap.sh" "$tlm" "$SIZE" "$LANES" "$ROUNDS"
fi

ns=tlmbtap$$
tmp=$(mktemp -d)
ip netns add "$ns" || die "cannot create a network namespace"
trap 'ip netns del "$ns" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
ip -n "$ns" link add tbv0 type veth peer name tbr0
ip -n "$ns" link set tbv0 up
ip -n "$ns" link set tbr0 up

# -v -v: each lane's close line says its queue and the packets on it
# shellcheck disable=SC2086
ip netns exec "$ns" "$TLM" -v -v bench transport --transport dpdk --lanes "$LANES" \
	--bytes "$SIZE" --rounds "$ROUNDS" --raw-seconds 1 --protect none --json \
	--timeout "$TLM_BENCH_TIMEOUT_MS" \
	--transport-args "vdev=net_af_packet0,iface=tbv0,ip=198.18.8.2" \
	--rx-transport-args "vdev=net_tap0,iface=tbt0,remote=tbr0,ip=198.18.8.1,queues=$((LANES + 2))" \
	$TLM_ARGS > "$tmp/out" 2> "$tmp/err" || { cat "$tmp/err" >&2; die "tlm bench transport failed"; }

# the receiving end's lanes are those whose peer is the sender, 198.18.8.2
python3 - "$tmp/out" "$tmp/err" "$LANES" <<'EOF'
import json, re, sys
out, err, lanes = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.loads(open(out).read().strip().splitlines()[-1])
q = []
for line in open(err):
    m = re.search(r"lane (\d+) \(198\.18\.8\.2:\d+\) closed: \d+ pkts out, (\d+) in, .*"
                  r"queue (\d+), (\d+) pkts in on it", line)
    if m:
        n, rx, qid, own = (int(x) for x in m.groups())
        q.append({"lane": n, "queue": qid, "rx_pkts": rx,
                  "on_queue": round(own / rx, 4) if rx else 0})
q = q[-(lanes + 1):]   # the last round's control lane and data lanes
data = [x for x in q if x["lane"] > 0]
r["lane_queues"] = q
r["steered"] = bool(data) and all(x["queue"] > 0 for x in data) and \
    len({x["queue"] for x in data}) == len(data)
print(json.dumps(r))
EOF
