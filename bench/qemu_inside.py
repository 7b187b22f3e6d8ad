#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""TLM inside QEMU against stock QEMU, one guest and workload, one run.

    bench/qemu_inside.py [--build build] [--mem 1024] [--link-mbit 400]
                         [--rates 3000,30000] [--pattern mg] [--precopy-cap 150]
                         [--methods M,...] [--json-out FILE]

The destination QEMU runs in a network namespace of its own behind a veth
pair (198.18.0.1 -> 198.18.0.2) whose egress is shaped with tc tbf to
--link-mbit, so "a write rate below and above what the lanes carry" is
real for a TCG guest. For each guest write rate (page writes/s) it runs:

  inside-tlm     QEMU with tlm's patch series, migrate uri=tlm:... (1 CHK +
                 1 PS lane, policy tlm)
  stock-precopy  Debian's QEMU, migrate uri=tcp:..., QEMU's own precopy
                 (downtime-limit 300 ms; cancelled after --precopy-cap s if
                 it has not converged)
  stock-stopcopy Debian's QEMU, `stop`, then migrate uri=tcp:...
  relay-one-pass Debian's QEMU through `tlm migrate/receive --mode relay
                 --policy one-pass` (4 multifd lanes)
and, for the idle guest, inside-tlm against stock-multifd (4 channels,
direct). Each run reports total time, downtime, bytes (per stream for
tlm) and the guest's slowdown: its page-write rate while the migration ran
against the rate before it. Prints one JSON object; needs root (netns, tc).
"""
import argparse
import json
import os
import shutil
import signal
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

NS = 'tlmbench%d' % os.getpid()
SRC_IP, DST_IP = '198.18.0.1', '198.18.0.2'


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def net_up(mbit):
    sh('ip', 'netns', 'add', NS)
    sh('ip', 'link', 'add', 'tlmb0', 'type', 'veth', 'peer', 'name', 'tlmb1')
    sh('ip', 'link', 'set', 'tlmb1', 'netns', NS)
    sh('ip', 'addr', 'add', SRC_IP + '/30', 'dev', 'tlmb0')
    sh('ip', 'link', 'set', 'tlmb0', 'up')
    sh('ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', DST_IP + '/30', 'dev', 'tlmb1')
    sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'tlmb1', 'up')
    sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up')
    if mbit:
        burst = max(64, mbit * 1000 // 8 // 250)  # KB: about 4 ms at the rate
        sh('tc', 'qdisc', 'add', 'dev', 'tlmb0', 'root', 'tbf', 'rate', '%dmbit' % mbit,
           'burst', '%dkb' % burst, 'latency', '100ms')


def net_down():
    sh('ip', 'link', 'del', 'tlmb0', check=False)
    sh('ip', 'netns', 'del', NS, check=False)


def in_ns_wrapper(workdir, qemu):
    path = os.path.join(workdir, 'qemu-in-ns-%s' % os.path.basename(os.path.dirname(
        os.path.dirname(qemu))))
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (NS, qemu))
    os.chmod(path, 0o755)
    return path


class Pair:
    def __init__(self, workdir, name, kernel, src_qemu, dst_qemu, mem, append, incoming):
        self.dir = os.path.join(workdir, name)
        os.mkdir(self.dir)
        self.src = tr.VM(guestrun, kernel, self.dir, 'src', append, mem_mib=mem,
                         qemu=src_qemu, qmp_timeout=60)
        self.dst = tr.VM(guestrun, kernel, self.dir, 'dst', append, incoming=incoming,
                         mem_mib=mem, qemu=dst_qemu, qmp_timeout=60)

    def stop(self):
        for v in (self.src, self.dst):
            try:
                v.stop()
            except Exception:
                pass


def write_rate(log, t_from_ms, t_to_ms):
    """Guest page writes per second between two guest times (status lines)."""
    pts = [(f['ms'], f['writes']) for k, f in log.events if k == 'status']
    a = [p for p in pts if p[0] <= t_from_ms]
    b = [p for p in pts if p[0] <= t_to_ms]
    if not a or not b or b[-1][0] <= a[-1][0]:
        return None
    return (b[-1][1] - a[-1][1]) * 1000.0 / (b[-1][0] - a[-1][0])


def last_ms(log):
    log.poll()
    st = log.last('status')
    return st['ms'] if st else 0


def run_one(a, method, rate, workdir, psk, port):
    pattern = 'idle' if rate == 'idle' else a.pattern
    append = 'pattern=idle rate=16384' if rate == 'idle' else \
        'pattern=%s rate=%d verify=8' % (pattern, rate)
    if a.set_mib and rate != 'idle':
        append += ' mem=%d' % a.set_mib
    if a.fill:
        append += ' fill=1'
    stock = method != 'inside-tlm'
    src_q = a.qemu_stock if stock else a.qemu_tlm
    dst_q = in_ns_wrapper(workdir, src_q)
    mem = '%dK' % (a.mem * 1024 - 8) if stock else '%dM' % a.mem
    incoming = 'defer'
    p = Pair(workdir, '%s-%s' % (method, rate), a.kernel, src_q, dst_q, mem, append, incoming)
    res = {'method': method, 'rate': rate, 'pattern': pattern, 'completed': False}
    procs = []
    try:
        p.src.g.wait_filled(600)
        p.src.g.wait_status(3, 60)
        g0 = last_ms(p.src.g.log)
        time.sleep(3)
        g1 = last_ms(p.src.g.log)
        res['guest_rate_before'] = write_rate(p.src.g.log, g0, g1)
        t0 = time.monotonic()
        gstart = g1
        stop_t = None
        if method == 'inside-tlm':
            p.dst.q.cmd('migrate-incoming', uri='tlm:%s:%d?psk=%s' % (DST_IP, port, psk))
            p.src.q.cmd('migrate', uri='tlm:%s:%d?psk=%s&chk=1&ps=1&policy=tlm'
                        % (DST_IP, port, psk))
        elif method == 'relay-one-pass':
            recv = subprocess.Popen(['ip', 'netns', 'exec', NS, a.tlm, 'receive', '--mode',
                                     'relay', '--qmp', p.dst.tlm_qmp, '--listen',
                                     '%s:%d' % (DST_IP, port), '--psk', psk, '--json'],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(recv)
            time.sleep(1)
            mig = subprocess.Popen([a.tlm, 'migrate', '--mode', 'relay', '--qmp', p.src.tlm_qmp,
                                    '--to', '%s:%d' % (DST_IP, port), '--psk', psk,
                                    '--policy', 'one-pass', '--lanes', '4', '--json',
                                    '--timeout', str(int(a.precopy_cap) + 300)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(mig)
        else:
            p.dst.q.cmd('migrate-set-parameters', **{'max-bandwidth': 10 << 30})
            p.src.q.cmd('migrate-set-parameters', **{'max-bandwidth': 10 << 30})
            if method == 'stock-multifd':
                for v in (p.src, p.dst):
                    v.q.cmd('migrate-set-capabilities',
                            capabilities=[{'capability': 'multifd', 'state': True}])
                    v.q.cmd('migrate-set-parameters', **{'multifd-channels': 4})
            p.dst.q.cmd('migrate-incoming', uri='tcp:%s:%d' % (DST_IP, port))
            time.sleep(0.5)
            if method == 'stock-stopcopy':
                p.src.q.cmd('stop')
                stop_t = time.monotonic()
            p.src.q.cmd('migrate', uri='tcp:%s:%d' % (DST_IP, port))
        cap = a.precopy_cap if method == 'stock-precopy' else 900
        st = tr.migration(p.src.q, ('completed', 'failed', 'cancelled'), cap)
        if st.get('status') not in ('completed', 'failed', 'cancelled'):
            res['converged'] = False
            res['error'] = 'no convergence in %d s (%s passes); cancelled' % (
                cap, st.get('ram', {}).get('dirty-sync-count'))
            res['bytes'] = st.get('ram', {}).get('transferred', 0)
            p.src.q.cmd('migrate_cancel')
            tr.migration(p.src.q, ('cancelled', 'failed'), 60)
            g2 = last_ms(p.src.g.log)
            res['guest_rate_during'] = write_rate(p.src.g.log, gstart, g2)
            return res
        if st.get('status') == 'completed' and not st.get('total-time'):
            # QEMU 7.2 says completed a moment before it fills the times.
            time.sleep(1)
            st = p.src.q.cmd('query-migrate')
        t1 = time.monotonic()
        g2 = last_ms(p.src.g.log)
        res['completed'] = st.get('status') == 'completed'
        res['error'] = st.get('error-desc', '')
        res['total_ms'] = st.get('total-time')
        res['downtime_ms'] = st.get('downtime')
        res['bytes'] = st.get('ram', {}).get('transferred', 0)
        res['passes'] = st.get('ram', {}).get('dirty-sync-count')
        res['wall_ms'] = int((t1 - t0) * 1000)
        if stop_t is not None:
            # Stopped before the migration: the guest is down all along.
            res['downtime_ms'] = int((t1 - stop_t) * 1000)
            res['total_ms'] = res['downtime_ms']
        t = st.get('tlm')
        if t:
            res.update({'bytes_chk': t['chk-bytes'], 'bytes_ps': t['ps-bytes'],
                        'pages_chk': t['chk-pages'], 'pages_ps': t['ps-pages'],
                        'epochs': t['epochs'], 'engine_downtime_ms': t.get('engine-downtime')})
        for pr in procs:
            try:
                out, _ = pr.communicate(timeout=120)
                if pr.args[3 if pr.args[0] == 'ip' else 1] == 'migrate':
                    r = json.loads(out.decode().strip().splitlines()[-1])
                    res['relay_bytes'] = r.get('bytes')
            except Exception:
                pass
        res['guest_rate_during'] = write_rate(p.src.g.log, gstart, g2)
        if res.get('guest_rate_before') and res.get('guest_rate_during') is not None:
            res['guest_slowdown'] = 1 - res['guest_rate_during'] / res['guest_rate_before']
        if res['completed']:
            end = time.monotonic() + 30
            while p.dst.q.status() != 'running' and time.monotonic() < end:
                time.sleep(0.1)
            res['destination'] = p.dst.q.status()
        return res
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--mem', type=int, default=1024, help='guest MiB (default 1024)')
    ap.add_argument('--link-mbit', type=int, default=400)
    ap.add_argument('--rates', default='3000,30000')
    ap.add_argument('--pattern', default='mg')
    ap.add_argument('--set-mib', type=int, default=0,
                    help="the guest's working set (default: all its RAM)")
    ap.add_argument('--fill', action='store_true',
                    help='the guest writes all its RAM once first (not mostly zero)')
    ap.add_argument('--precopy-cap', type=float, default=150)
    ap.add_argument('--methods', default='inside-tlm,stock-precopy,stock-stopcopy,relay-one-pass')
    ap.add_argument('--no-idle', action='store_true')
    ap.add_argument('--json-out')
    a = ap.parse_args()
    a.tlm = os.path.join(a.build, 'cli', 'tlm')
    a.qemu_tlm = os.path.join(a.build, 'qemu-tlm', 'bin', 'qemu-system-x86_64')
    a.qemu_stock = shutil.which('qemu-system-x86_64') or '/usr/bin/qemu-system-x86_64'
    a.kernel = os.path.join(a.build, 'tests', 'guest', 'guest.elf')
    for f in (a.tlm, a.qemu_tlm, a.qemu_stock, a.kernel):
        if not os.access(f, os.R_OK):
            sys.exit('bench/qemu_inside.py: %s missing (build, scripts/build-qemu.sh)' % f)
    if os.geteuid() != 0:
        sys.exit('bench/qemu_inside.py: needs root (network namespace, tc)')
    workdir = tempfile.mkdtemp(prefix='tlm-bench-inside-')
    psk = tr.psk_file(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    out = {'bench': 'qemu_inside', 'mem_mib': a.mem, 'link_mbit': a.link_mbit,
           'pattern': a.pattern, 'set_mib': a.set_mib or None, 'fill': a.fill,
           'load_before': os.getloadavg()[0],
           'machine': '%d cores' % os.cpu_count(), 'runs': []}
    try:
        net_up(a.link_mbit)
        port = 47000
        plan = [(m, int(r)) for r in a.rates.split(',') for m in a.methods.split(',')]
        if not a.no_idle:
            plan += [('inside-tlm', 'idle'), ('stock-multifd', 'idle')]
        for m, r in plan:
            port += 1
            print('run %s rate %s ...' % (m, r), file=sys.stderr, flush=True)
            res = run_one(a, m, r, workdir, psk, port)
            res['load'] = os.getloadavg()[0]
            print('  ' + json.dumps(res), file=sys.stderr, flush=True)
            out['runs'].append(res)
    finally:
        net_down()
        shutil.rmtree(workdir, ignore_errors=True)

    def get(m, r):
        for x in out['runs']:
            if x['method'] == m and x['rate'] == r and x.get('completed'):
                return x
        return None
    ratios = {}
    for r in [int(x) for x in a.rates.split(',')]:
        t, s, o = get('inside-tlm', r), get('stock-stopcopy', r), get('relay-one-pass', r)
        if t and s and t.get('downtime_ms') and s.get('downtime_ms'):
            ratios['rate_%d_downtime_stopcopy_over_tlm' % r] = s['downtime_ms'] / max(1, t['downtime_ms'])
            ratios['rate_%d_total_tlm_over_stopcopy' % r] = t['total_ms'] / max(1, s['total_ms'])
        if t and o and t.get('downtime_ms') and o.get('downtime_ms'):
            ratios['rate_%d_downtime_onepass_over_tlm' % r] = o['downtime_ms'] / max(1, t['downtime_ms'])
    t, m = get('inside-tlm', 'idle'), get('stock-multifd', 'idle')
    if t and m:
        ratios['idle_total_tlm_over_multifd'] = t['total_ms'] / max(1, m['total_ms'])
    out['ratios'] = ratios
    text = json.dumps(out, indent=1)
    if a.json_out:
        with open(a.json_out, 'w') as f:
            f.write(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
