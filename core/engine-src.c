/* SPDX-License-Identifier: MIT */
/*
 * The source side's stage machine (engine.h lists the files below it).
 *
 *   SETUP    check lanes and regions (bitmaps, XBZRLE caches); START on
 *            the control lane; register the regions for zero copy where
 *            every lane can; start the PS threads; then (not stop-copy)
 *            start dirty tracking and, for tlm, the epoch tick
 *   STAGE 1  tlm:        CHK threads (one per CHK lane) make one pass while
 *            + 2         the epoch tick hands dirty pages to the PS threads
 *                        (one per PS lane) every epoch_ms; then the tail:
 *                        short rounds (PS round, SYNC, tick) while the dirty
 *                        set still shrinks, at most TAIL_MAX (precopy.c)
 *            precopy/frs/mp: CHK pass alone, then iterations: tick, ask the
 *                        policy, send the dirty set on the PS lanes; SYNC
 *                        (precopy.c)
 *            stop-copy:  pause, then one CHK pass (no tracking, no tick)
 *   STAGE 3  pause, PAUSED; final tick (with the highest epoch); last PS
 *            round; a LAST record on every data lane; STAGE3 with the
 *            record count of every lane and the device state; wait for
 *            COMMIT. Each step is timed into st->stage3.
 *
 * SYNC (answered once the destination has applied every record sent so
 * far) before the pause keeps the destination's backlog out of the
 * downtime: stage 3 then waits only for what it sends itself.
 *   DONE     completed: the source stays paused, the caller decides
 *   FAILED   anything else: stop every thread, ABORT to the peer, resume
 *            the memory source if we paused it. Never left paused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* The time since the last paused step ended, and this one ends now: the
 * steps follow one another on one clock, so together they are the
 * downtime exactly, whatever runs between them. */
static double step_ms(struct src *e)
{
	uint64_t now = tlm__now_ns();
	double ms = (double)(now - e->t_step_ns) / 1e6;

	e->t_step_ns = now;
	return ms;
}

static int pause_source(struct src *e, uint64_t *t_pause)
{
	uint64_t t0 = tlm__now_ns();
	int err = e->m->ops->pause(e->m->ctx);

	if (err) {
		tlm__src_fail(e, err, "cannot pause the memory source: %s", tlm_strerror(err));
		return err;
	}
	e->paused = true;
	*t_pause = t0;
	e->t_step_ns = t0;
	err = tlm__send_paused(e);
	e->st->stage3.pause_ms = step_ms(e);
	return err;
}

static uint64_t pending_pages(const struct src *e)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < e->n_regions; i++)
		for (uint64_t w = 0; w < e->r[i].words; w++)
			n += (uint64_t)__builtin_popcountll(__atomic_load_n(&e->r[i].pending[w],
									   __ATOMIC_RELAXED));
	return n;
}

/* ---- threads ---- */

static int start_chk(struct src *e, struct chk_arg *ca)
{
	for (unsigned i = 0; i < e->o.chk_lanes; i++)
		ca[i] = (struct chk_arg){ .e = e, .lane = 1 + i, .inflight = UINT64_MAX };
	__atomic_store_n(&e->chk, ca, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < e->o.chk_lanes; i++) {
		if (pthread_create(&ca[i].t, NULL, tlm__chk_thread, &ca[i])) {
			tlm__src_fail(e, -EAGAIN, "cannot start CHK thread");
			for (unsigned j = 0; j < i; j++)
				pthread_join(ca[j].t, NULL);
			return -EAGAIN;
		}
	}
	return 0;
}

static void join_chk(struct src *e, struct chk_arg *ca)
{
	for (unsigned i = 0; i < e->o.chk_lanes; i++)
		pthread_join(ca[i].t, NULL);
}

static int stage3(struct src *e, uint64_t *t_pause)
{
	struct tlm_stage3_stats *s3 = &e->st->stage3;
	const void *dev = NULL;
	size_t devlen = 0;
	unsigned n = tlm__n_data(e);
	uint64_t pages0, bytes0;
	int err;

	if (!e->paused) {
		err = pause_source(e, t_pause);
		if (err)
			return err;
	}
	/* The model's prediction, from what was measured before the pause. */
	s3->bandwidth_Bps = e->bw_Bps;
	s3->fixed_ms = e->tick_ms + e->rtt_ms;
	s3->write_rate_pps = e->rate_pps;
	if (e->o.policy != TLM_POLICY_TLM) /* tlm's tail decided it already */
		s3->lanes_keep_up = e->bw_Bps > 0 && e->rate_pps * e->page_size < e->bw_Bps;

	/* Everything written up to the pause, with the highest epoch. */
	if (e->tracking && tlm__epoch_tick(e) < 0)
		return e->err;
	s3->dirty_pages = pending_pages(e);
	s3->sync_ms = step_ms(e);
	s3->predicted_ms = e->tracking ? tlm__downtime_model(s3->dirty_pages, e->page_size,
							     e->bw_Bps, s3->fixed_ms) : 0;

	pages0 = e->st->pages_ps;
	bytes0 = e->st->bytes_ps;
	err = tlm__ps_round(e);
	if (err)
		return err;
	s3->ps_pages = e->st->pages_ps - pages0;
	s3->ps_bytes = e->st->bytes_ps - bytes0;
	s3->ps_ms = step_ms(e);

	for (unsigned i = 1; i <= n; i++) {
		struct tlm_page_rec last = { .flags = TLM_PF_LAST };
		struct tlm_lane *l = tlm_session_lane(e->s, i);

		err = tlm_lane_send_pages(l, &last, 1);
		if (err >= 0)
			err = tlm_lane_flush(l);
		if (err < 0) {
			tlm__src_fail(e, err, "lane %u: %s", i, tlm_strerror(err));
			return err;
		}
	}
	s3->last_ms = step_ms(e);

	if (e->m->ops->device_state) {
		err = e->m->ops->device_state(e->m->ctx, &dev, &devlen);
		if (err) {
			tlm__src_fail(e, err, "device state: %s", tlm_strerror(err));
			return err;
		}
		if (devlen && !(tlm_session_cfg_get(e->s)->caps & TLM_CAP_DEVSTATE)) {
			tlm__src_fail(e, -EOPNOTSUPP, "the destination takes no device state "
				      "(TLM_CAP_DEVSTATE)");
			return -EOPNOTSUPP;
		}
	}
	err = tlm__send_stage3(e, dev, devlen);
	if (err)
		return err;
	s3->devstate_ms = step_ms(e);

	err = tlm__wait_commit(e);
	s3->wait_ms = step_ms(e);
	return err;
}

static int setup(struct src *e)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(e->s);
	const struct tlm_region *regs;
	unsigned nr;
	int err;

	if (!e->o.chk_lanes)
		e->o.chk_lanes = 1;
	if (!e->o.ps_lanes)
		e->o.ps_lanes = 1;
	if (!e->o.epoch_ms)
		e->o.epoch_ms = 100;
	if (!e->o.downtime_ms)
		e->o.downtime_ms = 300;
	if (!e->o.max_iterations)
		e->o.max_iterations = 30;
	if (tlm__n_data(e) != tlm_session_lanes(e->s)) {
		snprintf(e->st->why, sizeof(e->st->why), "%u CHK + %u PS lanes, but the session has %u",
			 e->o.chk_lanes, e->o.ps_lanes, tlm_session_lanes(e->s));
		return -EINVAL;
	}
	for (unsigned i = 1; i <= tlm__n_data(e); i++)
		if (cfg->lane_modes[i] != TLM_MODE_PAGES) {
			snprintf(e->st->why, sizeof(e->st->why), "lane %u is not in page mode", i);
			return -EINVAL;
		}
	err = e->m->ops->regions(e->m->ctx, &regs, &nr);
	if (err)
		return err;
	if (nr != cfg->n_regions || nr > TLM_MAX_REGIONS) {
		snprintf(e->st->why, sizeof(e->st->why), "memory has %u regions, session %u",
			 nr, cfg->n_regions);
		return -EINVAL;
	}
	/* What the destination takes (the session's capabilities). */
	if (!(cfg->caps & TLM_CAP_ZERO_PAGE))
		e->o.zero_pages = false;
	if (!(cfg->caps & TLM_CAP_XBZRLE))
		e->o.xbzrle_cache = 0;
	e->page_size = cfg->page_size;
	e->n_regions = nr;
	for (unsigned i = 0; i < nr; i++) {
		struct src_region *r = &e->r[i];
		if (regs[i].len != cfg->region_len[i] || regs[i].len % e->page_size) {
			snprintf(e->st->why, sizeof(e->st->why), "region %u size differs from the session's", i);
			return -EINVAL;
		}
		r->base = regs[i].base;
		r->pages = regs[i].len / e->page_size;
		r->words = (r->pages + 63) / 64;
		r->pending = calloc(r->words, 8);
		r->fresh = calloc(r->words, 8);
		if (!r->pending || !r->fresh)
			return -ENOMEM;
		e->total_pages += r->pages;
		e->st->extra_bytes += 2 * r->words * 8;
	}
	if (e->o.xbzrle_cache) {
		for (unsigned i = 0; i < e->o.ps_lanes; i++) {
			unsigned l = 1 + e->o.chk_lanes + i;
			e->xbz[l] = tlm__xbz_create(e->o.xbzrle_cache / e->o.ps_lanes, e->page_size);
			if (!e->xbz[l])
				return -ENOMEM;
			e->st->extra_bytes += tlm__xbz_bytes(e->xbz[l]);
		}
	}
	e->st->extra_bytes += (size_t)tlm__n_data(e) * 2 * TLM_BURST * e->page_size;
	return 0;
}

/* After START, which asked the destination to offer its regions. */
static void setup_live(struct src *e)
{
	int ms = tlm__engine_timeout(e);
	uint64_t t0 = tlm__now_ms();
	unsigned n = tlm__n_data(e);
	int err = 0;

	if (!tlm__want_live(e))
		return;
	for (unsigned i = 1; i <= n && !err; i++)
		for (unsigned k = 0; k < e->n_regions && !err; k++)
			err = tlm_lane_register_region(tlm_session_lane(e->s, i), k, e->r[k].base,
						       e->r[k].pages * e->page_size,
						       TLM_REG_SRC, ms);
	e->st->register_ms = tlm__now_ms() - t0;
	if (err) {
		if (err != -EOPNOTSUPP)
			tlm__warn("zero copy is off: registering the regions failed: %s",
				  tlm_strerror(err));
		for (unsigned i = 1; i <= n; i++)
			tlm_lane_unregister_regions(tlm_session_lane(e->s, i));
		return;
	}
	e->live = true;
	e->st->zero_copy = true;
}

/* Stop the epoch tick (tlm), and wait for it. */
static void stop_tick(struct src *e)
{
	if (!e->tick_on)
		return;
	pthread_mutex_lock(&e->lock);
	e->tick_stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	pthread_join(e->tick, NULL);
	e->tick_on = false;
}

/* Stages 1 and 2 of stop-copy: pause, one CHK pass. */
static int pass_paused(struct src *e, struct chk_arg *ca, uint64_t *t_pause)
{
	if (pause_source(e, t_pause))
		return e->err;
	e->t_pass_ns = e->t_step_ns;
	if (start_chk(e, ca))
		return e->err;
	join_chk(e, ca);
	if (e->err)
		return e->err;
	e->st->stage3.chk_ms = step_ms(e);
	e->st->converged = true;
	e->st->iterations = 1;
	return 0;
}

/* Stages 1 and 2 of the tracking policies: dirty tracking, the CHK pass
 * (with the epoch tick and the PS rounds for tlm), then tlm's tail or the
 * precopy iterations, up to where stage 3 may pause. */
static int pass_tracked(struct src *e, struct chk_arg *ca, uint64_t t_start)
{
	bool stop_now = false;
	int err = e->m->ops->start_tracking(e->m->ctx);

	if (err) {
		tlm__src_fail(e, err, "cannot track dirty pages: %s", tlm_strerror(err));
		return err;
	}
	e->tracking = true;
	if (e->o.policy == TLM_POLICY_TLM) {
		if (pthread_create(&e->tick, NULL, tlm__tick_thread, e)) {
			tlm__src_fail(e, -EAGAIN, "cannot start the epoch tick");
			return -EAGAIN;
		}
		e->tick_on = true;
	}
	e->t_pass_ns = tlm__now_ns();
	if (start_chk(e, ca))
		return e->err;
	join_chk(e, ca);
	stop_tick(e);   /* CHK is done: the tick stops, PS finishes its round */
	if (e->err)
		return e->err;
	e->st->iterations = 1;
	if (e->o.policy == TLM_POLICY_TLM) {
		e->st->converged = true;
		return tlm__tail(e);
	}
	err = tlm__iterate(e, t_start, &stop_now);
	if (err == -TLM_ENOTCONV)
		tlm__src_fail(e, err, "did not converge in %u iterations", e->o.max_iterations);
	if (err || !stop_now)
		return err ? err : -EIO;
	/* The last iteration's round, applied before the pause. */
	return tlm__sync_dest(e);
}

/* After success or failure: every thread stopped, dirty tracking off. */
static void stop_threads(struct src *e, struct ps_arg *pa, unsigned ps_started)
{
	pthread_mutex_lock(&e->lock);
	e->stop = true;
	e->tick_stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	tlm__ka_stop(&e->ka);
	stop_tick(e);
	for (unsigned i = 0; i < ps_started; i++)
		pthread_join(pa[i].t, NULL);
	if (e->tracking)
		(void)e->m->ops->stop_tracking(e->m->ctx);
}

static struct src *src_new(struct tlm_session *s, struct tlm_memsrc *m,
			   const struct tlm_migrate_opts *o, struct tlm_migrate_stats *st)
{
	struct src *e = calloc(1, sizeof(*e));
	pthread_condattr_t ca_attr;

	if (!e)
		return NULL;
	e->s = s;
	e->m = m;
	e->o = *o;
	e->st = st;
	e->epoch = 1;
	tlm__ka_init(&e->ka, tlm_session_lane(s, 0), tlm__engine_timeout(e));
	pthread_mutex_init(&e->lock, NULL);
	pthread_mutex_init(&e->ctrl, NULL);
	/* The epoch tick waits on it with a deadline (core/epoch.c). */
	pthread_condattr_init(&ca_attr);
	pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cond, &ca_attr);
	pthread_condattr_destroy(&ca_attr);
	return e;
}

static void src_free(struct src *e)
{
	if (e->live)
		for (unsigned i = 1; i <= tlm__n_data(e); i++)
			tlm_lane_unregister_regions(tlm_session_lane(e->s, i));
	for (unsigned i = 0; i < e->n_regions; i++) {
		free(e->r[i].pending);
		free(e->r[i].fresh);
	}
	for (unsigned i = 0; i < TLM_MAX_LANES; i++)
		tlm__xbz_destroy(e->xbz[i]);
	pthread_mutex_destroy(&e->lock);
	tlm__ka_destroy(&e->ka);
	pthread_mutex_destroy(&e->ctrl);
	pthread_cond_destroy(&e->cond);
	free(e);
}

int tlm_migrate_source(struct tlm_session *s, struct tlm_memsrc *m,
		       const struct tlm_migrate_opts *o, struct tlm_migrate_stats *st)
{
	struct chk_arg ca[TLM_MAX_LANES];
	struct ps_arg pa[TLM_MAX_LANES];
	unsigned ps_started = 0;
	uint64_t t_start = tlm__now_ms(), t_pause = 0;
	struct src *e;
	int err;

	memset(st, 0, sizeof(*st));
	e = src_new(s, m, o, st);
	if (!e)
		return -ENOMEM;
	err = setup(e);
	if (err) {
		if (!st->why[0])
			snprintf(st->why, sizeof(st->why), "setup: %s", tlm_strerror(err));
		goto out;
	}
	err = tlm__send_start(e);
	if (err) {
		snprintf(st->why, sizeof(st->why), "control lane: %s", tlm_strerror(err));
		goto out;
	}
	if (tlm__src_ka_start(e))
		goto fail;
	setup_live(e);
	e->ps = pa;
	for (unsigned i = 0; i < e->o.ps_lanes; i++) {
		pa[i] = (struct ps_arg){ .e = e, .lane = 1 + e->o.chk_lanes + i, .k = i };
		if (pthread_create(&pa[i].t, NULL, tlm__ps_thread, &pa[i])) {
			tlm__src_fail(e, -EAGAIN, "cannot start PS thread");
			goto fail;
		}
		ps_started++;
	}
	err = e->o.policy == TLM_POLICY_STOPCOPY ? pass_paused(e, ca, &t_pause)
						   : pass_tracked(e, ca, t_start);
	if (!err)
		err = stage3(e, &t_pause);
	/* Nothing more to hear or say on the control lane but ABORT. */
	tlm__ka_stop(&e->ka);
	if (err)
		goto fail;
	st->completed = true;
	st->elapsed_ms = tlm__now_ms() - t_start;
	/* the downtime ended with the COMMIT (the last step), not with
	 * stopping the keepalives */
	st->stage3.downtime_ms = (double)(e->t_step_ns - t_pause) / 1e6;
	st->downtime_ms = (uint64_t)(st->stage3.downtime_ms + 0.5);
	/* Downtime is part of the elapsed time; the two are read at different
	 * resolutions (microseconds rounded, milliseconds truncated), so a
	 * stop-copy, whose downtime is all of it, could read 1 ms over. */
	if (st->elapsed_ms < st->downtime_ms)
		st->elapsed_ms = st->downtime_ms;
	stop_threads(e, pa, ps_started);
	goto out;

fail:
	st->completed = false;
	st->elapsed_ms = tlm__now_ms() - t_start;
	/* Never leave the guest paused, and resume it first: telling the peer
	 * may block on a stalled lane for up to its send timeout. */
	if (e->paused) {
		int r = m->ops->resume(m->ctx);
		if (r)
			tlm__err("could not resume the memory source: %s", tlm_strerror(r));
		e->paused = false;
	}
	/* A lane the destination closed: its FAIL says why. */
	tlm__src_dest_reason(e);
	/* The first error any thread met, else the one the failing step
	 * returned (-ENOMEM from iterate() or stage3() fails no thread). */
	err = e->err ? e->err : err < 0 ? err : -EIO;
	tlm__send_abort(e);
	stop_threads(e, pa, ps_started);
out:
	if (err && !st->why[0])
		snprintf(st->why, sizeof(st->why), "%s", tlm_strerror(err));
	src_free(e);
	return err;
}

void tlm_migrate_stats_free(struct tlm_migrate_stats *st)
{
	free(st->epochs);
	st->epochs = NULL;
	st->n_epochs = 0;
}
