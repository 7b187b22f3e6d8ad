#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""TLM inside QEMU: the test guest migrated between two QEMUs built with
tlm's patch series (qemu-glue/qemu-7.2/, scripts/build-qemu.sh), through
QMP `migrate uri=tlm:...` and `migrate-incoming uri=tlm:...`, under TCG.

    test_inside.py --qemu build/qemu-tlm/bin/qemu-system-x86_64
                   --kernel guest.elf --guest-py DIR [--mem 128M] CASE

Cases that must complete (the destination runs, the source ends in
postmigrate, the guest on the destination verifies every page twice over
with zero errors and its serial output goes on, query-migrate carries the
engine's figures):
  idle, mg, random      1 CHK + 1 PS lane over tcp
  mg-2x2                2 CHK + 2 PS lanes
  numa                  two RAM blocks (memory backends of two NUMA nodes),
                        the guest writing in both: writes outside the first
                        RAM block are tracked too
  mg-dpdk               DPDK lanes (the embedded net_memif pair)
  idle-rdma             RDMA lanes (run inside the Soft-RoCE VM of tests/vm
                        with --addr 198.18.0.1): pages by RDMA WRITE from
                        source guest RAM into destination guest RAM
  policy-P              P = stop-copy, precopy, frs, mp: completes, or
                        fails cleanly (then as the failure cases below)
  cli                   the same through `tlm receive` / `tlm migrate` (mode
                        inside detected from QMP), their JSON checked
  demo                  `tlm demo --json` with this QEMU: mode inside, no
                        guest error
Cases that must fail cleanly (the migration ends failed or cancelled with
a clear error, and the source VM keeps running and verifies clean):
  dest-killed   the destination QEMU is killed mid-migration
  lane-cut      a data lane is cut mid-migration (a TCP proxy in between)
  wrong-psk     the source holds another key
  cancel        migrate_cancel in stage 1
  refused       multifd on, a URI without psk, a bad key: refused at once
  mismatch      the destination has another RAM size: refused, naming it

Exit 0 pass, 1 fail, 77 skip (no patched QEMU / no guest).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay as tr  # noqa: E402  (QMP, VM, checks, the lane cutter)
from test_relay import check, fail  # noqa: E402


def wait_migrate(vm, states, timeout=240):
    end = time.monotonic() + timeout
    st = {}
    while time.monotonic() < end:
        try:
            st = vm.q.cmd('query-migrate')
        except (OSError, EOFError):
            time.sleep(0.5)
            fail('QEMU died: ' + vm.state())
        if st.get('status') in states:
            return st
        if not vm.alive():
            fail('QEMU died: ' + vm.state())
        time.sleep(0.1)
    fail('migration still %s after %d s: %s' % (st.get('status'), timeout, st))


def under_way(src, min_bytes=4 << 20, timeout=60):
    end = time.monotonic() + timeout
    st = {}
    while time.monotonic() < end:
        st = src.q.cmd('query-migrate')
        if st.get('status') == 'active' and st.get('ram', {}).get('transferred', 0) >= min_bytes:
            return st
        if st.get('status') in ('completed', 'failed', 'cancelled'):
            break
        time.sleep(0.02)
    fail('migration not under way: %s' % st)


ADDR = '127.0.0.1'


def uri(port, psk, extra=''):
    return 'tlm:%s:%d?psk=%s%s' % (ADDR, port, psk, extra)


def source_survives(src, what):
    """The source runs again after a failure, and its guest verifies."""
    end = time.monotonic() + 20
    while src.q.status() != 'running' and time.monotonic() < end:
        time.sleep(0.1)
    check(src.q.status() == 'running', '%s: source VM running again' % what)
    tr.wait_verified(src, '%s: source after the failure' % what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--guest-py', required=True)
    ap.add_argument('--mem', default='128M')
    ap.add_argument('--tlm', help='the tlm command (cases cli, demo)')
    ap.add_argument('--addr', default='127.0.0.1', help='where the destination listens')
    ap.add_argument('case')
    a = ap.parse_args()

    guestrun = tr.patched_guestrun(a)
    global ADDR
    ADDR = a.addr
    os.environ['QEMU'] = a.qemu
    # The patched QEMU has the TCG dirty-bit fix: whole MiB, fast sync path.
    tr.MEM_MIB = a.mem
    case = a.case
    extra_src = ''
    extra_dst = '&transport=tcp'
    transport = 'tcp'
    for t in ('dpdk', 'rdma'):
        if case.endswith('-' + t):
            # These cases are about zero copy from guest RAM, which only
            # clear lanes do (protect=none); tcp runs sealed (encrypt).
            transport = t
            extra_src = extra_dst = '&transport=%s&protect=none' % t
            case = case[:-len(t) - 1]
    pattern = case.split('-')[0]
    if pattern not in ('idle', 'mg', 'random'):
        pattern = 'mg'
    append = {'idle': 'pattern=idle rate=16384',
              'random': 'pattern=random rate=20000 verify=2'}.get(
                  pattern, 'pattern=mg rate=20000 verify=2')
    numa = []
    if case == 'numa':
        # A small first block: the guest's small, hot working set lies in
        # the second, at a non-zero ram_addr, and stays in TCG's TLB, so a
        # sync that re-armed the wrong range would lose its writes.
        first = 4
        numa = ['-object', 'memory-backend-ram,id=m0,size=%dM' % first,
                '-object', 'memory-backend-ram,id=m1,size=%dM'
                % (int(a.mem.rstrip('M')) - first),
                '-numa', 'node,nodeid=0,memdev=m0', '-numa', 'node,nodeid=1,memdev=m1']
        append = 'pattern=random rate=0 mem=8 verify=1'
    policy = case[len('policy-'):] if case.startswith('policy-') else None
    if policy:
        extra_src += '&policy=' + policy
    if case == 'mg-2x2':
        extra_src += '&chk=2&ps=2'

    if case == 'demo':
        return demo(a)
    workdir = tempfile.mkdtemp(prefix='tlm-inside-test-')
    vms = []
    try:
        psk = tr.psk_file(workdir)
        other = tr.psk_file(workdir, 'psk2')

        src = tr.VM(guestrun, a.kernel, workdir, 'src', append, extra=numa)
        vms.append(src)
        dst_numa = numa
        if case == 'mismatch':
            tr.MEM_MIB = '%dM' % (int(a.mem.rstrip('M')) + 64)
        dst = tr.VM(guestrun, a.kernel, workdir, 'dst', append, incoming=True, extra=dst_numa)
        tr.MEM_MIB = a.mem
        vms.append(dst)
        src.g.wait_filled(90)
        src.g.wait_status(1, 30)
        check(src.q.status() == 'running', 'source guest running')
        check(dst.q.status() == 'inmigrate', 'destination waiting (inmigrate)')
        port = tr.free_port()

        if case == 'refused':
            for caps, u, why in (
                    ([{'capability': 'multifd', 'state': True}], uri(port, psk), 'multifd'),
                    ([], 'tlm:127.0.0.1:%d' % port, 'psk=FILE'),
                    ([], uri(port, psk, '&chk=0'), 'chk must be'),
                    ([], uri(port, psk, '&policy=fast'), 'policy must be'),
                    ([], uri(port, psk, '&transport=carrier-pigeon'), 'not built into libtlm'),
                    ([], uri(port, '/nonexistent/key'), 'key file')):
                if caps:
                    src.q.cmd('migrate-set-capabilities', capabilities=caps)
                try:
                    src.q.cmd('migrate', uri=u)
                    err = ''
                except RuntimeError as e:
                    err = str(e)
                if caps:
                    src.q.cmd('migrate-set-capabilities', capabilities=[
                        dict(c, state=False) for c in caps])
                    if not err:  # refused in the migration thread instead
                        st = wait_migrate(src, ('failed',), 30)
                        err = st.get('error-desc', '')
                check(why in err, 'refused with a clear error (%s): %s' % (why, err))
            check(src.q.status() == 'running', 'source still running')
            tr.wait_verified(src, 'source after the refusals')
            return

        if case == 'cli':
            return cli(a, src, dst, port, psk)
        dst.q.cmd('migrate-incoming', uri=uri(port, psk, extra_dst))
        cutter = None
        target = port
        if case == 'lane-cut':
            cutter = tr.LaneCutter(port, 1, 8 << 20)
            target = cutter.port
        elif case in ('dest-killed', 'cancel'):
            # CHK's lane slowed after 8 MiB: the migration is surely under
            # way when the destination dies or the user cancels it, however
            # fast this machine moves the rest.
            cutter = tr.LaneCutter(port, 1, 8 << 20, rate=4 << 20)
            target = cutter.port
        key = other if case == 'wrong-psk' else psk
        t0 = time.monotonic()
        src.q.cmd('migrate', uri=uri(target, key, extra_src))

        if case in ('dest-killed', 'cancel'):
            under_way(src)
            check(cutter.cut.wait(60), '%s: the CHK lane slowed after 8 MiB' % case)
            check(src.q.cmd('query-migrate').get('status') == 'active',
                  '%s: the migration is under way' % case)
            if case == 'dest-killed':
                dst.g.proc.kill()
            else:
                src.q.cmd('migrate_cancel')
            st = wait_migrate(src, ('failed', 'cancelled'), 120)
            check(st['status'] in ('failed', 'cancelled'),
                  '%s: migration ended %s (%s)' % (case, st['status'], st.get('error-desc', '')))
            source_survives(src, case)
            return
        if case in ('lane-cut', 'wrong-psk', 'mismatch'):
            st = wait_migrate(src, ('failed', 'completed', 'cancelled'), 120)
            check(st['status'] == 'failed', '%s: migration failed: %s'
                  % (case, st.get('error-desc', '')))
            desc = st.get('error-desc', '')
            if case == 'wrong-psk':
                check('auth' in desc.lower() or 'key' in desc.lower(),
                      'the error names authentication: ' + desc)
            if case == 'mismatch':
                check('region' in desc or 'memory' in desc,
                      'the error names the memory that differs: ' + desc)
            if case == 'lane-cut':
                check(cutter.cut.is_set(), 'a data lane was cut')
            source_survives(src, case)
            check(dst.alive() and dst.q.status() == 'inmigrate',
                  'destination still waiting for a migration')
            return

        st = wait_migrate(src, ('completed', 'failed', 'cancelled'), 300)
        took = time.monotonic() - t0
        if policy and st['status'] != 'completed':
            check(st['status'] == 'failed', 'policy %s failed cleanly: %s'
                  % (policy, st.get('error-desc', '')))
            source_survives(src, 'policy ' + policy)
            return
        check(st['status'] == 'completed', 'migration completed in %.1f s: %s'
              % (took, st.get('error-desc', '')))
        t = st.get('tlm')
        check(t is not None and t['chk-pages'] > 0, 'query-migrate has the tlm section: %s' % t)
        check(t['transport'] == transport and t['chk-lanes'] == (2 if case == 'mg-2x2' else 1),
              'transport %s, %d CHK + %d PS lanes' % (t['transport'], t['chk-lanes'], t['ps-lanes']))
        check(len(t['lane-bytes']) == t['chk-lanes'] + t['ps-lanes'] and
              all(b > 0 for b in t['lane-bytes'][:t['chk-lanes']]),
              'bytes on every CHK lane: %s' % t['lane-bytes'])
        if transport in ('rdma', 'dpdk'):
            check(t['zero-copy'], 'pages went zero-copy from guest RAM (%s)' % transport)
        if pattern != 'idle' and policy in (None, 'tlm'):
            check(t['ps-pages'] > 0, 'the page saver sent %d pages' % t['ps-pages'])
        check('downtime' in st and 'total-time' in st,
              'downtime %s ms, total %s ms' % (st.get('downtime'), st.get('total-time')))
        print('figures: ' + str({k: st.get(k) for k in ('downtime', 'total-time', 'ram')}))
        check(src.q.status() == 'postmigrate', 'source stopped (postmigrate)')
        end = time.monotonic() + 30
        while dst.q.status() != 'running' and time.monotonic() < end:
            time.sleep(0.1)
        check(dst.q.status() == 'running', 'destination running')
        before = dst.g.log.last('status')
        tr.wait_verified(dst, 'destination', idle=(pattern == 'idle'))
        after = dst.g.log.last('status')
        check(after is not None and (before is None or after['ms'] > before['ms']),
              'the guest serial output goes on at the destination')
    finally:
        for vm in vms:
            try:
                vm.stop()
            except Exception:
                pass
        subprocess.run(['rm', '-rf', workdir])


def cli(a, src, dst, port, psk):
    """tlm receive + tlm migrate in mode inside, through their JSON."""
    # --peer-timeout goes into the URI as timeout-ms (QEMU refuses a key
    # it does not know, or a value out of its range).
    recv = tr.run_tlm([a.tlm, 'receive', '--qmp', dst.tlm_qmp, '--listen',
                       '127.0.0.1:%d' % port, '--psk', psk, '--json', '--timeout', '200',
                       '--peer-timeout', '20'])
    time.sleep(0.5)
    mig = tr.run_tlm([a.tlm, 'migrate', '--qmp', src.tlm_qmp, '--to', '127.0.0.1:%d' % port,
                      '--psk', psk, '--chk-lanes', '1', '--ps-lanes', '2', '--json',
                      '--timeout', '200', '--peer-timeout', '20'])
    rc, out, _ = tr.finish(mig, 'tlm migrate', 240)
    check(rc == 0, 'tlm migrate exit 0')
    r = json.loads(out.strip().splitlines()[-1])
    check(r['mode'] == 'inside' and r['completed'] and r['side'] == 'source',
          'tlm migrate: mode inside, completed')
    check(r['chk_lanes'] == 1 and r['ps_lanes'] == 2 and len(r['lane_bytes']) == 3 and
          r['chk']['pages'] > 0 and r['policy'] == 'tlm' and r['transport'] == 'tcp',
          'report: 1 CHK + 2 PS lanes, %d CHK pages, %d PS pages, lane bytes %s'
          % (r['chk']['pages'], r['ps']['pages'], r['lane_bytes']))
    check(r['downtime_ms'] >= 0 and r['total_ms'] > 0 and r['vm'] == 'postmigrate',
          'downtime %d ms, total %d ms, source %s' % (r['downtime_ms'], r['total_ms'], r['vm']))
    rc, out, _ = tr.finish(recv, 'tlm receive', 60)
    d = json.loads(out.strip().splitlines()[-1])
    check(rc == 0 and d['mode'] == 'inside' and d['completed'] and d['vm'] == 'running',
          'tlm receive: mode inside, destination running')
    check(r['protect'] == 'encrypt' and d['protect'] == 'encrypt',
          'both ends report their lanes sealed (protect %s / %s)' % (r['protect'], d['protect']))
    tr.wait_verified(dst, 'destination after tlm migrate')


def demo(a):
    """tlm demo --json runs mode inside with this QEMU."""
    p = tr.run_tlm([a.tlm, 'demo', '--qemu', a.qemu, '--mem', '64', '--sweeps', '1',
                    '--json'])
    rc, out, _ = tr.finish(p, 'tlm demo', 280)
    r = json.loads(out.strip().splitlines()[-1])
    check(rc == 0 and r['ok'], 'demo ok')
    for k in ('mode', 'completed', 'guest_errors', 'downtime_ms', 'total_ms', 'policy',
              'transport', 'chk_lanes', 'ps_lanes'):
        check(k in r, 'demo JSON has %s: %s' % (k, r.get(k)))
    check(r['mode'] == 'inside' and r['completed'] and r['guest_errors'] == 0,
          'demo: mode inside, completed, 0 guest errors')


if __name__ == '__main__':
    main()
    print('PASS')
