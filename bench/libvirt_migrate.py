#!/usr/bin/env python3
"""libvirt's own live migration, direct vs carried by `tlm virsh-migrate`, in
one run: the same domain (the test guest, writing memory in pattern mg)
between the same two libvirt hosts on this machine (tests/libvirt/lvhosts.py,
veth between two network namespaces), alternately A -> B and B -> A.

Peers, all started through libvirt (live, peer to peer):
  direct-tcp        --migrateuri tcp://DST (one connection)
  direct-parallel   the same with --parallel --parallel-connections N
  plain-relay       --migrateuri unix:///run/tlm/plain.sock --parallel N with a
                    plain byte relay (no tlm: one TCP connection per QEMU
                    channel, in accept order, no key, no checks): what
                    joining the two unix sockets costs by itself
  tlm               tlm virsh-migrate --lanes N (multifd over tlm tcp lanes)

Job time and downtime are libvirt's own statistics (virsh domjobinfo
--completed on the destination). Prints one JSON object; run as root:

  bench/libvirt_migrate.py --tlm build/cli/tlm --kernel build/tests/guest/guest.elf \\
      --qemu build/qemu-tlm/bin/qemu-system-x86_64 [--lanes 4] [--rounds 3] [--mem-mib 256]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'libvirt'))
import lvhosts  # noqa: E402

DOM = 'tlmb'
PLAIN_PORT = 7412

# The plain relay, run on each host as `python3 libvirt_migrate.py --plain-relay
# out|in ...`: threads that copy bytes both ways.
def _pump(a, b):
    import socket
    try:
        while True:
            d = a.recv(1 << 18)
            if not d:
                break
            b.sendall(d)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def plain_relay(mode, path, addr):
    import socket
    import threading
    if mode == 'out':
        if os.path.exists(path):
            os.unlink(path)
        ls = socket.socket(socket.AF_UNIX)
        ls.bind(path)
    else:
        ls = socket.socket(socket.AF_INET)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, PLAIN_PORT))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        if mode == 'out':
            o = socket.create_connection((addr, PLAIN_PORT))
        else:
            o = socket.socket(socket.AF_UNIX)
            o.connect(path)
        for x, y in ((c, o), (o, c)):
            threading.Thread(target=_pump, args=(x, y), daemon=True).start()


def xml(a, hostmount):
    return """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel>
    <cmdline>pattern=mg rate=%d verify=1</cmdline></os>
  <devices>
    <emulator>%s</emulator>
    <serial type='file'><source path='%s/serial.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
""" % (DOM, a.mem_mib, a.kernel, a.rate, a.qemu, hostmount)


def completed_stats(h):
    out = h.virsh('domjobinfo', DOM, '--completed').stdout
    vals = {}
    for key, name in (('Time elapsed', 'total_ms'), ('Total downtime', 'downtime_ms')):
        m = re.search(r'^%s:\s+(\d+)\s+ms' % key, out, re.M)
        vals[name] = int(m.group(1)) if m else None
    m = re.search(r'^Memory processed:\s+([\d.]+) (\w+)', out, re.M)
    if m:
        f = {'KiB': 1 / 1024.0, 'MiB': 1.0, 'GiB': 1024.0}.get(m.group(2), 1.0)
        vals['ram_mib'] = round(float(m.group(1)) * f, 1)
    return vals


def run_one(a, psk, peer, src, dst):
    t0 = time.time()
    if peer == 'plain-relay':
        me = os.path.abspath(__file__)
        pin = dst.popen([sys.executable, me, '--plain-relay', 'in', '/run/tlm/plain.sock',
                         dst.addr], os.path.join(dst.dir, 'plain-in.log'))
        pout = src.popen([sys.executable, me, '--plain-relay', 'out', '/run/tlm/plain.sock',
                          dst.addr], os.path.join(src.dir, 'plain-out.log'))
        time.sleep(1)
        t0 = time.time()
        r = src.run(['virsh', '-c', 'qemu:///system', 'migrate', '--live', '--p2p', DOM,
                     'qemu+tcp://%s/system' % dst.addr, '--migrateuri',
                     'unix:///run/tlm/plain.sock', '--parallel', '--parallel-connections',
                     str(a.lanes)], check=False, timeout=600)
        ok = r.returncode == 0
        for p in (pin, pout):
            p.kill()
            p.wait()
    elif peer == 'tlm':
        r = src.run([a.tlm, 'virsh-migrate', DOM, 'qemu+tcp://%s/system' % dst.addr,
                     '--psk', psk, '--lanes', str(a.lanes), '--json'], check=False,
                    timeout=600)
        ok = r.returncode == 0
    else:
        argv = ['virsh', '-c', 'qemu:///system', 'migrate', '--live', '--p2p', DOM,
                'qemu+tcp://%s/system' % dst.addr, '--migrateuri', 'tcp://%s' % dst.addr]
        if peer == 'direct-parallel':
            argv += ['--parallel', '--parallel-connections', str(a.lanes)]
        r = src.run(argv, check=False, timeout=600)
        ok = r.returncode == 0
    wall = int((time.time() - t0) * 1000)
    if not ok:
        return {'peer': peer, 'ok': False, 'error': (r.stderr or r.stdout).strip()[-300:]}
    if peer == 'tlm':
        rep = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith('{')][-1])
        st = {'total_ms': rep.get('total_ms'), 'downtime_ms': rep.get('downtime_ms'),
              'ram_mib': round(rep.get('ram_transferred', 0) / 1048576.0, 1)}
    else:
        st = completed_stats(dst)
    st.update({'peer': peer, 'ok': True, 'wall_ms': wall, 'from': src.name})
    return st


PEERS = ('direct-tcp', 'direct-parallel', 'plain-relay', 'tlm')


def main():
    if len(sys.argv) == 5 and sys.argv[1] == '--plain-relay':
        plain_relay(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument('--tlm', required=True)
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--lanes', type=int, default=4)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--mem-mib', type=int, default=256)
    ap.add_argument('--rate', type=int, default=4000, help="guest page writes per ms")
    ap.add_argument('--subnet', type=int, default=44)
    a = ap.parse_args()
    for k in ('tlm', 'kernel', 'qemu'):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    work = tempfile.mkdtemp(prefix='tlm-bench-libvirt-')
    pair = lvhosts.HostPair(work, subnet=a.subnet)
    psk = os.path.join(work, 'psk')
    with open(psk, 'w') as f:
        f.write(os.urandom(32).hex() + '\n')
    os.chmod(psk, 0o600)
    runs = []
    try:
        pair.start()
        for h in (pair.a, pair.b):
            h.popen([a.tlm, 'relay-in', '--listen', '%s:7411' % h.addr, '--unix-dir',
                     '/run/tlm', '--psk', psk], os.path.join(h.dir, 'relay-in.log'))
        path = os.path.join(work, 'dom.xml')
        with open(path, 'w') as f:
            f.write(xml(a, pair.hostmount))
        pair.a.virsh('create', path)
        time.sleep(5)   # the guest fills its memory first
        where = [pair.a, pair.b]
        for rnd in range(a.rounds):
            for peer in PEERS:
                src, dst = where
                res = run_one(a, psk, peer, src, dst)
                res['round'] = rnd
                runs.append(res)
                print(json.dumps(res), file=sys.stderr)
                if res['ok']:
                    where.reverse()
                time.sleep(2)
    finally:
        pair.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for peer in PEERS:
        ok = [r for r in runs if r['peer'] == peer and r['ok']]
        if ok:
            summary[peer] = {
                'runs': len(ok),
                'total_ms_median': statistics.median(r['total_ms'] for r in ok),
                'downtime_ms_median': statistics.median(r['downtime_ms'] for r in ok),
            }
    out = {'bench': 'libvirt_migrate', 'mem_mib': a.mem_mib, 'lanes': a.lanes,
           'guest_rate': a.rate, 'load_avg': os.getloadavg()[0], 'runs': runs,
           'summary': summary}
    if 'tlm' in summary and 'direct-parallel' in summary:
        out['tlm_vs_direct_parallel_total'] = round(
            summary['tlm']['total_ms_median'] / summary['direct-parallel']['total_ms_median'], 3)
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
