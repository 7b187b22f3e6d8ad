#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Live checkpointing (TLC) of one running test guest, against QEMU's own
ways of saving a VM to a file, in one run, one after the other on the same
guest and workload (QEMU built with tlm's patch series, TCG):

  tlm               tlm checkpoint --qmp --to FILE (policy tlm: CHK + PS
                    threads while the VM runs, then stage 3, then cont)
  tlm-stop-copy     the same with policy stop-copy (paused for the whole save)
  stop-and-save     QMP stop; migrate uri=exec:cat > FILE; cont (QEMU's own
                    stream, the VM paused throughout)
  background-snapshot  QEMU 7.2's background-snapshot capability (userfaultfd
                    write protection: the VM runs while RAM is saved as of the
                    start) to exec:cat > FILE
  exec-precopy      migrate uri=exec:cat > FILE with the VM running (QEMU's
                    precopy; cancelled after --precopy-cap s if it has not
                    converged), then cont

For each: downtime (the VM stopped, host clock: from the command that
stopped it, or QEMU's own figure, to the cont that resumed it), total time
(until the file is complete), file size (apparent and on disk), and the
guest's slowdown: its page-write rate while the checkpoint ran against the
rate in the seconds before (host clock, from its serial status lines).
Then restore: tlm restore of the tlm file into a fresh QEMU (-incoming
defer) against reading that file sequentially (cat > /dev/null), and QEMU's
migrate-incoming exec:cat of the stop-and-save file. Prints one JSON
object (with the load average: the machine may be shared).

    bench/qemu_checkpoint.py [--build build] [--mem 512] [--set-mib 128]
        [--rate 0] [--pattern mg] [--no-fill] [--methods M,...] [--dir DIR]
        [--json-out F]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'qemu'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'guest'))
import guestrun  # noqa: E402
import test_relay as tr  # noqa: E402

METHODS = ['tlm', 'tlm-stop-copy', 'stop-and-save', 'background-snapshot', 'exec-precopy']


def VM(qemu, kernel, workdir, name, mem, append, incoming=False):
    return tr.VM(guestrun, kernel, workdir, name, append, incoming=incoming,
                 mem_mib='%dM' % mem, qemu=qemu, qmp_timeout=60)


class Sampler(threading.Thread):
    """(host seconds, guest page writes) from the serial log, every 20 ms."""

    def __init__(self, log):
        super().__init__(daemon=True)
        self.log = log
        self.pts = []
        self.done = False

    def run(self):
        while not self.done:
            self.log.poll()
            st = self.log.last('status')
            if st:
                self.pts.append((time.monotonic(), st['writes']))
            time.sleep(0.02)

    def rate(self, t0, t1):
        a = [p for p in self.pts if p[0] <= t0]
        b = [p for p in self.pts if p[0] <= t1]
        if not a or not b or b[-1][0] <= a[-1][0]:
            return None
        return (b[-1][1] - a[-1][1]) / (t1 - t0)


def disk(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def qemu_file_method(a, vm, method, f):
    """QEMU's own stream to exec:cat > f. Returns (completed, downtime, total, extra)."""
    q = vm.q
    uri = 'exec:cat > %s' % f
    extra = {}
    if method == 'background-snapshot':
        q.cmd('migrate-set-capabilities',
              capabilities=[{'capability': 'background-snapshot', 'state': True}])
    q.cmd('migrate-set-parameters', **{'max-bandwidth': 100 << 30})
    t0 = time.monotonic()
    try:
        if method == 'stop-and-save':
            q.cmd('stop')
            t_stop = time.monotonic()
        q.cmd('migrate', uri=uri)
        st = tr.migration(q, ('completed', 'failed', 'cancelled'),
                          a.precopy_cap if method == 'exec-precopy' else 600, 0.005)
        t_done = time.monotonic()
        if st.get('status') not in ('completed', 'failed', 'cancelled'):
            q.cmd('migrate_cancel')
            st = tr.migration(q, ('failed', 'cancelled'), 60, 0.005)
            extra['why'] = 'not converged in %d s' % a.precopy_cap
        completed = st.get('status') == 'completed'
        if method == 'stop-and-save':
            q.cmd('cont')
            downtime = (time.monotonic() - t_stop) * 1000
        elif method == 'exec-precopy' and completed:
            q.cmd('cont')
            downtime = st.get('downtime', 0) + (time.monotonic() - t_done) * 1000
        else:
            downtime = st.get('downtime', 0)
        if q.cmd('query-status')['status'] != 'running':
            q.cmd('cont')
        for _ in range(50):
            if st.get('total-time') or not completed:
                break
            time.sleep(0.02)
            st = q.cmd('query-migrate')
        extra['qemu_downtime_ms'] = st.get('downtime')
        extra['qemu_total_ms'] = st.get('total-time')
        if st.get('error-desc'):
            extra['why'] = st['error-desc']
        return completed, downtime, (t_done - t0) * 1000, extra
    finally:
        if method == 'background-snapshot':
            q.cmd('migrate-set-capabilities',
                  capabilities=[{'capability': 'background-snapshot', 'state': False}])


def run_method(a, vm, sampler, method, f):
    if os.path.exists(f):
        os.unlink(f)
    time.sleep(a.settle)
    t_b = time.monotonic()
    time.sleep(a.before_s)
    t0 = time.monotonic()
    r = {'method': method}
    if method.startswith('tlm'):
        p = subprocess.run([a.tlm, 'checkpoint', '--qmp', vm.tlm_qmp, '--to', f, '--json',
                            '--policy', 'stop-copy' if method == 'tlm-stop-copy' else 'tlm'],
                           capture_output=True, text=True, timeout=900)
        t1 = time.monotonic()
        j = json.loads(p.stdout.strip().splitlines()[-1])
        r.update(completed=j['completed'], downtime_ms=j['downtime_ms'],
                 total_ms=j['total_ms'], tlm=j)
        if not j['completed']:
            r['why'] = j.get('error')
    else:
        completed, down, total, extra = qemu_file_method(a, vm, method, f)
        t1 = time.monotonic()
        r.update(completed=completed, downtime_ms=round(down, 1), total_ms=round(total, 1),
                 **extra)
    time.sleep(0.3)
    before = sampler.rate(t_b, t0)
    during = sampler.rate(t0, t1)
    r['writes_per_s_before'] = before
    r['writes_per_s_during'] = during
    r['slowdown'] = (1 - during / before) if before and during is not None else None
    if r['completed'] and os.path.exists(f):
        r['file_bytes'], r['disk_bytes'] = disk(f)
    return r


def restore_runs(a, workdir, files):
    out = {}
    f = files.get('tlm')
    if f and os.path.exists(f):
        dst = VM(a.qemu, a.kernel, workdir, 'restore-tlm', a.mem, a.append, incoming=True)
        try:
            p = subprocess.run([a.tlm, 'restore', '--qmp', dst.tlm_qmp, '--from', f, '--json'],
                               capture_output=True, text=True, timeout=900)
            lines = p.stdout.strip().splitlines()
            j = json.loads(lines[-1]) if lines else {'completed': False, 'error': p.stderr}
            out['tlm_restore'] = j
        finally:
            dst.stop()
        t0 = time.monotonic()
        subprocess.run(['sh', '-c', 'cat "$1" > /dev/null', 'sh', f], check=True)
        out['read_file_ms'] = round((time.monotonic() - t0) * 1000, 1)
        if out['tlm_restore'].get('completed'):
            out['restore_over_read'] = round(out['tlm_restore']['total_ms'] /
                                             max(out['read_file_ms'], 1), 2)
    f = files.get('stop-and-save')
    if f and os.path.exists(f):
        dst = VM(a.qemu, a.kernel, workdir, 'restore-qemu', a.mem, a.append, incoming=True)
        try:
            t0 = time.monotonic()
            dst.q.cmd('migrate-incoming', uri='exec:cat %s' % f)
            # The stream was saved paused: the VM loads it and stays paused.
            st = tr.migration(dst.q, ('completed', 'failed'), 600, 0.01)
            out['qemu_exec_restore_status'] = st.get('status')
            out['qemu_exec_restore_ms'] = round((time.monotonic() - t0) * 1000, 1)
        finally:
            dst.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--mem', type=int, default=512)
    ap.add_argument('--set-mib', type=int, default=128, help='the guest working set')
    ap.add_argument('--rate', type=int, default=0, help='guest page writes/s, 0 = unlimited')
    ap.add_argument('--pattern', default='mg')
    ap.add_argument('--no-fill', action='store_true',
                    help='leave RAM outside the working set zero (a mostly idle guest)')
    ap.add_argument('--methods', default=','.join(METHODS))
    ap.add_argument('--precopy-cap', type=int, default=60)
    ap.add_argument('--before-s', type=float, default=3.0)
    ap.add_argument('--settle', type=float, default=2.0)
    ap.add_argument('--dir', help='where the files go (default a temporary directory)')
    ap.add_argument('--json-out')
    a = ap.parse_args()
    a.qemu = os.path.join(a.build, 'qemu-tlm', 'bin', 'qemu-system-x86_64')
    a.kernel = os.path.join(a.build, 'tests', 'guest', 'guest.elf')
    a.tlm = os.path.join(a.build, 'cli', 'tlm')
    for p in (a.qemu, a.kernel, a.tlm):
        if not os.path.exists(p):
            sys.exit('missing %s (scripts/build.sh, scripts/build-qemu.sh)' % p)
    a.append = 'pattern=%s mem=%d rate=%d fill=%d report_ms=100' % (
        a.pattern, a.set_mib, a.rate, 0 if a.no_fill else 1)
    workdir = tempfile.mkdtemp(prefix='tlm-ckpt-bench-', dir=a.dir)
    res = {'mem_mib': a.mem, 'set_mib': a.set_mib, 'rate': a.rate, 'pattern': a.pattern,
           'fill': not a.no_fill,
           'loadavg_before': os.getloadavg(), 'runs': []}
    files = {}
    vm = None
    try:
        vm = VM(a.qemu, a.kernel, workdir, 'src', a.mem, a.append)
        vm.g.wait_filled(600)
        vm.g.wait_status(2, 60)
        sampler = Sampler(vm.g.log)
        sampler.start()
        for m in a.methods.split(','):
            f = os.path.join(workdir, m + '.img')
            r = run_method(a, vm, sampler, m, f)
            r['loadavg'] = os.getloadavg()
            print(json.dumps(r), file=sys.stderr, flush=True)
            res['runs'].append(r)
            if r['completed'] and m in ('tlm', 'stop-and-save'):
                files[m] = f
            elif os.path.exists(f):
                os.unlink(f)
        sampler.done = True
        vm.g.log.poll()
        res['guest_errors'] = vm.g.log.summary()['errors']
        vm.stop()
        vm = None
        res['restore'] = restore_runs(a, workdir, files)
    finally:
        if vm:
            vm.stop()
        subprocess.run(['rm', '-rf', workdir])
    res['loadavg_after'] = os.getloadavg()
    out = json.dumps(res, indent=1)
    if a.json_out:
        with open(a.json_out, 'w') as fh:
            fh.write(out + '\n')
    print(out)


if __name__ == '__main__':
    main()
