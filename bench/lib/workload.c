/* SPDX-License-Identifier: MIT */
/*
 * Workloads that write into a local memory source, standing in for a guest
 * (tlm-bench.h). They take the source's pause gate (core/memsrc-internal.h).
 *
 * The regions are seen as one array of pages (global index = position in
 * the concatenation of the regions). `threads` workers split it into equal
 * contiguous shares and each applies the pattern to its own share only, so
 * a page has exactly one writer and its stamp can be read-modify-written.
 *
 * Page stamp (tlm_workload_page_ok checks it): word 0 = generation, bumped
 * on every write; word 1 = global page index; the first word of every other
 * 64-byte line = stamp(gen, gidx, line). A page that went stale anywhere is
 * visible as a mismatch against word 0, or as an older generation.
 *
 * Each page write is bracketed by the source's pause gate, so pause() parks
 * every worker between two page writes. Rate limiting: each worker has a
 * token bucket (rate / threads pages per second) on CLOCK_MONOTONIC, with a
 * burst of at most ~5 ms of tokens, so a pause does not bank a burst.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memsrc-internal.h"
#include "tlm-internal.h"
#include "tlm-bench.h"

enum kind { K_MG, K_SP, K_RANDOM, K_HOTSET, K_IDLE };

const char *const tlm_workload_names[] = {
	"mg", "sp", "random", "hotset", "idle", NULL,
};

#define MAX_THREADS 256
#define MG_MAX_LEVELS 32

struct worker {
	struct tlm_workload *w;
	pthread_t tid;
	uint64_t first;          /* global page index of this worker's share */
	uint64_t count;          /* pages in the share */
	double rate;             /* pages/s, 0 = unlimited */
	uint64_t rng;
	bool started;
	_Alignas(64) _Atomic uint64_t writes;
};

struct tlm_workload {
	struct tlm_local *m;
	enum kind kind;
	unsigned nthreads;
	atomic_bool stop;
	const struct tlm_region *regs;
	unsigned nregs;
	uint64_t *region_first;  /* global index of each region's page 0 */
	uint32_t page_size;
	struct worker *wk;
};

/* ---------------------------------------------------------------------- */
/* page stamps */

static inline uint64_t stamp(uint64_t gen, uint64_t gidx, unsigned line)
{
	return (gen << 20) ^ (gidx * 0x9e3779b97f4a7c15ull) ^ line;
}

static void page_write(void *page, uint32_t page_size, uint64_t gidx)
{
	uint64_t *w = page;
	uint64_t gen = w[0] + 1;
	unsigned lines = page_size / 64;

	for (unsigned l = 1; l < lines; l++)
		w[l * 8] = stamp(gen, gidx, l);
	w[1] = gidx;
	w[0] = gen;
}

int tlm_workload_page_ok(const void *page, uint32_t page_size, uint64_t gidx)
{
	const uint64_t *w = page;
	unsigned lines = page_size / 64;
	uint64_t gen = w[0];

	if (gen == 0) {
		for (size_t i = 0; i < page_size / 8; i++)
			if (w[i])
				return 0;
		return 1;
	}
	if (w[1] != gidx)
		return 0;
	for (unsigned l = 1; l < lines; l++)
		if (w[l * 8] != stamp(gen, gidx, l))
			return 0;
	return 1;
}

static void *page_addr(const struct tlm_workload *w, uint64_t gidx)
{
	unsigned r = 0;

	while (r + 1 < w->nregs && gidx >= w->region_first[r + 1])
		r++;
	return (char *)w->regs[r].base +
	       (size_t)(gidx - w->region_first[r]) * w->page_size;
}

/* ---------------------------------------------------------------------- */
/* patterns: each yields the next page of the worker's share (0..count-1) */

static inline uint64_t xorshift64s(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/*
 * mg: a hierarchy of grids, each a quarter of the one above, laid out one
 * after the other in the share (3/4, 3/16, ... of it). A V-cycle sweeps every
 * level in turn, finest to coarsest and back, writing each page of a level.
 * Per cycle about twice the share is written; the finest level alone is
 * 3/4 of it.
 */
struct mg_state {
	unsigned nlevels;
	uint64_t off[MG_MAX_LEVELS], len[MG_MAX_LEVELS];
	unsigned step;           /* position in the V: 0 .. 2*nlevels-3 */
	uint64_t pos;
};

static void mg_init(struct mg_state *s, uint64_t count)
{
	uint64_t left = count, off = 0;

	memset(s, 0, sizeof(*s));
	while (left > 0 && s->nlevels < MG_MAX_LEVELS) {
		uint64_t len = left < 4 || s->nlevels == MG_MAX_LEVELS - 1 ?
			       left : left - left / 4;

		s->off[s->nlevels] = off;
		s->len[s->nlevels] = len;
		s->nlevels++;
		off += len;
		left -= len;
	}
}

static uint64_t mg_next(struct mg_state *s)
{
	unsigned vlen = s->nlevels > 1 ? 2 * s->nlevels - 2 : 1;
	unsigned level = s->step < s->nlevels ? s->step : vlen - s->step;
	uint64_t page = s->off[level] + s->pos;

	if (++s->pos >= s->len[level]) {
		s->pos = 0;
		s->step = (s->step + 1) % vlen;
	}
	return page;
}

/*
 * sp: the share is an nx*ny*nz array of pages (x fastest in memory). A sweep
 * walks every line along x, then every line along y, then along z, as the
 * ADI solver of NPB SP does. Pages beyond nx*ny*nz stay untouched.
 */
struct sp_state {
	uint64_t nx, ny, nz, used;
	unsigned dim;
	uint64_t i;
};

static void sp_init(struct sp_state *s, uint64_t count)
{
	uint64_t n = 1;

	while ((n + 1) * (n + 1) * (n + 1) <= count)
		n++;
	memset(s, 0, sizeof(*s));
	s->nx = s->ny = n;
	s->nz = count / (n * n);
	if (s->nz == 0)
		s->nz = 1;
	s->used = s->nx * s->ny * s->nz;
	if (s->used > count) {        /* count < n*n only if count == 0 */
		s->nx = s->ny = s->nz = 1;
		s->used = 1;
	}
}

static uint64_t sp_next(struct sp_state *s)
{
	uint64_t x, y, z, i = s->i;

	switch (s->dim) {
	case 0:                       /* lines along x */
		x = i % s->nx; y = (i / s->nx) % s->ny; z = i / (s->nx * s->ny);
		break;
	case 1:                       /* lines along y */
		y = i % s->ny; x = (i / s->ny) % s->nx; z = i / (s->nx * s->ny);
		break;
	default:                      /* lines along z */
		z = i % s->nz; x = (i / s->nz) % s->nx; y = i / (s->nz * s->nx);
		break;
	}
	if (++s->i >= s->used) {
		s->i = 0;
		s->dim = (s->dim + 1) % 3;
	}
	return x + s->nx * (y + s->ny * z);
}

/* ---------------------------------------------------------------------- */
/* workers */

static void nap_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

static void *worker_main(void *arg)
{
	struct worker *k = arg;
	struct tlm_workload *w = k->w;
	struct mg_state mg;
	struct sp_state sp;
	uint64_t hot = k->count / 20 ? k->count / 20 : 1;
	uint64_t hot_stride = k->count / hot;
	double tokens = 0, burst = k->rate * 0.005;
	uint64_t last = tlm__now_ns(), writes = 0;

	if (burst < 1)
		burst = 1;
	if (w->kind == K_MG)
		mg_init(&mg, k->count);
	else if (w->kind == K_SP)
		sp_init(&sp, k->count);

	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		uint64_t budget = 64;

		if (k->rate > 0) {
			uint64_t now = tlm__now_ns();

			tokens += (double)(now - last) * k->rate / 1e9;
			last = now;
			if (tokens > burst)
				tokens = burst;
			if (tokens < 1) {
				double wait = (1 - tokens) / k->rate * 1e9;

				/* Short naps keep stop() responsive. */
				nap_ns(wait > 10e6 ? 10000000ull : (uint64_t)wait + 1);
				continue;
			}
			budget = (uint64_t)tokens;
			tokens -= (double)budget;
		}
		for (; budget > 0; budget--) {
			uint64_t page;

			switch (w->kind) {
			case K_MG:
				page = mg_next(&mg);
				break;
			case K_SP:
				page = sp_next(&sp);
				break;
			case K_RANDOM:
				page = xorshift64s(&k->rng) % k->count;
				break;
			default:             /* K_HOTSET */
				page = (xorshift64s(&k->rng) % hot) * hot_stride;
				break;
			}
			page += k->first;
			if (tlm__local_gate_enter(w->m, &w->stop))
				goto out;
			page_write(page_addr(w, page), w->page_size, page);
			/* Counted inside the bracket: once pause() returns the
			 * count no longer moves either. */
			atomic_store_explicit(&k->writes, ++writes, memory_order_relaxed);
			tlm__local_gate_exit(w->m);
		}
	}
out:
	return NULL;
}

struct fill_arg {
	const struct tlm_region *regs;
	unsigned nregs;
	uint32_t page_size;
	unsigned percent;
	uint64_t first, end;     /* global page indexes [first, end) */
	uint64_t written;
	pthread_t tid;
};

/* Page gidx is filled iff (gidx * percent) mod 100 < percent: evenly
 * spread, every page at 100, none at 0. */
static void *fill_main(void *arg)
{
	struct fill_arg *f = arg;
	uint64_t gidx = 0;

	for (unsigned r = 0; r < f->nregs; r++) {
		uint64_t pages = f->regs[r].len / f->page_size;

		for (uint64_t p = 0; p < pages; p++, gidx++)
			if (gidx >= f->first && gidx < f->end &&
			    gidx * f->percent % 100 < f->percent) {
				page_write((char *)f->regs[r].base + (size_t)p * f->page_size,
					   f->page_size, gidx);
				f->written++;
			}
	}
	return NULL;
}

int64_t tlm_workload_fill(struct tlm_local *m, unsigned percent, unsigned threads)
{
	struct tlm_memsrc *src;
	const struct tlm_region *regs;
	struct fill_arg f[16];
	unsigned nregs, started = 0;
	uint64_t total = 0;
	int64_t written = 0;
	int err;

	if (!m || percent > 100)
		return -EINVAL;
	src = tlm_local_memsrc(m);
	err = src->ops->regions(src->ctx, &regs, &nregs);
	if (err)
		return err;
	if (percent == 0)
		return 0;
	for (unsigned r = 0; r < nregs; r++)
		total += regs[r].len / src->page_size;
	if (threads == 0)
		threads = 1;
	if (threads > sizeof(f) / sizeof(f[0]))
		threads = sizeof(f) / sizeof(f[0]);
	for (unsigned i = 0; i < threads; i++)
		f[i] = (struct fill_arg){ .regs = regs, .nregs = nregs, .page_size = src->page_size,
					  .percent = percent, .first = total * i / threads,
					  .end = total * (i + 1) / threads };
	for (started = 1; started < threads; started++)
		if (pthread_create(&f[started].tid, NULL, fill_main, &f[started]))
			break;
	fill_main(&f[0]);
	for (unsigned i = 0; i < started; i++) {
		if (i > 0)
			pthread_join(f[i].tid, NULL);
		written += (int64_t)f[i].written;
	}
	/* A thread that could not start leaves its share to this one. */
	for (unsigned i = started; i < threads; i++) {
		fill_main(&f[i]);
		written += (int64_t)f[i].written;
	}
	return written;
}

static int kind_of(const char *name)
{
	for (int i = 0; tlm_workload_names[i]; i++)
		if (!strcmp(name, tlm_workload_names[i]))
			return i;
	return -1;
}

int tlm_workload_start(struct tlm_local *m, const char *kind, unsigned threads,
		       uint64_t rate, uint64_t seed, struct tlm_workload **out)
{
	struct tlm_memsrc *src;
	struct tlm_workload *w;
	uint64_t total = 0;
	int k, err;

	if (!m || !kind || !out)
		return -EINVAL;
	k = kind_of(kind);
	if (k < 0) {
		tlm__err("workload: unknown kind '%s'", kind);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->m = m;
	w->kind = (enum kind)k;
	src = tlm_local_memsrc(m);
	w->page_size = src->page_size;
	err = src->ops->regions(src->ctx, &w->regs, &w->nregs);
	if (err)
		goto fail;
	w->region_first = calloc(w->nregs, sizeof(uint64_t));
	if (!w->region_first) {
		err = -ENOMEM;
		goto fail;
	}
	for (unsigned r = 0; r < w->nregs; r++) {
		w->region_first[r] = total;
		total += w->regs[r].len / w->page_size;
	}

	/* idle: no workers at all; pause/resume and stop are then trivial. */
	if (w->kind == K_IDLE)
		goto done;
	if (threads == 0)
		threads = 1;
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (threads > total)
		threads = (unsigned)total;
	w->wk = calloc(threads, sizeof(*w->wk));
	if (!w->wk) {
		err = -ENOMEM;
		goto fail;
	}
	w->nthreads = threads;
	for (unsigned i = 0; i < threads; i++) {
		struct worker *wk = &w->wk[i];

		wk->w = w;
		wk->first = total * i / threads;
		wk->count = total * (i + 1) / threads - wk->first;
		wk->rate = (double)rate / threads;
		/* xorshift must not start at 0. */
		wk->rng = (seed ^ (0x9e3779b97f4a7c15ull * (i + 1))) | 1;
	}
	for (unsigned i = 0; i < threads; i++) {
		err = -pthread_create(&w->wk[i].tid, NULL, worker_main, &w->wk[i]);
		if (err)
			goto fail;
		w->wk[i].started = true;
	}
done:
	tlm__info("workload: %s, %u thread(s), %llu pages, rate %llu/s",
		  kind, w->nthreads, (unsigned long long)total,
		  (unsigned long long)rate);
	*out = w;
	return 0;
fail:
	tlm_workload_stop(w);
	return err;
}

uint64_t tlm_workload_writes(const struct tlm_workload *w)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < w->nthreads; i++)
		sum += atomic_load_explicit(&w->wk[i].writes, memory_order_relaxed);
	return sum;
}

/* Stops and joins the workers, then frees w. Workers parked by a pause are
 * woken to see the stop flag; the source stays paused for everyone else. */
void tlm_workload_stop(struct tlm_workload *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, true);
	tlm__local_gate_kick(w->m);
	for (unsigned i = 0; i < w->nthreads; i++)
		if (w->wk[i].started)
			pthread_join(w->wk[i].tid, NULL);
	free(w->wk);
	free(w->region_first);
	free(w);
}
