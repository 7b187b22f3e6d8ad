/* SPDX-License-Identifier: MIT */
/* Self-tests of the engine's pure pieces: the XBZRLE codec and the
 * policies' stop rules (docs/policies.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "core/engine.h" /* the internal one, not include/tlm/engine.h */
#define CHECK_COUNTS
#include "tests/check.h"

#define PS 4096

static void test_xbzrle(void)
{
	struct tlm_xbz_cache *c = tlm__xbz_create(64 * PS, PS);
	static uint8_t a[PS], b[PS], enc[PS], dst[PS];
	uint32_t n;

	CHECK(c != NULL);
	for (int i = 0; i < PS; i++)
		a[i] = (uint8_t)(i * 7);
	/* First sight of a page: no base, send it plain (and cache it). */
	CHECK(tlm__xbz_encode(c, 42, a, enc) == 0);
	/* A few changed runs: a small delta that rebuilds the page exactly. */
	memcpy(b, a, PS);
	b[0] ^= 1;
	memset(b + 1000, 0xee, 17);
	b[PS - 1] ^= 0x80;
	n = tlm__xbz_encode(c, 42, b, enc);
	CHECK(n > 4 && n < 100);
	memcpy(dst, a, PS);
	CHECK(tlm__xbz_decode(enc, n, dst, PS) == 0 && !memcmp(dst, b, PS));
	/* Against the wrong base it is refused, and the page is untouched by
	 * the caller's copy-then-commit (apply.c decodes into a scratch page). */
	memcpy(dst, a, PS);
	dst[5] ^= 1;
	CHECK(tlm__xbz_decode(enc, n, dst, PS) == -TLM_EFRAME);
	/* Unchanged page: a non-empty delta that changes nothing. */
	n = tlm__xbz_encode(c, 42, b, enc);
	CHECK(n > 4);
	memcpy(dst, b, PS);
	CHECK(tlm__xbz_decode(enc, n, dst, PS) == 0 && !memcmp(dst, b, PS));
	/* Everything changed: too big for a delta, sent plain. */
	for (int i = 0; i < PS; i++)
		a[i] = (uint8_t)~b[i];
	CHECK(tlm__xbz_encode(c, 42, a, enc) == 0);
	/* Truncated or overlong runs are refused. */
	CHECK(tlm__xbz_encode(c, 42, b, enc) == 0); /* plain again: b is the base now */
	{
		static uint8_t base[PS];
		memcpy(base, b, PS);
		b[7] ^= 3;
		n = tlm__xbz_encode(c, 42, b, enc);
		CHECK(n > 4 && n < 32);
		memcpy(dst, base, PS);
		CHECK(tlm__xbz_decode(enc, n, dst, PS) == 0 && !memcmp(dst, b, PS));
		memcpy(dst, base, PS);
		CHECK(tlm__xbz_decode(enc, n - 1, dst, PS) == -TLM_EFRAME);
		/* a run longer than the page */
		enc[4] = 0xff; enc[5] = 0xff; enc[6] = 0x03; enc[7] = 0x01;
		memcpy(dst, base, PS);
		CHECK(tlm__xbz_decode(enc, n, dst, PS) == -TLM_EFRAME);
	}
	tlm__xbz_destroy(c);
}

static void test_policies(void)
{
	struct tlm_migrate_opts o = { .downtime_ms = 300, .max_iterations = 5 };
	struct iter_info it = { .page_size = 4096, .bw_Bps = 1e9 };

	/* precopy: 1000 pages at 1 GB/s = 4 ms: fits 300 ms */
	o.policy = TLM_POLICY_PRECOPY;
	it.iteration = 2; it.dirty = 1000;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED);
	/* 200000 pages = 819 ms: does not fit; iterate, then give up at the cap */
	it.dirty = 200000;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
	it.iteration = 5;
	CHECK(tlm__policy_decide(&o, &it) == POL_GIVE_UP);
	/* no bandwidth measured: never "fits" unless nothing is dirty */
	it.bw_Bps = 0;
	it.iteration = 2;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
	it.dirty = 0;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED);
	it.bw_Bps = 1e9;

	/* frs: the same pages keep coming back -> stop (heuristic) */
	o.policy = TLM_POLICY_FRS;
	it.iteration = 2; it.dirty = 200000; it.prev_dirty = 400000; it.overlap = 190000;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC);
	/* shrinking well and little overlap -> go on */
	it.overlap = 10000;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
	/* not shrinking by a tenth -> stop */
	it.prev_dirty = 210000;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC);
	/* at the cap frs stops, it never gives up */
	it.prev_dirty = 400000; it.iteration = 5;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC);

	/* mp: write-intensive after the first pass -> stop-and-copy now */
	o.policy = TLM_POLICY_MP;
	it.iteration = 1; it.dirty = 200000; it.dirty_rate_pps = 150000; /* 614 MB/s */
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC);
	/* a light writer iterates like precopy */
	it.dirty_rate_pps = 10000;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
	it.iteration = 5;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC);

	CHECK(tlm_policy_parse("stop-copy") == TLM_POLICY_STOPCOPY);
	CHECK(tlm_policy_parse("tlm") == TLM_POLICY_TLM);
	CHECK(tlm_policy_parse("nope") == -EINVAL);
	CHECK(!strcmp(tlm_policy_name(TLM_POLICY_FRS), "frs"));
}

/* The downtime model: dirty bytes over bandwidth plus the fixed costs,
 * and the precopy stop rule counts the fixed costs too. */
static void test_downtime_model(void)
{
	struct tlm_migrate_opts o = { .policy = TLM_POLICY_PRECOPY, .downtime_ms = 300,
				      .max_iterations = 5 };
	struct iter_info it = { .page_size = 4096, .bw_Bps = 1e9, .iteration = 2 };
	double ms = tlm__downtime_model(2500, 4096, 1e9, 2.0);

	CHECK(ms > 12.23 && ms < 12.25);           /* 10.24 ms + 2 */
	CHECK(tlm__downtime_model(0, 4096, 0, 1.5) == 1.5);
	CHECK(tlm__downtime_model(1, 4096, 0, 1.5) == HUGE_VAL);
	/* 70000 pages at 1 GB/s: 287 ms, fits 300 ms alone, not with 20 ms fixed */
	it.dirty = 70000;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED);
	it.fixed_ms = 20;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
}

/* Zero copy: the page saver's bound is the cursor, or the oldest chunk a
 * CHK thread may still be writing (core/engine.h). */
static void test_chk_done(void)
{
	struct src e = { 0 };
	struct chk_arg ca[2] = { { .inflight = UINT64_MAX }, { .inflight = UINT64_MAX } };
	uint64_t next;

	e.o.chk_lanes = 2;
	e.chk_next = src_pos(0, 4096);
	CHECK(tlm__chk_done(&e, &next) == src_pos(0, 4096) && next == src_pos(0, 4096));
	e.chk = ca;
	CHECK(tlm__chk_done(&e, &next) == src_pos(0, 4096));
	ca[1].inflight = src_pos(0, 3584);
	CHECK(tlm__chk_done(&e, &next) == src_pos(0, 3584));
	ca[0].inflight = src_pos(0, 3328);
	CHECK(tlm__chk_done(&e, &next) == src_pos(0, 3328) && next == src_pos(0, 4096));
	/* a later region orders after every page of an earlier one */
	e.chk_next = src_pos(1, 256);
	ca[0].inflight = src_pos(1, 0);
	ca[1].inflight = UINT64_MAX;
	CHECK(tlm__chk_done(&e, &next) == src_pos(1, 0) && src_pos(0, 1u << 20) < src_pos(1, 0));
}

/* The cache holds one page per slot (direct-mapped): with four times more
 * keys than slots some are evicted, and a key whose slot another key took
 * must never be encoded against that other key's page. Every delta that
 * comes out decodes against the key's own last copy, exactly. */
static void test_xbzrle_keys(void)
{
	enum { SLOTS = 16, KEYS = 64 };
	struct tlm_xbz_cache *c = tlm__xbz_create(SLOTS * PS, PS);
	static uint8_t last[KEYS][PS], cur[PS], enc[PS], dst[PS];
	unsigned hits = 0, misses = 0;

	CHECK(c != NULL && tlm__xbz_bytes(c) == SLOTS * (PS + sizeof(uint64_t)));
	/* Pages alike but for a few bytes: a delta against another key's
	 * page would be small, so the cache must tell the keys apart. */
	for (unsigned k = 0; k < KEYS; k++) {
		for (int i = 0; i < PS; i++)
			last[k][i] = (uint8_t)(i * 13);
		memcpy(last[k] + 64 * (k % 32), &k, sizeof(k));
		CHECK(tlm__xbz_encode(c, k * 7919u, last[k], enc) == 0, "key %u: first sight", k);
	}
	for (int round = 0; round < 3; round++)
		for (unsigned k = 0; k < KEYS; k++) {
			uint32_t n;

			memcpy(cur, last[k], PS);
			cur[(k * 31 + (unsigned)round) % PS] ^= 0x40;
			n = tlm__xbz_encode(c, k * 7919u, cur, enc);
			if (n) {
				hits++;
				memcpy(dst, last[k], PS);
				CHECK(tlm__xbz_decode(enc, n, dst, PS) == 0 && !memcmp(dst, cur, PS),
				      "key %u: delta against another key's page", k);
			} else {
				misses++;
			}
			memcpy(last[k], cur, PS);
		}
	/* 64 keys in 16 slots, each round robin: a key's slot is mostly
	 * taken by another before the key comes back. */
	CHECK(misses >= 3 * (KEYS - SLOTS) && hits <= 3 * SLOTS, "%u misses, %u hits",
	      misses, hits);
	/* A key sent twice in a row is always a hit: its own slot. */
	for (unsigned k = 0; k < KEYS; k++) {
		memcpy(cur, last[k], PS);
		(void)tlm__xbz_encode(c, k * 7919u, cur, enc);
		cur[1] ^= 1;
		CHECK(tlm__xbz_encode(c, k * 7919u, cur, enc) > 0, "key %u twice in a row", k);
		memcpy(last[k], cur, PS);
	}
	tlm__xbz_destroy(c);
}

/* Every threshold of core/policy.c on both sides of its boundary, with
 * figures that are exact in binary (4096-byte pages at 4096000 B/s: one
 * page per ms). */
static void test_policy_boundaries(void)
{
	struct tlm_migrate_opts o = { .downtime_ms = 1000, .max_iterations = 5 };
	struct iter_info it = { .page_size = 4096, .bw_Bps = 4096000.0, .iteration = 2 };

	CHECK(tlm__downtime_model(1000, 4096, 4096000.0, 0) == 1000.0);
	for (int p = TLM_POLICY_PRECOPY; p <= TLM_POLICY_MP; p++) {
		if (p == TLM_POLICY_STOPCOPY)
			continue;
		o.policy = (enum tlm_policy)p;
		it.prev_dirty = 100000; it.overlap = 0; it.dirty_rate_pps = 0;
		/* the downtime target: 1000 pages = 1000 ms fits, 1001 does not */
		it.dirty = 1000;
		CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED, "%s at the target",
		      tlm_policy_name(o.policy));
		it.dirty = 1001;
		CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "%s 1 ms over",
		      tlm_policy_name(o.policy));
		/* fixed costs count: 999 pages + 1 ms fits, + 1.5 ms does not */
		it.dirty = 999; it.fixed_ms = 1.0;
		CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED);
		it.fixed_ms = 1.5;
		CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
		it.fixed_ms = 0;
		/* the iteration cap: one below goes on, at it the policy ends */
		it.dirty = 5000;
		it.iteration = 4;
		CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE);
		it.iteration = 5;
		CHECK(tlm__policy_decide(&o, &it) ==
		      (p == TLM_POLICY_PRECOPY ? POL_GIVE_UP : POL_STOP_HEURISTIC));
		it.iteration = 2;
	}

	/* frs: the overlap share 0.8 and the shrink factor 0.9, from pass 2 */
	o.policy = TLM_POLICY_FRS;
	it.dirty = 5000; it.prev_dirty = 100000;
	it.overlap = 4000;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC, "overlap 80%%");
	it.overlap = 3999;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "overlap just under 80%%");
	it.overlap = 5000; it.iteration = 1;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "frs never stops on pass 1");
	it.iteration = 2; it.overlap = 0;
	it.prev_dirty = 5556;         /* 5000 < 0.9 x 5556 = 5000.4 */
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "shrinking by a tenth");
	it.prev_dirty = 5555;         /* 5000 >= 4999.5 */
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC, "not shrinking by a tenth");

	/* mp: heavy at half the link's rate, judged on pass 1 only */
	o.policy = TLM_POLICY_MP;
	it.dirty = 5000; it.prev_dirty = 0; it.iteration = 1;
	it.dirty_rate_pps = 500;      /* 500 x 4096 = 0.5 x 4096000 */
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_HEURISTIC, "mp at half the link");
	it.dirty_rate_pps = 499.9;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "mp just under half");
	it.dirty_rate_pps = 100000; it.iteration = 2;
	CHECK(tlm__policy_decide(&o, &it) == POL_CONTINUE, "mp judges pass 1 only");

	/* tlm and stop-copy are structural: asked anyway, they stop */
	o.policy = TLM_POLICY_TLM;
	CHECK(tlm__policy_decide(&o, &it) == POL_STOP_CONVERGED);
}

int main(void)
{
	test_xbzrle();
	test_xbzrle_keys();
	test_policy_boundaries();
	test_policies();
	test_downtime_model();
	test_chk_done();
	if (test_failures) {
		fprintf(stderr, "%d check(s) failed\n", test_failures);
		return 1;
	}
	printf("engine pieces: all checks passed\n");
	return 0;
}
