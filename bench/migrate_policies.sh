#!/bin/bash
# The paper's benchmark: every policy on the mg and sp workloads, in one run,
# with a write rate above what the lanes carry. Prints one JSON document and
# keeps each run's report under bench/results/.
#
#   bench/migrate_policies.sh [--mem 1G] [--tlm build/cli/tlm] [--threads 1]
#                             [--transport tcp] [--workloads "mg sp"]
# Then: bench/plot_migrate.sh bench/results/migrate-<stamp>.json
set -euo pipefail
cd "$(dirname "$0")/.."
mem=1G tlm=build/cli/tlm threads=1 transport=tcp workloads="mg sp"
policies="stop-copy tlm precopy frs mp"
while [ $# -gt 0 ]; do
	case "$1" in
	--mem) mem=$2; shift ;;
	--tlm) tlm=$2; shift ;;
	--threads) threads=$2; shift ;;
	--transport) transport=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--policies) policies=$2; shift ;;
	-h|--help) sed -n '2,9p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/migrate-$stamp.json
runs=()
for w in $workloads; do
	for p in $policies; do
		echo "bench: $p on $w ($mem)" >&2
		r=$("$tlm" bench migrate --json --transport "$transport" --policy "$p" --workload "$w" \
			--mem "$mem" --threads "$threads" --rate 0 --max-iterations 30 --downtime-ms 300 || true)
		runs+=("$r")
	done
done
python3 - "$out" "${runs[@]}" <<'PY'
import json, os, platform, sys
out, runs = sys.argv[1], [json.loads(r.strip().splitlines()[-1]) for r in sys.argv[2:] if r.strip()]
res = {"benchmark": "migrate_policies", "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "runs": runs, "ratios": {}}
for w in sorted({r["workload"] for r in runs}):
    by = {r["policy"]: r for r in runs if r["workload"] == w}
    sc, t = by.get("stop-copy"), by.get("tlm")
    if sc and t and t["completed"] and sc["completed"] and t["downtime_ms"] > 0:
        res["ratios"][w] = {
            "stopcopy_downtime_over_tlm_downtime": round(sc["downtime_ms"] / t["downtime_ms"], 2),
            "tlm_elapsed_over_stopcopy_elapsed": round(t["elapsed_ms"] / max(sc["elapsed_ms"], 1), 2),
            "precopy_converged": by.get("precopy", {}).get("completed"),
            "tlm_verified": t["verified"],
            "target_downtime_ratio_ge_5": sc["downtime_ms"] / t["downtime_ms"] >= 5,
            "target_elapsed_ratio_le_1_5": t["elapsed_ms"] / max(sc["elapsed_ms"], 1) <= 1.5,
        }
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
echo "bench: results in $out" >&2
