#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Sealed lanes against clear ones, in one run (docs/security.md):

    bench/protect.py [--tlm build/cli/tlm] [--bytes 2G] [--rounds 3]
                     [--transports tcp,dpdk] [--rdma] [--rdma-bytes 256M]
                     [--qemu-tls]

For each transport, `tlm bench transport` with --protect none, encrypt and
integrity, interleaved round by round (a shared machine's speed drifts;
ratios within a round hold), and reports the median round's goodput per
mode, the ratio of each sealed mode to none, and the CPU cycles per page
each side spent (from each side's CPU time; the extra over none is the
sealing on the sender and the opening on the receiver).

  tcp    4 lanes on loopback (target: encrypt >= 0.8x none)
  dpdk   2 lanes over the embedded memif pair (target: >= 0.5x)
  rdma   --rdma: 4 lanes in the Soft-RoCE VM (--in-vm); integrity against
         none, which sends pages zero-copy (target: >= 0.9x). All three
         modes place pages zero-copy there: encrypt seals each page into a
         registered staging slot that the receiver opens into place
         (pages_placed_encrypted); encrypt_copy (encrypt with --copy, the
         pages through the cipher over SEND/RECV) is measured too, as the
         peer of staging. libcrypto in the VM runs without its AVX code
         (OPENSSL_ia32cap, tests/vm/run-in-vm.sh): under TCG that code
         costs staging, a page per AEAD call, about 7x.

Peer figures, from the same run:

  aead_ceiling   what AES-256-GCM (the cipher sealed lanes use where the
                 CPU has AES instructions) costs on this CPU: `openssl speed
                 -evp aes-256-gcm` on one core, 256 KiB buffers (a sealed
                 frame), through the same libcrypto tlm links. Against the
                 cycles per byte the clear lanes spend (both sides), it gives
                 the ratio sealing can reach when sender and receiver share
                 the CPUs (loopback): clear / (clear + one cipher pass per
                 side), encrypt_ratio_model.
  ktls           whether the kernel offers kTLS (the "tls" upper-layer
                 protocol in /proc/sys/net/ipv4/tcp_available_ulp), the
                 kernel-side AES-GCM the issue asks to consider.
  qemu_tls       --qemu-tls: bench/qemu_tls.py, QEMU's own TLS migration
                 (tls-creds-psk, direct) against the same migration without
                 TLS and against tlm's sealed relay (relay-out / relay-in
                 --protect encrypt), one guest; its JSON under "qemu_tls".

Prints one JSON document with the load average before and after: the
figures are only comparable within a run.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEAL_FRAME = 256 * 1024   # TLM_SEAL_PLAIN, about: the bytes one seal call covers

MODES = ('none', 'encrypt', 'integrity')


# Extra modes per transport: name -> (--protect, extra arguments).
EXTRA_MODES = {'rdma': {'encrypt_copy': ('encrypt', ['--copy'])}}


def run(tlm, transport, lanes, nbytes, mode, extra):
    more = []
    if mode in EXTRA_MODES.get(transport, {}):
        mode, more = EXTRA_MODES[transport][mode]
    cmd = [tlm, 'bench', 'transport', '--transport', transport, '--lanes', str(lanes),
           '--bytes', nbytes, '--json', '--protect', mode] + extra + more
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
    keys = ('goodput_Bps', 'seconds', 'zero_copy', 'live_send', 'pages_placed',
            'pages_placed_encrypted')
    out = {k: r[k] for k in keys if k in r}
    cpu, pages, mhz = r.get('cpu_seconds', {}), r.get('pages') or 0, cpu_mhz()
    for side, who in (('tx', 'sender'), ('rx', 'receiver')):
        if who in cpu and pages:
            ns = cpu[who] * 1e9 / pages
            out['cpu_ns_per_page_' + side] = ns
            out['cycles_per_page_' + side] = ns * mhz / 1000.0
    return out


def aead_ceiling(mhz):
    """One core's AES-256-GCM rate through libcrypto's EVP (openssl speed),
    in bytes/s and cycles per byte at the nominal clock."""
    cmd = ['openssl', 'speed', '-seconds', '3', '-bytes', str(SEAL_FRAME), '-evp',
           'aes-256-gcm']
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {'error': str(e)}
    m = re.search(r'^AES-256-GCM\s+([0-9.]+)k\s*$', p.stdout, re.M)
    if not m:
        return {'error': 'no figure in: ' + p.stdout[-300:]}
    bps = float(m.group(1)) * 1000.0
    ver = subprocess.run(['openssl', 'version'], stdout=subprocess.PIPE, text=True).stdout
    return {'aead_ceiling_Bps': bps, 'cipher': 'aes-256-gcm', 'buffer_bytes': SEAL_FRAME,
            'cycles_per_byte': mhz * 1e6 / bps if mhz else None,
            'openssl': ver.strip(), 'command': ' '.join(cmd)}


def ktls():
    try:
        with open('/proc/sys/net/ipv4/tcp_available_ulp') as f:
            ulps = f.read().split()
    except OSError:
        ulps = []
    return {'available': 'tls' in ulps, 'tcp_available_ulp': ulps,
            'kernel': os.uname().release}


def model(res, ceil):
    """Cycles per byte the clear lanes spend (sender + receiver) against one
    pass of the cipher per side: the ratio sealing can reach when both sides
    share the CPUs and the cipher costs what the EVP loop says."""
    cpb = ceil.get('cycles_per_byte')
    none = res.get('none', {})
    if not cpb or 'cycles_per_page_tx' not in none or 'cycles_per_page_rx' not in none:
        return {}
    page = 4096.0
    clear = (none['cycles_per_page_tx'] + none['cycles_per_page_rx']) / page
    out = {'clear_cycles_per_byte': clear, 'aead_cycles_per_byte': cpb,
           'encrypt_ratio_model': clear / (clear + 2 * cpb),
           'aead_cycles_per_byte_for_0.8x': clear * (1 / 0.8 - 1) / 2}
    # What one core carries per side at these costs: on two hosts, each
    # side with cores of its own, a link slower than this is the bound,
    # not the cipher.
    mhz = cpu_mhz()
    for m in MODES:
        for side in ('tx', 'rx'):
            c = res.get(m, {}).get('cycles_per_page_' + side)
            if c and mhz:
                out['%s_Bps_per_core_%s' % (m, side)] = mhz * 1e6 * page / c
    for m in ('encrypt', 'integrity'):
        for side in ('tx', 'rx'):
            k = '%s_extra_cycles_per_page_%s' % (m, side)
            if k in res:
                out['%s_extra_cycles_per_byte_%s' % (m, side)] = res[k] / page
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tlm', default='build/cli/tlm')
    ap.add_argument('--bytes', default='2G')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--transports', default='tcp,dpdk')
    ap.add_argument('--rdma', action='store_true', help='also rdma in the Soft-RoCE VM')
    ap.add_argument('--rdma-bytes', default='256M', help='page data per rdma run (default 256M)')
    ap.add_argument('--qemu-tls', action='store_true',
                    help="also bench/qemu_tls.py: QEMU's TLS migration vs tlm's sealed relay")
    ap.add_argument('--qemu-tls-args', default='',
                    help='extra arguments for bench/qemu_tls.py (e.g. "--mem 256 --rounds 3")')
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
        plan.append(('rdma', 4, a.rdma_bytes, ['--in-vm']))

    out = {'bench': 'protect', 'bytes': a.bytes, 'rounds': a.rounds, 'cpu_mhz': cpu_mhz(),
           'loadavg_before': list(os.getloadavg()), 'ktls': ktls(), 'transports': {}}
    out['aead_ceiling'] = aead_ceiling(out['cpu_mhz'])
    if 'aead_ceiling_Bps' in out['aead_ceiling']:
        out['aead_ceiling_Bps'] = out['aead_ceiling']['aead_ceiling_Bps']
    for transport, lanes, nbytes, extra in plan:
        rounds = []
        modes = MODES + tuple(EXTRA_MODES.get(transport, {}))
        for _ in range(a.rounds):
            rounds.append({m: run(a.tlm, transport, lanes, nbytes, m, extra) for m in modes})
        # The median round by encrypt/none: that round's figures together.
        ratio = [r['encrypt']['goodput_Bps'] / r['none']['goodput_Bps'] for r in rounds]
        med = rounds[ratio.index(statistics.median_low(ratio))]
        res = {'lanes': lanes, 'bytes': nbytes}
        for m in modes:
            res[m] = pick(med[m])
        for m in [m for m in modes if m != 'none']:
            res['ratio_' + m] = med[m]['goodput_Bps'] / med['none']['goodput_Bps']
            res['ratio_%s_per_round' % m] = [r[m]['goodput_Bps'] / r['none']['goodput_Bps']
                                            for r in rounds]
            for side in ('tx', 'rx'):
                k = 'cycles_per_page_' + side
                if k in res[m] and k in res['none']:
                    res['%s_extra_cycles_per_page_%s' % (m, side)] = res[m][k] - res['none'][k]
        res['model'] = model(res, out['aead_ceiling'])
        out['transports'][transport] = res
    if a.qemu_tls:
        cmd = [sys.executable, os.path.join(HERE, 'qemu_tls.py'), '--tlm', a.tlm] + \
            a.qemu_tls_args.split()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=7200)
        if p.returncode != 0:
            sys.exit('bench/protect.py: %s failed (%d)' % (' '.join(cmd), p.returncode))
        out['qemu_tls'] = json.loads(p.stdout)
    out['loadavg_after'] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
