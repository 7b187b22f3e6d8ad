#!/bin/bash
# Turns a bench/migrate_policies.sh JSON document into gnuplot PNGs like the
# paper's figures: dirty pages per epoch and pages sent by the page saver per
# epoch (tlm policy), and downtime/elapsed per policy, for each workload.
#   bench/plot_migrate.sh bench/results/migrate-<stamp>.json [outdir]
set -euo pipefail
in=$1
outdir=${2:-$(dirname "$in")/plots}
mkdir -p "$outdir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$in" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); tmp = sys.argv[2]
for w in sorted({r["workload"] for r in d["runs"]}):
    runs = [r for r in d["runs"] if r["workload"] == w]
    with open(f"{tmp}/{w}-policies.dat", "w") as f:
        for r in runs:
            f.write(f'{r["policy"]} {r["downtime_ms"] if r["completed"] else 0} {r["elapsed_ms"]}\n')
    t = [r for r in runs if r["policy"] == "tlm"]
    with open(f"{tmp}/{w}-epochs.dat", "w") as f:
        for e in (t[0]["epochs"] if t else []):
            f.write(f'{e["epoch"]} {e["dirtied"]} {e["sent_ps"]}\n')
    open(f"{tmp}/workloads", "a").write(w + "\n")
PY
while read -r w; do
	gnuplot <<GP
set terminal png size 900,500
set output "$outdir/$w-epochs.png"
set title "tlm policy, $w: pages per epoch"
set xlabel "epoch"; set ylabel "pages"; set key top right; set grid
plot "$tmp/$w-epochs.dat" using 1:2 with linespoints title "dirtied in the epoch", \
     "" using 1:3 with linespoints title "sent by the page saver"
set output "$outdir/$w-policies.png"
set title "$w: downtime and elapsed time per policy (0 = did not complete)"
set style data histogram; set style histogram cluster gap 1; set style fill solid 0.8
set ylabel "ms"; set xlabel ""; set logscale y
plot "$tmp/$w-policies.dat" using 2:xtic(1) title "downtime", "" using 3 title "elapsed"
GP
	echo "plots: $outdir/$w-epochs.png $outdir/$w-policies.png"
done < "$tmp/workloads"
