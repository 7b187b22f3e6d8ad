/* SPDX-License-Identifier: MIT */
/*
 * The epoch tick and the page-saver (PS) threads.
 *
 * The tick (every epoch_ms in the tlm policy; once per iteration in the
 * precopy-style ones; once more in stage 3) get-and-clears each region's
 * dirty pages into `fresh` and ORs them into `pending`, then advances the
 * epoch. The memory source's get_dirty() has no window where a write is
 * lost (memsrc.h), and pending is only ever ORed into (tick) or exchanged
 * with zero (PS), word by word, atomically, so no dirty bit is lost here
 * either.
 *
 * PS thread k owns the bitmap words w with w % ps_lanes == k: all of a
 * page's PS records go out on one lane, in the order they were read. Per
 * round it takes its words' bits and sends the pages CHK has started on;
 * the others it drops, since CHK will read them later (core/engine.h).
 * With zero copy, "started on" becomes "finished writing" (tlm__chk_done),
 * and pages CHK is still writing stay pending for a later round.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

void tlm__epoch_account(struct src *e, uint32_t epoch, uint64_t dirtied, uint64_t sent)
{
	struct tlm_migrate_stats *st = e->st;

	if (epoch == 0)
		return;
	pthread_mutex_lock(&e->lock);
	if (epoch > e->cap_epochs) {
		unsigned cap = e->cap_epochs ? e->cap_epochs * 2 : 64;
		struct tlm_epoch_stat *ne;
		while (cap < epoch)
			cap *= 2;
		ne = realloc(st->epochs, cap * sizeof(*ne));
		if (!ne) {
			pthread_mutex_unlock(&e->lock);
			return;
		}
		memset(ne + e->cap_epochs, 0, (cap - e->cap_epochs) * sizeof(*ne));
		st->epochs = ne;
		e->cap_epochs = cap;
	}
	st->epochs[epoch - 1].epoch = epoch;
	st->epochs[epoch - 1].dirtied += dirtied;
	st->epochs[epoch - 1].sent_ps += sent;
	if (epoch > st->n_epochs)
		st->n_epochs = epoch;
	pthread_mutex_unlock(&e->lock);
}

int64_t tlm__epoch_tick(struct src *e)
{
	uint64_t total = 0, t0 = tlm__now_ns(), prev = e->t_tick_ns;
	uint32_t ep;

	for (unsigned i = 0; i < e->n_regions; i++) {
		struct src_region *r = &e->r[i];
		int n;

		memset(r->fresh, 0, r->words * 8);
		n = e->m->ops->get_dirty(e->m->ctx, i, r->fresh);
		if (n < 0) {
			tlm__src_fail(e, n, "dirty tracking failed: %s", tlm_strerror(n));
			return n;
		}
		for (uint64_t w = 0; w < r->words; w++)
			if (r->fresh[w])
				__atomic_fetch_or(&r->pending[w], r->fresh[w], __ATOMIC_RELEASE);
		total += (uint64_t)n;
	}
	/* The set just taken belongs to epoch ep; whatever PS reads from now
	 * on is stamped ep + 1 or later. */
	ep = __atomic_fetch_add(&e->epoch, 1, __ATOMIC_ACQ_REL);
	tlm__epoch_account(e, ep, total, 0);
	/* For the downtime model: what a tick costs, how fast pages get
	 * dirty (only the thread that ticks reads or writes these). */
	e->tick_ms = (double)(tlm__now_ns() - t0) / 1e6;
	if (prev && t0 > prev)
		e->rate_pps = (double)total * 1e9 / (double)(t0 - prev);
	e->t_tick_ns = t0;
	return (int64_t)total;
}

void *tlm__tick_thread(void *arg)
{
	struct src *e = arg;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	for (;;) {
		bool leave;

		ts.tv_nsec += (long)e->o.epoch_ms * 1000000L;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_nsec -= 1000000000L;
			ts.tv_sec++;
		}
		/* e->cond runs on CLOCK_MONOTONIC: tick_stop wakes us at once,
		 * so stage 3 never waits out the rest of an epoch. */
		pthread_mutex_lock(&e->lock);
		while (!e->tick_stop && !e->stop &&
		       pthread_cond_timedwait(&e->cond, &e->lock, &ts) != ETIMEDOUT)
			;
		leave = e->tick_stop || e->stop;
		pthread_mutex_unlock(&e->lock);
		if (leave || tlm__src_stopping(e))
			break;
		if (tlm__epoch_tick(e) < 0)
			break;
		if (e->o.progress)
			e->o.progress(e->st, __atomic_load_n(&e->chk_sent, __ATOMIC_RELAXED),
				      e->total_pages, e->o.progress_arg);
		pthread_mutex_lock(&e->lock);
		e->round++;
		pthread_cond_broadcast(&e->cond);
		pthread_mutex_unlock(&e->lock);
	}
	return NULL;
}

int tlm__ps_round(struct src *e)
{
	uint64_t r;
	bool waiting = true;

	pthread_mutex_lock(&e->lock);
	r = ++e->round;
	pthread_cond_broadcast(&e->cond);
	while (waiting && !e->stop) {
		waiting = false;
		for (unsigned i = 0; i < e->o.ps_lanes; i++)
			if (e->ps[i].done_round < r)
				waiting = true;
		if (waiting)
			pthread_cond_wait(&e->cond, &e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return e->err;
}

int tlm__ps_cut(struct src *e)
{
	bool waiting = true;

	pthread_mutex_lock(&e->lock);
	__atomic_store_n(&e->ps_cut, true, __ATOMIC_RELEASE);
	while (waiting && !e->stop) {
		waiting = false;
		for (unsigned i = 0; i < e->o.ps_lanes; i++)
			if (e->ps[i].done_round < e->round)
				waiting = true;
		if (waiting)
			pthread_cond_wait(&e->cond, &e->lock);
	}
	__atomic_store_n(&e->ps_cut, false, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&e->lock);
	return e->err;
}

/* Pages are booked to the epoch in which they were sent: a round that
 * spans several ticks spreads over them. */
struct ps_acct { uint32_t ep; uint64_t sent; };

static void ps_book(struct src *e, struct ps_acct *ac, uint32_t epoch)
{
	if (epoch - 1 != ac->ep) {
		tlm__epoch_account(e, ac->ep, 0, ac->sent);
		ac->ep = epoch - 1;
		ac->sent = 0;
	}
	ac->sent++;
}

static int ps_pass(struct src *e, struct ps_arg *a, struct send_batch *b, struct ps_acct *ac)
{
	uint64_t cursor, done = tlm__chk_done(e, &cursor);

	for (unsigned ri = 0; ri < e->n_regions; ri++) {
		struct src_region *r = &e->r[ri];

		for (uint64_t w = a->k; w < r->words; w += e->o.ps_lanes) {
			uint64_t bits, keep = 0;

			if (!__atomic_load_n(&r->pending[w], __ATOMIC_RELAXED))
				continue;
			bits = __atomic_exchange_n(&r->pending[w], 0, __ATOMIC_ACQ_REL);
			while (bits) {
				uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits), pos = src_pos(ri, p);
				uint32_t epoch;

				bits &= bits - 1;
				if (p >= r->pages)
					continue;
				if (pos >= done)
					done = tlm__chk_done(e, &cursor);
				/* CHK has not started on p: it will read it later. */
				if (pos >= cursor)
					continue;
				/* Zero copy: CHK's write of p may be in flight; a
				 * later round sends it (core/engine.h). */
				if (pos >= done) {
					keep |= 1ull << (p % 64);
					continue;
				}
				epoch = __atomic_load_n(&e->epoch, __ATOMIC_ACQUIRE);
				if (tlm__batch_add(e, b, ri, p, epoch)) {
					__atomic_fetch_or(&r->pending[w], keep, __ATOMIC_RELEASE);
					return e->err;
				}
				ps_book(e, ac, epoch);
			}
			if (keep)
				__atomic_fetch_or(&r->pending[w], keep, __ATOMIC_RELEASE);
			if (tlm__src_stopping(e))
				return e->err;
			if (__atomic_load_n(&e->ps_cut, __ATOMIC_ACQUIRE))
				return tlm__batch_flush(e, b);
		}
	}
	return tlm__batch_flush(e, b);
}

void *tlm__ps_thread(void *arg)
{
	struct ps_arg *a = arg;
	struct src *e = a->e;
	struct send_batch b;

	if (tlm__batch_init(&b, e, a->lane, TLM_PF_PS)) {
		tlm__src_fail(e, -ENOMEM, "PS: out of memory");
		return NULL;
	}
	for (;;) {
		uint64_t r, t0, b0;
		struct ps_acct ac;

		pthread_mutex_lock(&e->lock);
		while (!e->stop && e->round == a->done_round)
			pthread_cond_wait(&e->cond, &e->lock);
		if (e->stop) {
			/* Let a waiting ps_round() go on. */
			a->done_round = UINT64_MAX;
			pthread_cond_broadcast(&e->cond);
			pthread_mutex_unlock(&e->lock);
			break;
		}
		r = e->round;
		pthread_mutex_unlock(&e->lock);

		ac.ep = __atomic_load_n(&e->epoch, __ATOMIC_ACQUIRE) - 1;
		ac.sent = 0;
		t0 = tlm__now_ns();
		b0 = __atomic_load_n(&e->lane_bytes[a->lane], __ATOMIC_RELAXED);
		if (ps_pass(e, a, &b, &ac) && !e->err)
			tlm__src_fail(e, -EIO, "PS lane %u failed", a->lane);
		tlm__epoch_account(e, ac.ep, 0, ac.sent);
		/* The lanes' bandwidth, as the page saver sees it (engine-src.c). */
		__atomic_fetch_add(&e->ps_ns, tlm__now_ns() - t0, __ATOMIC_RELAXED);
		__atomic_fetch_add(&e->ps_bytes, __atomic_load_n(&e->lane_bytes[a->lane],
								 __ATOMIC_RELAXED) - b0,
				   __ATOMIC_RELAXED);

		pthread_mutex_lock(&e->lock);
		a->done_round = r;
		pthread_cond_broadcast(&e->cond);
		pthread_mutex_unlock(&e->lock);
	}
	tlm__batch_free(&b);
	return NULL;
}
