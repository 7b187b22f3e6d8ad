#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tlm's TCP lanes against iperf3 on loopback, same byte count and stream
# count, in one run:
#
#   bench/tcp_vs_iperf3.sh [TLM_BINARY] [SIZE] [LANE_COUNTS]
#
#   TLM_BINARY   default build/cli/tlm (builds nothing)
#   SIZE         bytes per run, K/M/G suffixes (default 4G)
#   LANE_COUNTS  space-separated stream counts (default "1 4")
#   TLM_ARGS     (environment) extra arguments for tlm, e.g. "--verify crc"
#
# Prints one JSON document: for each N, iperf3's and tlm's goodput (bytes
# of payload per second as each tool measures it: iperf3 the receiver's
# sum, tlm the page data verified by its receiver) and ratio = tlm/iperf3.
# tlm carries 32 bytes of framing per 4096-byte page (0.8%) that iperf3
# does not, and checks a crc32c and the content of every page.
# Needs iperf3 and python3 (to read iperf3's JSON).
set -eu

TLM=${1:-build/cli/tlm}
SIZE=${2:-4G}
LANES=${3:-"1 4"}
TLM_ARGS=${TLM_ARGS:-}

die() { echo "tcp_vs_iperf3: $*" >&2; exit 1; }
[ -x "$TLM" ] || die "no tlm binary at $TLM (build first, or pass its path)"
command -v iperf3 >/dev/null || die "iperf3 not installed (apt-get install iperf3)"
command -v python3 >/dev/null || die "python3 not installed"

tmp=$(mktemp -d /tmp/tcp_vs_iperf3.XXXXXX)
srv_pid=
cleanup() {
	[ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# A free loopback port for iperf3's server.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iperf3 -s -B 127.0.0.1 -p "$port" >"$tmp/iperf3-server.log" 2>&1 &
srv_pid=$!
i=0
until iperf3 -c 127.0.0.1 -p "$port" -n 1M >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 50 ] || die "iperf3 server did not come up: $(cat "$tmp/iperf3-server.log")"
	sleep 0.1
done

for n in $LANES; do
	iperf3 -c 127.0.0.1 -p "$port" -P "$n" -n "$SIZE" -J >"$tmp/iperf3-$n.json" ||
		die "iperf3 -P $n failed: $(cat "$tmp/iperf3-$n.json")"
	# shellcheck disable=SC2086
	"$TLM" bench transport --transport tcp --lanes "$n" --bytes "$SIZE" --json $TLM_ARGS \
		>"$tmp/tlm-$n.json" || die "tlm bench transport --lanes $n failed"
done

python3 - "$tmp" "$SIZE" "$TLM_ARGS" $LANES <<'EOF'
import json, os, platform, sys
tmp, size, tlm_args, lanes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = []
for n in lanes:
    ip = json.load(open(os.path.join(tmp, "iperf3-%s.json" % n)))
    tl = json.load(open(os.path.join(tmp, "tlm-%s.json" % n)))
    recv = ip["end"]["sum_received"]
    ip_bps = recv["bytes"] / recv["seconds"]
    tl_bps = float(tl["goodput_Bps"])
    runs.append({
        "lanes": int(n),
        "iperf3": {"bytes": recv["bytes"], "seconds": recv["seconds"],
                   "goodput_Bps": round(ip_bps)},
        "tlm": {"bytes": tl["bytes"], "seconds": tl["seconds"],
                "goodput_Bps": round(tl_bps), "verified": tl["verified"],
                "verify": tl.get("verify"), "cpu_seconds": tl.get("cpu_seconds"),
                "peak_rss_bytes": tl["peak_rss_bytes"]},
        "ratio": round(tl_bps / ip_bps, 3) if ip_bps else None,
    })
doc = {"benchmark": "tcp_vs_iperf3", "size": size, "tlm_args": tlm_args,
       "host": platform.node(), "loadavg_1m": os.getloadavg()[0],
       "cpus": os.cpu_count(), "kernel": platform.release(), "target_ratio": 0.95,
       "runs": runs,
       "pass": all(r["ratio"] is not None and r["ratio"] >= 0.95 and
                   r["tlm"]["verified"] for r in runs)}
json.dump(doc, sys.stdout, indent=2)
print()
EOF
