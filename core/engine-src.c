/* SPDX-License-Identifier: MIT */
/*
 * The source side's stage machine.
 *
 *   SETUP    check lanes and regions, START on the control lane,
 *            start dirty tracking, start the PS threads
 *   STAGE 1  tlm:        CHK threads (one per CHK lane) make one pass while
 *            + 2         the epoch tick hands dirty pages to the PS threads
 *                        (one per PS lane) every epoch_ms
 *            precopy/frs/mp: CHK pass alone, then iterations: tick, ask the
 *                        policy, send the dirty set on the PS lanes
 *            stop-copy:  nothing (the guest is paused first)
 *   STAGE 3  pause; final tick (with the highest epoch); last PS round;
 *            a LAST record on every data lane; STAGE3 with the record count
 *            of every lane and the device state; wait for COMMIT
 *   DONE     completed: the source stays paused, the caller decides
 *   FAILED   anything else: stop every thread, ABORT to the peer, resume
 *            the memory source if we paused it. Never left paused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

void tlm__src_fail(struct src *e, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&e->lock);
	if (!e->err) {
		e->err = err ? err : -EIO;
		va_start(ap, fmt);
		vsnprintf(e->st->why, sizeof(e->st->why), fmt, ap);
		va_end(ap);
	}
	e->stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

bool tlm__src_stopping(struct src *e)
{
	if (e->o.abort_flag && *e->o.abort_flag)
		tlm__src_fail(e, -TLM_EABORTED, "aborted on request");
	return __atomic_load_n(&e->stop, __ATOMIC_ACQUIRE);
}

/* ---- batches of page records ---- */

int tlm__batch_init(struct send_batch *b, struct src *e, unsigned lane, uint16_t flags)
{
	memset(b, 0, sizeof(*b));
	b->lane = lane;
	b->flags = flags;
	b->buf = malloc((size_t)TLM_BURST * e->page_size);
	b->enc = malloc((size_t)TLM_BURST * e->page_size);
	if (!b->buf || !b->enc) {
		tlm__batch_free(b);
		return -ENOMEM;
	}
	return 0;
}

void tlm__batch_free(struct send_batch *b)
{
	free(b->buf);
	free(b->enc);
	b->buf = b->enc = NULL;
}

static bool is_zero(const uint8_t *p, uint32_t n)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	for (uint32_t i = 0; i < n / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

/* The page is copied first: the guest may keep writing it, and the crc and
 * the bytes on the wire must be of one and the same snapshot. Zero copy
 * leaves both to the transport (TLM_PF_LIVE, core/tlm-internal.h). */
int tlm__batch_add(struct src *e, struct send_batch *b, unsigned region, uint64_t page,
		   uint32_t epoch)
{
	uint32_t ps = e->page_size;
	uint8_t *snap = b->buf + (size_t)b->n * ps;
	struct tlm_page_rec *r = &b->recs[b->n];
	struct tlm_xbz_cache *xc = e->xbz[b->lane];

	if (e->live) {
		/* Zero copy: the transport reads the page itself, later. */
		*r = (struct tlm_page_rec){ .index = page, .epoch = epoch,
					    .region = (uint16_t)region,
					    .flags = b->flags | TLM_PF_LIVE, .len = ps,
					    .data = e->r[region].base + page * ps };
		goto added;
	}
	memcpy(snap, e->r[region].base + page * ps, ps);
	*r = (struct tlm_page_rec){ .index = page, .epoch = epoch, .region = (uint16_t)region,
				    .flags = b->flags };
	if (e->o.zero_pages && is_zero(snap, ps)) {
		r->flags |= TLM_PF_ZERO;
		if (xc) /* keep the cache's idea of the page right */
			(void)tlm__xbz_encode(xc, src_pos(region, page), snap, b->enc);
		__atomic_fetch_add(&e->st->pages_zero, 1, __ATOMIC_RELAXED);
	} else {
		uint32_t n = 0;
		uint8_t *enc = b->enc + (size_t)b->n * ps;

		if (xc)
			n = tlm__xbz_encode(xc, src_pos(region, page), snap, enc);
		if (n) {
			r->flags |= TLM_PF_XBZRLE;
			r->len = n;
			r->data = enc;
			__atomic_fetch_add(&e->st->pages_xbzrle, 1, __ATOMIC_RELAXED);
		} else {
			r->len = ps;
			r->data = snap;
		}
		r->crc = tlm_crc32c(0, r->data, r->len);
	}
added:
	if (++b->n == TLM_BURST)
		return tlm__batch_flush(e, b);
	return 0;
}

int tlm__batch_flush(struct src *e, struct send_batch *b)
{
	struct tlm_lane *l = tlm_session_lane(e->s, b->lane);
	uint64_t bytes = 0;
	int err;

	if (!b->n)
		return 0;
	for (unsigned i = 0; i < b->n; i++)
		bytes += b->recs[i].len;
	err = tlm_lane_send_pages(l, b->recs, b->n);
	if (err < 0) {
		tlm__src_fail(e, err, "lane %u: %s", b->lane, tlm_strerror(err));
		return err;
	}
	__atomic_fetch_add(&e->lane_records[b->lane], b->n, __ATOMIC_RELAXED);
	__atomic_fetch_add(&e->lane_bytes[b->lane], bytes, __ATOMIC_RELAXED);
	if (b->flags & TLM_PF_PS) {
		__atomic_fetch_add(&e->st->pages_ps, b->n, __ATOMIC_RELAXED);
		__atomic_fetch_add(&e->st->bytes_ps, bytes, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&e->st->pages_chk, b->n, __ATOMIC_RELAXED);
		__atomic_fetch_add(&e->st->bytes_chk, bytes, __ATOMIC_RELAXED);
	}
	b->n = 0;
	return 0;
}

/* ---- control messages ---- */

static int send_ctrl(struct src *e, const uint8_t *msg, uint32_t len)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	int err = tlm__msg_send(c, TLM_FT_CTRL, msg, len);

	return err ? err : tlm_lane_flush(c);
}

static void send_abort(struct src *e)
{
	uint8_t m = TLM_CM_ABORT;
	(void)send_ctrl(e, &m, 1);
}

/* Wait for the destination's verdict on stage 3. */
static int wait_commit(struct src *e)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	int ms = e->o.timeout_ms > 0 ? e->o.timeout_ms : 30000;
	uint8_t buf[TLM_MAX_MSG];
	uint32_t len;
	uint8_t type;
	int err;

	err = tlm__msg_recv(c, &type, buf, sizeof(buf), &len, ms);
	if (err) {
		tlm__src_fail(e, err, "no confirmation from the destination: %s", tlm_strerror(err));
		return err;
	}
	if (type == TLM_FT_CTRL && len >= 1 && buf[0] == TLM_CM_COMMIT)
		return 0;
	if (type == TLM_FT_CTRL && len >= 5 && buf[0] == TLM_CM_FAIL) {
		int code = (int32_t)tlm__get32(buf + 1);
		buf[len < sizeof(buf) ? len : sizeof(buf) - 1] = 0;
		tlm__src_fail(e, code < 0 ? code : -EIO, "destination failed: %.120s",
			      (const char *)buf + 5);
		return code < 0 ? code : -EIO;
	}
	tlm__src_fail(e, -TLM_EFRAME, "unexpected message from the destination");
	return -TLM_EFRAME;
}

/* ---- threads ---- */

static unsigned n_data(const struct src *e) { return e->o.chk_lanes + e->o.ps_lanes; }

static int start_chk(struct src *e, struct chk_arg *ca, bool paused_pass)
{
	for (unsigned i = 0; i < e->o.chk_lanes; i++)
		ca[i] = (struct chk_arg){ .e = e, .lane = 1 + i, .paused_pass = paused_pass,
					  .inflight = UINT64_MAX };
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
	uint8_t msg[TLM_MAX_MSG];
	const void *dev = NULL;
	size_t devlen = 0;
	unsigned n = n_data(e);
	int err;

	if (!e->paused) {
		err = e->m->ops->pause(e->m->ctx);
		if (err) {
			tlm__src_fail(e, err, "cannot pause the memory source: %s", tlm_strerror(err));
			return err;
		}
		e->paused = true;
		*t_pause = tlm__now_ms();
	}
	/* Everything written up to the pause, with the highest epoch. */
	if (e->tracking && tlm__epoch_tick(e) < 0)
		return e->err;
	err = tlm__ps_round(e);
	if (err)
		return err;
	if (e->m->ops->device_state) {
		err = e->m->ops->device_state(e->m->ctx, &dev, &devlen);
		if (err) {
			tlm__src_fail(e, err, "device state: %s", tlm_strerror(err));
			return err;
		}
	}
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
	msg[0] = TLM_CM_STAGE3;
	tlm__put16(msg + 1, (uint16_t)n);
	for (unsigned i = 1; i <= n; i++)
		tlm__put64(msg + 3 + 8 * (i - 1), e->lane_records[i]);
	tlm__put64(msg + 3 + 8 * n, devlen);
	err = send_ctrl(e, msg, 3 + 8 * n + 8);
	for (size_t off = 0; !err && off < devlen;) {
		size_t c = devlen - off > TLM_MAX_DATA_FRAME - 1 ? TLM_MAX_DATA_FRAME - 1 : devlen - off;
		uint8_t *chunk = malloc(c + 1);
		if (!chunk)
			return -ENOMEM;
		chunk[0] = TLM_CM_DEVSTATE;
		memcpy(chunk + 1, (const uint8_t *)dev + off, c);
		err = send_ctrl(e, chunk, (uint32_t)(c + 1));
		free(chunk);
		off += c;
	}
	if (err) {
		tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
		return err;
	}
	e->st->pages_final = 0;
	return wait_commit(e);
}

/* precopy, frs, mp: iterate on the PS lanes after the CHK pass. */
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

static int iterate(struct src *e, uint64_t t_start, bool *stop_now)
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
	if (n_data(e) != tlm_session_lanes(e->s)) {
		snprintf(e->st->why, sizeof(e->st->why), "%u CHK + %u PS lanes, but the session has %u",
			 e->o.chk_lanes, e->o.ps_lanes, tlm_session_lanes(e->s));
		return -EINVAL;
	}
	for (unsigned i = 1; i <= n_data(e); i++)
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
	e->st->extra_bytes += (size_t)n_data(e) * 2 * TLM_BURST * e->page_size;
	return 0;
}

/*
 * Zero copy where every data lane can do it (mixing would let a copied CHK
 * record land over a newer placed one). Registration pins the regions, so
 * it comes before dirty tracking starts: pinning touches every page.
 */
static bool want_live(const struct src *e)
{
	return !e->o.copy_pages && !e->o.xbzrle_cache;
}

/* After START, which asked the destination to offer its regions. */
static void setup_live(struct src *e)
{
	int ms = e->o.timeout_ms > 0 ? e->o.timeout_ms : 30000;
	uint64_t t0 = tlm__now_ms();
	unsigned n = n_data(e);
	int err = 0;

	if (!want_live(e))
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

static int send_start(struct src *e)
{
	uint8_t m[11];

	m[0] = TLM_CM_START;
	tlm__put16(m + 1, (uint16_t)e->o.chk_lanes);
	tlm__put16(m + 3, (uint16_t)e->o.ps_lanes);
	m[5] = (uint8_t)e->o.policy;
	tlm__put32(m + 6, e->o.epoch_ms);
	m[10] = want_live(e) ? TLM_START_ZC : 0;
	return send_ctrl(e, m, sizeof(m));
}

int tlm_migrate_source(struct tlm_session *s, struct tlm_memsrc *m,
		       const struct tlm_migrate_opts *o, struct tlm_migrate_stats *st)
{
	struct chk_arg ca[TLM_MAX_LANES];
	struct ps_arg pa[TLM_MAX_LANES];
	pthread_t tick;
	bool tick_on = false, tracking = false, stop_now = false;
	unsigned ps_started = 0;
	uint64_t t_start = tlm__now_ms(), t_pause = 0;
	struct src *e;
	int err;

	memset(st, 0, sizeof(*st));
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->s = s;
	e->m = m;
	e->o = *o;
	e->st = st;
	e->epoch = 1;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);

	err = setup(e);
	if (err) {
		if (!st->why[0])
			snprintf(st->why, sizeof(st->why), "setup: %s", tlm_strerror(err));
		goto out;
	}
	err = send_start(e);
	if (err) {
		snprintf(st->why, sizeof(st->why), "control lane: %s", tlm_strerror(err));
		goto out;
	}
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

	if (e->o.policy == TLM_POLICY_STOPCOPY) {
		err = m->ops->pause(m->ctx);
		if (err) {
			tlm__src_fail(e, err, "cannot pause: %s", tlm_strerror(err));
			goto fail;
		}
		e->paused = true;
		t_pause = tlm__now_ms();
		if (start_chk(e, ca, true))
			goto fail;
		join_chk(e, ca);
		if (e->err)
			goto fail;
		st->converged = true;
		st->iterations = 1;
	} else {
		err = m->ops->start_tracking(m->ctx);
		if (err) {
			tlm__src_fail(e, err, "cannot track dirty pages: %s", tlm_strerror(err));
			goto fail;
		}
		tracking = true;
		e->tracking = true;
		if (e->o.policy == TLM_POLICY_TLM) {
			if (pthread_create(&tick, NULL, tlm__tick_thread, e)) {
				tlm__src_fail(e, -EAGAIN, "cannot start the epoch tick");
				goto fail;
			}
			tick_on = true;
		}
		if (start_chk(e, ca, false))
			goto fail;
		join_chk(e, ca);
		if (tick_on) {
			/* CHK is done: the tick stops, PS finishes its round. */
			pthread_mutex_lock(&e->lock);
			e->tick_stop = true;
			pthread_cond_broadcast(&e->cond);
			pthread_mutex_unlock(&e->lock);
			pthread_join(tick, NULL);
			tick_on = false;
		}
		if (e->err)
			goto fail;
		st->iterations = 1;
		if (e->o.policy == TLM_POLICY_TLM) {
			st->converged = true;
		} else {
			err = iterate(e, t_start, &stop_now);
			if (err == -TLM_ENOTCONV) {
				tlm__src_fail(e, err, "did not converge in %u iterations",
					      e->o.max_iterations);
				goto fail;
			}
			if (err || !stop_now)
				goto fail;
		}
	}
	err = stage3(e, &t_pause);
	if (err)
		goto fail;
	st->completed = true;
	st->elapsed_ms = tlm__now_ms() - t_start;
	st->downtime_ms = tlm__now_ms() - t_pause;
	err = 0;
	goto stop_threads;

fail:
	err = e->err ? e->err : -EIO;
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
	send_abort(e);
stop_threads:
	pthread_mutex_lock(&e->lock);
	e->stop = true;
	e->tick_stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	if (tick_on)
		pthread_join(tick, NULL);
	for (unsigned i = 0; i < ps_started; i++)
		pthread_join(pa[i].t, NULL);
	if (tracking)
		(void)m->ops->stop_tracking(m->ctx);
out:
	if (e->live)
		for (unsigned i = 1; i <= n_data(e); i++)
			tlm_lane_unregister_regions(tlm_session_lane(s, i));
	for (unsigned i = 0; i < e->n_regions; i++) {
		free(e->r[i].pending);
		free(e->r[i].fresh);
	}
	for (unsigned i = 0; i < TLM_MAX_LANES; i++)
		tlm__xbz_destroy(e->xbz[i]);
	if (err && !st->why[0])
		snprintf(st->why, sizeof(st->why), "%s", tlm_strerror(err));
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	free(e);
	return err;
}

void tlm_migrate_stats_free(struct tlm_migrate_stats *st)
{
	free(st->epochs);
	st->epochs = NULL;
	st->n_epochs = 0;
}
