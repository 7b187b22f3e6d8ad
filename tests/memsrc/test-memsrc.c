/* SPDX-License-Identifier: MIT */
/*
 * The in-process memory source and its two dirty trackers.
 *
 *   test-memsrc <case> <tracker>
 *
 * case: exact | vmas | race | race-workload | pause | workloads | chain | auto
 * tracker: pagemap-scan | mprotect (pagemap-scan skips with 77 when the
 * kernel lacks it).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "memsrc-internal.h"
#include "tlm/memsrc.h"
#include "tlm/tlm.h"
#include "tests/check.h"
#include "tlm-bench.h"

#define PS 4096u

static enum tlm_tracker tracker;

static void log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_INFO)
		fprintf(stderr, "[tlm %d] %s\n", level, msg);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Waits (up to 30 s: never fail on a slow machine) until the workload has
 * done at least min writes; returns the count. */
static uint64_t wait_writes(const struct tlm_workload *w, uint64_t min)
{
	double t0 = now_s();
	uint64_t n;

	while ((n = tlm_workload_writes(w)) < min && now_s() - t0 < 30)
		sleep_ms(2);
	return n;
}

static struct tlm_local *mk(const size_t *sizes, unsigned n)
{
	struct tlm_local *m;

	CHECK_OK(tlm_local_create(sizes, n, tracker, &m));
	return m;
}

static size_t npages(const struct tlm_region *r)
{
	return r->len / PS;
}

static uint64_t *bm_alloc(const struct tlm_region *r)
{
	uint64_t *b = calloc((npages(r) + 63) / 64, 8);

	CHECK(b);
	return b;
}

static int bm_test(const uint64_t *b, size_t i)
{
	return (int)(b[i / 64] >> (i % 64)) & 1;
}

static size_t bm_count(const uint64_t *b, size_t pages)
{
	size_t c = 0;

	for (size_t i = 0; i < pages; i++)
		c += (size_t)bm_test(b, i);
	return c;
}

static void touch(const struct tlm_region *r, size_t page, uint8_t v)
{
	((volatile uint8_t *)r->base)[page * PS + (page * 97) % PS] = v;
}

/* ------------------------------------------------------------------ */

/* Writes a known set of pages between two get_dirty calls: exactly that set
 * comes back, then nothing. */
static int t_exact(void)
{
	const size_t sizes[] = { 64 * PS, 4096 * PS, 10000, 64u << 20 };
	struct tlm_local *m = mk(sizes, 4);
	struct tlm_memsrc *src = tlm_local_memsrc(m);
	const struct tlm_region *rg;
	unsigned n;
	uint64_t *bm[4];
	volatile uint8_t sink = 0;

	CHECK_OK(src->ops->regions(src->ctx, &rg, &n));
	CHECK(n == 4 && src->page_size == PS);
	CHECK(rg[2].len == 3 * PS);
	CHECK(src->ops->device_state == NULL);
	for (unsigned r = 0; r < n; r++) {
		CHECK(((uintptr_t)rg[r].base & (PS - 1)) == 0);
		bm[r] = bm_alloc(&rg[r]);
	}
	printf("tracker %s, %zu tracker bytes\n", tlm_local_tracker_name(m),
	       tlm_local_tracker_bytes(m));
	/* Not tracking yet. */
	CHECK(src->ops->get_dirty(src->ctx, 0, bm[0]) == -EINVAL);

	/* Some pages populated before tracking, most never touched. */
	for (size_t p = 0; p < 10; p++)
		touch(&rg[0], p, 1);
	touch(&rg[1], 100, 1);
	CHECK_OK(src->ops->start_tracking(src->ctx));
	CHECK(src->ops->get_dirty(src->ctx, 4, bm[0]) == -EINVAL);
	for (unsigned r = 0; r < n; r++) {
		CHECK(src->ops->get_dirty(src->ctx, r, bm[r]) == 0);
		CHECK(bm_count(bm[r], npages(&rg[r])) == 0);
	}

	/* The set: populated and never-touched pages, word and region edges,
	 * page tables apart in the 64 MiB region, and (region 1) 1200
	 * separate runs, more than one PAGEMAP_SCAN vec holds. */
	static const size_t s0[] = { 0, 5, 9, 63 };
	static const size_t s1[] = { 0, 1, 63, 64, 100, 511, 512, 4095 };
	static const size_t s2[] = { 2 };
	static const size_t s3[] = { 0, 511, 512, 8191, 8192, 16383 };
	const size_t *sets[] = { s0, s1, s2, s3 };
	const size_t lens[] = { 4, 8, 1, 6 };
	size_t expect[4] = { 0 };

	for (unsigned r = 0; r < n; r++)
		for (size_t i = 0; i < lens[r]; i++)
			touch(&rg[r], sets[r][i], 2);
	for (size_t p = 1024; p < 3424; p += 2)
		touch(&rg[1], p, 3);
	/* Reads do not count. */
	sink += ((volatile uint8_t *)rg[0].base)[7 * PS];
	sink += ((volatile uint8_t *)rg[1].base)[700 * PS];
	sink += ((volatile uint8_t *)rg[3].base)[9000 * PS];
	(void)sink;

	for (unsigned r = 0; r < n; r++) {
		uint64_t *want = bm_alloc(&rg[r]);
		int got;

		for (size_t i = 0; i < lens[r]; i++)
			want[sets[r][i] / 64] |= 1ull << (sets[r][i] % 64);
		if (r == 1)
			for (size_t p = 1024; p < 3424; p += 2)
				want[p / 64] |= 1ull << (p % 64);
		expect[r] = bm_count(want, npages(&rg[r]));
		got = src->ops->get_dirty(src->ctx, r, bm[r]);
		printf("region %u: %d dirty, expected %zu\n", r, got, expect[r]);
		CHECK(got == (int)expect[r]);
		for (size_t i = 0; i < npages(&rg[r]); i++) {
			if (bm_test(bm[r], i) != bm_test(want, i))
				fprintf(stderr, "region %u page %zu: got %d want %d\n",
					r, i, bm_test(bm[r], i), bm_test(want, i));
			CHECK(bm_test(bm[r], i) == bm_test(want, i));
		}
		free(want);
	}
	/* Right after: nothing; and get_dirty ORs (old bits stay). */
	for (unsigned r = 0; r < n; r++) {
		CHECK(src->ops->get_dirty(src->ctx, r, bm[r]) == 0);
		CHECK(bm_count(bm[r], npages(&rg[r])) == expect[r]);
		memset(bm[r], 0, (npages(&rg[r]) + 63) / 64 * 8);
	}

	/* The same page written repeatedly: once. */
	for (int i = 0; i < 5; i++)
		touch(&rg[0], 33, (uint8_t)i);
	CHECK(src->ops->get_dirty(src->ctx, 0, bm[0]) == 1 && bm_test(bm[0], 33));
	bm[0][0] = 0;

	/* Writes while not tracking are not reported after a restart. */
	CHECK_OK(src->ops->stop_tracking(src->ctx));
	touch(&rg[0], 40, 9);
	touch(&rg[1], 2000, 9);
	CHECK_OK(src->ops->start_tracking(src->ctx));
	CHECK(src->ops->get_dirty(src->ctx, 0, bm[0]) == 0);
	CHECK(src->ops->get_dirty(src->ctx, 1, bm[1]) == 0);
	touch(&rg[0], 41, 9);
	CHECK(src->ops->get_dirty(src->ctx, 0, bm[0]) == 1 && bm_test(bm[0], 41));
	CHECK_OK(src->ops->stop_tracking(src->ctx));

	for (unsigned r = 0; r < n; r++)
		free(bm[r]);
	tlm_local_destroy(m);
	printf("exact: ok\n");
	return 0;
}

/*
 * Scattered writes over a large region: every other page of 140000 (more
 * than vm.max_map_count = 65530 VMAs would be needed to protect them one
 * by one). pagemap-scan: exact. mprotect: the handler falls back to
 * opening whole blocks, so the set is a superset; nothing is lost and the
 * process survives. Afterwards both are exact again.
 */
static int t_vmas(void)
{
	const size_t np = 140000, sizes[] = { np * PS };
	struct tlm_local *m = mk(sizes, 1);
	struct tlm_memsrc *src = tlm_local_memsrc(m);
	const struct tlm_region *rg;
	uint64_t *bm;
	unsigned n;
	int got;
	size_t missing = 0;

	CHECK_OK(src->ops->regions(src->ctx, &rg, &n));
	bm = bm_alloc(&rg[0]);
	CHECK_OK(src->ops->start_tracking(src->ctx));
	for (size_t p = 0; p < np; p += 2)
		touch(&rg[0], p, 5);
	got = src->ops->get_dirty(src->ctx, 0, bm);
	for (size_t p = 0; p < np; p += 2)
		missing += !bm_test(bm, p);
	printf("vmas (%s): %zu pages written, %d reported, %zu missing\n",
	       tlm_local_tracker_name(m), np / 2, got, missing);
	CHECK(missing == 0 && got >= (int)(np / 2) && got == (int)bm_count(bm, np));
	if (tracker == TLM_TRACK_PAGEMAP_SCAN)
		CHECK(got == (int)(np / 2));
	memset(bm, 0, (np + 63) / 64 * 8);
	touch(&rg[0], 1, 6);
	touch(&rg[0], 70001, 6);
	touch(&rg[0], np - 1, 6);
	got = src->ops->get_dirty(src->ctx, 0, bm);
	CHECK(got == 3 && bm_test(bm, 1) && bm_test(bm, 70001) && bm_test(bm, np - 1));
	CHECK_OK(src->ops->stop_tracking(src->ctx));
	free(bm);
	tlm_local_destroy(m);
	printf("vmas: ok\n");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Shadow copy: what the engine does. */

struct shadow {
	struct tlm_memsrc *src;
	const struct tlm_region *rg;
	unsigned n;
	uint8_t *copy[4];
	uint64_t *bm[4];
	uint64_t reported;
};

static void shadow_init(struct shadow *s, struct tlm_local *m)
{
	memset(s, 0, sizeof(*s));
	s->src = tlm_local_memsrc(m);
	CHECK_OK(s->src->ops->regions(s->src->ctx, &s->rg, &s->n));
	CHECK(s->n <= 4);
	for (unsigned r = 0; r < s->n; r++) {
		s->copy[r] = malloc(s->rg[r].len);
		s->bm[r] = bm_alloc(&s->rg[r]);
		CHECK(s->copy[r]);
	}
}

/* Called right after start_tracking: the full pass (CHK). */
static void shadow_full(struct shadow *s)
{
	for (unsigned r = 0; r < s->n; r++)
		memcpy(s->copy[r], s->rg[r].base, s->rg[r].len);
}

/* One epoch tick: collect and copy the dirty pages (PS). */
static void shadow_sync(struct shadow *s)
{
	for (unsigned r = 0; r < s->n; r++) {
		size_t words = (npages(&s->rg[r]) + 63) / 64;
		int got;

		memset(s->bm[r], 0, words * 8);
		got = s->src->ops->get_dirty(s->src->ctx, r, s->bm[r]);
		CHECK_OK(got);
		s->reported += (uint64_t)got;
		for (size_t w = 0; w < words; w++) {
			uint64_t x = s->bm[r][w];

			while (x) {
				size_t p = w * 64 + (size_t)__builtin_ctzll(x);

				x &= x - 1;
				memcpy(s->copy[r] + p * PS,
				       (uint8_t *)s->rg[r].base + p * PS, PS);
			}
		}
	}
}

static size_t shadow_diff(const struct shadow *s)
{
	size_t bad = 0;

	for (unsigned r = 0; r < s->n; r++)
		for (size_t p = 0; p < npages(&s->rg[r]); p++)
			if (memcmp(s->copy[r] + p * PS,
				   (uint8_t *)s->rg[r].base + p * PS, PS)) {
				if (bad < 10)
					fprintf(stderr, "stale page: region %u page %zu\n",
						r, p);
				bad++;
			}
	return bad;
}

static void shadow_free(struct shadow *s)
{
	for (unsigned r = 0; r < s->n; r++) {
		free(s->copy[r]);
		free(s->bm[r]);
	}
}

struct writer {
	pthread_t tid;
	const struct tlm_region *rg;
	unsigned n;
	uint64_t seed;
	atomic_bool *stop;
	atomic_bool *hold;       /* checkpoint: park until cleared */
	atomic_uint *parked;
	_Atomic uint64_t writes;
};

/* Page stamps: mostly a hot set, sometimes anywhere, sometimes a single
 * word at a random offset (a small write must be caught too). */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t s = w->seed, stamp = w->seed << 32;

	while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
		uint64_t x = xs(&s);

		if (atomic_load(w->hold)) {
			atomic_fetch_add(w->parked, 1);
			while (atomic_load(w->hold))
				sleep_ms(1);
			atomic_fetch_sub(w->parked, 1);
			continue;
		}
		
unsigned r = (unsigned)(x % w->n);
		size_t pages = npages(&w->rg[r]);
		size_t p = (x >> 8) % 8 ? (x >> 16) % (pages / 8 + 1) : (x >> 16) % pages;
		uint64_t *q = (uint64_t *)((uint8_t *)w->rg[r].base + p * PS);

		if (p >= pages)
			p = pages - 1;
		stamp++;
		if ((x >> 40) % 4 == 0) {
			q[(x >> 44) % (PS / 8)] = stamp;
		} else {
			for (unsigned i = 0; i < PS / 8; i += 8)
				q[i] = stamp + i;
		}
		w->writes++;
	}
	return NULL;
}

/*
 * Writers race get_dirty; the shadow copy must end up byte-identical.
 * A lost write heals if the page is written and reported again later, so
 * one comparison at the end would only catch losses in the last moments.
 * Instead the writers are parked every 20 ms (a checkpoint, like the
 * guest pausing), the shadow is synced once more and compared in full.
 */
static int t_race(void)
{
	const size_t sizes[] = { 256 * PS, 300 * PS + 1 };
	struct tlm_local *m = mk(sizes, 2);
	struct shadow s;
	struct writer wr[2];
	atomic_bool stop = false, hold = false;
	atomic_uint parked = 0;
	unsigned ticks = 0, checkpoints = 0;
	double t0;
	size_t bad = 0;

	shadow_init(&s, m);
	/* Start writing before tracking starts: the full pass must race too. */
	for (int i = 0; i < 2; i++) {
		wr[i] = (struct writer){ .rg = s.rg, .n = s.n, .seed = 0x1234u + (unsigned)i,
					 .stop = &stop, .hold = &hold, .parked = &parked };
		CHECK(pthread_create(&wr[i].tid, NULL, writer_main, &wr[i]) == 0);
	}
	sleep_ms(20);
	CHECK_OK(s.src->ops->start_tracking(s.src->ctx));
	shadow_full(&s);
	t0 = now_s();
	/* 2 s, or longer until both writers got going on a loaded machine. */
	for (double next = t0 + 0.02; now_s() - t0 < 2.0 ||
	     ((atomic_load(&wr[0].writes) < 1000 || atomic_load(&wr[1].writes) < 1000) &&
	      now_s() - t0 < 40); ticks++) {
		shadow_sync(&s);
		if (now_s() >= next) {
			next = now_s() + 0.02;
			atomic_store(&hold, true);
			while (atomic_load(&parked) != 2)
				sleep_ms(1);
			shadow_sync(&s);
			bad += shadow_diff(&s);
			checkpoints++;
			atomic_store(&hold, false);
		}
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(wr[i].tid, NULL) == 0);
	shadow_sync(&s);
	bad += shadow_diff(&s);
	printf("race (%s): %u ticks, %u checkpoints, %llu + %llu writes, "
	       "%llu pages reported, %zu stale pages\n", tlm_local_tracker_name(m),
	       ticks, checkpoints + 1, (unsigned long long)atomic_load(&wr[0].writes),
	       (unsigned long long)atomic_load(&wr[1].writes), (unsigned long long)s.reported, bad);
	CHECK(atomic_load(&wr[0].writes) > 0 && atomic_load(&wr[1].writes) > 0);
	CHECK(s.reported > 0);
	CHECK(bad == 0);
	CHECK_OK(s.src->ops->stop_tracking(s.src->ctx));
	shadow_free(&s);
	tlm_local_destroy(m);
	printf("race: ok\n");
	return 0;
}

static size_t shadow_torn(const struct shadow *s)
{
	size_t torn = 0;

	for (unsigned r = 0, g = 0; r < s->n; r++)
		for (size_t p = 0; p < npages(&s->rg[r]); p++, g++)
			torn += !tlm_workload_page_ok(s->copy[r] + p * PS, PS, g);
	return torn;
}

/* The engine's stage 3 with a workload: ticks, pause, final set, compare;
 * repeated (pause, check, resume) every 50 ms of ticking. */
static int t_race_workload(void)
{
	const size_t sizes[] = { 512 * PS, 256 * PS };
	struct tlm_local *m = mk(sizes, 2);
	struct tlm_workload *w;
	struct shadow s;
	unsigned ticks = 0, stages = 0;
	uint64_t writes;
	double t0;
	size_t bad = 0, torn = 0;

	shadow_init(&s, m);
	/* Rate limited: at full speed a V-cycle (~0.2 ms) rewrites every page
	 * while the shadow is being copied, which would hide a lost write. */
	CHECK_OK(tlm_workload_start(m, "mg", 2, 200000, 7, &w));
	CHECK_OK(s.src->ops->start_tracking(s.src->ctx));
	shadow_full(&s);
	t0 = now_s();
	for (double next = t0 + 0.05; now_s() - t0 < 1.5 ||
	     (tlm_workload_writes(w) < 10000 && now_s() - t0 < 40); ticks++) {
		shadow_sync(&s);
		if (now_s() < next) {
			sleep_ms(1);
			continue;
		}
		CHECK_OK(s.src->ops->pause(s.src->ctx));
		shadow_sync(&s);
		bad += shadow_diff(&s);
		torn += shadow_torn(&s);
		stages++;
		CHECK_OK(s.src->ops->resume(s.src->ctx));
		next = now_s() + 0.05;
	}
	CHECK_OK(s.src->ops->pause(s.src->ctx));
	shadow_sync(&s);
	writes = tlm_workload_writes(w);
	bad += shadow_diff(&s);
	torn += shadow_torn(&s);
	printf("race-workload (%s): %u ticks, %u pauses, %llu writes, %llu reported, "
	       "%zu stale, %zu inconsistent\n", tlm_local_tracker_name(m), ticks,
	       stages + 1, (unsigned long long)writes,
	       (unsigned long long)s.reported, bad, torn);
	CHECK(writes > 0 && bad == 0 && torn == 0);
	CHECK_OK(s.src->ops->resume(s.src->ctx));
	tlm_workload_stop(w);
	CHECK_OK(s.src->ops->stop_tracking(s.src->ctx));
	shadow_free(&s);
	tlm_local_destroy(m);
	printf("race-workload: ok\n");
	return 0;
}

/* ------------------------------------------------------------------ */

static uint64_t mem_hash(const struct tlm_region *rg, unsigned n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned r = 0; r < n; r++) {
		const uint64_t *q = rg[r].base;

		for (size_t i = 0; i < rg[r].len / 8; i++)
			h = (h ^ q[i]) * 0x100000001b3ull;
	}
	return h;
}

static size_t inconsistent(const struct tlm_region *rg, unsigned n)
{
	size_t bad = 0;

	for (unsigned r = 0, g = 0; r < n; r++)
		for (size_t p = 0; p < npages(&rg[r]); p++, g++)
			bad += !tlm_workload_page_ok((uint8_t *)rg[r].base + p * PS, PS, g);
	return bad;
}

/* After pause returns nothing changes until resume; no page is half written. */
static int t_pause(void)
{
	const size_t sizes[] = { 1024 * PS, 512 * PS };
	struct tlm_local *m = mk(sizes, 2);
	struct tlm_memsrc *src = tlm_local_memsrc(m);
	const struct tlm_region *rg;
	struct tlm_workload *w;
	uint64_t h1, h2, w1, w2, w3;
	unsigned n;

	CHECK_OK(src->ops->regions(src->ctx, &rg, &n));
	CHECK_OK(src->ops->start_tracking(src->ctx));
	CHECK_OK(tlm_workload_start(m, "random", 2, 0, 42, &w));
	wait_writes(w, 1000);
	/* Many short pauses: each must catch the workers between pages. */
	for (int i = 0; i < 30; i++) {
		CHECK_OK(src->ops->pause(src->ctx));
		CHECK(inconsistent(rg, n) == 0);
		CHECK_OK(src->ops->resume(src->ctx));
		sleep_ms(3);
	}
	CHECK_OK(src->ops->pause(src->ctx));
	h1 = mem_hash(rg, n);
	w1 = tlm_workload_writes(w);
	sleep_ms(300);
	h2 = mem_hash(rg, n);
	w2 = tlm_workload_writes(w);
	printf("pause (%s): writes %llu -> %llu while paused, hash %s\n",
	       tlm_local_tracker_name(m), (unsigned long long)w1,
	       (unsigned long long)w2, h1 == h2 ? "unchanged" : "CHANGED");
	CHECK(w1 > 0 && h1 == h2 && w1 == w2);
	CHECK(inconsistent(rg, n) == 0);
	CHECK_OK(src->ops->resume(src->ctx));
	w3 = wait_writes(w, w2 + 1000);
	printf("pause: %llu writes after resume\n", (unsigned long long)(w3 - w2));
	CHECK(w3 > w2 && mem_hash(rg, n) != h2);
	/* stop while paused: parked workers must still leave. */
	CHECK_OK(src->ops->pause(src->ctx));
	tlm_workload_stop(w);
	CHECK_OK(src->ops->resume(src->ctx));
	CHECK(inconsistent(rg, n) == 0);
	CHECK_OK(src->ops->stop_tracking(src->ctx));
	tlm_local_destroy(m);
	printf("pause: ok\n");
	return 0;
}

/* ------------------------------------------------------------------ */

static void dirty_union(struct tlm_memsrc *src, unsigned n, uint64_t **u)
{
	for (unsigned r = 0; r < n; r++)
		CHECK_OK(src->ops->get_dirty(src->ctx, r, u[r]));
}

/* Each workload writes, within the rate, consistent stamps, in its pattern. */
static int t_workloads(void)
{
	const size_t sizes[] = { 600 * PS, 424 * PS };
	const uint64_t rate = 20000;

	for (int k = 0; tlm_workload_names[k]; k++) {
		const char *kind = tlm_workload_names[k];
		struct tlm_local *m = mk(sizes, 2);
		struct tlm_memsrc *src = tlm_local_memsrc(m);
		const struct tlm_region *rg;
		struct tlm_workload *w;
		uint64_t *u[2], writes, total = 0;
		size_t distinct = 0;
		unsigned n;
		double t0, el;

		CHECK_OK(src->ops->regions(src->ctx, &rg, &n));
		for (unsigned r = 0; r < n; r++) {
			u[r] = bm_alloc(&rg[r]);
			total += npages(&rg[r]);
		}
		CHECK_OK(src->ops->start_tracking(src->ctx));

		/* Rate limited. */
		t0 = now_s();
		CHECK_OK(tlm_workload_start(m, kind, 2, rate, 99, &w));
		sleep_ms(300);
		if (strcmp(kind, "idle"))
			wait_writes(w, 1);
		writes = tlm_workload_writes(w);
		el = now_s() - t0;
		tlm_workload_stop(w);
		dirty_union(src, n, u);
		for (unsigned r = 0; r < n; r++)
			distinct += bm_count(u[r], npages(&rg[r]));
		printf("%-6s rate %llu/s: %llu writes in %.3f s (%.0f/s), %zu distinct pages\n",
		       kind, (unsigned long long)rate, (unsigned long long)writes, el,
		       (double)writes / el, distinct);
		if (!strcmp(kind, "idle")) {
			CHECK(writes == 0 && distinct == 0);
		} else {
			CHECK(writes > 0 && distinct > 0);
			CHECK((double)writes <= 3.0 * (double)rate * el + 200);
		}
		if (!strcmp(kind, "hotset"))   /* 5% of each worker's share */
			CHECK(distinct <= total / 20 + 2);
		CHECK(inconsistent(rg, n) == 0);

		/* Unlimited, one worker (so the write count says how far its
		 * pattern got): the pattern covers what it should. */
		for (unsigned r = 0; r < n; r++)
			memset(u[r], 0, (npages(&rg[r]) + 63) / 64 * 8);
		t0 = now_s();
		CHECK_OK(tlm_workload_start(m, kind, 1, 0, 99, &w));
		while ((writes = tlm_workload_writes(w)) < 4 * total &&
		       now_s() - t0 < 30 && strcmp(kind, "idle"))
			sleep_ms(5);
		if (!strcmp(kind, "idle"))
			sleep_ms(50);
		writes = tlm_workload_writes(w);
		el = now_s() - t0;
		tlm_workload_stop(w);
		dirty_union(src, n, u);
		distinct = 0;
		for (unsigned r = 0; r < n; r++)
			distinct += bm_count(u[r], npages(&rg[r]));
		printf("%-6s unlimited: %llu writes in %.3f s, %zu of %llu pages dirty\n",
		       kind, (unsigned long long)writes, el, distinct,
		       (unsigned long long)total);
		if (!strcmp(kind, "idle"))
			CHECK(writes == 0 && distinct == 0);
		else
			CHECK(writes > 0);
		/* A V-cycle of mg writes about 2x memory and touches all of it;
		 * a sweep of sp touches the whole cube (all but < 1/2 of it).
		 * Checked only once the count says it got that far. */
		if (writes >= 2 * total && !strcmp(kind, "mg"))
			CHECK(distinct == total);
		if (writes >= total && !strcmp(kind, "sp"))
			CHECK(distinct >= total / 2);
		if (!strcmp(kind, "hotset"))
			CHECK(distinct <= total / 20 + 2);
		CHECK(inconsistent(rg, n) == 0);

		CHECK_OK(src->ops->stop_tracking(src->ctx));
		for (unsigned r = 0; r < n; r++)
			free(u[r]);
		tlm_local_destroy(m);
	}
	{
		struct tlm_local *m = mk((const size_t[]){ PS }, 1);
		struct tlm_workload *w;

		CHECK(tlm_workload_start(m, "nosuch", 1, 0, 1, &w) == -EINVAL);
		tlm_local_destroy(m);
	}
	printf("workloads: ok\n");
	return 0;
}

/* ------------------------------------------------------------------ */

static sigjmp_buf chain_env;
static volatile sig_atomic_t chain_hits, chain_code;

static void prev_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	chain_hits++;
	chain_code = si->si_code;
	siglongjmp(chain_env, 1);
}

/* mprotect only: faults outside our regions reach the previous handler;
 * several sources coexist under the one process-wide handler. */
static int t_chain(void)
{
	struct sigaction sa = { .sa_sigaction = prev_handler, .sa_flags = SA_SIGINFO };
	const size_t sz1[] = { 8 * PS }, sz2[] = { 16 * PS, 4 * PS };
	struct tlm_local *a, *b;
	struct tlm_memsrc *sa_, *sb;
	const struct tlm_region *ra, *rb;
	unsigned na, nb;
	uint64_t bma[1] = { 0 }, bmb[2] = { 0 };
	volatile uint8_t *ro;

	if (tracker != TLM_TRACK_MPROTECT) {
		printf("chain: only meaningful for the mprotect tracker\n");
		return 77;
	}
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	a = mk(sz1, 1);
	b = mk(sz2, 2);
	sa_ = tlm_local_memsrc(a);
	sb = tlm_local_memsrc(b);
	CHECK_OK(sa_->ops->regions(sa_->ctx, &ra, &na));
	CHECK_OK(sb->ops->regions(sb->ctx, &rb, &nb));
	CHECK_OK(sa_->ops->start_tracking(sa_->ctx));
	CHECK_OK(sb->ops->start_tracking(sb->ctx));

	/* A read-only page of our own: ACCERR, not ours. */
	ro = mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ro != MAP_FAILED);
	if (sigsetjmp(chain_env, 1) == 0) {
		ro[10] = 1;
		CHECK(!"write to a read-only page did not fault");
	}
	CHECK(chain_hits == 1 && chain_code == SEGV_ACCERR);
	/* An unmapped address: MAPERR. */
	munmap((void *)ro, PS);
	if (sigsetjmp(chain_env, 1) == 0) {
		ro[10] = 1;
		CHECK(!"write to an unmapped page did not fault");
	}
	CHECK(chain_hits == 2 && chain_code == SEGV_MAPERR);

	/* Both sources track their own pages. */
	touch(&ra[0], 3, 1);
	touch(&rb[0], 15, 1);
	touch(&rb[1], 0, 1);
	CHECK(sa_->ops->get_dirty(sa_->ctx, 0, bma) == 1 && bma[0] == 1u << 3);
	CHECK(sb->ops->get_dirty(sb->ctx, 0, &bmb[0]) == 1 && bmb[0] == 1u << 15);
	CHECK(sb->ops->get_dirty(sb->ctx, 1, &bmb[1]) == 1 && bmb[1] == 1);
	/* One goes away; the other still works, and so does the chain. */
	tlm_local_destroy(a);
	touch(&rb[0], 1, 2);
	bmb[0] = 0;
	CHECK(sb->ops->get_dirty(sb->ctx, 0, bmb) == 1 && bmb[0] == 2);
	if (sigsetjmp(chain_env, 1) == 0) {
		ro[10] = 1;
		CHECK(!"no fault");
	}
	CHECK(chain_hits == 3);
	tlm_local_destroy(b);
	printf("chain: ok (%d faults chained)\n", (int)chain_hits);
	return 0;
}

/* AUTO picks pagemap-scan exactly when the kernel has it. */
static int t_auto(void)
{
	const size_t sz[] = { 128 * PS };
	struct tlm_local *m;
	int sup = tlm_local_pagemap_scan_supported();

	CHECK_OK(tlm_local_create(sz, 1, TLM_TRACK_AUTO, &m));
	printf("pagemap-scan supported: %d; auto picked %s (%zu tracker bytes)\n",
	       sup, tlm_local_tracker_name(m), tlm_local_tracker_bytes(m));
	CHECK(!strcmp(tlm_local_tracker_name(m), sup ? "pagemap-scan" : "mprotect"));
	tlm_local_destroy(m);
	CHECK_OK(tlm_local_create(sz, 1, TLM_TRACK_MPROTECT, &m));
	CHECK(!strcmp(tlm_local_tracker_name(m), "mprotect"));
	CHECK(tlm_local_tracker_bytes(m) == 16);
	tlm_local_destroy(m);
	if (!sup)
		CHECK(tlm_local_create(sz, 1, TLM_TRACK_PAGEMAP_SCAN, &m) == -EOPNOTSUPP);
	CHECK(tlm_local_create(sz, 0, TLM_TRACK_AUTO, &m) == -EINVAL);
	printf("auto: ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *c;

	if (argc != 3) {
		fprintf(stderr, "usage: %s case pagemap-scan|mprotect\n", argv[0]);
		return 2;
	}
	tlm_set_log_fn(log_cb, NULL);
	c = argv[1];
	if (!strcmp(argv[2], "pagemap-scan")) {
		if (!tlm_local_pagemap_scan_supported()) {
			printf("SKIP: kernel lacks userfaultfd async write-protect "
			       "+ PAGEMAP_SCAN (Linux 6.7+), or userfaultfd is refused\n");
			return 77;
		}
		tracker = TLM_TRACK_PAGEMAP_SCAN;
	} else if (!strcmp(argv[2], "mprotect")) {
		tracker = TLM_TRACK_MPROTECT;
	} else {
		fprintf(stderr, "unknown tracker %s\n", argv[2]);
		return 2;
	}
	if (!strcmp(c, "exact"))
		return t_exact();
	if (!strcmp(c, "race"))
		return t_race();
	if (!strcmp(c, "vmas"))
		return t_vmas();
	if (!strcmp(c, "race-workload"))
		return t_race_workload();
	if (!strcmp(c, "pause"))
		return t_pause();
	if (!strcmp(c, "workloads"))
		return t_workloads();
	if (!strcmp(c, "chain"))
		return t_chain();
	if (!strcmp(c, "auto"))
		return t_auto();
	fprintf(stderr, "unknown case %s\n", c);
	return 2;
}
