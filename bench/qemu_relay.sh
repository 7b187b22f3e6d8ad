#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# QEMU direct vs QEMU through tlm lanes, same guest, same workload, one run:
#
#   direct      QEMU -> unix socket -> QEMU, multifd with N channels,
#               max-bandwidth raised (no tlm at all)
#   relay-qemu  `tlm migrate/receive` over N+1 tcp lanes, policy qemu
#   relay-tlm   the same with policy tlm (switch over after the first pass)
#
# Scenarios:
#   idle        pattern=idle, MEM MiB (default 1024), max-bandwidth 64G:
#               target relay-qemu total time <= 1.10 x direct
#   heavy       pattern=random rate=0 (unthrottled writer), max-bandwidth at
#               QEMU's default 128 MiB/s: QEMU's own precopy does not converge
#               within CAP seconds (default 120; the issue's 5 minutes is too
#               long for a 2-core machine shared with others), policy tlm must
#               finish with zero guest verification errors
#
# Usage: bench/qemu_relay.sh [BUILD_DIR]   env: MEM LANES CAP SCENARIOS OUT
# Prints a table and writes JSON lines to $OUT (default
# bench/results/qemu_relay-<date>.jsonl). Needs qemu-system-x86_64 and a
# build with the test guest (ninja -C BUILD_DIR).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build}
tlm=$build/cli/tlm
kernel=$build/tests/guest/guest.elf
[ -x "$tlm" ] || { echo "no $tlm: build first (ninja -C $build)" >&2; exit 1; }
[ -r "$kernel" ] || { echo "no $kernel: the test guest is not built" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not found" >&2; exit 1; }
mkdir -p "$root/bench/results"
export TLM_BENCH_OUT=${OUT:-$root/bench/results/qemu_relay-$(date -u +%Y%m%dT%H%M%S).jsonl}

exec python3 - "$tlm" "$kernel" "$root/tests/guest" <<'PY'
import json, os, socket, subprocess, sys, tempfile, time, shutil

tlm, kernel, guest_py = sys.argv[1:4]
sys.path.insert(0, guest_py)
import guestrun

MEM = int(os.environ.get('MEM', '1024'))
LANES = int(os.environ.get('LANES', '4'))
CAP = int(os.environ.get('CAP', '120'))
SCEN = os.environ.get('SCENARIOS', 'idle heavy').split()
OUT = os.environ['TLM_BENCH_OUT']

SCENARIOS = {
    'idle': dict(append='pattern=idle rate=65536', bw='64G', bwbytes=64 << 30),
    'heavy': dict(append='pattern=random rate=0 verify=1', bw='128M', bwbytes=128 << 20),
}


class QMP:
    def __init__(self, path):
        for _ in range(400):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                time.sleep(0.05)
        self.f = self.s.makefile('rb')
        json.loads(self.f.readline())
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        m = {'execute': name}
        if args:
            m['arguments'] = args
        self.s.sendall(json.dumps(m).encode() + b'\n')
        while True:
            r = json.loads(self.f.readline())
            if 'return' in r:
                return r['return']
            if 'error' in r:
                raise RuntimeError(r['error'])


def vm(workdir, name, append, incoming):
    d = os.path.join(workdir, name)
    os.mkdir(d)
    extra = ['-qmp', 'unix:%s/tlm.qmp,server=on,wait=off' % d,
             '-qmp', 'unix:%s/test.qmp,server=on,wait=off' % d]
    if incoming:
        extra += ['-incoming', 'defer']
    g = guestrun.Guest(kernel, append=append, mem_mib=MEM, workdir=d, gdb=False,
                       extra_args=extra)
    g.start()
    g.qmp = QMP(d + '/test.qmp')
    g.tlm_qmp = d + '/tlm.qmp'
    return g


def wait_done(q, cap):
    end = time.monotonic() + cap
    while True:
        st = q.cmd('query-migrate')
        s = st.get('status')
        if s == 'completed' and st.get('total-time'):
            return st
        if s in ('failed', 'cancelled') or time.monotonic() > end:
            return st
        time.sleep(0.05)


def verify(dst, key='vpasses'):
    dst.log.poll()
    last = dst.log.last('status')
    base = last[key] if last else None
    def done(lg):
        st = lg.last('status')
        if not st:
            return False
        b = base
        if b is None:
            b = next(f for k, f in lg.events if k == 'status')[key]
        return st[key] >= b + 2
    try:
        dst.wait_for(done, 180, 'two verification passes')
    except guestrun.GuestError as e:
        return None, str(e)
    s = dst.log.summary()
    return s['errors'] + len(s['faults']), None


def run(scen, mode):
    sc = SCENARIOS[scen]
    work = tempfile.mkdtemp(prefix='tlm-bench-')
    src = dst = None
    rec = dict(scenario=scen, mode=mode, mem_mib=MEM, lanes=LANES, cap_s=CAP,
               append=sc['append'], max_bandwidth=sc['bw'])
    try:
        src = vm(work, 'src', sc['append'], False)
        dst = vm(work, 'dst', sc['append'], True)
        src.wait_filled(120)
        src.wait_status(2, 30)
        if mode == 'direct':
            for q, source in ((src.qmp, True), (dst.qmp, False)):
                q.cmd('migrate-set-capabilities', capabilities=[
                    {'capability': 'multifd', 'state': True}])
                p = {'multifd-channels': LANES}
                if source:
                    p['max-bandwidth'] = sc['bwbytes']
                q.cmd('migrate-set-parameters', **p)
            uri = 'unix:%s/direct.sock' % work
            dst.qmp.cmd('migrate-incoming', uri=uri)
            src.qmp.cmd('migrate', uri=uri)
            st = wait_done(src.qmp, CAP)
            rec.update(status=st.get('status'), total_ms=st.get('total-time'),
                       downtime_ms=st.get('downtime'),
                       bytes=st.get('ram', {}).get('transferred'),
                       passes=st.get('ram', {}).get('dirty-sync-count'))
            rec['qemu_converged'] = st.get('status') == 'completed'
            if st.get('status') != 'completed':
                src.qmp.cmd('migrate_cancel')
        else:
            policy = {'tlm': 'one-pass'}.get(mode.split('-')[1], mode.split('-')[1])
            port = socket.socket()
            port.bind(('127.0.0.1', 0))
            p = port.getsockname()[1]
            port.close()
            psk = os.path.join(work, 'psk')
            with open(os.open(psk, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
                f.write(os.urandom(32).hex())
            recv = subprocess.Popen([tlm, 'receive', '--qmp', dst.tlm_qmp, '--listen',
                                     '127.0.0.1:%d' % p, '--psk', psk, '--json'],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.3)
            mig = subprocess.run([tlm, 'migrate', '--qmp', src.tlm_qmp, '--to',
                                  '127.0.0.1:%d' % p, '--psk', psk, '--lanes', str(LANES),
                                  '--policy', policy, '--max-bandwidth', sc['bw'],
                                  '--timeout', str(CAP), '--json'],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            recv.communicate(timeout=60)
            r = json.loads(mig.stdout.decode().strip().splitlines()[-1])
            rec.update(status='completed' if r['completed'] else (r.get('error') or 'failed'),
                       total_ms=r['total_ms'], downtime_ms=r['downtime_ms'],
                       bytes=r['bytes'], passes=r['dirty_sync_count'],
                       lane_bytes=r['lane_bytes'], qemu_converged=r['qemu_converged'],
                       forced=r['forced_switchover'])
        if rec['status'] == 'completed':
            key = 'sweep' if scen == 'idle' else 'vpasses'
            rec['guest_errors'], why = verify(dst, key)
            if why:
                rec['verify_error'] = why
    finally:
        for g in (src, dst):
            if g:
                g.stop()
        shutil.rmtree(work, ignore_errors=True)
    with open(OUT, 'a') as f:
        f.write(json.dumps(rec) + '\n')
    return rec


results = []
print('%-6s %-11s %-12s %9s %9s %9s %6s %9s %7s' % (
    'scen', 'mode', 'status', 'total_ms', 'down_ms', 'MiB', 'passes', 'qemu_conv', 'errors'),
      flush=True)
for scen in SCEN:
    for mode in ('direct', 'relay-qemu', 'relay-tlm'):
        r = run(scen, mode)
        results.append(r)
        print('%-6s %-11s %-12s %9s %9s %9.1f %6s %9s %7s' % (
            scen, mode, str(r.get('status'))[:12], r.get('total_ms'), r.get('downtime_ms'),
            (r.get('bytes') or 0) / 1048576, r.get('passes'), r.get('qemu_converged'),
            r.get('guest_errors', '-')), flush=True)

for scen in SCEN:
    d = next((r for r in results if r['scenario'] == scen and r['mode'] == 'direct'), None)
    q = next((r for r in results if r['scenario'] == scen and r['mode'] == 'relay-qemu'), None)
    t = next((r for r in results if r['scenario'] == scen and r['mode'] == 'relay-tlm'), None)
    if scen == 'idle' and d and q and d.get('status') == 'completed' and q.get('status') == 'completed':
        ratio = q['total_ms'] / max(1, d['total_ms'])
        print('idle: relay-qemu / direct total time = %.2fx (target <= 1.10x): %s'
              % (ratio, 'met' if ratio <= 1.10 else 'NOT met'))
    if scen == 'heavy' and t:
        print('heavy: direct converged: %s, relay-qemu converged: %s (cap %d s); '
              'relay-tlm: %s in %s ms, guest errors %s'
              % (d and d.get('qemu_converged'), q and q.get('qemu_converged'), CAP,
                 t.get('status'), t.get('total_ms'), t.get('guest_errors')))
print('results: ' + OUT)
PY
