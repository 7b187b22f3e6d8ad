#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tlm's RDMA lanes against perftest's ib_write_bw on the same device, QPs
# and message size (the page size), in the same run:
#
#   bench/rdma_vs_ib_write_bw.sh [TLM_BINARY] [SIZE] [LANE_COUNTS]
#
#   TLM_BINARY   default build/cli/tlm (builds nothing; must have rdma)
#   SIZE         bytes per run, K/M/G suffixes (default 256M)
#   LANE_COUNTS  space-separated lane / QP counts (default "1 4")
#   TLM_ADDR     (environment) an RDMA device's address: run here, on real
#                hardware; without it everything runs inside the Soft-RoCE
#                VM (tests/vm/run-in-vm.sh, rxe0 at 198.18.0.1), booted once
#
# For each N: `tlm bench transport --transport rdma --lanes N --peer
# ib_write_bw --protect none --json` (clear lanes: the raw path against
# perftest; bench/protect.py --rdma measures the sealed ones), zero copy (RDMA WRITE of each page into the
# receiver's registered memory, every page verified in place afterwards)
# and again with --copy (SEND/RECV, every page checked as it arrives).
# Prints one JSON document with both runs per N, each with its own
# ib_write_bw figure. Under QEMU TCG the absolute figures say little about
# hardware; the ratios say what tlm's framing and checks cost on one stack.
# Exits 77 when the VM cannot run.
set -eu

if [ "${1:-}" = "--inside" ]; then
	shift
	TLM=$1 SIZE=$2 LANES=$3 ADDR=$4
	for n in $LANES; do
		for mode in "" --copy; do
			# shellcheck disable=SC2086
			"$TLM" bench transport --transport rdma --lanes "$n" --bytes "$SIZE" \
				--local-addr "$ADDR" --peer ib_write_bw --protect none --json $mode |
				tail -n 1
		done
	done
	exit 0
fi

TLM=${1:-build/cli/tlm}
SIZE=${2:-256M}
LANES=${3:-"1 4"}
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "rdma_vs_ib_write_bw: $*" >&2; exit 1; }
[ -x "$TLM" ] || die "no tlm binary at $TLM (build first, or pass its path)"
TLM=$(cd "$(dirname "$TLM")" && pwd)/$(basename "$TLM")
command -v python3 >/dev/null || die "python3 not installed"
command -v ib_write_bw >/dev/null || die "ib_write_bw not installed (Debian package perftest)"

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT INT TERM
rc=0
if [ -n "${TLM_ADDR:-}" ]; then
	stack="RDMA device at $TLM_ADDR"
	sh "$here/rdma_vs_ib_write_bw.sh" --inside "$TLM" "$SIZE" "$LANES" "$TLM_ADDR" \
		> "$lines" || rc=$?
else
	stack="Soft-RoCE (rdma_rxe) in one QEMU TCG VM, both ends on rxe0"
	"$here/../tests/vm/run-in-vm.sh" --timeout 1800 -- \
		sh "$here/rdma_vs_ib_write_bw.sh" --inside "$TLM" "$SIZE" "$LANES" 198.18.0.1 \
		> "$lines" || rc=$?
fi
[ $rc -eq 77 ] && exit 77
[ $rc -eq 0 ] || { cat "$lines" >&2; die "the runs failed ($rc)"; }

python3 - "$lines" "$SIZE" "$stack" <<'PY'
import json, os, platform, sys
path, size, stack = sys.argv[1:4]
runs = []
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    runs.append({k: r.get(k) for k in (
        "lanes", "zero_copy", "page_size", "bytes", "seconds", "goodput_Bps", "verified",
        "verify", "peer", "peer_device", "peer_Bps", "ratio", "register_s_per_GiB",
        "verify_seconds", "cpu_seconds", "peak_rss_bytes")})
doc = {"benchmark": "rdma_vs_ib_write_bw", "size": size, "stack": stack,
       "host": platform.node(), "loadavg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
       "target_ratio": 0.9, "runs": runs,
       "pass": bool(runs) and all(r["verified"] for r in runs)}
json.dump(doc, sys.stdout, indent=2)
print()
PY
