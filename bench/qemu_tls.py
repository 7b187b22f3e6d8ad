#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""QEMU's own TLS migration against tlm's sealed relay, one guest, one run:

    bench/qemu_tls.py [--tlm build/cli/tlm] [--kernel build/tests/guest/guest.elf]
                      [--mem 256] [--multifd 4] [--rounds 1]
                      [--append 'pattern=mg rate=4000 verify=1']
                      [--methods qemu-plain,qemu-tls-psk,tlm-relay-encrypt]

Stock QEMU (Debian's qemu-system-x86 7.2, TCG, -nic none) migrates the
project's test guest (tests/guest/) between two processes on this machine,
over loopback, with multifd on (--multifd channels) and max-bandwidth
unlimited, by each method:

  qemu-plain         migrate uri=tcp:127.0.0.1:PORT, no TLS: the peer's clear
                     figure
  qemu-tls-psk       the same with QEMU's TLS: an object tls-creds-psk on both
                     sides (a psk file in a directory of its own, username
                     qemu), migrate-set-parameters tls-creds; every channel,
                     main and multifd, is a TLS session (GnuTLS)
  tlm-relay-encrypt  QEMU migrates to a unix socket; `tlm relay-out` /
                     `tlm relay-in --protect encrypt` carry the main channel
                     and each multifd channel on a sealed lane of its own
                     (AES-256-GCM) to the destination QEMU's unix socket
  tlm-relay-none     (by name) the same relay with --protect none

Each run starts a fresh source and destination (same kernel, memory,
workload), runs the guest until it has filled its memory, migrates, and
reports QEMU's own figures from the source's query-migrate: total time,
downtime, setup time, RAM transferred and throughput (transferred / total
time), then lets the guest on the destination verify every page twice
(guest_errors must be 0). Methods are interleaved round by round; with
--rounds > 1 the median total time per method is reported. Prints one JSON
object with the load average before and after: the figures compare within
a run only.
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'qemu'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'guest'))
import guestrun  # noqa: E402
import test_relay as tr  # noqa: E402

METHODS = ('qemu-plain', 'qemu-tls-psk', 'tlm-relay-encrypt', 'tlm-relay-none')


def wait_migration(q, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = q.cmd('query-migrate')
        if st.get('status') in ('completed', 'failed', 'cancelled'):
            return st
        time.sleep(0.05)
    q.cmd('migrate_cancel')
    return {'status': 'timeout'}


def tls_creds(vm, workdir, endpoint, key_hex):
    """tls-creds-psk id tls0 on vm, its key in a directory of its own."""
    d = os.path.join(workdir, 'tls-' + endpoint)
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(os.path.join(d, 'keys.psk'), 'w') as f:
        f.write('qemu:%s\n' % key_hex)
    os.chmod(os.path.join(d, 'keys.psk'), 0o600)
    args = {'qom-type': 'tls-creds-psk', 'id': 'tls0', 'endpoint': endpoint, 'dir': d}
    if endpoint == 'client':
        args['username'] = 'qemu'
    vm.q.cmd('object-add', **args)
    vm.q.cmd('migrate-set-parameters', **{'tls-creds': 'tls0'})


def run_one(a, method, workdir, psk, key_hex):
    run_dir = tempfile.mkdtemp(prefix=method + '-', dir=workdir)
    src = dst = None
    procs = []
    res = {'method': method}
    try:
        src = tr.VM(guestrun, a.kernel, run_dir, 'src', a.append)
        dst = tr.VM(guestrun, a.kernel, run_dir, 'dst', a.append, incoming=True)
        src.g.wait_filled(120)
        src.g.wait_status(1, 60)
        for vm in (src, dst):
            vm.q.cmd('migrate-set-capabilities', capabilities=[
                {'capability': 'multifd', 'state': True}])
            vm.q.cmd('migrate-set-parameters', **{'multifd-channels': a.multifd})
        src.q.cmd('migrate-set-parameters', **{'max-bandwidth': 64 << 30})
        port = tr.free_port()
        if method.startswith('qemu-'):
            if method == 'qemu-tls-psk':
                tls_creds(src, run_dir, 'client', key_hex)
                tls_creds(dst, run_dir, 'server', key_hex)
            dst.q.cmd('migrate-incoming', uri='tcp:127.0.0.1:%d' % port)
            time.sleep(0.2)
            src.q.cmd('migrate', uri='tcp:127.0.0.1:%d' % port)
        else:
            mode = method[len('tlm-relay-'):]
            sock_a = os.path.join(run_dir, 'a.sock')
            sock_b = os.path.join(run_dir, 'b.sock')
            dst.q.cmd('migrate-incoming', uri='unix:' + sock_b)
            common = ['--psk', psk, '--lanes', str(a.multifd), '--protect', mode, '--json']
            rin = tr.run_tlm([a.tlm, 'relay-in', '--listen', '127.0.0.1:%d' % port,
                              '--unix', sock_b] + common)
            procs.append(rin)
            tr.wait_listening(rin, 'tlm relay-in')
            rout = tr.run_tlm([a.tlm, 'relay-out', '--unix', sock_a, '--to',
                               '127.0.0.1:%d' % port] + common)
            procs.append(rout)
            end = time.monotonic() + 30
            while not os.path.exists(sock_a) and time.monotonic() < end and \
                    rout.poll() is None:
                time.sleep(0.05)
            if not os.path.exists(sock_a):
                sys.exit('bench/qemu_tls.py: relay-out did not come up: %s'
                         % rout.stderr.read().decode()[-1000:])
            src.q.cmd('migrate', uri='unix:' + sock_a)
        if method == 'qemu-tls-psk':
            res['tls_creds'] = src.q.cmd('query-migrate-parameters').get('tls-creds')
        st = wait_migration(src.q, a.timeout)
        res['status'] = st.get('status')
        if res['status'] != 'completed':
            res['error'] = st.get('error-desc', res['status'])
            return res
        ram = st.get('ram', {})
        res['total_ms'] = st.get('total-time')
        res['downtime_ms'] = st.get('downtime')
        res['setup_ms'] = st.get('setup-time')
        res['ram_transferred'] = ram.get('transferred')
        res['dirty_sync_count'] = ram.get('dirty-sync-count')
        if res['total_ms']:
            res['throughput_Bps'] = ram.get('transferred', 0) * 1000.0 / res['total_ms']
        res['qemu_mbps'] = ram.get('mbps')
        for p in procs:
            rc, out, _ = _finish(p)
            r = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            if rc != 0 or not r.get('completed') or r.get('protect') != method.split('-')[-1]:
                res['error'] = 'relay: exit %d, %s' % (rc, r.get('error', out[-300:]))
        tr.wait_verified(dst, '%s: destination' % method, timeout=a.verify_timeout)
        dst.g.log.poll()
        res['guest_errors'] = dst.g.log.summary()['errors']
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for vm in (src, dst):
            if vm:
                vm.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _finish(p):
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, out.decode(), err.decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tlm', default=os.path.join(ROOT, 'build', 'cli', 'tlm'))
    ap.add_argument('--kernel', default=os.path.join(ROOT, 'build', 'tests', 'guest',
                                                     'guest.elf'))
    ap.add_argument('--mem', type=int, default=256, help='guest MiB')
    ap.add_argument('--multifd', type=int, default=4)
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--append', default='pattern=mg rate=4000 verify=1')
    ap.add_argument('--methods', default='qemu-plain,qemu-tls-psk,tlm-relay-encrypt')
    ap.add_argument('--timeout', type=int, default=300, help='per migration, s')
    ap.add_argument('--verify-timeout', type=int, default=180)
    a = ap.parse_args()
    methods = [m for m in a.methods.split(',') if m]
    for m in methods:
        if m not in METHODS:
            sys.exit('bench/qemu_tls.py: method %s: one of %s' % (m, ', '.join(METHODS)))
    if not guestrun.find_qemu():
        sys.exit('bench/qemu_tls.py: qemu-system-x86_64 not found')
    for f in (a.kernel, a.tlm):
        if not os.path.exists(f):
            sys.exit('bench/qemu_tls.py: no %s (build first)' % f)
    tr.MEM_MIB = a.mem

    workdir = tempfile.mkdtemp(prefix='tlm-qemu-tls-')
    out = {'bench': 'qemu_tls', 'mem_mib': a.mem, 'multifd': a.multifd, 'rounds': a.rounds,
           'append': a.append, 'qemu': subprocess.run(
               [guestrun.find_qemu(), '--version'], capture_output=True,
               text=True).stdout.splitlines()[0],
           'loadavg_before': list(os.getloadavg()), 'runs': [], 'methods': {}}
    try:
        key = os.urandom(32).hex()
        psk = os.path.join(workdir, 'tlm.psk')
        with open(psk, 'w') as f:
            f.write(key + '\n')
        os.chmod(psk, 0o600)
        for _ in range(a.rounds):
            for m in methods:
                # The test helpers say what they check on stdout: stdout
                # is this benchmark's JSON only.
                with contextlib.redirect_stdout(sys.stderr):
                    r = run_one(a, m, workdir, psk, key)
                print('bench/qemu_tls.py: %s' % json.dumps(r), file=sys.stderr, flush=True)
                out['runs'].append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for m in methods:
        ok = [r for r in out['runs'] if r['method'] == m and r.get('status') == 'completed'
              and not r.get('error') and r.get('guest_errors') == 0]
        if not ok:
            out['methods'][m] = {'completed': False}
            continue
        med = sorted(ok, key=lambda r: r['total_ms'])[(len(ok) - 1) // 2]
        out['methods'][m] = {k: med[k] for k in ('total_ms', 'downtime_ms', 'setup_ms',
                                                  'ram_transferred', 'throughput_Bps',
                                                  'dirty_sync_count') if k in med}
        out['methods'][m]['completed'] = True
        out['methods'][m]['runs'] = len(ok)
        out['methods'][m]['total_ms_per_run'] = [r['total_ms'] for r in ok]
    base = out['methods'].get('qemu-tls-psk', {})
    for m, v in out['methods'].items():
        if v.get('completed') and base.get('completed') and m != 'qemu-tls-psk':
            v['throughput_vs_qemu_tls'] = v['throughput_Bps'] / base['throughput_Bps']
    out['loadavg_after'] = list(os.getloadavg())
    print(json.dumps(out, indent=1))
    bad = [m for m in methods if not out['methods'][m].get('completed')]
    if bad:
        sys.exit('bench/qemu_tls.py: no clean run of %s' % ', '.join(bad))


if __name__ == '__main__':
    main()
