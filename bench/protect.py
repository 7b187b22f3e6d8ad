#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Sealed lanes against clear ones, in one run (docs/security.md):

    bench/protect.py [--tlm build/cli/tlm] [--bytes 2G] [--rounds 3]
                     [--transports tcp,dpdk] [--rdma]

For each transport, `tlm bench transport` with --protect none, encrypt and
integrity, interleaved round by round (a shared machine's speed drifts;
ratios within a round hold), and reports the median round's goodput per
mode, the ratio of each sealed mode to none, and the CPU cycles per page
each side spent (from each side's CPU time; the extra over none is the
sealing on the sender and the opening on the receiver).

  tcp    4 lanes on loopback (target: encrypt >= 0.8x none)
  dpdk   2 lanes over the embedded memif pair (target: >= 0.5x)
  rdma   --rdma: 4 lanes in the Soft-RoCE VM (--in-vm); integrity against
         none, which sends pages zero-copy (target: >= 0.9x)

Prints one JSON document with the load average before and after: the
figures are only comparable within a run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = ('none', 'encrypt', 'integrity')


def run(tlm, transport, lanes, nbytes, mode, extra):
    cmd = [tlm, 'bench', 'transport', '--transport', transport, '--lanes', str(lanes),
           '--bytes', nbytes, '--json', '--protect', mode] + extra
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=1800)
    if p.returncode != 0:
        sys.exit('bench/protect.py: %s failed (%d): %s' % (' '.join(cmd), p.returncode,
                                                          p.stderr[-2000:]))
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if not r.get('verified'):
        sys.exit('bench/protect.py: %s: pages not verified' % ' '.join(cmd))
    if r.get('protect') != mode:
        sys.exit('bench/protect.py: %s reports protect %s' % (' '.join(cmd), r.get('protect')))
    return r


def cpu_mhz():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('cpu MHz'):
                    return float(line.split(':')[1])
    except OSError:
        pass
    return 0.0


def pick(r):
    """The figures kept per mode; CPU per page from each side's CPU time
    (user + system, the harness's own page checks included on the
    receiver), in ns and in cycles at the nominal clock."""
    keys = ('goodput_Bps', 'seconds', 'zero_copy', 'live_send', 'pages_placed')
    out = {k: r[k] for k in keys if k in r}
    cpu, pages, mhz = r.get('cpu_seconds', {}), r.get('pages') or 0, cpu_mhz()
    for side, who in (('tx', 'sender'), ('rx', 'receiver')):
        if who in cpu and pages:
            ns = cpu[who] * 1e9 / pages
            out['cpu_ns_per_page_' + side] = ns
            out['cycles_per_page_' + side] = ns * mhz / 1000.0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tlm', default='build/cli/tlm')
    ap.add_argument('--bytes', default='2G')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--transports', default='tcp,dpdk')
    ap.add_argument('--rdma', action='store_true', help='also rdma in the Soft-RoCE VM')
    a = ap.parse_args()
    if not os.access(a.tlm, os.X_OK):
        sys.exit('bench/protect.py: no tlm at %s (build first)' % a.tlm)

    plan = []
    for t in a.transports.split(','):
        if t == 'tcp':
            plan.append(('tcp', 4, a.bytes, []))
        elif t == 'dpdk':
            plan.append(('dpdk', 2, a.bytes, ['--no-raw']))
        elif t:
            sys.exit('bench/protect.py: transport %s: tcp or dpdk (rdma: --rdma)' % t)
    if a.rdma:
        plan.append(('rdma', 4, '256M', ['--in-vm']))

    out = {'bench': 'protect', 'bytes': a.bytes, 'rounds': a.rounds, 'cpu_mhz': cpu_mhz(),
           'loadavg_before': list(os.getloadavg()), 'transports': {}}
    for transport, lanes, nbytes, extra in plan:
        rounds = []
        for _ in range(a.rounds):
            rounds.append({m: run(a.tlm, transport, lanes, nbytes, m, extra) for m in MODES})
        # The median round by encrypt/none: that round's figures together.
        ratio = [r['encrypt']['goodput_Bps'] / r['none']['goodput_Bps'] for r in rounds]
        med = rounds[ratio.index(statistics.median_low(ratio))]
        res = {'lanes': lanes, 'bytes': nbytes}
        for m in MODES:
            res[m] = pick(med[m])
        for m in ('encrypt', 'integrity'):
            res['ratio_' + m] = med[m]['goodput_Bps'] / med['none']['goodput_Bps']
            res['ratio_%s_per_round' % m] = [r[m]['goodput_Bps'] / r['none']['goodput_Bps']
                                            for r in rounds]
            for side in ('tx', 'rx'):
                k = 'cycles_per_page_' + side
                if k in res[m] and k in res['none']:
                    res['%s_extra_cycles_per_page_%s' % (m, side)] = res[m][k] - res['none'][k]
        out['transports'][transport] = res
    out['loadavg_after'] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
