#!/bin/bash
# Turns a bench/migrate_policies.sh JSON document into gnuplot PNGs like the
# paper's figures, for each workload:
#   <w>-downtime-vs-mem.png  downtime against memory size, one line per
#                            policy (and per write rate for tlm)
#   <w>-elapsed-vs-mem.png   the same for elapsed time
#   <w>-epochs.png           tlm: pages dirtied and sent by the page saver
#                            per epoch, at the largest memory size
#   <w>-stage3.png           tlm: where each millisecond of stage 3 went
#                            (stacked bars, one per memory size and rate)
#   bench/plot_migrate.sh bench/results/migrate-<stamp>.json [outdir [prefix]]
set -euo pipefail
in=$1
outdir=${2:-$(dirname "$in")/plots}
prefix=${3:-}
mkdir -p "$outdir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$in" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); tmp = sys.argv[2]
runs = [r for r in d["runs"] if r.get("completed")]
def rate_name(r):
    return "unlimited" if r == 0 else "%dk/s" % (r // 1000) if r % 1000 == 0 else "%d/s" % r
for w in sorted({r["workload"] for r in runs}):
    wr = [r for r in runs if r["workload"] == w]
    series = {}
    for r in wr:
        name = "stop-copy" if r["policy"] == "stop-copy" else "%s %s" % (r["policy"], rate_name(r["rate"]))
        series.setdefault(name, []).append(r)
    names = sorted(series, key=lambda n: (n.split()[0] != "stop-copy", n.split()[0] != "tlm", n))
    with open(f"{tmp}/{w}-series", "w") as f:
        for i, n in enumerate(names):
            with open(f"{tmp}/{w}-s{i}.dat", "w") as g:
                for r in sorted(series[n], key=lambda r: r["mem"]):
                    g.write("%g %d %d\n" % (r["mem"] / 2**30, max(r["downtime_ms"], 1), r["elapsed_ms"]))
            f.write(f"{i}\t{n}\n")
    tl = [r for r in wr if r["policy"] == "tlm"]
    big = max((r["mem"] for r in tl), default=0)
    with open(f"{tmp}/{w}-epochs-series", "w") as f:
        for i, r in enumerate(sorted((r for r in tl if r["mem"] == big), key=lambda r: r["rate"])):
            with open(f"{tmp}/{w}-e{i}.dat", "w") as g:
                for e in r["epochs"]:
                    g.write("%d %d %d\n" % (e["epoch"], e["dirtied"], e["sent_ps"]))
            f.write("%d\t%s, %s\n" % (i, r["mem_arg"], rate_name(r["rate"])))
    # one panel per write rate: each has its own scale
    with open(f"{tmp}/{w}-stage3-series", "w") as f:
        for i, rate in enumerate(sorted({r["rate"] for r in tl}, key=lambda x: x or 1e12)):
            with open(f"{tmp}/{w}-stage3-{i}.dat", "w") as g:
                for r in sorted((r for r in tl if r["rate"] == rate), key=lambda r: r["mem"]):
                    s = r["stage3"]
                    g.write('"%s" %.3f %.3f %.3f %.3f %.3f %.3f\n' % (
                        r["mem_arg"], s["pause_ms"], s["sync_ms"], s["ps_ms"],
                        s["last_ms"] + s["devstate_ms"], s["wait_ms"], s["model"]["predicted_ms"]))
            f.write("%d\t%s\n" % (i, rate_name(rate)))
    open(f"{tmp}/workloads", "a").write(w + "\n")
PY
while read -r w; do
	plots_d="" plots_e=""
	while IFS=$'\t' read -r i name; do
		plots_d+="${plots_d:+, }\"$tmp/$w-s$i.dat\" using 1:2 with linespoints lw 2 title \"$name\""
		plots_e+="${plots_e:+, }\"$tmp/$w-s$i.dat\" using 1:3 with linespoints lw 2 title \"$name\""
	done < "$tmp/$w-series"
	plots_ep="" n3=0 plots_s3=""
	while IFS=$'\t' read -r i name; do
		n3=$((n3 + 1))
		key="unset key"
		[ "$i" = 0 ] && key="set key top left"
		plots_s3+="$key; set title \"tlm, $w, $name\"; plot \"$tmp/$w-stage3-$i.dat\" using 2:xtic(1) title \"pause\", '' using 3 title \"final dirty sync\", '' using 4 title \"last PS round\", '' using 5 title \"LAST + device state\", '' using 6 title \"wait for COMMIT\", '' using 0:7 with points pt 2 ps 2 lc rgb \"black\" title \"model\"
"
	done < "$tmp/$w-stage3-series"
	while IFS=$'\t' read -r i name; do
		plots_ep+="${plots_ep:+, }\"$tmp/$w-e$i.dat\" using 1:2 with linespoints title \"dirtied ($name)\""
		plots_ep+=", \"$tmp/$w-e$i.dat\" using 1:3 with lines dt 2 title \"sent by PS ($name)\""
	done < "$tmp/$w-epochs-series"
	gnuplot <<GP
set terminal png size 900,520
set grid; set key outside right
set output "$outdir/$prefix$w-downtime-vs-mem.png"
set title "$w: downtime against memory size"
set xlabel "memory (GiB)"; set ylabel "downtime (ms, log)"; set logscale y
plot $plots_d
set output "$outdir/$prefix$w-elapsed-vs-mem.png"
set title "$w: elapsed time against memory size"
set ylabel "elapsed (ms, log)"
plot $plots_e
set output "$outdir/$prefix$w-epochs.png"
set title "tlm, $w, largest memory: pages per epoch"
set xlabel "epoch"; set ylabel "pages (log)"
plot $plots_ep
unset logscale y
set terminal png size $((360 * n3 + 120)),520
set output "$outdir/$prefix$w-stage3.png"
set xlabel "memory"; set ylabel "ms"; set yrange [0:*]
set style data histogram; set style histogram rowstacked; set style fill solid 0.85 border -1
set boxwidth 0.7; set key inside font ",9"
set multiplot layout 1,$n3 title "stage 3 step by step (x: the model's prediction); each panel its own scale"
$plots_s3
unset multiplot
GP
	echo "plots: $outdir/$prefix$w-downtime-vs-mem.png $outdir/$prefix$w-elapsed-vs-mem.png $outdir/$prefix$w-epochs.png $outdir/$prefix$w-stage3.png"
done < "$tmp/workloads"
