/* SPDX-License-Identifier: MIT */
/*
 * The epoch tick (the paper's IO thread) and the per-epoch accounting.
 *
 * The tick (every epoch_ms in the tlm policy, from its own thread; once per
 * iteration in the precopy-style ones; once more in stage 3) get-and-clears
 * each region's dirty pages into `fresh` and ORs them into `pending`, then
 * advances the epoch. The memory source's get_dirty() has no window where a
 * write is lost (memsrc.h), and pending is only ever ORed into (tick) or
 * exchanged with zero (PS), word by word, atomically, so no dirty bit is
 * lost here either. The tick thread starts a PS round after each tick
 * (e->round, e->cond): it wakes the page savers, it calls nothing of
 * theirs.
 */
#include <errno.h>
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
