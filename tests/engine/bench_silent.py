#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A silent peer in the middle of `tlm bench migrate`, both ends as
separate processes (--listen / --connect) over tcp on loopback, or over
rdma lanes (Soft-RoCE, inside the VM of tests/rdma). One end is
stopped (SIGSTOP: no FIN, no RST, its kernel still acknowledging what fits
its buffers) while pages flow; the other, with --peer-timeout 3, must end
the migration by its silence timer, with a message that names the silence,
well before a lane's send timeout (30 s) would have ended it. The stopped
end keeps its default timeout.

usage: bench_silent.py TLM dest-silent|source-silent [--transport rdma --addr A]
                       [--protect MODE] [--copy-pages] [--transport-args ARGS]

  dest-silent    the destination stops: the source fails, names the
                 destination's silence, and its workload runs on (the
                 memory source resumed); its CHK and PS threads, held in
                 sends the stopped peer never takes, return at once
  source-silent  the source stops: the destination fails, naming the
                 source's silence

Over rdma, without the lanes' abort op (transport-rdma's tlm__rdma_abort)
a sender under --protect none with --copy-pages waiting for message
credits the stopped receiver never returns never comes back (only this
test's own limit ends it). Under encrypt (the default) a CHK thread waits
for its staged WRITEs (wait_sent) up to the peer timeout itself.

The migration cannot end by itself meanwhile: precopy with a 1 ms
downtime target against an unlimited random writer never converges.
Exit 0 pass, 1 fail.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'qemu'))
from test_relay import check, finish, free_port, psk_file  # noqa: E402

PEER_TIMEOUT_S = 3
MARGIN_S = 15          # how much later a loaded machine may end it
SEND_TIMEOUT_S = 30    # tcp's send timeout, rdma's staging slot wait: what ended it before
MEM_KIB = 64 << 10     # --mem 64M


def applied(pid):
    """Bytes resident in the destination's mapping of the migrated memory
    (the one MEM_KIB mapping): pages the migration has written there."""
    size = None
    try:
        with open('/proc/%d/smaps' % pid) as f:
            for line in f:
                if line.startswith('Size:'):
                    size = int(line.split()[1])
                elif line.startswith('Rss:') and size == MEM_KIB:
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument('tlm')
    ap.add_argument('case', choices=('dest-silent', 'source-silent'))
    ap.add_argument('--transport', default='tcp', choices=('tcp', 'rdma'))
    ap.add_argument('--addr', default='127.0.0.1')
    ap.add_argument('--protect')
    ap.add_argument('--copy-pages', action='store_true')
    ap.add_argument('--transport-args')
    a = ap.parse_args()
    tlm, case = a.tlm, a.case
    common = ['--transport', a.transport] + (['--protect', a.protect] if a.protect else []) + \
        (['--transport-args', a.transport_args] if a.transport_args else [])
    work = tempfile.mkdtemp(prefix='tlm-bench-silent-')
    psk = psk_file(work)
    port = free_port()
    short = ['--peer-timeout', str(PEER_TIMEOUT_S)]
    dst = subprocess.Popen([tlm, 'bench', 'migrate', '--listen', '%s:%d' % (a.addr, port),
                            '--psk', psk] + common +
                           (short if case == 'source-silent' else []),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
    procs = [dst]
    try:
        src_args = [tlm, 'bench', 'migrate', '--connect', '%s:%d' % (a.addr, port),
                    '--psk', psk, '--mem', '64M', '--policy', 'precopy', '--workload', 'random',
                    '--rate', '0', '--downtime-ms', '1', '--max-iterations', '1000000',
                    '--warmup-ms', '100', '--json'] + common + \
            (['--copy-pages'] if a.copy_pages else []) + \
            (short if case == 'dest-silent' else [])
        end = time.monotonic() + 10
        src = None
        while src is None or (src.poll() is not None and time.monotonic() < end):
            # the listener may not be listening yet: the source then fails
            # to connect at once, and is started again
            if src is not None:
                time.sleep(0.2)
            src = subprocess.Popen(src_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
            time.sleep(0.3)
        procs.append(src)
        # Pages flow once the destination's memory fills with them.
        end = time.monotonic() + 60
        while time.monotonic() < end and src.poll() is None and dst.poll() is None:
            if applied(dst.pid) >= 8 << 20:
                break
            time.sleep(0.05)
        check(src.poll() is None and dst.poll() is None and applied(dst.pid) >= 8 << 20,
              'migration under way (%d MiB of pages at the destination)'
              % (applied(dst.pid) >> 20))
        silent, judge = (dst, src) if case == 'dest-silent' else (src, dst)
        who = 'destination' if case == 'dest-silent' else 'source'
        silent.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            jrc, jout, jerr = finish(judge, 'the judging end', 120)
            took = time.monotonic() - t0
        finally:
            silent.send_signal(signal.SIGCONT)
        check(jrc != 0, 'the judging end fails the migration (exit %d)' % jrc)
        if judge is src:
            r = json.loads(jout.strip().splitlines()[-1])
            text = r.get('error') or ''
            check(not r['completed'], 'the source reports the migration not completed')
            check(r['workload_writes_after_failure'] > 0,
                  'the source runs on: its workload wrote %d pages after the failure'
                  % r['workload_writes_after_failure'])
        else:
            text = jerr
        m = re.search(r"the %s(?:'s lanes have brought| has sent) nothing for (\d+) ms "
                      r"\(timeout (\d+) ms" % who, text)
        check(m is not None and int(m.group(2)) == PEER_TIMEOUT_S * 1000 and
              int(m.group(1)) >= PEER_TIMEOUT_S * 1000,
              'by its silence timer, naming the %s: %s' % (who, text.strip()[-300:]))
        check(took < PEER_TIMEOUT_S + MARGIN_S,
              'it ended %.1f s after the stop: within its peer timeout (%d s) + %d s, well '
              'before a lane\'s send timeout (%d s)' % (took, PEER_TIMEOUT_S, MARGIN_S,
                                                        SEND_TIMEOUT_S))
        src_rc = finish(src, 'the stopped source, continued', 120)[0] if silent is src else jrc
        dst_rc = finish(dst, 'the stopped destination, continued', 120)[0] \
            if silent is dst else jrc
        check(src_rc != 0 and dst_rc != 0, 'both ends fail (the stopped one once continued)')
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        os.unlink(psk)
        os.rmdir(work)
    print('PASS')


if __name__ == '__main__':
    main()
