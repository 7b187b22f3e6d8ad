/* SPDX-License-Identifier: MIT */
/*
 * The page-saver (PS) threads: each round sends what the epoch tick
 * (core/epoch.c) left pending.
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
