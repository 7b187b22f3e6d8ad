#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Relay migrations of the test guest between two real QEMUs (TCG), driven
through the `tlm migrate` / `tlm receive` commands.

    test_relay.py --tlm build/cli/tlm --kernel guest.elf --guest-py DIR
                  [--mem-mib 128] [--addr 127.0.0.1] CASE

Cases:
  idle-qemu, idle-tlm, mg-qemu, mg-tlm   a migration that must complete: the
      destination runs, the source is stopped only at the end, and the guest
      on the destination verifies every page (two full verification passes
      after the switchover) with zero errors.
  dest-killed   the destination QEMU is killed mid-migration
  relay-killed  `tlm migrate` itself is SIGKILLed mid-migration: its
                guardian process rolls the source back (migration
                cancelled, guest running, capabilities as they were)
  lane-cut      one data lane is cut mid-migration (a TCP proxy in between)
  wrong-psk     the source holds another key
  garbage       random bytes on the receiver's port, then a good migration
  sigint        Ctrl-C (SIGINT) to `tlm migrate` mid-migration
  timeout       `tlm migrate --timeout 2` on a migration that needs longer
  dest-silent   `tlm receive` is stopped (SIGSTOP: no FIN, no RST, no
                keepalive) mid-migration: `tlm migrate --peer-timeout 3`
                gives up by its silence timer, naming the receiver; once
                continued, the receiver fails and its QEMU is gone
  source-silent `tlm migrate` is stopped mid-migration: `tlm receive
                --peer-timeout 3` gives up by its silence timer, naming the
                source, and its QEMU is gone; once continued, the source
                fails too
  preflight     a bad --qmp path, QEMUs in the wrong state, mismatched lane
                counts: refused with a clear message before anything starts
  passive-dest-silent, passive-source-silent   relay-in (relay-out) is
                stopped mid-migration: the other, --peer-timeout 3, gives up
                by its silence timer, naming it, well before a lane's send
                timeout; QEMU's migration fails on both hosts (the source
                QEMU's through its main channel only), the source VM runs
                on and its guest verifies clean
  passive       the passive relays (tlm relay-out / relay-in), default
                --protect (encrypt); passive-integrity, passive-none: each
                mode named on both; passive-mismatch: a relay-out with
                --protect none against a relay-in with integrity is refused
                (both modes in the error), then a matching one completes
  In the failure cases the source VM must still run afterwards and its guest
  still verify clean; `tlm migrate` must fail with a clear message.
  CASE-dpdk, CASE-rdma: the same over DPDK lanes (net_memif between the two
  tlm processes) or RDMA lanes instead of tcp.
  CASE-dpdk-afpacket: DPDK lanes over net_af_packet on a veth pair between
  two network namespaces the test creates (198.18.9.1 receives, .2 sends;
  each tlm runs in its own, the QEMUs outside: their sockets are files);
  CASE-dpdk-tap: the receiver on net_tap (queues=4), the sender on
  net_af_packet on a macvlan on the tap, in one namespace (as
  tests/dpdk/migrate_ports.sh). Need root (skip otherwise).

--addr is where `tlm receive` listens (an RDMA-capable address for rdma);
--mem-mib sizes both guests (small ones for slow hosts, such as the nested
TCG of tests/vm).

Each QEMU gets two QMP sockets: one for tlm, one for this test.
Exit 0 pass, 1 fail, 77 skip (no QEMU / no guest).
"""
import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MEM_MIB = 128
LANES = 4
SILENT_S = 3    # --peer-timeout of the end that judges a stopped peer
SILENT_MARGIN_S = 15  # how much later than that it may end on a loaded
                      # machine: still well before a lane's send timeout


def fail(msg):
    print('FAIL: ' + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print('ok ' + msg, flush=True)


class QMP:
    """Just enough QMP for the test's own monitor socket."""

    def __init__(self, path, timeout=20):
        end = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.s.settimeout(timeout)
        self.f = self.s.makefile('rb')
        json.loads(self.f.readline())
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.s.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError('QMP closed')
            r = json.loads(line)
            if 'return' in r:
                return r['return']
            if 'error' in r:
                raise RuntimeError(r['error'])

    def status(self):
        return self.cmd('query-status')['status']

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class VM:
    """The test guest in a QEMU with two QMP sockets, one for tlm (tlm_qmp)
    and one for the test (test_qmp, open as q), in workdir/name. incoming:
    True for -incoming defer, or the -incoming argument. mem_mib: None for
    MEM_MIB; qemu: None for guestrun's choice ($QEMU, then the PATH);
    extra: more QEMU arguments. tests/qemu/test_inside.py,
    test_checkpoint_vm.py and the QEMU benchmarks in bench/ use it too."""

    def __init__(self, guestrun, kernel, workdir, name, append, incoming=False,
                 mem_mib=None, qemu=None, extra=(), qmp_timeout=20):
        self.dir = os.path.join(workdir, name)
        os.mkdir(self.dir)
        self.tlm_qmp = os.path.join(self.dir, 'tlm.qmp')
        self.test_qmp = os.path.join(self.dir, 'test.qmp')
        args = ['-qmp', 'unix:%s,server=on,wait=off' % self.tlm_qmp,
                '-qmp', 'unix:%s,server=on,wait=off' % self.test_qmp] + list(extra)
        if incoming:
            args += ['-incoming', 'defer' if incoming is True else incoming]
        self.g = guestrun.Guest(kernel, append=append,
                                mem_mib=MEM_MIB if mem_mib is None else mem_mib, qemu=qemu,
                                workdir=self.dir, gdb=False, extra_args=args)
        self.g.start()
        self.q = QMP(self.test_qmp, timeout=qmp_timeout)

    def alive(self):
        return self.g.proc.poll() is None

    def state(self):
        """What became of the QEMU process, for a failure message."""
        rc = self.g.proc.poll()
        if rc is None:
            return 'still running'
        what = 'killed by signal %d' % -rc if rc < 0 else 'exited with status %d' % rc
        try:
            tail = self.g.proc.stdout.read().decode(errors='replace').strip().splitlines()[-8:]
        except (OSError, ValueError):
            tail = []
        return what + (', its last words:\n  ' + '\n  '.join(tail) if tail else '')

    def stop(self):
        self.q.close()
        self.g.stop()


def patched_guestrun(a):
    """The test guest's runner (tests/guest/guestrun.py, from --guest-py)
    for a test that needs QEMU with tlm's patch series (--qemu) and the
    guest (--kernel); skips (77) without either."""
    sys.path.insert(0, a.guest_py)
    import guestrun
    if not os.access(a.qemu, os.X_OK):
        print('SKIP: no QEMU with the tlm patch series (run scripts/build-qemu.sh)')
        sys.exit(77)
    if not os.path.exists(a.kernel):
        print('SKIP: test guest not built')
        sys.exit(77)
    return guestrun


def psk_file(workdir, name='psk'):
    """A fresh random key (hex, mode 600) at workdir/name."""
    path = os.path.join(workdir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(os.urandom(32).hex())
    return path


def migration(q, states, timeout, interval=0.1, before=None):
    """QEMU's query-migrate once its status is one of states (and, given
    an earlier migration's query-migrate, once it is another's), or the
    last one read when timeout seconds have passed."""
    end = time.monotonic() + timeout
    st = {}
    while time.monotonic() < end:
        st = q.cmd('query-migrate')
        if st.get('status') in states and (before is None or st != before):
            break
        time.sleep(interval)
    return st


def wait_verified(vm, what, timeout=90, idle=False):
    """Two complete verification passes with no error (the first may have
    started before the point of interest)."""
    key = 'sweep' if idle else 'vpasses'
    vm.g.log.poll()
    last = vm.g.log.last('status')
    base = last[key] if last else None

    def done(lg):
        st = lg.last('status')
        if st is None:
            return False
        start = base if base is not None else first_status(lg)[key]
        return st[key] >= start + 2

    vm.g.wait_for(done, timeout, what)
    s = vm.g.log.summary()
    check(s['errors'] == 0 and not s['faults'],
          '%s: guest verified every page, %d errors (status %s)'
          % (what, s['errors'], s['status']))


def first_status(lg):
    for k, f in lg.events:
        if k == 'status':
            return f
    return None


def run_tlm(args, **kw):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, **kw)


def wait_listening(p, what, timeout=60):
    """Until the tlm process p says on stderr that it listens (a loaded
    machine may take seconds to get there); the lines read are kept for
    finish()."""
    end = time.monotonic() + timeout
    early = getattr(p, 'early_err', b'')
    while time.monotonic() < end and p.poll() is None:
        r, _, _ = select.select([p.stderr], [], [], 0.1)
        if not r:
            continue
        # os.read, not readline: bytes in a Python buffer would be lost to
        # communicate(), which reads the descriptor.
        early += os.read(p.stderr.fileno(), 4096)
        p.early_err = early
        if b'listening on port' in early:
            return
    fail('%s did not start listening within %d s: %s' % (what, timeout,
                                                         early.decode()[-1000:]))


def finish(p, what, timeout=120):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        fail('%s did not finish in %d s: %s' % (what, timeout, err.decode()[-2000:]))
    out, err = out.decode(), getattr(p, 'early_err', b'').decode() + err.decode()
    sys.stdout.write('--- %s (exit %d)\n%s%s' % (what, p.returncode, out, err))
    return p.returncode, out, err


def wait_under_way(src):
    """Until the source has sent 8 MiB of an active migration (30 s)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        st = src.q.cmd('query-migrate')
        if st.get('status') == 'active' and st.get('ram', {}).get('transferred', 0) > 8 << 20:
            break
        time.sleep(0.05)
    check(st.get('status') == 'active', 'migration under way (%d bytes sent)'
          % st.get('ram', {}).get('transferred', 0))


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LaneCutter:
    """A TCP proxy for the tlm session: forwards every lane, and cuts the
    connection number `victim` (0 = control, 1 = main, 2.. = multifd) once
    `after` bytes went through it towards the receiver. With `rate` (bytes
    a second) it slows that lane to the rate there instead of cutting it,
    so a migration is surely still under way whatever the machine's speed
    (`cut` is then set when the lane slows)."""

    def __init__(self, target_port, victim, after, rate=None):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.target = target_port
        self.victim = victim
        self.after = after
        self.rate = rate
        self.cut = threading.Event()
        self.n = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(('127.0.0.1', self.target))
            idx = self.n
            self.n += 1
            threading.Thread(target=self.pump, args=(c, u, idx, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, idx, False), daemon=True).start()

    def pump(self, a, b, idx, fwd):
        sent = 0
        victim = fwd and idx == self.victim
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(d)
                sent += len(d)
                if not victim or sent < self.after:
                    continue
                if self.rate:
                    self.cut.set()
                    time.sleep(len(d) / self.rate)
                    continue
                if not self.cut.is_set():
                    self.cut.set()
                    for s in (a, b):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0')
                        s.close()
                    return
        except OSError:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


class PortNet:
    """Network namespaces for DPDK lanes over kernel-visible ports (kind
    afpacket or tap): the receiver's and the sender's command prefix
    (ip netns exec NS), their --transport-args and the address the
    receiver listens on. Nothing on the kernel side has an address: only
    the two tlm processes answer ARP."""

    def __init__(self, kind):
        self.ns = []
        tag = os.getpid() % 100000
        try:
            if kind == 'afpacket':
                a, b = 'tlmrlA%d' % tag, 'tlmrlB%d' % tag
                self.add_ns(a)
                self.add_ns(b)
                va, vb = 'trva%d' % tag, 'trvb%d' % tag
                self.ip('link', 'add', va, 'netns', a, 'type', 'veth', 'peer', 'name', vb,
                        'netns', b)
                self.ip('-n', a, 'link', 'set', va, 'up')
                self.ip('-n', b, 'link', 'set', vb, 'up')
                self.rx_args = 'vdev=net_af_packet0,iface=%s,ip=198.18.9.1' % va
                self.tx_args = 'vdev=net_af_packet0,iface=%s,ip=198.18.9.2' % vb
            else:
                # net_tap gives the tap its port's MAC, and a port ignores
                # frames from its own MAC: af_packet sits on a macvlan
                a = b = 'tlmrlT%d' % tag
                self.add_ns(a)
                t, m = 'trt%d' % tag, 'trm%d' % tag
                self.ip('-n', a, 'tuntap', 'add', 'dev', t, 'mode', 'tap', 'multi_queue')
                self.ip('-n', a, 'link', 'add', m, 'link', t, 'type', 'macvlan', 'mode', 'bridge')
                self.ip('-n', a, 'link', 'set', m, 'up')
                self.rx_args = 'vdev=net_tap0,iface=%s,ip=198.18.9.1,queues=4' % t
                self.tx_args = 'vdev=net_af_packet0,iface=%s,ip=198.18.9.2' % m
        except (OSError, subprocess.CalledProcessError) as e:
            self.close()
            print('SKIP: cannot set up the network namespaces for %s: %s' % (kind, e))
            sys.exit(77)
        self.rx_pre = ['ip', 'netns', 'exec', a]
        self.tx_pre = ['ip', 'netns', 'exec', b]
        self.addr = '198.18.9.1'

    def ip(self, *args):
        subprocess.run(['ip'] + list(args), check=True, stdout=subprocess.DEVNULL)

    def add_ns(self, name):
        self.ip('netns', 'add', name)
        self.ns.append(name)
        self.ip('-n', name, 'link', 'set', 'lo', 'up')
        subprocess.run(['ip', 'netns', 'exec', name, 'sysctl', '-qw',
                        'net.ipv6.conf.all.disable_ipv6=1'], check=True)

    def close(self):
        for n in self.ns:
            subprocess.run(['ip', 'netns', 'del', n], stderr=subprocess.DEVNULL)
        self.ns = []


def passive(a, src, dst, workdir, psk, port, procs, protect=None, mismatch=False,
            silent=None):
    """The passive relays (tlm relay-out / relay-in, no QMP) between two
    stock QEMUs that the test drives itself, as libvirt would: multifd on
    both, the destination listening on its unix socket, the source
    migrating to another; the relays join the two. protect: both relays'
    --protect (None: the default, encrypt). mismatch: first a relay-out
    with another --protect, which the relay-in must refuse with a clear
    error before QEMU is involved, and keep waiting for a good one.
    silent: 'in' or 'out', the relay stopped mid-migration (passive_silent)."""
    sock_a = os.path.join(workdir, 'a.sock')
    sock_b = os.path.join(workdir, 'b.sock')
    mode = protect or 'encrypt'
    popt = ['--protect', protect] if protect else []
    short = ['--peer-timeout', str(SILENT_S)]
    for vm in (src, dst):
        vm.q.cmd('migrate-set-capabilities', capabilities=[
            {'capability': 'multifd', 'state': True}])
        vm.q.cmd('migrate-set-parameters', **{'multifd-channels': LANES})
    if silent:
        src.q.cmd('migrate-set-parameters', **{'max-bandwidth': 16 << 20})
    dst.q.cmd('migrate-incoming', uri='unix:' + sock_b)
    rin = run_tlm([a.tlm, 'relay-in', '--listen', '127.0.0.1:%d' % port, '--unix', sock_b,
                   '--psk', psk, '--lanes', str(LANES), '--json'] + popt +
                  (short if silent == 'out' else []))
    procs.append(rin)
    wait_listening(rin, 'tlm relay-in')
    out_args = [a.tlm, 'relay-out', '--unix', sock_a, '--to', '127.0.0.1:%d' % port,
                '--psk', psk, '--lanes', str(LANES), '--json']
    if mismatch:
        other = 'none' if mode != 'none' else 'encrypt'
        bad = run_tlm(out_args + ['--protect', other])
        procs.append(bad)
        rc, out, err = finish(bad, 'tlm relay-out --protect ' + other, 60)
        r = json.loads(out.strip().splitlines()[-1])
        check(rc == 1 and not r['completed'] and r['protect'] == other,
              'relay-out --protect %s against relay-in --protect %s fails' % (other, mode))
        check(('--protect %s' % other) in r['error'] and
              ('protects lanes with --protect %s, not %s' % (mode, other)) in err,
              'its error names both modes: %s / %s' % (
                  r['error'], [x for x in err.splitlines() if 'protect' in x][:1]))
        check(not os.path.exists(sock_a), 'the refused relay-out removed its socket')
        check(src.q.cmd('query-migrate').get('status') in (None, 'none')
              and src.q.status() == 'running', 'the source QEMU never started to migrate')
        check(rin.poll() is None, 'relay-in refused that session and waits for another')
    rout = run_tlm(out_args + popt + (short if silent == 'in' else []))
    procs.append(rout)
    end = time.monotonic() + 20
    while not os.path.exists(sock_a) and time.monotonic() < end and rout.poll() is None:
        time.sleep(0.05)
    check(os.path.exists(sock_a), 'relay-out listens on its unix socket')
    src.q.cmd('migrate', uri='unix:' + sock_a)
    if silent:
        passive_silent(src, dst, rin, rout, silent)
        return
    st = migration(src.q, ('completed', 'failed', 'cancelled'), 120).get('status')
    check(st == 'completed', 'the source QEMU completed its migration (%s)' % st)
    rc, out, _ = finish(rout, 'tlm relay-out')
    rrc, rout_in, err_in = finish(rin, 'tlm relay-in')
    r = json.loads(out.strip().splitlines()[-1])
    ri = json.loads(rout_in.strip().splitlines()[-1])
    check(rc == 0 and r['completed'] and rrc == 0 and ri['completed'],
          'both relays carried every channel to its end and exited 0')
    check(r['protect'] == mode and ri['protect'] == mode and
          'protect %s' % mode in err_in, 'both relays report --protect %s' % mode)
    check(len(r['lane_bytes']) == LANES + 1 and all(b > 0 for b in r['lane_bytes']),
          'main + %d multifd lanes all carried bytes: %s' % (LANES, r['lane_bytes']))
    check(r['lane_bytes'] == ri['lane_bytes'], 'both ends counted the same bytes per lane')
    check(not os.path.exists(sock_a), 'relay-out removed its socket')
    check(dst.q.status() == 'running', 'destination running')
    wait_verified(dst, 'destination after the passive relays (protect %s)' % mode)


def judged_silent(stopped, judge, what, who, dst, dst_fails):
    """Stops `stopped` (SIGSTOP: its threads, keepalive included, say
    nothing and its kernel keeps the connections open) and waits for
    `judge` (the tlm process named what, run with --peer-timeout SILENT_S)
    to fail the migration by its silence timer, naming who, within
    SILENT_S + SILENT_MARGIN_S; dst_fails: the destination QEMU fails
    meanwhile (up to 15 s), before the stopped end is continued. Returns
    whether the destination QEMU was gone by then."""
    stopped.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        jrc, jout, _ = finish(judge, '%s (judging)' % what)
        took = time.monotonic() - t0
        gone = time.monotonic() + 15
        while dst_fails and dst.alive() and time.monotonic() < gone:
            time.sleep(0.1)
        dst_gone = not dst.alive()
    finally:
        stopped.send_signal(signal.SIGCONT)
    r = json.loads(jout.strip().splitlines()[-1])
    err = r.get('error', '')
    check(jrc != 0 and not r['completed'], '%s fails the migration (it ended %.1f s after the '
          'stop; peer timeout %d s)' % (what, took, SILENT_S))
    m = re.search(r'(.+) at (\S+) has sent nothing for (\d+) ms \(peer timeout (\d+) ms\)', err)
    check(m is not None and m.group(1).endswith(who) and
          int(m.group(4)) == SILENT_S * 1000 and int(m.group(3)) >= SILENT_S * 1000,
          'by its silence timer, naming %s: %s' % (who, err))
    check(took < SILENT_S + SILENT_MARGIN_S,
          'it ended %.1f s after the stop: within its peer timeout (%d s) + %d s, well before '
          'a lane\'s send timeout (30 s)' % (took, SILENT_S, SILENT_MARGIN_S))
    return dst_gone


def passive_silent(src, dst, rin, rout, silent):
    """One passive relay stopped (SIGSTOP) mid-migration; the other, with
    --peer-timeout SILENT_S, gives up by its silence timer, naming it, in
    about that time. QEMU's migration fails on both hosts, as libvirt needs
    to roll back: the destination QEMU is gone; the source QEMU runs on,
    its migration failed through its main channel only (the relay-out
    drains the multifd channels until QEMU closes them: shut under QEMU
    7.2's multifd threads, the source QEMU may abort, see relay-chan.c),
    and its guest verifies clean."""
    wait_under_way(src)
    stopped, judge = (rin, rout) if silent == 'in' else (rout, rin)
    who = 'relay-in' if silent == 'in' else 'relay-out'
    # the destination's QEMU fails while a stopped relay-out holds the
    # source's channels (a stopped relay-in holds the destination's)
    dst_gone = judged_silent(stopped, judge, 'tlm relay-out' if judge is rout else
                             'tlm relay-in', who, dst, silent == 'out')
    orc, _, _ = finish(stopped, 'tlm %s (stopped, then continued)' % who, 60)
    check(orc != 0, 'the stopped relay fails too once continued')
    gone = time.monotonic() + 15
    while dst.alive() and time.monotonic() < gone:
        time.sleep(0.1)
    if silent == 'out' or not dst.alive():
        check(not dst.alive() and (dst_gone or silent == 'in'),
              'the destination QEMU failed its incoming migration and is gone')
    else:
        # Its channels closed by a relay-in that was stopped with them
        # open, QEMU 7.2's destination may hang in its incoming-migration
        # cleanup, main loop stuck (docs/qemu.md); libvirt kills it as it
        # rolls back, and so does the test. It must not run the guest.
        try:
            dst.q.s.settimeout(5)
            st = dst.q.status()
        except (OSError, EOFError, RuntimeError) as e:
            st = 'no answer (%r)' % e
        check(st != 'running', 'the destination QEMU never ran the guest (%s); killed, as '
              'libvirt would' % st)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if not src.alive():
            fail('source QEMU %s' % src.state())
        st = src.q.cmd('query-migrate').get('status')
        if st in ('completed', 'failed', 'cancelled'):
            break
        time.sleep(0.1)
    check(st == 'failed', 'the source QEMU\'s migration failed, for its manager to roll back '
          '(%s)' % st)
    check(src.alive() and src.q.status() == 'running', 'source VM still running')
    wait_verified(src, 'source after the failure')


def main():
    global MEM_MIB
    ap = argparse.ArgumentParser()
    ap.add_argument('--tlm', required=True)
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--guest-py', required=True)
    ap.add_argument('--mem-mib', type=int, default=MEM_MIB)
    ap.add_argument('--addr', default='127.0.0.1')
    ap.add_argument('case')
    a = ap.parse_args()

    sys.path.insert(0, a.guest_py)
    import guestrun
    if not guestrun.find_qemu():
        print('SKIP: qemu-system-x86_64 not found')
        sys.exit(77)
    if not os.path.exists(a.kernel):
        print('SKIP: test guest not built')
        sys.exit(77)

    MEM_MIB = a.mem_mib
    addr = a.addr
    case = a.case
    transport = 'tcp'
    ports = None
    for k in ('afpacket', 'tap'):
        if case.endswith('-dpdk-' + k):
            ports, case = k, case[:-len('-' + k)]
    for t in ('dpdk', 'rdma'):
        if case.endswith('-' + t):
            transport, case = t, case[:-len('-' + t)]
    if ports and os.geteuid() != 0:
        print('SKIP: needs root for network namespaces')
        sys.exit(77)
    workdir = tempfile.mkdtemp(prefix='tlm-relay-test-')
    vms = []
    procs = []
    net = None
    # the receiver's and the sender's command prefix and transport args
    rx_pre, tx_pre, rx_targs, tx_targs = [], [], [], []
    if ports:
        net = PortNet(ports)
        addr = net.addr
        rx_pre, tx_pre = net.rx_pre, net.tx_pre
        rx_targs = ['--transport-args', net.rx_args]
        tx_targs = ['--transport-args', net.tx_args]
    try:
        psk = psk_file(workdir)
        other_psk = psk_file(workdir, 'psk2')

        pattern = case.split('-')[0] if case.split('-')[0] in ('idle', 'mg') else 'mg'
        idle = pattern == 'idle'
        if idle:
            append = 'pattern=idle rate=16384'
        elif case == 'mg-qemu':
            # Rate-limited so QEMU's own precopy converges; every write
            # also verifies one page so a full pass does not take long.
            append = 'pattern=mg rate=4000 verify=1'
        elif case == 'mg-tlm':
            append = 'pattern=mg rate=0 verify=2'
        else:
            append = 'pattern=mg rate=4000 verify=1'
        policy = case.split('-')[1] if case in ('idle-qemu', 'idle-tlm', 'mg-qemu', 'mg-tlm') \
            else 'tlm'
        # The relay's first-pass policy is `one-pass` (`tlm` names the engine
        # inside a patched QEMU); the case names keep their short form.
        if policy == 'tlm':
            policy = 'one-pass'

        src = VM(guestrun, a.kernel, workdir, 'src', append)
        vms.append(src)
        dst = VM(guestrun, a.kernel, workdir, 'dst', append, incoming=True)
        vms.append(dst)
        src.g.wait_filled(60)
        src.g.wait_status(1, 30)
        check(src.q.status() == 'running', 'source guest running')
        check(dst.q.status() == 'inmigrate', 'destination waiting (inmigrate)')

        port = free_port()
        if case == 'passive':
            passive(a, src, dst, workdir, psk, port, procs)
            return
        if case in ('passive-dest-silent', 'passive-source-silent'):
            passive(a, src, dst, workdir, psk, port, procs,
                    silent='in' if case == 'passive-dest-silent' else 'out')
            return
        if case.startswith('passive-'):
            mode = case[len('passive-'):]
            if mode == 'mismatch':
                passive(a, src, dst, workdir, psk, port, procs, 'integrity', mismatch=True)
            else:
                passive(a, src, dst, workdir, psk, port, procs, mode)
            return
        recv = run_tlm(rx_pre + [a.tlm, 'receive', '--qmp', dst.tlm_qmp, '--listen',
                                 '%s:%d' % (addr, port), '--psk', psk, '--lanes', str(LANES),
                                 '--accept-timeout', '60', '--json', '--transport', transport]
                       + rx_targs +
                       (['--peer-timeout', str(SILENT_S)] if case == 'source-silent' else []))
        procs.append(recv)
        wait_listening(recv, 'tlm receive')
        mig_args = tx_pre + [a.tlm, 'migrate', '--qmp', src.tlm_qmp, '--lanes', str(LANES),
                             '--policy', policy, '--json', '--timeout', '120',
                             '--transport', transport] + tx_targs

        if case in ('idle-qemu', 'idle-tlm', 'mg-qemu', 'mg-tlm'):
            extra = []
            if case == 'mg-tlm':
                # The unlimited writer dirties ~200 MiB/s: at 64 MiB/s QEMU's
                # precopy cannot converge, so the policy must switch over.
                extra = ['--max-bandwidth', '64M']
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk] + extra)
            procs.append(mig)
            seen = []
            while mig.poll() is None:
                try:
                    st = src.q.status()
                except (OSError, EOFError, RuntimeError):
                    break
                if not seen or seen[-1] != st:
                    seen.append(st)
                time.sleep(0.02)
            rc, out, _ = finish(mig, 'tlm migrate')
            rrc, rout, _ = finish(recv, 'tlm receive')
            check(rc == 0, 'tlm migrate exit 0')
            check(rrc == 0, 'tlm receive exit 0')
            r = json.loads(out.strip().splitlines()[-1])
            check(r['completed'] is True and r['status'] == 'completed',
                  'completed (total %d ms, downtime %d ms)' % (r['total_ms'], r['downtime_ms']))
            check(r['lanes'] == LANES and len(r['lane_bytes']) == LANES + 1,
                  'lanes %d, per-lane bytes %s' % (r['lanes'], r['lane_bytes']))
            check(all(b > 0 for b in r['lane_bytes']), 'every lane carried bytes')
            check(r['bytes'] >= MEM_MIB * 1024 * 1024 // 8 and r['policy'] == policy
                  and r['transport'] == transport, 'bytes %d, policy %s' % (r['bytes'], r['policy']))
            ri = json.loads(rout.strip().splitlines()[-1])
            check(r['protect'] == 'encrypt' and ri['protect'] == 'encrypt',
                  'both ends report their lanes sealed (protect %s / %s)'
                  % (r['protect'], ri['protect']))
            if case == 'mg-tlm':
                check(r['forced_switchover'] and not r['qemu_converged'],
                      'policy tlm switched over after the first pass (%d passes)'
                      % r['dirty_sync_count'])
            check(dst.q.status() == 'running', 'destination running')
            final = src.q.status()
            check(final == 'postmigrate', 'source stopped after success (%s)' % final)
            check(seen and seen[0] == 'running' and
                  all(s in ('running', 'finish-migrate', 'paused', 'postmigrate') for s in seen),
                  'source ran until the switchover (%s)' % ','.join(seen))
            wait_verified(dst, 'destination after migration', idle=idle)
            return

        if case == 'wrong-psk':
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', other_psk])
            procs.append(mig)
            rc, out, err = finish(mig, 'tlm migrate')
            check(rc != 0, 'tlm migrate with the wrong key fails')
            check('auth' in (out + err).lower(), 'the message names authentication')
            check(recv.poll() is None, 'tlm receive still waiting for a good session')
            recv.send_signal(signal.SIGINT)
            rrc, _, _ = finish(recv, 'tlm receive (interrupted)', 30)
            check(rrc != 0, 'interrupted receive exits non-zero')
            end = time.monotonic() + 15
            while dst.alive() and time.monotonic() < end:
                time.sleep(0.1)
            check(not dst.alive(), 'destination QEMU told to quit')
        elif case == 'garbage':
            for n in range(3):
                g = socket.create_connection((addr, port))
                g.sendall(random.randbytes(4096 * (n + 1)))
                try:
                    g.shutdown(socket.SHUT_WR)
                    g.recv(100)
                except OSError:
                    pass
                g.close()
            g = socket.create_connection((addr, port))
            g.sendall(b'QEVM\0\0\0\3' + b'\0' * 600)
            g.close()
            time.sleep(0.5)
            check(recv.poll() is None, 'tlm receive survived garbage on its port')
            check(src.q.status() == 'running', 'source still running')
            wait_verified(src, 'source after garbage', idle=idle)
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk])
            procs.append(mig)
            rc, out, _ = finish(mig, 'tlm migrate')
            rrc, _, _ = finish(recv, 'tlm receive')
            check(rc == 0 and rrc == 0, 'a good migration still completes after garbage')
            check(dst.q.status() == 'running', 'destination running')
            wait_verified(dst, 'destination after migration')
            return
        elif case in ('sigint', 'timeout'):
            extra = ['--timeout', '2'] if case == 'timeout' else []
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk,
                                      '--max-bandwidth', '16M'] + extra)
            procs.append(mig)
            if case == 'sigint':
                wait_under_way(src)
                mig.send_signal(signal.SIGINT)
            rc, out, err = finish(mig, 'tlm migrate')
            rrc, _, _ = finish(recv, 'tlm receive')
            word = 'interrupted' if case == 'sigint' else 'timed out'
            check(rc != 0 and word in out + err, 'tlm migrate fails: %s' % word)
            check(rrc != 0, 'tlm receive fails too')
            end = time.monotonic() + 15
            while dst.alive() and time.monotonic() < end:
                time.sleep(0.1)
            check(not dst.alive(), 'destination QEMU quit')
        elif case in ('dest-silent', 'source-silent'):
            # One end stopped: its threads, keepalive included, say nothing
            # and its kernel keeps the connections open. The other end's
            # silence timer (--peer-timeout SILENT_S; the stopped end keeps
            # the default 30 s) must end the migration, whatever else
            # (a lane's send timeout, --timeout 120) would come later.
            extra = ['--peer-timeout', str(SILENT_S)] if case == 'dest-silent' else []
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk,
                                      '--max-bandwidth', '16M'] + extra)
            procs.append(mig)
            wait_under_way(src)
            silent, judge = (recv, mig) if case == 'dest-silent' else (mig, recv)
            dst_gone = judged_silent(silent, judge, 'tlm migrate' if judge is mig else
                                     'tlm receive', 'the receiver' if judge is mig else
                                     'the source', dst, case == 'source-silent')
            rc, _, _ = finish(silent, 'tlm %s (stopped, then continued)'
                              % ('migrate' if silent is mig else 'receive'))
            check(rc != 0, 'both ends fail (the stopped one once continued)')
            end = time.monotonic() + 15
            while dst.alive() and time.monotonic() < end:
                time.sleep(0.1)
            check(not dst.alive() and (case == 'dest-silent' or dst_gone),
                  'destination QEMU torn down')
        elif case == 'preflight':
            def refused(args, words, what):
                p = run_tlm(args)
                rc, out, err = finish(p, what, 30)
                text = (out + err).lower()
                check(rc != 0 and all(w in text for w in words),
                      '%s refused (%s)' % (what, ', '.join(words)))
            recv.kill()
            recv.wait()
            refused([a.tlm, 'migrate', '--qmp', os.path.join(workdir, 'nope.qmp'), '--to',
                     '%s:%d' % (addr, port), '--psk', psk], ['nope.qmp', 'no such'],
                    'migrate with a bad --qmp path')
            refused([a.tlm, 'receive', '--qmp', os.path.join(workdir, 'nope.qmp'), '--listen',
                     '%s:%d' % (addr, port), '--psk', psk], ['no such'],
                    'receive with a bad --qmp path')
            refused([a.tlm, 'receive', '--qmp', src.tlm_qmp, '--listen',
                     '%s:%d' % (addr, port), '--psk', psk], ['running', 'inmigrate'],
                    'receive on a running QEMU')
            refused([a.tlm, 'migrate', '--qmp', dst.tlm_qmp, '--to',
                     '%s:%d' % (addr, port), '--psk', psk], ['inmigrate', 'not running'],
                    'migrate from a QEMU that waits for a migration')
            refused([a.tlm, 'migrate', '--qmp', src.tlm_qmp, '--to',
                     '%s:%d' % (addr, port), '--psk', psk], ['cannot open'],
                    'migrate with nobody listening')
            recv = run_tlm([a.tlm, 'receive', '--qmp', dst.tlm_qmp, '--listen',
                            '%s:%d' % (addr, port), '--psk', psk, '--lanes', '2',
                            '--accept-timeout', '5', '--transport', transport])
            procs.append(recv)
            wait_listening(recv, 'tlm receive')
            refused(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk],
                    ['data lanes'], 'migrate with 4 lanes to a receiver expecting 2')
            check(src.q.cmd('query-migrate').get('status') is None,
                  'no migration was ever started on the source')
            finish(recv, 'tlm receive (no session)', 30)
        elif case == 'dest-killed':
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk,
                                      '--max-bandwidth', '16M'])
            procs.append(mig)
            wait_under_way(src)
            dst.g.proc.kill()
            rc, out, err = finish(mig, 'tlm migrate')
            finish(recv, 'tlm receive')
            check(rc != 0, 'tlm migrate fails when the destination dies')
        elif case == 'dest-killed-switchover':
            # The destination dies once the source has reached
            # pre-switchover (its guest stopped, the last pages and the
            # device state about to go, or going): the relay must bring the
            # source back (cont, or migrate_cancel), never leave it paused.
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk,
                                      '--max-bandwidth', '16M'])
            procs.append(mig)
            end = time.monotonic() + 120
            seen = None
            while time.monotonic() < end and mig.poll() is None:
                seen = src.q.cmd('query-migrate').get('status')
                if seen in ('pre-switchover', 'device', 'completed'):
                    break
                time.sleep(0.005)
            check(seen in ('pre-switchover', 'device'),
                  'the source reached the switchover (%s) before the destination was killed'
                  % seen)
            dst.g.proc.kill()
            dst.g.proc.wait()
            rc, out, err = finish(mig, 'tlm migrate')
            rrc, _, _ = finish(recv, 'tlm receive')
            check(rc != 0, 'tlm migrate fails when the destination dies after the switchover')
            check(rrc != 0, 'tlm receive fails')
            check('destination' in (out + err).lower() or 'lane' in (out + err).lower(),
                  'the message names what failed')
        elif case == 'relay-killed':
            mig = run_tlm(mig_args + ['--to', '%s:%d' % (addr, port), '--psk', psk,
                                      '--max-bandwidth', '16M'])
            procs.append(mig)
            wait_under_way(src)
            caps = {c['capability']: c['state'] for c in src.q.cmd('query-migrate-capabilities')}
            check(caps.get('pause-before-switchover'), 'the relay had set its capabilities')
            mig.kill()   # SIGKILL: no cleanup of its own
            # Its guardian keeps its stdout and stderr open until the
            # rollback is done: finish() waits for that.
            rc, out, err = finish(mig, 'tlm migrate (killed) and its guardian', 60)
            check(rc == -signal.SIGKILL, 'tlm migrate was killed')
            check('guardian' in err and 'rolled back' in err,
                  'the guardian says it rolled the source back')
            rrc, _, _ = finish(recv, 'tlm receive')
            check(rrc != 0, 'tlm receive fails')
        elif case == 'lane-cut':
            cutter = LaneCutter(port, victim=3, after=4 << 20)
            mig = run_tlm(mig_args + ['--to', '127.0.0.1:%d' % cutter.port, '--psk', psk,
                                      '--max-bandwidth', '16M'])
            procs.append(mig)
            rc, out, err = finish(mig, 'tlm migrate')
            rrc, _, _ = finish(recv, 'tlm receive')
            check(cutter.cut.is_set(), 'lane 2 was cut mid-migration')
            check(rc != 0 and rrc != 0, 'tlm migrate and tlm receive fail')
            check('lane' in (out + err).lower(), 'the message names the lane')
            end = time.monotonic() + 15
            while dst.alive() and time.monotonic() < end:
                time.sleep(0.1)
            if dst.alive() and os.environ.get('TLM_TEST_HOLD'):
                print('HOLD dst pid', dst.g.proc.pid, flush=True)
                time.sleep(60)
            check(not dst.alive(), 'destination QEMU quit')
        else:
            fail('unknown case ' + case)

        # Every failure case: the source VM runs on, and its guest is intact.
        try:
            st = src.q.status()
        except (OSError, EOFError) as e:
            fail('source QMP connection broke (%r); source QEMU %s' % (e, src.state()))
        check(st == 'running', 'source VM still running (%s)' % st)
        mst = src.q.cmd('query-migrate').get('status', 'none')
        if case == 'dest-killed-switchover':
            # QEMU may have completed (the relay then resumed it with cont)
            # or been cancelled at pre-switchover.
            check(mst in ('completed', 'cancelled'), 'source migration state %s' % mst)
        elif case in ('dest-killed', 'relay-killed', 'lane-cut', 'sigint', 'timeout',
                      'dest-silent', 'source-silent'):
            # Under way: tlm (or its guardian) cancels, and QEMU never
            # sees a channel break under it ('failed': QEMU 7.2 may abort
            # then, see docs/qemu.md).
            check(mst == 'cancelled', 'source migration cancelled, no channel broke under '
                  'QEMU (%s)' % mst)
        else:
            check(mst in ('none', 'cancelled', 'failed'), 'source migration state %s' % mst)
        caps = {c['capability']: c['state'] for c in src.q.cmd('query-migrate-capabilities')}
        check(not caps.get('pause-before-switchover') and not caps.get('multifd'),
              'source migration capabilities back as they were (pause-before-switchover %s, '
              'multifd %s)' % (caps.get('pause-before-switchover'), caps.get('multifd')))
        wait_verified(src, 'source after the failure', idle=idle)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for vm in vms:
            vm.stop()
        if net:
            net.close()
        if not os.environ.get('TLM_KEEP'):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
    print('PASS')
