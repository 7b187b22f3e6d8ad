#!/usr/bin/env python3
"""Counts one `meson test` run for scripts/test.sh, refusing to be fooled.

usage: count-results.py TESTLOG_JSON LIST_FILE EXPECTED_SKIPS MESON_RC

Prints "PASSED FAILED SKIPPED" on the last line of stdout, every problem
on stderr. A failure is counted for: a test whose result is not OK or
EXPECTEDFAIL; a skip not in EXPECTED_SKIPS (or whose condition does not
hold on this machine); a line of the log that is not a JSON result; a test
`meson test --list` named (LIST_FILE) that has no result, or a result for
a test it did not name; meson's exit status non-zero with no failing
result to explain it.
"""
import fnmatch, json, os, platform, re, sys

def kernel():
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

def holds(when):
    when = when.strip()
    if when == "always":
        return True
    if when == "not-root":
        return os.geteuid() != 0
    m = re.fullmatch(r"env:(\w+)=(.*)", when)
    if m:
        return os.environ.get(m.group(1)) == m.group(2)
    m = re.fullmatch(r"kernel<(\d+)\.(\d+)", when)
    if m:
        return kernel() < (int(m.group(1)), int(m.group(2)))
    raise ValueError("unknown condition " + when)

def expected_skips(path):
    rules = []
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not parts[2]:
            sys.exit("%s:%d: want NAME-GLOB | WHEN | REASON" % (path, n))
        holds(parts[1])  # an unknown condition is an error in the file
        rules.append(parts)
    return rules

def main():
    log, listed_file, skips_file, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rules = expected_skips(skips_file)
    listed = [l.strip() for l in open(listed_file) if " / " in l]
    p = f = s = 0
    seen = {}
    def fail(msg):
        nonlocal f
        f += 1
        print("FAIL: " + msg, file=sys.stderr)
    try:
        lines = open(log).read().splitlines()
    except OSError as e:
        lines = []
        fail("no test log (%s)" % e)
    for n, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
            name, res = r["name"], r["result"]
        except Exception:
            fail("line %d of the test log is not a result: %.80r" % (n, line))
            continue
        seen[name] = seen.get(name, 0) + 1
        if res in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif res == "SKIP":
            why = next((ln for ln in (r.get("stdout") or "").splitlines() if "SKIP" in ln), "")
            rule = next((x for x in rules if fnmatch.fnmatchcase(name, x[0]) and holds(x[1])), None)
            if rule:
                s += 1
                print("skipped (expected: %s): %s" % (rule[2], name), file=sys.stderr)
            else:
                fail("%s skipped, not in %s: %s" % (name, os.path.basename(skips_file),
                                                     why or "no reason printed"))
        else:
            fail("%s: %s" % (name, res))
    for name in listed:
        if name not in seen:
            fail("%s is listed by meson test --list but has no result" % name)
    for name, k in seen.items():
        if name not in listed:
            fail("%s has a result but meson test --list did not name it" % name)
        elif k > 1:
            fail("%s has %d results" % (name, k))
    if len(listed) == 0:
        fail("meson test --list named no test")
    if rc != 0 and f == 0:
        fail("meson test exited %d with no failing result" % rc)
    print("%d results in the log, %d tests listed" % (sum(seen.values()), len(listed)), file=sys.stderr)
    print(p, f, s)

main()
