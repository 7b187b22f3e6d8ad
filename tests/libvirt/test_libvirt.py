#!/usr/bin/env python3
"""`tlm virsh-migrate`: libvirt's own live migration of a libvirt domain,
carried over tlm lanes, between two libvirt hosts on this machine
(lvhosts.py). The domain boots the project's test guest (tests/guest/),
which rewrites its memory and verifies every page; after each migration the
destination's guest must complete two verification passes with no error.

Cases:
  lanes-N          A -> B and back with N multifd lanes (1, 2, 4), relay-in
                   running as a service (--unix-dir) on both hosts
  relay-in-killed  the destination's relay-in is SIGKILLed mid-migration:
                   libvirt rolls back, the domain runs on A, guest clean
  relay-out-killed the same for `tlm virsh-migrate` itself on A
  wrong-psk        a key the relay-in does not hold: refused before libvirt
                   is asked to migrate; the domain runs on, untouched
  dest-refuses     B's libvirt refuses (a domain of that name runs there):
                   libvirt's error reported, the relay ends, A runs on
  protect          --protect on both ends: A -> B with integrity, B -> A with
                   none, each verified by the guest; first a virsh-migrate
                   whose --protect differs from the relay-in service's: refused
                   before libvirt is asked, both modes named, the service
                   serves on
  cli              --help and bad options of virsh-migrate, relay-out, relay-in

The domain's QEMU is the one built with tlm's patch series (only for its
backport of upstream 03bfc2188f): Debian's QEMU 7.2 loses guest writes
under TCG during any live migration when guest RAM is a multiple of 256 KiB,
and libvirt rounds RAM to whole MiB. Skips (77) without root, libvirt, the
patched QEMU or the test guest.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lvhosts  # noqa: E402

DOM = 'tlmg'
PORT = '7411'


def skip(why):
    print('SKIP: ' + why)
    sys.exit(77)


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print('ok: ' + msg)


def domain_xml(a, append):
    return """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel><cmdline>%s</cmdline></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>%s</emulator>
    <serial type='file'><source path='%s/serial.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
""" % (DOM, a.kernel, append, a.qemu, a.pair.hostmount)


class Case:
    def __init__(self, a, guestrun):
        self.args = a
        self.gr = guestrun
        self.work = tempfile.mkdtemp(prefix='tlm-libvirt-')
        self.pair = lvhosts.HostPair(self.work, subnet=a.subnet)
        a.pair = self.pair
        self.psk = os.path.join(self.work, 'psk')
        with open(self.psk, 'w') as f:
            f.write(os.urandom(32).hex() + '\n')
        os.chmod(self.psk, 0o600)
        self.relays = {}

    def start(self, append='pattern=mg rate=4000 verify=1'):
        t0 = time.time()
        self.pair.start()
        print('two libvirt hosts up in %.1f s' % (time.time() - t0))
        xml = os.path.join(self.work, 'dom.xml')
        with open(xml, 'w') as f:
            f.write(domain_xml(self.args, append))
        self.pair.a.virsh('create', xml)
        self.wait_running(self.pair.a)

    def wait_running(self, h, timeout=60):
        """The guest has filled its memory and reports its first status."""
        log = self.gr.SerialLog(h.serial())
        end = time.time() + timeout
        while time.time() < end:
            log.poll()
            if log.last('status') is not None:
                return
            time.sleep(0.2)
        fail('the guest on %s did not start within %d s' % (h.name, timeout))

    def relay_in(self, h, extra=()):
        log = os.path.join(h.dir, 'relay-in.log')
        p = h.popen([self.args.tlm, 'relay-in', '--listen', '%s:%s' % (h.addr, PORT),
                     '--unix-dir', '/run/tlm', '--psk', self.psk] + list(extra), log)
        end = time.time() + 20
        while time.time() < end:
            if 'listening on port' in open(log).read():
                self.relays[h.name] = (p, log)
                return p
            if p.poll() is not None:
                break
            time.sleep(0.1)
        fail('relay-in on %s did not start: %s' % (h.name, open(log).read()[-1000:]))

    def migrate(self, src, dst, lanes, psk=None, extra=(), popen=False):
        argv = [self.args.tlm, 'virsh-migrate', DOM, 'qemu+tcp://%s/system' % dst.addr,
                '--psk', psk or self.psk, '--lanes', str(lanes), '--json'] + list(extra)
        if popen:
            return src.popen(argv, os.path.join(src.dir, 'virsh-migrate.log'))
        r = src.run(argv, check=False, timeout=300)
        print('--- virsh-migrate %s -> %s, %d lanes (exit %d)\n%s%s' % (
            src.name, dst.name, lanes, r.returncode, r.stdout, r.stderr))
        rep = None
        for line in r.stdout.splitlines():
            if line.startswith('{'):
                rep = json.loads(line)
        return r.returncode, rep, r.stderr

    def wait_verified(self, h, what, timeout=120):
        """Two complete verification passes after this point, no error."""
        log = self.gr.SerialLog(h.serial())
        end = time.time() + timeout
        base = None
        while time.time() < end:
            log.poll()
            st = log.last('status')
            if st is not None and base is None:
                base = st['vpasses']
            if st is not None and st['vpasses'] >= base + 2:
                break
            time.sleep(0.5)
        else:
            fail('%s: no two verification passes within %d s (last status %s)'
                 % (what, timeout, log.last('status')))
        s = log.summary()
        check(s['errors'] == 0 and not s['faults'],
              '%s: guest verified every page, %d errors (status %s)'
              % (what, s['errors'], s['status']))

    def stop(self):
        self.pair.stop()
        if os.environ.get('TLM_KEEP_WORK'):
            print('work dir kept: ' + self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def case_lanes(c, lanes):
    a, b = c.pair.a, c.pair.b
    c.start()
    c.relay_in(a)
    c.relay_in(b)
    for src, dst in ((a, b), (b, a)):
        rc, rep, err = c.migrate(src, dst, lanes)
        check(rc == 0 and rep and rep['completed'] and rep['relay_ok'],
              '%s -> %s over %d lanes: libvirt completed, relays carried every channel'
              % (src.name, dst.name, lanes))
        check(rep['destination'] == 'running' and dst.domain_state(DOM) == 'running' and
              src.domain_state(DOM) is None,
              'the domain runs on %s and is gone from %s' % (dst.name, src.name))
        check(len(rep['lane_bytes']) == lanes + 1 and all(x > 0 for x in rep['lane_bytes']),
              'every lane (main + %d multifd) carried bytes: %s' % (lanes, rep['lane_bytes']))
        check(rep['protect'] == 'encrypt', 'sealed by default (protect %s)' % rep['protect'])
        check(rep['downtime_ms'] > 0 and rep['total_ms'] > 0,
              'libvirt reports %d ms job time, %d ms downtime'
              % (rep['total_ms'], rep['downtime_ms']))
        c.wait_verified(dst, 'the guest on %s after the migration' % dst.name)
    for name, (p, log) in c.relays.items():
        check(p.poll() is None, 'the relay-in service on %s keeps serving' % name)
        text = open(log).read()
        check(text.count('every channel of') == 1,
              'relay-in on %s served exactly one migration cleanly' % name)


def wait_job_started(h, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        r = h.virsh('domjobinfo', DOM, check=False)
        for line in r.stdout.splitlines():
            if line.startswith('Memory processed:'):
                v = line.split(':', 1)[1].split()
                mib = float(v[0]) * (1024 if v[1].startswith('GiB') else 1 if
                                     v[1].startswith('MiB') else 1 / 1024.0)
                if mib >= 8:
                    return mib
        time.sleep(0.1)
    fail('the migration did not get going within %d s' % timeout)


def case_killed(c, which):
    a, b = c.pair.a, c.pair.b
    c.start()
    c.pair.shape('200mbit')   # about 6 s for 128 MiB: time to kill mid-way
    relay = c.relay_in(b)
    dom_id = a.virsh('domid', DOM).stdout.strip()
    mig = c.migrate(a, b, 2, popen=True)
    mib = wait_job_started(a)
    victim = relay if which == 'in' else mig
    # nsenter runs the tlm process as its child: kill that (the whole group).
    for p in subprocess.run(['pgrep', '-P', str(victim.pid)], capture_output=True,
                            text=True).stdout.split():
        os.kill(int(p), signal.SIGKILL)
    victim.kill()
    print('relay-%s killed after %.1f MiB' % (which, mib))
    try:
        rc = mig.wait(120)
    except subprocess.TimeoutExpired:
        if os.environ.get('TLM_DEBUG_HANG'):
            print(subprocess.run(['gdb', '-p', str(mig.pid), '-batch', '-ex',
                                  'thread apply all bt'], capture_output=True,
                                 text=True).stdout[-6000:])
        mig.kill()
        fail('virsh-migrate did not end after the relay died: %s\njob on A: %s' % (
            open(os.path.join(a.dir, 'virsh-migrate.log')).read()[-2000:],
            a.virsh('domjobinfo', DOM, check=False).stdout))
    out = open(os.path.join(a.dir, 'virsh-migrate.log')).read()
    print('--- virsh-migrate\n' + out)
    if which == 'in':
        check(rc == 1 and '"completed":false' in out, 'virsh-migrate reports the failure')
    # libvirt rolls back on its own, also when tlm virsh-migrate is gone.
    end = time.time() + 60
    while time.time() < end and a.virsh('domjobinfo', DOM, check=False).stdout.find(
            'Job type:         Unbounded') >= 0:
        time.sleep(0.2)
    check(a.domain_state(DOM) == 'running', 'libvirt rolled back: the domain runs on A')
    check(a.virsh('domid', DOM).stdout.strip() == dom_id, 'it is the same QEMU (id %s)' % dom_id)
    # B's incoming QEMU may be left paused: QEMU 7.2's multifd_recv_sync_main
    # waits forever once its multifd threads died mid-stream (docs/libvirt.md).
    check(b.domain_state(DOM) in (None, 'paused', 'shut off'),
          'it does not run on B (%s)' % b.domain_state(DOM))
    c.wait_verified(a, 'the guest on A after the failed migration')


def case_wrong_psk(c):
    a, b = c.pair.a, c.pair.b
    c.start()
    c.relay_in(b)
    other = os.path.join(c.work, 'other.psk')
    with open(other, 'w') as f:
        f.write(os.urandom(32).hex() + '\n')
    os.chmod(other, 0o600)
    t0 = time.time()
    rc, rep, err = c.migrate(a, b, 2, psk=other)
    check(rc == 1 and rep and not rep['completed'] and rep.get('error'),
          'refused: %s' % (rep or {}).get('error'))
    check(time.time() - t0 < 30, 'refused within %.1f s' % (time.time() - t0))
    check(a.domain_state(DOM) == 'running' and b.domain_state(DOM) is None,
          'the domain runs on A, nothing on B')
    r = a.virsh('domjobinfo', DOM, '--completed', check=False)
    check('Migration' not in r.stdout and 'Completed' not in r.stdout,
          'libvirt never started a migration job')
    c.wait_verified(a, 'the guest on A')


def case_protect(c):
    a, b = c.pair.a, c.pair.b
    c.start()
    c.relay_in(b, ['--protect', 'integrity'])
    c.relay_in(a, ['--protect', 'none'])
    t0 = time.time()
    rc, rep, err = c.migrate(a, b, 2)
    check(rc == 1 and rep and not rep['completed'] and rep['protect'] == 'encrypt' and
          '--protect encrypt' in rep.get('error', '') and
          'protects lanes with --protect integrity, not encrypt' in err,
          'virsh-migrate --protect encrypt against relay-in --protect integrity refused: %s'
          % [x for x in err.splitlines() if 'protect' in x][:1])
    check(time.time() - t0 < 30, 'refused within %.1f s' % (time.time() - t0))
    r = a.virsh('domjobinfo', DOM, '--completed', check=False)
    check(a.domain_state(DOM) == 'running' and b.domain_state(DOM) is None and
          'Migration' not in r.stdout and 'Completed' not in r.stdout,
          'libvirt was never asked: the domain runs on A, nothing on B')
    for src, dst, mode in ((a, b, 'integrity'), (b, a, 'none')):
        rc, rep, err = c.migrate(src, dst, 2, extra=['--protect', mode])
        check(rc == 0 and rep and rep['completed'] and rep['relay_ok'] and
              rep['protect'] == mode, '%s -> %s with --protect %s: completed'
              % (src.name, dst.name, mode))
        check(dst.domain_state(DOM) == 'running' and src.domain_state(DOM) is None,
              'the domain runs on %s' % dst.name)
        c.wait_verified(dst, 'the guest on %s after the migration (protect %s)'
                        % (dst.name, mode))
    for name, (p, log) in c.relays.items():
        text = open(log).read()
        check(p.poll() is None and text.count('every channel of') == 1,
              'the relay-in service on %s served one migration and serves on' % name)
    check('peer protects its lanes with --protect encrypt, this side with --protect '
          'integrity; refused' in open(c.relays['B'][1]).read(),
          "B's relay-in logged why it refused the first session")


def case_dest_refuses(c):
    a, b = c.pair.a, c.pair.b
    c.start()
    c.relay_in(b)
    # A different domain of the same name already runs on B.
    xml = open(os.path.join(c.work, 'dom.xml')).read().replace(
        'pattern=mg rate=4000 verify=1', 'pattern=idle')
    xb = os.path.join(c.work, 'domB.xml')
    with open(xb, 'w') as f:
        f.write(xml)
    b.virsh('create', xb)
    uuid_b = b.virsh('domuuid', DOM).stdout.strip()
    rc, rep, err = c.migrate(a, b, 2)
    check(rc == 1 and rep and not rep['completed'] and 'error' in rep,
          'libvirt refused, reported: %s' % (rep or {}).get('error'))
    check(a.domain_state(DOM) == 'running', 'the domain runs on A')
    check(b.virsh('domuuid', DOM).stdout.strip() == uuid_b, "B's own domain is untouched")
    rp, log = c.relays['B']
    check(rp.poll() is None, 'the relay-in service on B serves on')
    c.wait_verified(a, 'the guest on A')


def case_cli(a):
    def run(*argv):
        r = subprocess.run([a.tlm] + list(argv), capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr

    for cmd in ('virsh-migrate', 'relay-out', 'relay-in'):
        rc, out = run(cmd, '--help')
        check(rc == 0 and 'usage: tlm ' + cmd in out, '%s --help' % cmd)
    rc, out = run('virsh-migrate', 'dom')
    check(rc == 2 and 'give the domain' in out, 'virsh-migrate without DESTURI: usage error')
    rc, out = run('virsh-migrate', 'dom', 'qemu:///system', '--psk', '/nonexistent')
    check(rc == 2 and 'host' in out, 'a DESTURI without a host needs --to: %s' % out.strip())
    rc, out = run('virsh-migrate', 'dom', 'qemu+tcp://h/system', '--lanes', '0', '--psk', 'x')
    check(rc == 2 and '--lanes' in out, '--lanes 0 refused')
    rc, out = run('virsh-migrate', 'dom', 'qemu+tcp://h/system', '--policy', 'fast',
                  '--psk', 'x')
    check(rc == 2 and '--policy' in out, 'unknown policy refused')
    for cmd in (['virsh-migrate', 'dom', 'qemu+tcp://h/system', '--psk', 'x'],
                ['relay-out', '--unix', '/tmp/x.sock', '--to', '127.0.0.1:1', '--psk', 'x'],
                ['relay-in', '--listen', '127.0.0.1:0', '--unix', '/x', '--psk', 'x']):
        for bad in ('aes', 'None', ''):
            rc, out = run(*(cmd + ['--protect', bad]))
            check(rc == 2 and 'want encrypt (the default), integrity or none' in out,
                  '%s --protect %r refused' % (cmd[0], bad))
    rc, out = run('relay-in', '--listen', '127.0.0.1:0', '--psk', 'x')
    check(rc == 2 and '--unix' in out, 'relay-in needs --unix or --unix-dir')
    rc, out = run('relay-in', '--listen', '127.0.0.1:0', '--unix', '/x', '--unix-dir', '/y',
                  '--psk', 'x')
    check(rc == 2, 'relay-in refuses both --unix and --unix-dir')
    rc, out = run('relay-out', '--unix', '/tmp/x.sock', '--psk', 'x')
    check(rc == 2 and '--to' in out, 'relay-out needs --to')
    d = tempfile.mkdtemp()
    try:
        psk = os.path.join(d, 'psk')
        with open(psk, 'w') as f:
            f.write(os.urandom(32).hex() + '\n')
        os.chmod(psk, 0o600)
        plain = os.path.join(d, 'plain')
        open(plain, 'w').close()
        rc, out = run('relay-out', '--unix', plain, '--to', '127.0.0.1:1', '--psk', psk)
        check(rc == 1 and 'not a socket' in out, 'relay-out will not replace a file: %s'
              % out.strip())
        rc, out = run('relay-out', '--unix', os.path.join(d, 'bad name.sock'),
                      '--to', '127.0.0.1:1', '--psk', psk)
        check(rc == 1 and 'socket name' in out, 'a socket name with a space refused')
        rc, out = run('relay-out', '--unix', os.path.join(d, 'm.sock'), '--to',
                      '127.0.0.1:1', '--psk', psk, '--json')
        check(rc == 1 and '"completed":false' in out and not os.path.exists(
            os.path.join(d, 'm.sock')), 'no relay-in there: failure reported, socket removed')
    finally:
        shutil.rmtree(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tlm', required=True)
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--qemu', required=True, help='QEMU with the 03bfc2188f backport')
    ap.add_argument('--guest-py', required=True)
    ap.add_argument('--subnet', type=int, default=40, help='198.18.N.0/30 for the veth')
    ap.add_argument('case')
    a = ap.parse_args()
    a.kernel = os.path.abspath(a.kernel)
    a.qemu = os.path.abspath(a.qemu)
    a.tlm = os.path.abspath(a.tlm)
    if a.case == 'cli':
        case_cli(a)
        return
    if os.geteuid() != 0:
        skip('needs root (network and mount namespaces)')
    for tool in ('libvirtd', 'virtlogd', 'virsh', 'nsenter', 'unshare', 'ip', 'tc'):
        if not shutil.which(tool):
            skip('%s not installed (scripts/deps.sh installs libvirt)' % tool)
    if not os.access(a.qemu, os.X_OK):
        skip('%s not built (scripts/build-qemu.sh)' % a.qemu)
    if not os.path.exists(a.kernel):
        skip('test guest not built')
    sys.path.insert(0, a.guest_py)
    import guestrun
    c = Case(a, guestrun)
    try:
        if a.case.startswith('lanes-'):
            case_lanes(c, int(a.case[6:]))
        elif a.case == 'relay-in-killed':
            case_killed(c, 'in')
        elif a.case == 'relay-out-killed':
            case_killed(c, 'out')
        elif a.case == 'wrong-psk':
            case_wrong_psk(c)
        elif a.case == 'dest-refuses':
            case_dest_refuses(c)
        elif a.case == 'protect':
            case_protect(c)
        else:
            fail('unknown case %s' % a.case)
    finally:
        c.stop()
    print('PASS')


if __name__ == '__main__':
    main()
