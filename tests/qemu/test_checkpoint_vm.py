#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Live checkpointing of a VM (`tlm checkpoint --qmp`, `tlm restore --qmp`)
with the QEMU built with tlm's patch series, under TCG, and the test guest,
which stamps every page it writes and verifies every page it re-reads.

    test_checkpoint_vm.py --qemu Q --kernel guest.elf --guest-py DIR --tlm TLM CASE

  idle, mg     checkpoint the running guest (policy tlm); the VM runs on
               and verifies clean; --check passes; a second QEMU started
               with -incoming defer is restored from the file, runs, and
               its guest verifies every page clean with its serial output
               going on. idle also takes a second, incremental checkpoint,
               which must write fewer pages than the first.
  stop-copy    the same with policy stop-copy (mg), restored over 2 CHK lanes.
  full-speed   the same while the guest writes as fast as it can (mg,
               rate=0).
  remote       the file written by `tlm receive --to-file` (as on another
               host, over loopback here), `tlm checkpoint --to-host`.
  killed       a first checkpoint, then `tlm checkpoint` SIGKILLed while
               it writes the second: the first file is intact byte for byte
               and valid, the VM runs on (QEMU's engine resumes it when
               the session dies, or the killed command's guardian cancels
               the migration first) and verifies clean, and the file
               restores.
  guardian     `tlm checkpoint --to-host` stopped (SIGSTOP) while QEMU
               writes the checkpoint, so QEMU completes it and leaves the VM
               stopped with nobody to send cont; then SIGKILLed: its
               guardian process resumes the VM, which verifies clean, and
               the file (written by `tlm receive --to-file`) restores.
  corrupt      one flipped byte in a page of the file: --check and
               restore refuse it, naming the damage, and the waiting
               QEMU is left untouched (still inmigrate, no migration).

Exit 0 pass, 1 fail, 77 skip (no patched QEMU / no guest).
"""
import argparse
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay as tr  # noqa: E402
from test_relay import check  # noqa: E402


def tlm(a, args, what, timeout=240):
    p = tr.run_tlm([a.tlm] + args)
    rc, out, err = tr.finish(p, what, timeout)
    return rc, out, err


def checkpoint(a, vm, f, policy):
    rc, out, _ = tlm(a, ['checkpoint', '--qmp', vm.tlm_qmp, '--to', f, '--policy', policy,
                         '--json', '--timeout', '200'], 'tlm checkpoint')
    r = json.loads(out.strip().splitlines()[-1])
    check(rc == 0 and r['completed'], 'checkpoint completed: %s' % r.get('error'))
    check(r['resumed'] and r['vm'] == 'running', 'the VM runs on after the checkpoint (%s)'
          % r['vm'])
    check(r['devstate_len'] > 0, 'device state in the file (%d bytes)' % r['devstate_len'])
    check(r['downtime_ms'] >= 0 and r['total_ms'] > 0 and r['pages_written'] > 0,
          'downtime %d ms (QEMU %d, cont %d ms after), total %d ms, %d of %d pages written, '
          '%d bytes on disk' % (r['downtime_ms'], r['qemu_downtime_ms'], r['cont_after_ms'],
                                r['total_ms'], r['pages_written'], r['pages_total'],
                                r['disk_bytes']))
    return r


def remote_checkpoint(a, vm, f, workdir):
    """The file side in another process: tlm receive --to-file."""
    key = tr.psk_file(workdir)
    port = tr.free_port()
    recv = tr.run_tlm([a.tlm, 'receive', '--to-file', f, '--listen', '127.0.0.1:%d' % port,
                       '--psk', key, '--json', '--timeout', '200'])
    time.sleep(0.5)
    rc, out, _ = tlm(a, ['checkpoint', '--qmp', vm.tlm_qmp, '--to-host', '127.0.0.1:%d' % port,
                         '--psk', key, '--json'], 'tlm checkpoint --to-host')
    r = json.loads(out.strip().splitlines()[-1])
    check(rc == 0 and r['completed'] and r['vm'] == 'running',
          'checkpoint to the other side completed, the VM runs on: %s' % r.get('error'))
    rc, out, _ = tr.finish(recv, 'tlm receive --to-file', 120)
    d = json.loads(out.strip().splitlines()[-1])
    check(rc == 0 and d['completed'] and d['pages_written'] > 0 and d['devstate_len'] > 0,
          'tlm receive --to-file wrote %d pages and %d bytes of device state'
          % (d['pages_written'], d['devstate_len']))
    r.update(pages_written=d['pages_written'], file_bytes=d['file_bytes'],
             disk_bytes=d['disk_bytes'])
    return r


def guarded_checkpoint(a, vm, f, workdir):
    """tlm checkpoint killed after QEMU completed, before its cont."""
    key = tr.psk_file(workdir)
    for attempt in range(3):
        port = tr.free_port()
        recv = tr.run_tlm([a.tlm, 'receive', '--to-file', f, '--listen', '127.0.0.1:%d' % port,
                           '--psk', key, '--json', '--timeout', '200'])
        time.sleep(0.5)
        before = vm.q.cmd('query-migrate')
        p = tr.run_tlm([a.tlm, 'checkpoint', '--qmp', vm.tlm_qmp, '--to-host',
                        '127.0.0.1:%d' % port, '--psk', key, '--json'])
        st = tr.migration(vm.q, ('setup', 'active', 'completed', 'failed'), 60, 0.005,
                          before).get('status')
        p.send_signal(signal.SIGSTOP)
        check(st in ('setup', 'active', 'completed'), 'QEMU writes the checkpoint (%s)' % st)
        st = tr.migration(vm.q, ('completed', 'failed', 'cancelled'), 120, 0.005).get('status')
        check(st == 'completed', 'QEMU completed the checkpoint with tlm checkpoint '
              'stopped (%s)' % st)
        status = vm.q.status()
        p.send_signal(signal.SIGKILL)
        p.communicate()
        rc, out, _ = tr.finish(recv, 'tlm receive --to-file', 120)
        d = json.loads(out.strip().splitlines()[-1])
        check(rc == 0 and d['completed'], 'tlm receive --to-file committed the file')
        if status == 'running':
            # tlm checkpoint sent cont before SIGSTOP reached it: again
            print('attempt %d: the checkpoint ended before tlm checkpoint stopped' % attempt)
            continue
        check(status == 'postmigrate', 'the VM waits stopped after the checkpoint (%s)'
              % status)
        end = time.monotonic() + 30
        while vm.q.status() != 'running' and time.monotonic() < end:
            time.sleep(0.1)
        check(vm.q.status() == 'running', 'the guardian resumed the VM after SIGKILL of '
              'tlm checkpoint')
        tr.wait_verified(vm, 'the VM resumed by the guardian')
        return
    check(False, 'every checkpoint finished before tlm checkpoint could be stopped')


def killed_checkpoint(a, vm, f):
    """SIGKILL tlm checkpoint mid-write: the previous file stays as it was."""
    with open(f, 'rb') as fh:
        before = hashlib.sha256(fh.read()).hexdigest()
    tmp = f + '.tmp'
    p = subprocess.Popen([a.tlm, 'checkpoint', '--qmp', vm.tlm_qmp, '--to', f],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    end = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < end:
        try:
            if os.stat(tmp).st_blocks * 512 >= 4 << 20:
                p.send_signal(signal.SIGKILL)
                killed = True
                break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    p.wait()
    check(killed, 'tlm checkpoint killed while it wrote %s' % os.path.basename(tmp))
    with open(f, 'rb') as fh:
        check(hashlib.sha256(fh.read()).hexdigest() == before,
              'the previous checkpoint is intact byte for byte')
    end = time.monotonic() + 60
    st = {}
    while time.monotonic() < end:
        st = vm.q.cmd('query-migrate')
        if st.get('status') in ('failed', 'cancelled', 'completed'):
            break
        time.sleep(0.1)
    # failed: QEMU's engine saw the session die first; cancelled: the
    # guardian of the killed tlm checkpoint (qemu-glue/guard.c) got there
    # first. Either way nothing completed and the VM must run on.
    check(st.get('status') in ('failed', 'cancelled'), 'QEMU saw the checkpoint end '
          'unfinished: %s' % st.get('error-desc', st.get('status')))
    end = time.monotonic() + 20
    while vm.q.status() != 'running' and time.monotonic() < end:
        time.sleep(0.1)
    check(vm.q.status() == 'running', 'the VM runs on after the killed checkpoint')
    tr.wait_verified(vm, 'the VM after the killed checkpoint')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--guest-py', required=True)
    ap.add_argument('--tlm', required=True)
    ap.add_argument('--mem', default='128M')
    ap.add_argument('case')
    a = ap.parse_args()
    guestrun = tr.patched_guestrun(a)
    os.environ['QEMU'] = a.qemu
    tr.MEM_MIB = a.mem
    idle = a.case == 'idle'
    append = 'pattern=idle rate=16384' if idle else 'pattern=mg rate=20000 verify=2'
    if a.case == 'full-speed':
        append = 'pattern=mg rate=0 verify=2'
    policy = 'stop-copy' if a.case == 'stop-copy' else 'tlm'
    workdir = tempfile.mkdtemp(prefix='tlm-ckpt-vm-test-')
    vms = []
    try:
        f = os.path.join(workdir, 'vm.tlmc')
        src = tr.VM(guestrun, a.kernel, workdir, 'src', append)
        vms.append(src)
        src.g.wait_filled(90)
        src.g.wait_status(1, 30)
        check(src.q.status() == 'running', 'source guest running')
        if a.case == 'remote':
            r = remote_checkpoint(a, src, f, workdir)
        else:
            r = checkpoint(a, src, f, policy)
        if a.case == 'killed':
            killed_checkpoint(a, src, f)
        if a.case == 'guardian':
            guarded_checkpoint(a, src, f, workdir)
        if idle:
            check(r['disk_bytes'] < r['file_bytes'],
                  'zero pages left as holes: %d of %d bytes on disk'
                  % (r['disk_bytes'], r['file_bytes']))
        tr.wait_verified(src, 'the checkpointed VM, running on', idle=idle)
        if idle:
            r2 = checkpoint(a, src, f, policy)
            check(r2['incremental'] and r2['epoch'] == 2,
                  'the second checkpoint is incremental (epoch %d)' % r2['epoch'])
            check(r2['pages_written'] < r['pages_written'],
                  'the incremental checkpoint wrote %d pages, the first %d'
                  % (r2['pages_written'], r['pages_written']))
        rc, out, err = tlm(a, ['checkpoint', '--check', f], 'tlm checkpoint --check')
        check(rc == 0 and 'valid' in out, '--check: the file is valid')
        src.stop()
        vms.remove(src)

        dst = tr.VM(guestrun, a.kernel, workdir, 'dst', append, incoming=True)
        vms.append(dst)
        check(dst.q.status() == 'inmigrate', 'the restoring QEMU waits (inmigrate)')
        if a.case == 'corrupt':
            with open(f, 'rb') as fh:
                h = fh.read(256)
            ps = struct.unpack('>I', h[16:20])[0]
            table_off, table_len = struct.unpack('>QQ', h[48:64])
            data = (table_off + table_len + ps - 1) // ps * ps
            with open(f, 'r+b') as fh:
                fh.seek(data + 100 * ps + 5)
                b = fh.read(1)
                fh.seek(data + 100 * ps + 5)
                fh.write(bytes([b[0] ^ 1]))
            rc, out, err = tlm(a, ['checkpoint', '--check', f], 'tlm checkpoint --check')
            check(rc == 1 and 'damaged' in err, '--check refuses the damaged file: ' + err.strip())
            rc, out, err = tlm(a, ['restore', '--qmp', dst.tlm_qmp, '--from', f, '--json'],
                               'tlm restore')
            r = json.loads(out.strip().splitlines()[-1])
            check(rc == 1 and not r['completed'] and 'refused' in r['error'] and
                  'damaged' in r['error'], 'restore refuses it: ' + r.get('error', ''))
            st = dst.q.cmd('query-migrate')
            check(dst.q.status() == 'inmigrate' and not st.get('status'),
                  'the waiting QEMU was not touched (inmigrate, no migration: %s)' % st)
            return
        lanes = ['--chk-lanes', '2'] if a.case == 'stop-copy' else []
        rc, out, _ = tlm(a, ['restore', '--qmp', dst.tlm_qmp, '--from', f, '--json'] + lanes,
                         'tlm restore')
        r = json.loads(out.strip().splitlines()[-1])
        check(rc == 0 and r['completed'] and r['vm'] == 'running',
              'restored, the VM runs (%s, %d ms, check %d ms)'
              % (r.get('error', 'ok'), r['total_ms'], r['check_ms']))
        before = dst.g.log.last('status')
        tr.wait_verified(dst, 'the restored VM', idle=idle)
        after = dst.g.log.last('status')
        check(after is not None and (before is None or after['ms'] > before['ms']),
              'the guest serial output goes on after the restore')
    finally:
        for vm in vms:
            try:
                vm.stop()
            except Exception:
                pass
        subprocess.run(['rm', '-rf', workdir])


if __name__ == '__main__':
    main()
    print('PASS')
