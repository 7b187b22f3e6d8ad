#!/usr/bin/env python3
"""Tests of the tlm test guest under QEMU/TCG (suite 'guest').

    test_guest.py --kernel guest.elf [--qemu PATH] pattern mg|sp|random|idle
        boot, run the pattern on an 8 MiB working set for ~3 s of guest time;
        sweeps advance, writes advance (idle: none after the fill, verified
        advances instead), errors == 0; prints the measured rates.
    test_guest.py ... rate
        random pattern at rate=3000: the guest never writes faster than asked
        (upper bound only; a slow host may legitimately write slower).
    test_guest.py ... corrupt idle|mg
        flip bytes inside one page through the gdbstub while the guest runs;
        the guest must report errors naming exactly that page, once.
    test_guest.py ... stale
        put back an older, well-formed copy of a page (what a migration that
        lost a dirty page would leave); the guest must report found_gen <
        expected_gen for that page.
Exit 0 pass, 1 fail, 77 skip (no QEMU).
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guestrun  # noqa: E402

SKIP = 77


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def no_trouble(g):
    s = g.log.summary()
    check(not s['faults'], 'guest faulted: %s' % s['faults'])
    check(not s['warns'], 'guest warned: %s' % s['warns'])
    return s


def test_pattern(a, pattern):
    with guestrun.Guest(a.kernel, append='pattern=%s mem=8' % pattern, qemu=a.qemu) as g:
        filled = g.wait_filled()
        start = g.log.last('start')
        check(start['pattern'] == pattern, 'start line names %s' % start['pattern'])
        check(start['pages'] == 2048, 'pages=%d, want 2048' % start['pages'])
        first = g.wait_status(1)
        g.wait_status(2)

        # Usually true after 2 s; a starved host only makes it take longer.
        def advanced(lg):
            st = lg.last('status')
            return (st['sweep'] > first['sweep'] and st['verified'] > first['verified']
                    and (pattern == 'idle' or st['writes'] > first['writes']))
        g.wait_for(advanced, 40, 'sweeps to advance')
        last = g.log.last('status')
        s = no_trouble(g)
    print('start: %s' % start)
    print('first: %s' % first)
    print('last:  %s' % last)
    check(last['errors'] == 0 and not s['error_lines'], 'errors: %s' % s['error_lines'][:5])
    check(last['sweep'] > first['sweep'], 'sweeps did not advance')
    check(last['verified'] > first['verified'], 'verifications did not advance')
    if pattern == 'idle':
        check(last['writes'] == filled['pages'],
              'idle wrote after the fill: writes=%d' % last['writes'])
    else:
        check(last['writes'] > first['writes'] > filled['pages'], 'writes did not advance')
    print('measured %s: writes_per_s=%s verified_per_s=%s'
          % (pattern, s['writes_per_s'], s['verified_per_s']))


def test_rate(a):
    rate = 3000
    with guestrun.Guest(a.kernel, append='pattern=random mem=8 rate=%d' % rate,
                        qemu=a.qemu) as g:
        g.wait_filled()
        first = g.wait_status(1)
        last = g.wait_status(2)
        no_trouble(g)
    secs = (last['ms'] - first['ms']) / 1000.0
    got = (last['writes'] - first['writes']) / secs
    print('rate=%d: measured %.0f writes/s over %.1f s of guest time' % (rate, got, secs))
    check(last['errors'] == 0, 'errors=%d' % last['errors'])
    check(last['writes'] > first['writes'], 'no writes')
    # Up to 10 ms of lateness may be caught up in a burst; repair writes none.
    check(got <= rate * 1.1 + rate * 0.01 / secs + 1, 'rate exceeded: %.0f > %d' % (got, rate))


def wait_error(g, page, timeout):
    try:
        g.wait_for(lambda lg: any(k == 'error' for k, _ in lg.events), timeout,
                   'an error line for page %d' % page)
    except guestrun.GuestError as e:
        if 'timeout' in str(e):
            return False
        raise
    return True


def test_corrupt(a, pattern):
    # idle never rewrites, so nothing can race the poke; with mg the page may
    # be mid-rewrite when the VM pauses and the poke overwritten, so retry once.
    tries, wait = (1, 40) if pattern == 'idle' else (2, 20)
    with guestrun.Guest(a.kernel, append='pattern=%s mem=8' % pattern, qemu=a.qemu) as g:
        g.wait_filled()
        start = g.log.last('start')
        before = g.wait_status(1)
        check(before['errors'] == 0, 'errors before corruption: %d' % before['errors'])
        page = start['pages'] // 3 + 5
        addr = guestrun.page_addr(start, page) + 1000
        pokes = 0
        for _ in range(tries):
            g.poke(addr, b'\x5a' * 16)
            pokes += 1
            if wait_error(g, page, wait):
                break
        check(g.log.count('error') >= 1, 'no error reported for corrupted page %d' % page)
        after = g.wait_status(2)
        s = no_trouble(g)
    print('corrupted page %d at %#x (%d poke(s)); error lines: %s'
          % (page, addr, pokes, s['error_lines']))
    print('status after: %s' % after)
    pages = set(s['error_pages'])
    check(pages == {page}, 'error lines name pages %s, want only %d' % (pages, page))
    check(1 <= after['errors'] <= pokes,
          'errors=%d, want 1..%d (the page must be repaired once found)' % (after['errors'], pokes))
    e = s['error_lines'][0]
    check(e['expected_gen'] == e['found_gen'] and e['bad_words'] >= 1,
          'a flipped page keeps its header: %s' % e)


def test_stale(a):
    with guestrun.Guest(a.kernel, append='pattern=mg mem=8 rate=20000', qemu=a.qemu) as g:
        g.wait_filled()
        start = g.log.last('start')
        g.wait_status(1)
        page = 7
        addr = guestrun.page_addr(start, page)
        old = g.peek(addr, 4096)
        old_gen = int.from_bytes(old[8:12], 'little')
        # Let the guest rewrite the page at least once (a V-cycle writes level
        # 0 twice; at 20000 pages/s one cycle takes well under a second).
        for _ in range(20):
            g.wait_status(1)
            new_gen = int.from_bytes(g.peek(addr, 16)[8:12], 'little')
            if new_gen > old_gen:
                break
        check(new_gen > old_gen, 'page %d not rewritten (gen %d -> %d)' % (page, old_gen, new_gen))
        g.poke(addr, old)
        ok = wait_error(g, page, 30)
        check(ok, 'no error reported for stale page %d' % page)
        g.wait_status(1)
        s = no_trouble(g)
    e = s['error_lines'][0]
    print('stale page %d: put back gen %d over gen %d; error line: %s' % (page, old_gen, new_gen, e))
    check(e['page'] == page, 'error names page %d, want %d' % (e['page'], page))
    check(e['found_gen'] == old_gen and e['expected_gen'] > old_gen,
          'want found_gen=%d < expected_gen: %s' % (old_gen, e))
    check(set(s['error_pages']) == {page}, 'other pages reported: %s' % s['error_pages'])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kernel', required=True)
    ap.add_argument('--qemu')
    ap.add_argument('test')
    ap.add_argument('arg', nargs='?')
    a = ap.parse_args()
    if not guestrun.find_qemu(a.qemu):
        print('SKIP: qemu-system-x86_64 not found')
        return SKIP
    try:
        if a.test == 'pattern':
            test_pattern(a, a.arg)
        elif a.test == 'rate':
            test_rate(a)
        elif a.test == 'corrupt':
            test_corrupt(a, a.arg)
        elif a.test == 'stale':
            test_stale(a)
        else:
            print('unknown test %s' % a.test)
            return 2
    except (Fail, guestrun.GuestError) as e:
        print('FAIL: %s' % e)
        return 1
    print('PASS')
    return 0


if __name__ == '__main__':
    sys.exit(main())
