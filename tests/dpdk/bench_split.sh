#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/dpdk_split.py around `tlm bench transport --transport dpdk`
# (embedded memif, one round): the lanes' two ends found in the profile,
# each with its samples split into groups whose cycles per page add up to
# the bench's own cycles_per_page_tx/_rx; the raw blast's six children
# (raw, raw_copy, raw_place: a tx and an rx each) found with their shares;
# the memif sender's PMD (its copy into the ring) and the receiver's check
# of every page (verify) among the groups. A bench command
# that fails makes the script fail, and one without lanes too.
# Behaviour only: no figure is compared with a threshold.
#   bench_split.sh PATH-TO-tlm PATH-TO-dpdk_split.py
set -u
TLM=$1
SPLIT=$2
# shellcheck source=tests/dpdk/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
command -v perf >/dev/null || { echo "perf is not installed (linux-perf)"; exit 77; }
perf record -q -e cpu-clock -o /dev/null true 2>/dev/null ||
	{ echo "perf record is not allowed here (root, or kernel.perf_event_paranoid <= 1)"; exit 77; }

out=$(python3 "$SPLIT" -- "$TLM" bench transport --transport dpdk --lanes 1 --bytes 512M \
	--rounds 1 --raw-seconds 0.3 --protect none --json) || bad "dpdk_split.py exited $?"
echo "$out"
echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
b, lanes, raw = d["bench"], d["lanes"], d["raw"]
def need(ok, what):
    if not ok:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)
need(b.get("pages") == 131072, "bench figures missing")
for side in ("tx", "rx"):
    s = lanes.get(side)
    need(s and s["samples"] > 0, "lanes %s not found" % side)
    total = sum(s["cycles_per_page"].values())
    want = b["cycles_per_page_" + side]
    need(abs(total - want) <= len(s["cycles_per_page"]), "lanes %s groups add to %s, not %s" % (side, total, want))
    need(abs(sum(s["share"].values()) - 1) < 0.01, "lanes %s shares do not add to 1" % side)
need("pmd" in lanes["tx"]["share"], "memif sender: no pmd samples")
need("verify" in lanes["rx"]["share"], "receiver: no verify samples")
got = [(r["phase"], r["side"]) for r in raw]
need(sorted(got) == sorted((p, s) for p in ("raw", "raw_copy", "raw_place") for s in ("tx", "rx")),
     "raw children: %s" % got)
' || bad "split"
python3 "$SPLIT" -- false >/dev/null 2>&1 && bad "a failing bench command passed"
python3 "$SPLIT" -- echo '{"pages": 1}' >/dev/null 2>&1 && bad "a bench without lanes passed"
exit $fail
