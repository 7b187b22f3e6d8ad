#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checkpoint files (core/ckpt.c) through `tlm bench checkpoint`,
`tlm bench restore` and `tlm checkpoint --check`, one case per run:

  roundtrip-tlm, roundtrip-stop-copy: a workload writes while the memory is
      checkpointed; restored through the engine, the memory equals the
      memory at the pause; --check passes.
  sparse: mostly-zero memory gives a file with little on disk.
  incremental: a second checkpoint into the same file writes fewer pages
      than the first, and the file still restores.
  damaged: one flipped byte in a page, in the header, in the page table
      or the device-state area, a truncated file and another format
      version are each refused by --check and by restore, with a message
      that says what is wrong.
  killed: SIGKILL of the writer mid-checkpoint leaves the previous file
      byte for byte as it was, and valid.

usage: test_checkpoint.py TLM CASE
"""
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

TLM = sys.argv[1]
CASE = sys.argv[2]
HDR_FIXED = 256


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(args, expect_rc=0, timeout=240):
    p = subprocess.run([TLM] + args, capture_output=True, text=True, timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        fail("tlm %s: exit %d, wanted %d\nstdout: %s\nstderr: %s" %
             (" ".join(args), p.returncode, expect_rc, p.stdout[-2000:], p.stderr[-2000:]))
    return p


def bench(path, *extra):
    p = run(["bench", "checkpoint", "--to", path, "--json"] + list(extra))
    r = json.loads(p.stdout)
    for c in r["checkpoints"]:
        if not c["completed"]:
            fail("checkpoint not completed: %s" % c.get("error"))
    return r


def check_ok(path):
    p = run(["checkpoint", "--check", path, "--json"])
    r = json.loads(p.stdout)
    if not r["valid"]:
        fail("--check: %s" % r)
    return r


def restore_ok(path):
    p = run(["bench", "restore", "--from", path, "--json"])
    r = json.loads(p.stdout)
    if not (r["completed"] and r["verified"]):
        fail("restore: %s" % r)
    return r


def refused(path, words):
    """--check and restore must both refuse, saying words."""
    p = run(["checkpoint", "--check", path], expect_rc=1)
    if not all(w in p.stderr for w in words):
        fail("--check said %r, wanted %r" % (p.stderr.strip(), words))
    p = run(["bench", "restore", "--from", path], expect_rc=1)
    if "refused" not in p.stderr or not all(w in p.stderr for w in words):
        fail("restore said %r, wanted 'refused' and %r" % (p.stderr.strip(), words))
    print("refused: " + p.stderr.strip())


def header(path):
    with open(path, "rb") as f:
        h = f.read(HDR_FIXED)
    (hdr_len, ps, n) = struct.unpack(">III", h[12:24])
    table_off, table_len, dev_off, dev_len = struct.unpack(">QQQQ", h[48:80])
    return dict(hdr_len=hdr_len, page_size=ps, n=n, table_off=table_off,
                table_len=table_len, data_off=dev_off - 0, dev_off=dev_off, dev_len=dev_len,
                data_start=(table_off + table_len + ps - 1) // ps * ps)


def flip(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x40]))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    d = tempfile.mkdtemp(prefix="tlm-ckpt-")
    try:
        f = os.path.join(d, "mem.tlmc")
        if CASE in ("roundtrip-tlm", "roundtrip-stop-copy"):
            pol = CASE.split("-", 1)[1]
            r = bench(f, "--policy", pol, "--workload", "mg", "--mem", "64M",
                      "--rate", "50000", "--verify")
            c = r["checkpoints"][0]
            if not (r["completed"] and r["verified"] and c["verified"]):
                fail("not verified: %s" % r)
            for k in ("downtime_ms", "elapsed_ms", "file_bytes", "pages_written"):
                if k not in r:
                    fail("JSON lacks %s" % k)
            if c["pages_written"] != 16384 or c["incremental"] or c["epoch"] != 1:
                fail("a new 64 MiB file filled whole must have all 16384 pages written: %s" % c)
            if r["file_bytes"] < 64 << 20 or r["file_bytes"] > (64 << 20) + (1 << 20):
                fail("file of %d bytes for 64 MiB" % r["file_bytes"])
            info = check_ok(f)
            if info["epoch"] != 1 or info["pages_data"] != 16384:
                fail("--check: %s" % info)
            restore_ok(f)
        elif CASE == "sparse":
            r = bench(f, "--workload", "hotset", "--mem", "512M", "--fill", "0",
                      "--rate", "2000", "--verify")
            if not r["verified"]:
                fail("not verified: %s" % r)
            if r["file_bytes"] < 512 << 20:
                fail("apparent size %d below memory" % r["file_bytes"])
            if r["disk_bytes"] > 64 << 20:
                fail("mostly-zero 512 MiB took %d bytes on disk" % r["disk_bytes"])
            info = check_ok(f)
            print("sparse: %d MiB apparent, %.1f MiB on disk, %d pages with data" %
                  (r["file_bytes"] >> 20, r["disk_bytes"] / 1048576.0, info["pages_data"]))
            restore_ok(f)
        elif CASE == "incremental":
            r = bench(f, "--workload", "hotset", "--mem", "64M", "--rate", "2000",
                      "--count", "2", "--verify")
            a, b = r["checkpoints"]
            if a["incremental"] or not b["incremental"] or b["epoch"] != 2:
                fail("the second checkpoint must be incremental, epoch 2: %s" % r)
            if not (a["verified"] and b["verified"]):
                fail("not verified: %s" % r)
            if not b["pages_written"] < a["pages_written"]:
                fail("incremental wrote %d pages, the first %d" %
                     (b["pages_written"], a["pages_written"]))
            print("first %d pages, incremental %d" % (a["pages_written"], b["pages_written"]))
            if check_ok(f)["epoch"] != 2:
                fail("--check: epoch is not 2")
            restore_ok(f)
        elif CASE == "damaged":
            bench(f, "--workload", "random", "--mem", "16M", "--rate", "10000")
            check_ok(f)
            h = header(f)
            ps = h["page_size"]
            cases = [
                ("page", lambda g: flip(g, h["data_start"] + 1234 * ps + 77), ["damaged page"]),
                ("last page", lambda g: flip(g, h["dev_off"] - 1), ["damaged page"]),
                ("header", lambda g: flip(g, 30), ["header damaged"]),
                ("region name", lambda g: flip(g, HDR_FIXED + 1), ["header damaged"]),
                ("page table", lambda g: flip(g, h["table_off"] + 4 * 999 + 2),
                 ["page table", "damaged"]),
                ("magic", lambda g: flip(g, 0), ["not a tlm checkpoint"]),
            ]
            for name, mut, words in cases:
                g = os.path.join(d, "bad.tlmc")
                shutil.copy(f, g)
                mut(g)
                print("flipped a byte in the %s" % name)
                refused(g, words)
            g = os.path.join(d, "short.tlmc")
            shutil.copy(f, g)
            os.truncate(g, os.path.getsize(f) - ps)
            refused(g, ["truncated"])
            os.truncate(g, 100)
            refused(g, ["truncated"])
            g = os.path.join(d, "v2.tlmc")
            shutil.copy(f, g)
            with open(g, "r+b") as fh:
                fh.seek(8)
                fh.write(struct.pack(">I", 2))
            refused(g, ["version 2", "reads version 1"])
            run(["checkpoint", "--check", os.path.join(d, "none")], expect_rc=1)
            check_ok(f)    # the original was never touched
        elif CASE == "killed":
            bench(f, "--workload", "random", "--mem", "256M", "--rate", "5000")
            before = sha(f)
            check_ok(f)
            tmp = f + ".tmp"
            killed = False
            for attempt in range(3):
                p = subprocess.Popen([TLM, "bench", "checkpoint", "--to", f, "--workload",
                                      "random", "--mem", "256M", "--rate", "5000",
                                      "--seed", str(attempt + 7), "--warmup-ms", "50"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
                # The writer runs in 1 ms steps between SIGSTOPs, so it
                # cannot get from under 4 MiB written to a finished file
                # between a look at its .tmp and the kill.
                deadline = time.time() + 120
                while p.poll() is None and time.time() < deadline:
                    try:
                        os.killpg(p.pid, signal.SIGSTOP)
                        if os.stat(tmp).st_blocks * 512 >= 4 << 20:
                            os.killpg(p.pid, signal.SIGKILL)
                            killed = True
                            break
                    except (FileNotFoundError, ProcessLookupError):
                        pass
                    try:
                        os.killpg(p.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                    time.sleep(0.001)
                p.wait()
                if killed:
                    break
                # It finished before the kill: the new file is the baseline.
                before = sha(f)
            if not killed:
                fail("every checkpoint finished before it could be killed")
            print("killed the writer with %.1f MiB in %s" %
                  (os.stat(tmp).st_blocks * 512 / 1048576.0, os.path.basename(tmp)))
            if sha(f) != before:
                fail("the previous checkpoint changed under a killed writer")
            info = check_ok(f)
            print("previous checkpoint intact: epoch %d, valid" % info["epoch"])
            run(["checkpoint", "--check", tmp], expect_rc=1)
            restore_ok(f)
            # The next checkpoint drops the dead writer's leftover.
            r = bench(f, "--workload", "idle", "--mem", "256M", "--fill", "0", "--rate", "0")
            if os.path.exists(tmp):
                fail("%s left behind after a later checkpoint" % tmp)
            if r["checkpoints"][0]["epoch"] != info["epoch"] + 1:
                fail("epoch did not advance: %s" % r)
        else:
            fail("unknown case " + CASE)
        print("PASS: " + CASE)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
