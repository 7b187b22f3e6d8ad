/* SPDX-License-Identifier: MIT */
/*
 * After the CHK pass, before the pause: the rounds that bring the dirty set
 * down.
 *
 *   tlm__tail     tlm: short rounds (PS round, SYNC, tick) while the dirty
 *                 set still halves and sending it would take longer than
 *                 a tick, at most TAIL_MAX; or none when the guest writes
 *                 faster than the lanes carry
 *   tlm__iterate  precopy, frs, mp: iterations (tick, ask the policy, send
 *                 the dirty set on the PS lanes) until the policy stops or
 *                 gives up (core/policy.c)
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/*
 * tlm, once CHK is done: the tail. Send what is pending, wait until the
 * destination has applied everything (SYNC), take the dirty set again; go
 * on while the set still halves and sending it would take longer than a
 * tick, at most TAIL_MAX rounds. With lanes faster than the guest writes,
 * the set at the pause is what the guest wrote during the last short
 * round.
 *
 * A guest that dirties pages faster than the lanes carry them (measured
 * over the pass) gains nothing from more rounds: each would find more
 * pages dirty than it sent. The round under way is cut short, the
 * destination catches up, and the pause comes at once; the downtime is
 * then the guest's working set over the bandwidth, as it must be without
 * slowing the guest down (stats: stage3.lanes_keep_up false).
 */
#define TAIL_MAX 4
#define TAIL_BW_MIN_BYTES (1u << 20)  /* a round this big measures bandwidth */
#define TAIL_KEEP_UP 0.8              /* write rate / bandwidth below this */

int tlm__tail(struct src *e)
{
	struct tlm_stage3_stats *s3 = &e->st->stage3;
	uint64_t t0 = tlm__now_ns(), prev = UINT64_MAX;
	double bw = (double)(e->st->bytes_chk + e->st->bytes_ps) * 1e9 /
		    (double)(t0 - e->t_pass_ns + 1);
	uint64_t ps_ns = __atomic_load_n(&e->ps_ns, __ATOMIC_RELAXED);
	int err = 0;

	/* Over the pass, zero pages carry no bytes; the page saver's rounds
	 * carry written pages. Whichever saw the lanes do more. */
	if (ps_ns && __atomic_load_n(&e->ps_bytes, __ATOMIC_RELAXED) >= TAIL_BW_MIN_BYTES) {
		double ps_bw = (double)__atomic_load_n(&e->ps_bytes, __ATOMIC_RELAXED) * 1e9 /
			       (double)ps_ns * e->o.ps_lanes;
		if (ps_bw > bw)
			bw = ps_bw;
	}
	s3->lanes_keep_up = e->rate_pps * e->page_size < TAIL_KEEP_UP * bw;
	if (!s3->lanes_keep_up) {
		err = tlm__ps_cut(e);
		if (!err)
			err = tlm__sync_dest(e);
		if (!err)
			e->bw_Bps = (double)(e->st->bytes_chk + e->st->bytes_ps) * 1e9 /
				    (double)(tlm__now_ns() - e->t_pass_ns);
		s3->tail_ms = tlm__ms_since(t0);
		return err;
	}
	for (;;) {
		uint64_t t = tlm__now_ns(), b0 = e->st->bytes_ps;
		double ms;
		int64_t dirty;

		err = tlm__ps_round(e);
		if (!err)
			err = tlm__sync_dest(e);
		if (err)
			break;
		ms = tlm__ms_since(t);
		if (e->bw_Bps <= 0) /* the whole pass, until applied */
			e->bw_Bps = (double)(e->st->bytes_chk + e->st->bytes_ps) * 1e9 /
				    (double)(tlm__now_ns() - e->t_pass_ns);
		if (e->st->bytes_ps - b0 >= TAIL_BW_MIN_BYTES && ms > 0)
			e->bw_Bps = (double)(e->st->bytes_ps - b0) * 1000.0 / ms;
		if (s3->tail_rounds >= TAIL_MAX)
			break;
		dirty = tlm__epoch_tick(e);
		if (dirty < 0) {
			err = e->err;
			break;
		}
		s3->tail_rounds++;
		if (tlm__downtime_model((uint64_t)dirty, e->page_size, e->bw_Bps, 0) <= e->tick_ms + 1.0 ||
		    (uint64_t)dirty * 2 > prev)
			break;
		prev = (uint64_t)dirty;
	}
	s3->tail_ms = tlm__ms_since(t0);
	return err;
}

/* FRS: pages dirty both now and in the previous iteration. prev[] keeps
 * the previous dirty set (pending is not sent yet when this runs). */
static uint64_t overlap(struct src *e, uint64_t **prev)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < e->n_regions; i++)
		for (uint64_t w = 0; w < e->r[i].words; w++) {
			uint64_t cur = __atomic_load_n(&e->r[i].pending[w], __ATOMIC_ACQUIRE);
			n += (uint64_t)__builtin_popcountll(cur & prev[i][w]);
			prev[i][w] = cur;
		}
	return n;
}

int tlm__iterate(struct src *e, uint64_t t_start, bool *stop_now)
{
	struct iter_info it = { .page_size = e->page_size, .iteration = 1 };
	uint64_t t_prev = t_start, prev_sent = 0;
	uint64_t *prev[TLM_MAX_REGIONS] = { 0 };
	int ret = 0;

	*stop_now = false;
	for (unsigned i = 0; i < e->n_regions; i++) {
		prev[i] = calloc(e->r[i].words, 8);
		if (!prev[i]) {
			ret = -ENOMEM;
			goto out;
		}
		/* The first pass sent every page: all of them were "dirty". */
		memset(prev[i], 0xff, e->r[i].words * 8);
	}
	e->st->extra_bytes += e->total_pages / 8;
	it.prev_dirty = e->total_pages;
	for (;;) {
		uint64_t now = tlm__now_ms(), sent;
		int64_t dirty;
		int d;

		if (tlm__src_stopping(e)) {
			ret = e->err;
			goto out;
		}
		sent = e->st->bytes_chk + e->st->bytes_ps;
		it.sent_bytes = sent - prev_sent;
		it.bw_Bps = now > t_prev ? (double)it.sent_bytes * 1000.0 / (double)(now - t_prev) : 0;
		dirty = tlm__epoch_tick(e);
		if (dirty < 0) {
			ret = (int)dirty;
			goto out;
		}
		it.dirty = (uint64_t)dirty;
		it.overlap = overlap(e, prev);
		it.dirty_rate_pps = now > t_prev ? (double)dirty * 1000.0 / (double)(now - t_prev) : 0;
		it.fixed_ms = e->tick_ms + e->rtt_ms;
		e->bw_Bps = it.bw_Bps;
		if (e->o.progress)
			e->o.progress(e->st, e->total_pages, e->total_pages, e->o.progress_arg);
		d = tlm__policy_decide(&e->o, &it);
		tlm__dbg("iteration %llu: %llu dirty pages (%llu also last time), %.0f MB/s, decision %d",
			 (unsigned long long)it.iteration, (unsigned long long)it.dirty,
			 (unsigned long long)it.overlap, it.bw_Bps / 1e6, d);
		if (d == POL_STOP_CONVERGED || d == POL_STOP_HEURISTIC) {
			e->st->converged = d == POL_STOP_CONVERGED;
			*stop_now = true;
			goto out;
		}
		if (d == POL_GIVE_UP) {
			e->st->converged = false;
			ret = -TLM_ENOTCONV;
			goto out;
		}
		t_prev = now;
		prev_sent = sent;
		it.prev_dirty = it.dirty;
		it.iteration++;
		e->st->iterations = it.iteration;
		if (tlm__ps_round(e)) {
			ret = e->err;
			goto out;
		}
	}
out:
	for (unsigned i = 0; i < e->n_regions; i++)
		free(prev[i]);
	return ret;
}

