#!/usr/bin/env python3
"""Runs `tlm bench migrate ... --json` and asserts on the report.

usage: check_migrate.py TLM [--expect completed|not-completed] [--xbzrle]
                            [--zero-copy yes|no] -- <bench migrate args>
completed:      completed, verified byte-equal, every epoch accounted.
not-completed:  completed false, a reason given, and the source's workload
                kept running (it wrote pages after the attempt), exit code 1.
--zero-copy:    whether the pages must (yes) or must not (no) have gone
                zero-copy; with yes, the destination placed every record
                and touched none.
"""
import json, subprocess, sys

def main():
    argv = sys.argv[1:]
    tlm = argv.pop(0)
    expect, xbzrle, zero_copy = "completed", False, None
    while argv and argv[0] != "--":
        a = argv.pop(0)
        if a == "--expect":
            expect = argv.pop(0)
        elif a == "--xbzrle":
            xbzrle = True
        elif a == "--zero-copy":
            zero_copy = argv.pop(0) == "yes"
        else:
            sys.exit("unknown option " + a)
    args = argv[1:]
    cmd = [tlm, "bench", "migrate", "--json"] + args
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=240)
    sys.stderr.write(p.stderr)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        print("no JSON report; stdout was:", p.stdout)
        return 1
    print(json.dumps({k: r[k] for k in ("policy", "workload", "completed", "converged", "verified",
                                        "downtime_ms", "elapsed_ms", "pages_chk", "pages_ps",
                                        "pages_xbzrle", "dirty_tracker", "error")}))
    fails = []
    def check(cond, what):
        if not cond:
            fails.append(what)
    for key in ("policy", "workload", "transport", "completed", "converged", "verified",
                "downtime_ms", "elapsed_ms", "bytes_chk", "bytes_ps", "pages_chk", "pages_ps",
                "dirty_tracker", "epochs"):
        check(key in r, "report lacks " + key)
    if expect == "completed":
        check(p.returncode == 0, "exit code %d" % p.returncode)
        check(r["completed"] is True, "not completed: %s" % r.get("error"))
        check(r["verified"] is True, "destination differs from source (%s pages)" % r.get("mismatched_pages"))
        check(r["mismatched_pages"] == 0, "mismatched pages reported")
        check(r["downtime_ms"] <= r["elapsed_ms"], "downtime above elapsed")
        mem_pages = r["mem"] // 4096
        # every page crossed at least once (zero pages count as records)
        check(r["pages_chk"] + r["pages_ps"] >= mem_pages, "fewer records than pages")
        if r["policy"] == "tlm":
            check(r["pages_chk"] == mem_pages, "tlm: CHK must send each page exactly once")
            for e in r["epochs"]:
                check(e["sent_ps"] <= e["dirtied"] + mem_pages, "epoch accounting")
        if r["policy"] == "stop-copy":
            # paused before the first page: nothing is ever dirty, no PS traffic
            check(r["pages_ps"] == 0 and r["pages_chk"] == mem_pages, "stop-copy: one paused pass")
        if xbzrle:
            check(r["pages_xbzrle"] > 0, "no page was delta-encoded")
        if zero_copy is not None:
            check(r["zero_copy"] is zero_copy, "zero_copy is %s" % r["zero_copy"])
            placed = r["pages_placed_at_destination"]
            if zero_copy:
                check(placed == r["pages_chk"] + r["pages_ps"],
                      "%d of %d records placed" % (placed, r["pages_chk"] + r["pages_ps"]))
                check(r["register_s_per_GiB"] > 0, "no registration time")
            else:
                check(placed == 0, "%d records placed in copy mode" % placed)
    else:
        check(p.returncode != 0, "exit code 0 for an incomplete migration")
        check(r["completed"] is False, "completed")
        check(r["converged"] is False, "converged")
        check(bool(r["error"]), "no reason given")
        check(r["workload_writes"] > 0, "workload did not run")
    for f in fails:
        print("FAIL:", f)
    return 1 if fails else 0

sys.exit(main())
