#!/usr/bin/env python3
"""Mutation check: plants each bug of tests/mutants.txt in a scratch copy
of the tree, builds, runs the fast suites, and reports killed or survived.
scripts/mutants.sh is the entry point; docs/testing.md says how to add one.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time

FAST = ["unit", "conformance", "engine", "memsrc", "mr"]
# conformance+rdma boots the Soft-RoCE VM: not fast.
NO_SUITE = ["rdma", "vm"]

def parse(path):
    out = []
    for n, line in enumerate(open(path), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = [x.strip() for x in line.rstrip("\n").split(" ::: ")]
        if len(f) != 5:
            sys.exit("%s:%d: want NAME ::: FILE ::: OLD ::: NEW ::: TESTS" % (path, n))
        unesc = lambda s: s.replace("\\n", "\n").replace("\\t", "\t")
        out.append(dict(name=f[0], file=f[1], old=unesc(f[2]), new=unesc(f[3]),
                        tests=f[4].split()))
    return out

def sh(cmd, cwd, log, timeout=None):
    with open(log, "a") as lf:
        lf.write("+ %s\n" % " ".join(cmd))
        lf.flush()
        try:
            return subprocess.run(cmd, cwd=cwd, stdout=lf, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            lf.write("timed out\n")
            return 124

def failed_tests(build):
    names = []
    try:
        for line in open(os.path.join(build, "meson-logs", "testlog.json")):
            r = json.loads(line)
            if r["result"] not in ("OK", "EXPECTEDFAIL", "SKIP"):
                names.append(r["name"].split(" / ")[-1])
    except (OSError, ValueError):
        pass
    return names

def skipped_tests(build):
    names = []
    try:
        for line in open(os.path.join(build, "meson-logs", "testlog.json")):
            r = json.loads(line)
            if r["result"] == "SKIP":
                names.append(r["name"].split(" / ")[-1])
    except (OSError, ValueError):
        pass
    return names

def outputs_for(build, names):
    """The ninja outputs the named tests need (their executables, the
    targets they depend on): a mutant rebuilds only those."""
    intro = lambda what: json.loads(subprocess.run(
        ["meson", "introspect", "--" + what], cwd=build, stdout=subprocess.PIPE,
        check=True).stdout)
    files = {t["id"]: t["filename"] for t in intro("targets")}
    out = set()
    for t in intro("tests"):
        if t["name"] in names:
            for d in t.get("depends", []):
                out.update(os.path.relpath(f, build) for f in files.get(d, []))
            if t["cmd"] and t["cmd"][0].startswith(build):
                out.add(os.path.relpath(t["cmd"][0], build))
    return sorted(out)

def run_tests(tree, build, log, names=None):
    """Returns (rc, failing test names, skipped names)."""
    cmd = ["meson", "test", "-C", build, "--num-processes", "2", "--no-rebuild"]
    if names:
        cmd += names
    else:
        for s in FAST:
            cmd += ["--suite", s]
        for s in NO_SUITE:
            cmd += ["--no-suite", s]
        cmd += ["--maxfail", "1"]
    logf = os.path.join(build, "meson-logs", "testlog.json")
    if os.path.exists(logf):
        os.unlink(logf)
    rc = sh(cmd, tree, log, timeout=1800)
    return rc, failed_tests(build), skipped_tests(build)

def main():
    ap = argparse.ArgumentParser(description="mutation check of the fast suites")
    ap.add_argument("--runs", type=int, default=3, help="runs per mutant (default 3)")
    ap.add_argument("--only", action="append", default=[], help="only this mutant (repeatable)")
    ap.add_argument("--list", default="tests/mutants.txt")
    ap.add_argument("--json", help="write the report here too")
    ap.add_argument("--keep", action="store_true", help="keep the scratch tree")
    ap.add_argument("--tree", help="reuse this scratch tree (from --keep): only changed files rebuild")
    a = ap.parse_args()
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    mutants = parse(os.path.join(src, a.list))
    if a.only:
        mutants = [m for m in mutants if m["name"] in a.only]
        if not mutants:
            sys.exit("no mutant named %s" % ", ".join(a.only))
    tree = os.path.abspath(a.tree) if a.tree else tempfile.mkdtemp(prefix="tlm-mutants.")
    log = os.path.join(tree, "mutants.log")
    build = os.path.join(tree, "build")
    t0 = time.time()
    # The tree as it is (tracked and new files, uncommitted changes too).
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src,
                           stdout=subprocess.PIPE, check=True).stdout.split(b"\0")
    for f in files:
        f = f.decode()
        if not f or not os.path.isfile(os.path.join(src, f)):
            continue
        os.makedirs(os.path.join(tree, os.path.dirname(f)), exist_ok=True)
        data = open(os.path.join(src, f), "rb").read()
        dst = os.path.join(tree, f)
        # Written only when it differs, with a fresh mtime, so that a
        # reused tree (--tree) rebuilds exactly what changed.
        if not os.path.exists(dst) or open(dst, "rb").read() != data:
            open(dst, "wb").write(data)
            shutil.copymode(os.path.join(src, f), dst)
    print("scratch tree %s (log %s)" % (tree, log), flush=True)
    if (not os.path.exists(os.path.join(build, "build.ninja")) and
        sh(["meson", "setup", build, "-Dwerror=true", "-Drdma=disabled"], tree, log)) or \
       sh(["ninja", "-C", build], tree, log):
        sys.exit("the unmutated tree does not build; see " + log)
    # Each mutant's own killers first, unmutated: they must pass, or a
    # "kill" would prove nothing.
    base = sorted({t for m in mutants for t in m["tests"]})
    rc, bad, skipped = run_tests(tree, build, log, base)
    if rc or bad or skipped:
        sys.exit("unmutated, the killer tests do not all pass (failed %s, skipped %s); see %s"
                 % (bad, skipped, log))
    report = []
    for m in mutants:
        path = os.path.join(tree, m["file"])
        orig = open(path).read()
        n = orig.count(m["old"])
        r = dict(name=m["name"], file=m["file"], runs=[], killed_by=[])
        if n != 1:
            r["status"] = "stale: the text occurs %d times in %s" % (n, m["file"])
            report.append(r)
            print("%-28s %s" % (m["name"], r["status"]), flush=True)
            continue
        try:
            open(path, "w").write(orig.replace(m["old"], m["new"]))
            if sh(["ninja", "-C", build] + outputs_for(build, m["tests"]), tree, log):
                r["status"] = "does not build"
            else:
                for _ in range(a.runs):
                    t = time.time()
                    rc, bad, skipped = run_tests(tree, build, log, m["tests"])
                    how = "named"
                    if not bad:
                        if sh(["ninja", "-C", build], tree, log):
                            bad = []  # an invalid mutant, not a kill
                        else:
                            rc, bad, skipped = run_tests(tree, build, log)
                        how = "fast suites"
                    if bad:
                        # What the killing tests said, for the curious.
                        os.makedirs(os.path.join(tree, "logs"), exist_ok=True)
                        shutil.copy(os.path.join(build, "meson-logs", "testlog.txt"),
                                    os.path.join(tree, "logs", "%s-%d.txt"
                                                 % (m["name"], len(r["runs"]) + 1)))
                    r["runs"].append(dict(killed=bool(bad), by=bad, tests=how,
                                          seconds=round(time.time() - t, 1)))
                    for b in bad:
                        if b not in r["killed_by"]:
                            r["killed_by"].append(b)
                r["status"] = "killed" if all(x["killed"] for x in r["runs"]) else "survived"
        finally:
            open(path, "w").write(orig)
        report.append(r)
        print("%-28s %-9s %d/%d runs  by %s" % (m["name"], r["status"],
              sum(x["killed"] for x in r["runs"]), len(r["runs"]),
              ", ".join(r["killed_by"]) or "-"), flush=True)
    killed = sum(r["status"] == "killed" for r in report)
    summary = dict(mutants=len(report), killed=killed, runs_each=a.runs,
                   seconds=round(time.time() - t0), report=report)
    print("%d of %d mutants killed in every one of %d runs (%d s)" %
          (killed, len(report), a.runs, summary["seconds"]))
    print(json.dumps(summary))
    if a.json:
        json.dump(summary, open(a.json, "w"), indent=1)
    if not a.keep:
        shutil.rmtree(tree, ignore_errors=True)
    return 0 if killed == len(report) else 1

sys.exit(main())
