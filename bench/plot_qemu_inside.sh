#!/bin/bash
# Draws a bench/qemu_inside.py JSON document as one PNG: downtime and total
# time per method (log scale), one group per guest write rate.
#   bench/plot_qemu_inside.sh RESULT.json OUT.png
set -euo pipefail
in=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$in" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); tmp = sys.argv[2]
methods = ["inside-tlm", "relay-one-pass", "stock-precopy", "stock-stopcopy", "stock-multifd"]
rates = []
for r in d["runs"]:
    if r["rate"] not in rates:
        rates.append(r["rate"])
with open(tmp + "/data", "w") as f:
    f.write("group " + " ".join("%s-down %s-total" % (m, m) for m in methods) + "\n")
    for rate in rates:
        label = "idle" if rate == "idle" else "%d pg/s" % rate
        row = ['"%s"' % label]
        for m in methods:
            x = [r for r in d["runs"] if r["method"] == m and r["rate"] == rate]
            if x and x[0].get("completed"):
                row += [str(max(1, x[0]["downtime_ms"])), str(max(1, x[0]["total_ms"]))]
            else:
                row += ["NaN", "NaN"]
        f.write(" ".join(row) + "\n")
names = {"inside-tlm": "tlm inside QEMU", "relay-one-pass": "relay one-pass",
         "stock-precopy": "stock precopy", "stock-stopcopy": "stock stop-and-copy",
         "stock-multifd": "stock multifd (idle)"}
plots = {0: [], 1: []}
for i, m in enumerate(methods):
    if any(r["method"] == m and r.get("completed") for r in d["runs"]):
        for k in (0, 1):
            col = 2 + 2 * i + k
            plots[k].append(("'%s/data' using %d%s title \"%s\"" % (
                tmp, col, ":xtic(1)" if not plots[k] else "", names[m])))
for k in (0, 1):
    with open(tmp + "/plot%d" % k, "w") as f:
        f.write("plot " + ", ".join(plots[k]) + "\n")
with open(tmp + "/title", "w") as f:
    ws = " (working set %d MiB%s)" % (d["set_mib"], ", RAM filled" if d.get("fill") else "") if d.get("set_mib") else ""
    f.write("%d MiB guest, %s%s, link %d Mbit/s (load %.1f)" % (
        d["mem_mib"], d["pattern"], ws, d["link_mbit"], d.get("load_before", 0)))
PY
gnuplot <<GP
set terminal pngcairo size 1100,520 font ",10"
set output "$out"
set multiplot layout 1,2 title "$(cat "$tmp/title")"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set xrange [-0.6:*]
set offsets 0.3, 0.3, 0, 0
set key top left font ",8"
set ylabel "ms"
set title "downtime (missing bar: did not converge)"
load "$tmp/plot0"
set title "total time"
load "$tmp/plot1"
unset multiplot
GP
echo "$out"
