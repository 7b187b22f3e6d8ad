#!/bin/bash
# The paper's benchmark: the policies on the mg and sp workloads, over a list
# of memory sizes and write rates. Prints one JSON document and keeps it
# under bench/results/.
#
#   bench/migrate_policies.sh [--mem 1G,4G,8G] [--rates 20000,100000,0]
#        [--fill 100] [--workloads "mg sp"] [--policies "stop-copy tlm precopy frs mp"]
#        [--other-rates 20000] [--tlm build/cli/tlm] [--threads 1] [--transport tcp]
#        [--max-iterations 30] [--out FILE]
#
# stop-copy pauses before the first page, so its downtime does not depend on
# the write rate: it runs once per workload and memory size, and every rate
# is compared with that run. precopy, frs and mp run only at --other-rates
# (default: every rate; they may iterate --max-iterations times over all of
# memory). Rate 0 is an unlimited writer. Every run records the load
# average before it (the machine may be shared). A run whose memory would
# not fit (both copies, from /proc/meminfo MemAvailable) is skipped and
# listed under "skipped".
# Then: bench/plot_migrate.sh bench/results/migrate-<stamp>.json
set -euo pipefail
cd "$(dirname "$0")/.."
mems=1G tlm=build/cli/tlm threads=1 transport=tcp workloads="mg sp" rates=0 fill=100
policies="stop-copy tlm precopy frs mp" other_rates="" max_iter=30 out=""
while [ $# -gt 0 ]; do
	case "$1" in
	--mem) mems=$2; shift ;;
	--rates) rates=$2; shift ;;
	--other-rates) other_rates=$2; shift ;;
	--fill) fill=$2; shift ;;
	--tlm) tlm=$2; shift ;;
	--threads) threads=$2; shift ;;
	--transport) transport=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--policies) policies=$2; shift ;;
	--max-iterations) max_iter=$2; shift ;;
	--out) out=$2; shift ;;
	-h|--help) sed -n '2,19p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${out:-bench/results/migrate-$stamp.json}
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
other_rates=${other_rates:-$rates}

bytes() { # 1G -> bytes
	python3 -c "import sys; s=sys.argv[1].upper(); m={'K':1<<10,'M':1<<20,'G':1<<30}
print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))" "$1"
}

run() { # policy workload mem rate
	local need avail load r
	need=$(( $(bytes "$3") * 2 + (512 << 20) ))
	avail=$(awk '/MemAvailable/ {printf "%.0f", $2 * 1024}' /proc/meminfo)
	if [ "$avail" -lt "$need" ]; then
		echo "bench: skipping $1 on $2 ($3, rate $4): $((avail >> 20)) MiB available, $((need >> 20)) needed" >&2
		echo "{\"skipped\": true, \"policy\": \"$1\", \"workload\": \"$2\", \"mem_arg\": \"$3\", \"rate\": $4}" >>"$runs"
		return
	fi
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	echo "bench: $1 on $2 ($3, rate $4, fill $fill), load $load" >&2
	r=$("$tlm" bench migrate --json --transport "$transport" --policy "$1" --workload "$2" \
		--mem "$3" --threads "$threads" --rate "$4" --fill "$fill" \
		--max-iterations "$max_iter" --downtime-ms 300 2>/dev/null | tail -1 || true)
	if [ -z "$r" ]; then
		echo "{\"failed\": true, \"policy\": \"$1\", \"workload\": \"$2\", \"mem_arg\": \"$3\", \"rate\": $4}" >>"$runs"
		return
	fi
	python3 -c 'import json, sys
r = json.loads(sys.argv[1]); r["mem_arg"] = sys.argv[2]; r["load_before"] = sys.argv[3]
print(json.dumps(r))' "$r" "$3" "$load" >>"$runs"
}

for w in $workloads; do
	for m in ${mems//,/ }; do
		first=${rates%%,*}
		for p in $policies; do
			[ "$p" = stop-copy ] && run stop-copy "$w" "$m" "$first"
		done
		for rate in ${rates//,/ }; do
			for p in $policies; do
				case "$p" in
				stop-copy) ;;
				tlm) run tlm "$w" "$m" "$rate" ;;
				*) case ",$other_rates," in *",$rate,"*) run "$p" "$w" "$m" "$rate" ;; esac ;;
				esac
			done
		done
	done
done
python3 - "$out" "$runs" <<'PY'
import json, os, platform, sys
out, path = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(path) if l.strip()]
done = [r for r in runs if not r.get("skipped") and not r.get("failed")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
memtotal = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
res = {"benchmark": "migrate_policies",
       "machine": {"cpus": os.cpu_count(), "cpu": cpu, "mem_bytes": memtotal,
                   "kernel": platform.release()},
       "runs": done, "skipped": [r for r in runs if r.get("skipped") or r.get("failed")],
       "ratios": {}}
for r in done:
    if r["policy"] != "tlm":
        continue
    sc = next((s for s in done if s["policy"] == "stop-copy" and s["workload"] == r["workload"]
               and s["mem"] == r["mem"]), None)
    if not sc or not sc["completed"] or not r["completed"]:
        continue
    key = "%s/%s/%d" % (r["workload"], r["mem_arg"], r["rate"])
    dr = sc["downtime_ms"] / max(r["downtime_ms"], 1)
    er = r["elapsed_ms"] / max(sc["elapsed_ms"], 1)
    res["ratios"][key] = {
        "stopcopy_downtime_ms": sc["downtime_ms"], "tlm_downtime_ms": r["downtime_ms"],
        "stopcopy_elapsed_ms": sc["elapsed_ms"], "tlm_elapsed_ms": r["elapsed_ms"],
        "stopcopy_downtime_over_tlm_downtime": round(dr, 2),
        "tlm_elapsed_over_stopcopy_elapsed": round(er, 2),
        "tlm_verified": r["verified"], "stopcopy_verified": sc["verified"],
        "tlm_lanes_keep_up": r["stage3"]["model"]["lanes_keep_up"],
        # downtime: 1/5 of stop-copy's at a limited rate, below it unlimited
        "target_downtime": dr >= 5 if r["rate"] else r["downtime_ms"] < sc["downtime_ms"],
        "target_elapsed_ratio_le_1_5": er <= 1.5,
        "load_before": [r["load_before"], sc["load_before"]],
    }
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res["ratios"], indent=1))
PY
echo "bench: results in $out" >&2
