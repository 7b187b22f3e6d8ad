#!/bin/bash
# Draws a bench/qemu_checkpoint.py JSON document as one PNG: per method,
# downtime and total time (ms, log scale), the guest's slowdown during the
# checkpoint (%), and the file's size on disk (MiB).
#   bench/plot_qemu_checkpoint.sh RESULT.json OUT.png
set -euo pipefail
in=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$in" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); tmp = sys.argv[2]
with open(tmp + "/data", "w") as f:
    f.write("method downtime total slowdown disk\n")
    for r in d["runs"]:
        ok = r.get("completed")
        nan = "NaN"
        f.write('"%s" %s %s %s %s\n' % (
            r["method"],
            max(1, r["downtime_ms"]) if ok else nan,
            max(1, r["total_ms"]) if ok else nan,
            100.0 * r["slowdown"] if ok and r.get("slowdown") is not None else nan,
            r.get("disk_bytes", 0) / 1048576.0 if ok else nan))
la = d.get("loadavg_before", [0, 0, 0])
with open(tmp + "/title", "w") as f:
    f.write("%d MiB guest, %s, %d MiB set at %s writes/s (TCG); load average %.1f at the start"
            % (d["mem_mib"], d["pattern"], d["set_mib"], d["rate"] or "unlimited", la[0]))
PY
title=$(cat "$tmp/title")
gnuplot <<EOF
set terminal pngcairo size 1300,420 font ",10"
set output "$out"
set multiplot layout 1,3 title "$title"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set xtics rotate by -30
set grid ytics
set logscale y
set ylabel "ms"
set title "downtime and total time"
plot "$tmp/data" using 2:xtic(1) title "downtime", "" using 3 title "total"
unset logscale y
set yrange [*:*]
set ylabel "%"
set title "guest slowdown during the checkpoint"
plot "$tmp/data" using 4:xtic(1) title "page-write rate lost" lc rgb "#c03030"
set yrange [0:*]
set ylabel "MiB"
set title "file on disk"
plot "$tmp/data" using 5:xtic(1) title "allocated" lc rgb "#3060c0"
unset multiplot
EOF
