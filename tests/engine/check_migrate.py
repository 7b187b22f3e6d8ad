#!/usr/bin/env python3
"""Runs `tlm bench migrate ... --json` and asserts on the report.

usage: check_migrate.py TLM [--expect completed|not-completed|refused-commit]
                            [--expect-error REGEX] [--xbzrle]
                            [--zero-copy yes|no] [--max-dest-rss BYTES]
                            -- <bench migrate args>
completed:      completed, verified byte-equal, every epoch accounted
                (the page saver's pages per epoch add up to pages_ps, which
                is at most the pages found dirty), stale records at the
                destination only where a page-saver record overtook a
                checkpoint one, and the stage-3 steps add up to the
                downtime (within 10% or 10 ms).
not-completed:  completed false, a reason given (matching --expect-error
                REGEX if given), and the source's workload kept running
                (it wrote pages during a wait after the attempt), exit 1.
refused-commit: the same, except that the source did reach stage 3
                (converged): the destination refused to confirm it.
--zero-copy:    whether the pages must (yes) or must not (no) have gone
                zero-copy; with yes, the destination placed every record
                and touched none.
--expect-log:   REGEX that some line either end logged must match.
--staged:       with --zero-copy yes: every placed record went sealed
                through the staging buffers (--protect encrypt on rdma).
--max-dest-rss: the destination's peak RSS must stay below BYTES, and some
                zero pages must have been left untouched there.
"""
import json, re, subprocess, sys

def main():
    argv = sys.argv[1:]
    tlm = argv.pop(0)
    expect, xbzrle, zero_copy, max_rss, expect_error = "completed", False, None, None, None
    staged, expect_log = False, None
    while argv and argv[0] != "--":
        a = argv.pop(0)
        if a == "--expect":
            expect = argv.pop(0)
        elif a == "--xbzrle":
            xbzrle = True
        elif a == "--zero-copy":
            zero_copy = argv.pop(0) == "yes"
        elif a == "--expect-log":
            expect_log = argv.pop(0)
        elif a == "--staged":
            staged = True
        elif a == "--expect-error":
            expect_error = argv.pop(0)
        elif a == "--max-dest-rss":
            max_rss = int(argv.pop(0))
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
                "dirty_tracker", "epochs", "stage3"):
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
        # Every page-saver record is booked to one epoch, and the page
        # saver only sends pages some tick found dirty.
        sent_ps = sum(e["sent_ps"] for e in r["epochs"])
        dirtied = sum(e["dirtied"] for e in r["epochs"])
        check(sent_ps == r["pages_ps"], "epochs book %d page-saver pages, pages_ps %d" %
              (sent_ps, r["pages_ps"]))
        check(r["pages_ps"] <= dirtied, "pages_ps %d above the %d pages found dirty" %
              (r["pages_ps"], dirtied))
        # A record goes stale only when a page-saver record of its page got
        # there first with a higher key: a checkpoint record overtaken (the
        # page saver's own records of a page are ordered on one lane).
        stale = r["pages_stale_at_destination"]
        check(stale <= min(r["pages_ps"], r["pages_chk"]),
              "%d stale records at the destination, %d page-saver records" % (stale, r["pages_ps"]))
        if r["pages_ps"] == 0:
            check(stale == 0, "%d stale records without page-saver records to beat them" % stale)
        if r["pages_placed_at_destination"] == r["pages_chk"] + r["pages_ps"]:
            # placed by the transport (RDMA WRITE): the source ordered them,
            # nothing is arbitrated, nothing is stale
            check(stale == 0, "%d stale records, every record placed" % stale)
        if r["policy"] == "stop-copy":
            # paused before the first page: nothing is ever dirty, no PS traffic
            check(r["pages_ps"] == 0 and r["pages_chk"] == mem_pages, "stop-copy: one paused pass")
        s3 = r.get("stage3", {})
        steps = ("pause_ms", "chk_ms", "sync_ms", "ps_ms", "last_ms", "devstate_ms", "wait_ms")
        for k in steps + ("downtime_ms", "dirty_pages", "ps_pages", "backlog_records", "model"):
            check(k in s3, "stage3 lacks " + k)
        if all(k in s3 for k in steps + ("downtime_ms",)):
            total = sum(s3[k] for k in steps)
            print("stage3: %s = %.3f ms, downtime %.3f ms" %
                  (" + ".join("%s %.3f" % (k[:-3], s3[k]) for k in steps), total, s3["downtime_ms"]))
            check(all(s3[k] >= 0 for k in steps), "a negative stage-3 step")
            # each step starts where the one before ended, on one clock, so
            # the steps are the downtime (the JSON rounds each to 1 us)
            check(abs(total - s3["downtime_ms"]) <= 0.001 * (len(steps) + 1),
                  "stage-3 steps add up to %.3f ms, downtime %.3f ms" % (total, s3["downtime_ms"]))
            check(abs(r["downtime_ms"] - s3["downtime_ms"]) <= 1,
                  "downtime_ms %d against stage3 %.3f" % (r["downtime_ms"], s3["downtime_ms"]))
            check(s3["ps_pages"] <= s3["dirty_pages"], "last round sent more than was dirty")
            if r["policy"] == "stop-copy":
                check(s3["chk_ms"] > 0, "stop-copy: the paused pass is not in stage 3")
            else:
                check(s3["chk_ms"] == 0, "a CHK pass inside stage 3")
                # SYNC before the pause: the destination had applied everything
                check(s3["backlog_records"] == 0,
                      "destination %d records behind at the pause" % s3["backlog_records"])
                check(s3["model"]["predicted_ms"] > 0, "no predicted downtime")
        if xbzrle:
            check(r["pages_xbzrle"] > 0, "no page was delta-encoded")
        if max_rss is not None:
            check(r["peak_rss_destination_bytes"] < max_rss,
                  "destination peak RSS %d >= %d" % (r["peak_rss_destination_bytes"], max_rss))
            check(r["pages_zero_kept_at_destination"] > 0, "no zero page left untouched")
        if zero_copy is not None:
            check(r["zero_copy"] is zero_copy, "zero_copy is %s" % r["zero_copy"])
            placed = r["pages_placed_at_destination"]
            if zero_copy:
                check(placed == r["pages_chk"] + r["pages_ps"],
                      "%d of %d records placed" % (placed, r["pages_chk"] + r["pages_ps"]))
                if staged:
                    # nothing of the regions is pinned, only staging buffers
                    check(r["pages_placed_encrypted_at_destination"] == placed,
                          "%d of %d placed records went through staging" %
                          (r["pages_placed_encrypted_at_destination"], placed))
                else:
                    check(r["pages_placed_encrypted_at_destination"] == 0,
                          "placed records went through staging")
                    check(r["register_s_per_GiB"] > 0, "no registration time")
            else:
                check(placed == 0, "%d records placed in copy mode" % placed)
    else:
        check(p.returncode != 0, "exit code 0 for an incomplete migration")
        check(r["completed"] is False, "completed")
        check(r["converged"] is (expect == "refused-commit"), "converged")
        check(bool(r["error"]), "no reason given")
        check(r["workload_writes_after_failure"] > 0,
              "the workload wrote nothing after the failed attempt: the source was left paused")
        if expect_error is not None:
            check(re.search(expect_error, r["error"] or "") is not None,
                  "error %r does not match %r" % (r["error"], expect_error))
    if expect_log is not None:
        check(re.search(expect_log, p.stderr) is not None, "no log line matches %r" % expect_log)
    for f in fails:
        print("FAIL:", f)
    return 1 if fails else 0

sys.exit(main())
