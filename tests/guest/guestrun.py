#!/usr/bin/env python3
"""Start the tlm test guest under QEMU, parse its serial lines, poke its RAM.

Library (tests add this directory to sys.path and `import guestrun`):

    parse_line(text)          -> (kind, {key: int|str}) or None
    SerialLog(path)           incremental reader of a serial log file;
                              .poll() -> new events, .summary() -> dict
    summarize(events)         -> dict (see summary() below)
    Guest(kernel, append=..., mem_mib=512, qemu=..., workdir=..., gdb=True,
          extra_args=[...])   one QEMU process; context manager
        .start()              boot (TCG, -nodefaults, -nic none, serial to
                              workdir/serial.log, gdbstub on workdir/gdb.sock)
        .wait_for(pred, timeout, what)  poll the log until pred(log) is true;
                              raises GuestError on timeout, QEMU exit or a
                              guest fault line
        .wait_filled(timeout) -> the 'filled' fields
        .wait_status(n, timeout)  wait for n more status lines, return the last
        .poke(addr, data) / .peek(addr, n)   write / read guest-physical RAM
                              through the gdbstub (the VM is paused for the
                              access and resumed after it)
        .stop()               kill QEMU (also done at exit and on SIGTERM)

CLI:
    guestrun.py run --kernel guest.elf [--append "pattern=mg mem=8"]
                [--seconds 5] [--mem-mib 512] [--qemu PATH] [--serial FILE]
                [--json] [-- extra qemu args]
    guestrun.py parse SERIAL_LOG [--json]
    guestrun.py check SERIAL_LOG [--min-sweeps N] [--max-errors N]
                [--min-writes N]
`run` and `parse` print the summary (key=value lines, or JSON) and exit 0 if
the guest reported no error and no fault, 1 otherwise; `check` exits 0 only if
the log meets the given bounds (default: --max-errors 0).
"""

import argparse
import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_LINE = re.compile(r'^TLMG (\w[\w-]*)((?: \S+)*)\s*$')


class GuestError(Exception):
    pass


def _value(v):
    try:
        return int(v, 0)
    except ValueError:
        return v


def parse_line(text):
    """('status', {'sweep': 3, ...}) for a TLMG line, None for anything else."""
    m = _LINE.match(text.strip())
    if not m:
        return None
    fields = {}
    words = []
    for tok in m.group(2).split():
        k, eq, v = tok.partition('=')
        if eq:
            fields[k] = _value(v)
        else:
            words.append(tok)
    if words:
        fields['text'] = ' '.join(words)
    return m.group(1), fields


def summarize(events):
    """Fold parsed events into one dict.

    start/filled: their fields (None if absent, e.g. a migration destination's
    log); status: the last status fields; statuses: how many; errors: the
    guest's error count (max of the last status and error lines seen);
    error_pages: pages named by error lines, in order; error_lines: their
    fields; faults, warns: those lines; writes_per_s / verified_per_s: rates
    between the first status after the fill and the last status (None if
    there are not two such lines).
    """
    s = {'start': None, 'filled': None, 'status': None, 'statuses': 0,
         'errors': 0, 'error_pages': [], 'error_lines': [], 'faults': [],
         'warns': [], 'writes_per_s': None, 'verified_per_s': None}
    first = None
    for kind, f in events:
        if kind == 'start':
            s['start'] = f
        elif kind == 'filled':
            s['filled'] = f
        elif kind == 'status':
            s['status'] = f
            s['statuses'] += 1
            if first is None and (s['filled'] is not None or s['start'] is None):
                first = f
        elif kind == 'error':
            s['error_lines'].append(f)
            s['error_pages'].append(f.get('page'))
        elif kind == 'fault':
            s['faults'].append(f)
        elif kind == 'warn':
            s['warns'].append(f.get('text', ''))
    last = s['status']
    if last:
        s['errors'] = max(last.get('errors', 0), len(s['error_lines']))
    else:
        s['errors'] = len(s['error_lines'])
    if first and last and last['ms'] > first['ms']:
        dt = (last['ms'] - first['ms']) / 1000.0
        s['writes_per_s'] = round((last['writes'] - first['writes']) / dt)
        s['verified_per_s'] = round((last['verified'] - first['verified']) / dt)
    return s


class SerialLog:
    """Reads a serial log as it grows; keeps every parsed event."""

    def __init__(self, path):
        self.path = path
        self.events = []
        self.raw = []
        self._pos = 0
        self._partial = b''

    def poll(self):
        try:
            with open(self.path, 'rb') as fh:
                fh.seek(self._pos)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._pos += len(data)
        data = self._partial + data
        lines = data.split(b'\n')
        self._partial = lines.pop()
        new = []
        for ln in lines:
            text = ln.decode('ascii', 'replace').rstrip('\r')
            self.raw.append(text)
            ev = parse_line(text)
            if ev:
                new.append(ev)
        self.events.extend(new)
        return new

    def last(self, kind):
        for k, f in reversed(self.events):
            if k == kind:
                return f
        return None

    def count(self, kind):
        return sum(1 for k, _ in self.events if k == kind)

    def summary(self):
        self.poll()
        return summarize(self.events)


# ---- QEMU process management ----

_live = set()


def _kill_all():
    for g in list(_live):
        g.stop()


atexit.register(_kill_all)


def _on_term(signum, frame):
    _kill_all()
    sys.exit(128 + signum)


def _pdeathsig():
    # QEMU dies with us even if we are SIGKILLed (meson's timeout, a crash).
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def find_qemu(explicit=None):
    q = explicit or os.environ.get('QEMU') or shutil.which('qemu-system-x86_64')
    return q if q and os.access(q, os.X_OK) else None


class Guest:
    def __init__(self, kernel, append='', mem_mib=512, qemu=None, workdir=None,
                 gdb=True, extra_args=(), accel='tcg'):
        self.kernel = kernel
        self.append = append
        self.mem_mib = mem_mib
        self.qemu = find_qemu(qemu)
        if not self.qemu:
            raise GuestError('qemu-system-x86_64 not found')
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix='tlm-guest-')
        self.serial_path = os.path.join(self.workdir, 'serial.log')
        self.gdb_path = os.path.join(self.workdir, 'gdb.sock') if gdb else None
        self.extra_args = list(extra_args)
        self.accel = accel
        self.proc = None
        self.log = SerialLog(self.serial_path)

    def cmdline(self):
        # QEMU < 9.0 (Debian 12 ships 7.2) drops TCG guest writes during
        # live migration when the RAM block is a multiple of 256 KiB: its fast
        # dirty-bitmap sync never resets the TCG TLB's dirty state (fixed
        # upstream in 03bfc2188f, "physmem: Fix migration dirty bitmap
        # coherency with TCG memory access"). 8 KiB less RAM forces the
        # page-by-page sync, which does. Both ends get the same -m.
        mem = ('%dK' % (self.mem_mib * 1024 - 8) if isinstance(self.mem_mib, int)
               else str(self.mem_mib))
        cmd = [self.qemu, '-accel', self.accel, '-m', mem,
               '-nodefaults', '-display', 'none', '-nic', 'none',
               '-serial', 'file:' + self.serial_path,
               '-kernel', self.kernel]
        if self.append:
            cmd += ['-append', self.append]
        if self.gdb_path:
            cmd += ['-gdb', 'unix:%s,server=on,wait=off' % self.gdb_path]
        return cmd + self.extra_args

    def start(self):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_term)
        for p in (self.serial_path, self.gdb_path):
            if p and os.path.exists(p):
                os.unlink(p)
        self.proc = subprocess.Popen(self.cmdline(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig)
        _live.add(self)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.stdout:
                self.proc.stdout.close()
        _live.discard(self)
        if self._own_workdir and os.path.isdir(self.workdir) and not os.environ.get('TLM_KEEP'):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.log.poll()
        self.stop()

    def qemu_output(self):
        if self.proc and self.proc.poll() is not None and self.proc.stdout:
            return self.proc.stdout.read().decode(errors='replace')
        return ''

    def wait_for(self, pred, timeout, what='condition'):
        end = time.monotonic() + timeout
        while True:
            new = self.log.poll()
            for kind, f in new:
                if kind == 'fault':
                    raise GuestError('guest fault: %r' % f)
            if pred(self.log):
                return
            if self.proc.poll() is not None:
                raise GuestError('qemu exited (%d) waiting for %s: %s'
                                 % (self.proc.returncode, what, self.qemu_output()))
            if time.monotonic() > end:
                raise GuestError('timeout (%ds) waiting for %s; serial tail: %s'
                                 % (timeout, what, self.log.raw[-5:]))
            time.sleep(0.05)

    def wait_filled(self, timeout=30):
        self.wait_for(lambda lg: lg.last('filled') is not None, timeout, 'fill')
        return self.log.last('filled')

    def wait_status(self, n=1, timeout=30):
        want = self.log.count('status') + n
        self.wait_for(lambda lg: lg.count('status') >= want, timeout,
                      '%d status line(s)' % n)
        return self.log.last('status')

    # GDB remote protocol, just enough for memory access.  Connecting stops
    # the VM (QEMU's gdbstub does vm_stop on open); 'D' detaches and resumes.
    def _gdb_session(self, packets):
        if not self.gdb_path:
            raise GuestError('guest started without gdb=True')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.gdb_path)
        buf = b''

        def reply():
            nonlocal buf
            while True:
                i = buf.find(b'$')
                j = buf.find(b'#', i + 1) if i >= 0 else -1
                if i >= 0 and j >= 0 and len(buf) >= j + 3:
                    body = buf[i + 1:j]
                    buf = buf[j + 3:]
                    s.sendall(b'+')
                    return body.decode()
                chunk = s.recv(4096)
                if not chunk:
                    raise GuestError('gdbstub closed the connection')
                buf += chunk

        def send(payload):
            data = payload.encode()
            s.sendall(b'$%s#%02x' % (data, sum(data) & 0xff))
            while True:
                r = reply()
                # The stop on connect is announced asynchronously (T02...);
                # no answer to M, m or D starts with T or S.
                if not r.startswith(('T', 'S')):
                    return r

        try:
            out = [send(p) for p in packets]
            if send('D') != 'OK':
                raise GuestError('gdbstub refused detach')
            return out
        finally:
            s.close()

    def poke(self, addr, data):
        pkts = []
        for off in range(0, len(data), 1024):
            chunk = data[off:off + 1024]
            pkts.append('M%x,%x:%s' % (addr + off, len(chunk), chunk.hex()))
        for r in self._gdb_session(pkts):
            if r != 'OK':
                raise GuestError('gdbstub write failed: %r' % r)

    def peek(self, addr, n):
        pkts = ['m%x,%x' % (addr + off, min(1024, n - off)) for off in range(0, n, 1024)]
        out = b''
        for r in self._gdb_session(pkts):
            if r.startswith('E'):
                raise GuestError('gdbstub read failed: %r' % r)
            out += bytes.fromhex(r)
        return out


def page_addr(start, page):
    """Guest-physical address of working-set page `page`, from a start line."""
    return start['base'] + page * 4096


# ---- CLI ----

def _print_summary(s, as_json):
    if as_json:
        print(json.dumps(s, indent=1, sort_keys=True))
        return
    def fmt(k, v):
        return '%s=%#x' % (k, v) if k in ('base', 'table', 'addr') else '%s=%s' % (k, v)

    for k in ('start', 'filled', 'status'):
        if s[k] is not None:
            print('%s: %s' % (k, ' '.join(fmt(*kv) for kv in s[k].items())))
    print('statuses=%d errors=%d error_pages=%s faults=%d warns=%d'
          % (s['statuses'], s['errors'], s['error_pages'][:20], len(s['faults']),
             len(s['warns'])))
    print('writes_per_s=%s verified_per_s=%s' % (s['writes_per_s'], s['verified_per_s']))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--kernel', required=True)
    r.add_argument('--append', default='')
    r.add_argument('--seconds', type=float, default=5)
    r.add_argument('--mem-mib', type=int, default=512)
    r.add_argument('--qemu')
    r.add_argument('--serial', help='keep the serial log here')
    r.add_argument('--json', action='store_true')
    r.add_argument('extra', nargs='*', help='extra QEMU arguments (after --)')
    p = sub.add_parser('parse')
    p.add_argument('log')
    p.add_argument('--json', action='store_true')
    c = sub.add_parser('check')
    c.add_argument('log')
    c.add_argument('--min-sweeps', type=int, default=0)
    c.add_argument('--max-errors', type=int, default=0)
    c.add_argument('--min-writes', type=int, default=0)
    a = ap.parse_args(argv)

    if a.cmd == 'run':
        g = Guest(a.kernel, append=a.append, mem_mib=a.mem_mib, qemu=a.qemu,
                  gdb=False, extra_args=a.extra)
        if a.serial:
            g.serial_path = os.path.abspath(a.serial)
            g.log = SerialLog(g.serial_path)
        with g:
            end = time.monotonic() + a.seconds
            try:
                g.wait_for(lambda lg: time.monotonic() >= end, a.seconds + 5, 'the run')
            except GuestError as e:
                print('error: %s' % e, file=sys.stderr)
                _print_summary(g.log.summary(), a.json)
                return 1
        s = g.log.summary()
        _print_summary(s, a.json)
        return 0 if s['errors'] == 0 and not s['faults'] and s['status'] else 1
    log = SerialLog(a.log)
    s = log.summary()
    if a.cmd == 'parse':
        _print_summary(s, a.json)
        return 0 if s['errors'] == 0 and not s['faults'] else 1
    last = s['status'] or {}
    problems = []
    if s['faults']:
        problems.append('guest faulted: %s' % s['faults'])
    if s['errors'] > a.max_errors:
        problems.append('errors=%d > %d (pages %s)' % (s['errors'], a.max_errors,
                                                       s['error_pages'][:20]))
    if last.get('sweep', 0) < a.min_sweeps:
        problems.append('sweep=%s < %d' % (last.get('sweep'), a.min_sweeps))
    if last.get('writes', 0) < a.min_writes:
        problems.append('writes=%s < %d' % (last.get('writes'), a.min_writes))
    for pr in problems:
        print('check failed: ' + pr)
    if not problems:
        print('check ok: sweep=%s writes=%s verified=%s errors=%d'
              % (last.get('sweep'), last.get('writes'), last.get('verified'), s['errors']))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
