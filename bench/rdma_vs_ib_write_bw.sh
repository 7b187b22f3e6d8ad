#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tlm's RDMA lanes against perftest's ib_write_bw, both over Soft-RoCE
# (rxe0) inside the VM harness (tests/vm/run-in-vm.sh), same byte count:
#
#   bench/rdma_vs_ib_write_bw.sh [TLM_BINARY] [SIZE] [LANE_COUNTS]
#
#   TLM_BINARY   default build/cli/tlm (builds nothing; must have rdma)
#   SIZE         bytes per run, K/M suffixes (default 256M)
#   LANE_COUNTS  space-separated lane / QP counts (default "1 4")
#   TLM_ARGS     (environment) extra arguments for tlm, e.g. "--verify crc"
#
# Prints one JSON document: for each N, ib_write_bw's bandwidth (N QPs,
# 64 KiB RDMA WRITEs, no checking) and tlm's goodput (page data verified by
# its receiver) and ratio = tlm/ib_write_bw. Both ends of both tools run in
# the same VM, under QEMU TCG: absolute figures say little about hardware,
# the ratio says what tlm's framing, copies and checks cost on one stack.
# Exits 77 when the VM cannot run.
set -eu

if [ "${1:-}" = "--inside" ]; then
	shift
	TLM=$1 SIZE=$2 LANES=$3 OUT=$4
	tmp=$(mktemp -d)
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/key"
	chmod 600 "$tmp/key"
	bytes=$(echo "$SIZE" | awk '{ n = $0 + 0; u = substr($0, length($0));
		if (u == "K" || u == "k") n *= 1024; if (u == "M" || u == "m") n *= 1048576;
		if (u == "G" || u == "g") n *= 1073741824; printf "%d", n }')
	port=18600
	for n in $LANES; do
		iters=$((bytes / 65536 / n))
		ib_write_bw -d rxe0 -R -q "$n" -s 65536 -n "$iters" -F --report_gbits \
			> "$tmp/ibsrv-$n.txt" 2>&1 &
		sleep 1
		ib_write_bw -d rxe0 -R -q "$n" -s 65536 -n "$iters" -F --report_gbits 198.18.0.1 \
			> "$OUT/ib-$n.txt" 2>&1 || { cat "$OUT/ib-$n.txt"; exit 1; }
		wait
		port=$((port + 1))
		# shellcheck disable=SC2086
		"$TLM" bench transport --transport rdma --lanes "$n" --bytes "$SIZE" --json \
			--psk "$tmp/key" --listen "198.18.0.1:$port" $TLM_ARGS \
			> "$tmp/rx-$n.json" 2> "$tmp/rx-$n.err" &
		# The receiver may take a while to listen under TCG: retry while
		# the connection is refused.
		ok=0
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			sleep 1
			# shellcheck disable=SC2086
			if "$TLM" bench transport --transport rdma --lanes "$n" --bytes "$SIZE" \
				--json --psk "$tmp/key" --connect "198.18.0.1:$port" $TLM_ARGS \
				> "$OUT/tlm-$n.json" 2> "$tmp/tx-$n.err"; then
				ok=1
				break
			fi
			grep -q 'Connection refused' "$tmp/tx-$n.err" || break
		done
		[ $ok = 1 ] || { cat "$tmp/tx-$n.err" "$tmp/rx-$n.err"; exit 1; }
		wait
	done
	exit 0
fi

TLM=${1:-build/cli/tlm}
SIZE=${2:-256M}
LANES=${3:-"1 4"}
TLM_ARGS=${TLM_ARGS:-}
export TLM_ARGS
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "rdma_vs_ib_write_bw: $*" >&2; exit 1; }
[ -x "$TLM" ] || die "no tlm binary at $TLM (build first, or pass its path)"
TLM=$(cd "$(dirname "$TLM")" && pwd)/$(basename "$TLM")
"$TLM" bench transport --help 2>&1 | grep -q . || die "$TLM has no bench transport"
command -v python3 >/dev/null || die "python3 not installed"

# The results dir is shared read-write with the VM.
out=$(mktemp -d "${TMPDIR:-/var/tmp}/rdma_vs_ib.XXXXXX")
trap 'rm -rf "$out"' EXIT INT TERM
rc=0
# shellcheck disable=SC2086
TLM_ARGS=$TLM_ARGS "$here/../tests/vm/run-in-vm.sh" --timeout 900 --rw "$out" -- \
	sh "$here/rdma_vs_ib_write_bw.sh" --inside "$TLM" "$SIZE" "$LANES" "$out" >&2 || rc=$?
[ $rc -eq 77 ] && exit 77
[ $rc -eq 0 ] || die "the run inside the VM failed ($rc)"

python3 - "$out" "$SIZE" "$TLM_ARGS" $LANES <<'PY'
import json, os, platform, re, sys
out, size, tlm_args, lanes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = []
for n in lanes:
    txt = open(os.path.join(out, "ib-%s.txt" % n)).read()
    m = re.search(r"^\s*65536\s+(\d+)\s+([\d.]+)\s+([\d.]+)", txt, re.M)
    ib_bps = float(m.group(3)) * 1e9 / 8 if m else None
    tl = json.load(open(os.path.join(out, "tlm-%s.json" % n)))
    tl_bps = float(tl["goodput_Bps"])
    runs.append({
        "lanes": int(n),
        "ib_write_bw": {"qps": int(n), "msg_size": 65536,
                        "bw_average_Bps": round(ib_bps) if ib_bps else None},
        "tlm": {"bytes": tl["bytes"], "seconds": tl["seconds"],
                "goodput_Bps": round(tl_bps), "verified": tl["verified"],
                "verify": tl.get("verify"), "cpu_seconds": tl.get("cpu_seconds"),
                "peak_rss_bytes": tl["peak_rss_bytes"]},
        "ratio": round(tl_bps / ib_bps, 3) if ib_bps else None,
    })
doc = {"benchmark": "rdma_vs_ib_write_bw", "size": size, "tlm_args": tlm_args,
       "stack": "Soft-RoCE (rdma_rxe) in one QEMU TCG VM, both ends on rxe0",
       "host": platform.node(), "loadavg_1m": os.getloadavg()[0],
       "cpus": os.cpu_count(), "runs": runs,
       "pass": all(r["tlm"]["verified"] for r in runs)}
json.dump(doc, sys.stdout, indent=2)
print()
PY
