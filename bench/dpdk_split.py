#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where the DPDK lanes' cycles per page go, against the raw blast of the
same run: docs/bench.md's perf recipe as one command.

  python3 bench/dpdk_split.py [--out FILE] -- BENCH-COMMAND...

BENCH-COMMAND is a bench that prints `tlm bench transport`'s JSON on
stdout (tlm bench transport --transport dpdk ... --json, or
bench/dpdk_af_packet.sh); it runs under `perf record -e cpu-clock` (every
process it starts: the lanes' two ends, the raw blast's children). The
samples of each process are split into groups by symbol:

  pmd       librte_net_* (memif's copy and ring, af_packet's ring),
            librte_mbuf/mempool (allocs and frees)
  kernel    the kernel: af_packet's sendto, the veth, the receiving
            side's softirq (tpacket_rcv, IPv4 input), page faults, waits
  copy_crc  crc_hw, tlm__crc32c_copy, memcpy/memmove: the lanes' own
            copies and sums
  cipher    libcrypto (--protect encrypt/integrity)
  verify    memcmp, check_page: the bench receiver's check of every page
            (the blast checks nothing while it runs)
  clock     clock_gettime (the vdso): timers and waits that poll
  locks     pthread_* (mutexes, condition variables)
  protocol  everything else in tlm (headers, ACKs, window, pumps)
  other     the rest (libc, ld.so)

Each group's share of a lanes process's samples times its
cycles_per_page_tx/_rx (the bench's own figure: the process's CPU time
over the transfer) is that group's cycles per page. Samples before a
lanes process's first datapath sample (EAL start, connect) are left out,
as the bench's CPU figure leaves them out. The raw blast's children
(bench/lib/raw-dpdk.c tx_child/rx_child) get their shares only: a blast
side that waits polls (clock, pmd), so its CPU is not per page.

Prints one JSON object: the bench's headline figures, lanes.tx and
lanes.rx (samples, share and cycles_per_page per group, the threads'
sample counts), raw (one entry per blast child, in the order they ran,
with its side and phase: raw, raw_copy, raw_place, a pair each; with
--rounds N they repeat), loadavg before and after. Run the bench with
--rounds 1: the lanes' figures are the first round's processes. Needs perf and
kernel.perf_event_paranoid <= 1 (or root); cpu-clock works in a VM.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

GROUPS = ('pmd', 'kernel', 'copy_crc', 'cipher', 'verify', 'clock', 'locks',
          'protocol', 'other')
# a lanes process's datapath: its first sample of one of these starts
# its window (bench/lib/xfer-send.c, xfer-recv.c; transport-dpdk)
LANE_TX = ('send_thread', 'tlm__dpdk_send_pages', 'wr_open', 'wr_bytes',
           'tlm__seal_send_pages')
LANE_RX = ('recv_thread', 'check_page', 'tlm__dpdk_recv_pages', 'ring_peek_sum')
RAW = {'tx_child': 'tx', 'fill_burst': 'tx', 'place_burst': 'tx', 'next_off': 'tx',
       'rx_child': 'rx', 'payload_intact': 'rx'}


def group(sym, dso):
    base = os.path.basename(dso.strip('()'))
    if 'kallsyms' in dso or base.startswith('[kernel'):
        return 'kernel'
    if 'crc' in sym or 'memmove' in sym or 'memcpy' in sym:
        return 'copy_crc'
    if base.startswith('libcrypto'):
        return 'cipher'
    if 'memcmp' in sym or sym == 'check_page':
        return 'verify'
    if base.startswith('librte_'):
        return 'pmd'
    if 'vdso' in dso or 'clock_gettime' in sym:
        return 'clock'
    if 'pthread' in sym or 'lll_' in sym or 'futex' in sym:
        return 'locks'
    if base in ('tlm', 'dpdk_bench') or base.startswith('libtlm'):
        return 'protocol'
    return 'other'


def samples(data):
    """(pid, tid, time, sym, dso) of every sample, in time order."""
    out = subprocess.run(['perf', 'script', '-i', data, '-F', 'pid,tid,time,ip,sym,dso', '-G'],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         check=True).stdout
    for line in out.splitlines():
        f = line.split()
        # "PID/TID TIME: IP SYM... (DSO)"
        if len(f) < 4 or '/' not in f[0]:
            continue
        pid, tid = f[0].split('/', 1)
        try:
            t = float(f[1].rstrip(':'))
        except ValueError:
            continue
        dso = f[-1] if f[-1].startswith('(') else ''
        sym = ' '.join(f[3:-1] if dso else f[3:])
        yield int(pid), int(tid), t, sym, dso


def split(data):
    """Per process: its role (lanes_tx, lanes_rx: a dpdk lanes end, not
    --compare tcp's; raw_tx, raw_rx: a blast child), where its datapath
    starts, and its samples."""
    procs = collections.OrderedDict()
    for pid, tid, t, sym, dso in samples(data):
        p = procs.setdefault(pid, {'role': None, 'start': {}, 'dpdk': False, 'rows': []})
        p['dpdk'] = p['dpdk'] or sym.startswith('tlm__dpdk') or 'librte_net' in dso
        for role, syms in (('lanes_tx', LANE_TX), ('lanes_rx', LANE_RX)):
            if sym in syms:
                p['start'].setdefault(role, t)
        if sym in RAW:
            p['start'].setdefault('raw_' + RAW[sym], t)
        p['rows'].append((tid, t, group(sym, dso)))
    for p in procs.values():
        raw = [r for r in p['start'] if r.startswith('raw_')]
        lanes = [r for r in p['start'] if r.startswith('lanes_')] if p['dpdk'] else []
        p['role'] = raw[0] if raw else lanes[0] if len(lanes) == 1 else None
        p['start'] = p['start'].get(p['role'])
    return procs


def summary(p, cycles=None):
    by = collections.Counter()
    threads = collections.Counter()
    for tid, t, g in p['rows']:
        if p['start'] is not None and t < p['start']:
            continue
        by[g] += 1
        threads[tid] += 1
    n = sum(by.values())
    out = {'samples': n,
           'share': {g: round(by[g] / n, 4) for g in GROUPS if by[g]} if n else {},
           'thread_samples': sorted(threads.values(), reverse=True)}
    if cycles and n:
        out['cycles_per_page'] = {g: round(cycles * by[g] / n) for g in GROUPS if by[g]}
        out['cycles_per_page_total'] = round(cycles)
    return out


def loadavg():
    try:
        with open('/proc/loadavg') as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', help='also write the JSON here')
    ap.add_argument('--freq', type=int, default=4000, help='samples per second (perf -F)')
    ap.add_argument('cmd', nargs=argparse.REMAINDER, help='-- BENCH-COMMAND...')
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ['--'] else a.cmd
    if not cmd:
        ap.error('no bench command (after --)')
    load0 = loadavg()
    with tempfile.TemporaryDirectory(prefix='dpdk-split') as d:
        data = os.path.join(d, 'perf.data')
        r = subprocess.run(['perf', 'record', '-q', '-e', 'cpu-clock', '-F', str(a.freq),
                            '-o', data, '--'] + cmd, stdout=subprocess.PIPE, text=True)
        if r.returncode:
            sys.exit('dpdk_split: the bench failed (exit %d) under perf record' % r.returncode)
        try:
            bench = json.loads(r.stdout[r.stdout.index('{'):])
        except ValueError:
            sys.exit('dpdk_split: no JSON from the bench: ' + r.stdout[-300:])
        procs = split(data)
    keys = ('transport', 'protect', 'lanes', 'pages', 'goodput_Bps', 'raw_pmd', 'raw_Bps',
            'ratio', 'raw_copy_Bps', 'ratio_raw_copy', 'raw_place_Bps', 'ratio_raw_place',
            'headline', 'headline_ratio', 'cycles_per_page_tx', 'cycles_per_page_rx',
            'raw_cycles_per_page_tx', 'raw_cycles_per_page_rx',
            'raw_copy_cycles_per_page_tx', 'raw_copy_cycles_per_page_rx', 'tsc_hz')
    out = {'command': cmd, 'perf_event': 'cpu-clock', 'perf_freq': a.freq,
           'bench': {k: bench[k] for k in keys if k in bench}, 'lanes': {}, 'raw': [],
           'loadavg_before': load0}
    for pid, p in procs.items():
        if p['role'] in ('lanes_tx', 'lanes_rx'):
            side = p['role'][-2:]
            if side in out['lanes']:
                continue   # a later round: the first one's figures stand
            out['lanes'][side] = summary(p, bench.get('cycles_per_page_' + side))
            out['lanes'][side]['pid'] = pid
        elif p['role']:
            s = summary(p)
            s.update({'pid': pid, 'side': p['role'][4:]})
            out['raw'].append(s)
    # the blast's phases run one after the other, a tx and an rx child each
    phases = [k for k in ('raw', 'raw_copy', 'raw_place') if bench.get(k + '_Bps')]
    for i, r in enumerate(out['raw']):
        r['phase'] = phases[i // 2] if i // 2 < len(phases) else 'raw'
    out['loadavg_after'] = loadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')
    if not out['lanes']:
        sys.exit('dpdk_split: no lanes process found in the profile')


if __name__ == '__main__':
    main()
