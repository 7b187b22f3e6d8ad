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
with open(tmp + "/title", "w") as f:
    ws = " (working set %d MiB)" % d["set_mib"] if d.get("set_mib") else ""
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
set key top left font ",8"
set ylabel "ms"
set title "downtime (missing bar: did not converge)"
plot "$tmp/data" using 2:xtic(1) title "tlm inside QEMU", '' using 4 title "relay one-pass", \
     '' using 6 title "stock precopy", '' using 8 title "stock stop-and-copy", \
     '' using 10 title "stock multifd (idle)"
set title "total time"
plot "$tmp/data" using 3:xtic(1) title "tlm inside QEMU", '' using 5 title "relay one-pass", \
     '' using 7 title "stock precopy", '' using 9 title "stock stop-and-copy", \
     '' using 11 title "stock multifd (idle)"
unset multiplot
GP
echo "$out"
