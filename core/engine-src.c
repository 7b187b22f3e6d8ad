/* SPDX-License-Identifier: MIT */
/*
 * The source side's stage machine.
 *
 *   SETUP    check lanes and regions, START on the control lane,
 *            start dirty tracking, start the PS threads
 *   STAGE 1  tlm:        CHK threads (one per CHK lane) make one pass while
 *            + 2         the epoch tick hands dirty pages to the PS threads
 *                        (one per PS lane) every epoch_ms; then the tail:
 *                        short rounds (PS round, SYNC, tick) while the dirty
 *                        set still shrinks, at most TAIL_MAX
 *            precopy/frs/mp: CHK pass alone, then iterations: tick, ask the
 *                        policy, send the dirty set on the PS lanes; SYNC
 *            stop-copy:  nothing (the guest is paused first)
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

static unsigned n_data(const struct src *e) { return e->o.chk_lanes + e->o.ps_lanes; }

static int send_ctrl(struct src *e, const uint8_t *msg, uint32_t len)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	int err = tlm__msg_send(c, TLM_FT_CTRL, msg, len);

	return err ? err : tlm_lane_flush(c);
}

static void send_abort(struct src *e)
{
	uint8_t m[1];

	if (tlm__cm_abort_encode(m, sizeof(m)) > 0)
		(void)send_ctrl(e, m, sizeof(m));
}

static double ms_since(uint64_t t0_ns)
{
	return (double)(tlm__now_ns() - t0_ns) / 1e6;
}

/* The destination's stage-3 accounting, after COMMIT (engine.h). */
static void commit_stats(struct src *e, const struct tlm_cm_commit *m)
{
	struct tlm_stage3_stats *s3 = &e->st->stage3;
	unsigned n = n_data(e);

	if (!m->stats || m->n != n)
		return;
	for (unsigned i = 1; i <= n; i++) {
		s3->lane_backlog_records[i] = m->backlog[i];
		s3->lane_drain_ms[i] = m->drain_us[i] / 1000.0;
		s3->backlog_records += s3->lane_backlog_records[i];
	}
	s3->backlog_bytes = m->backlog_bytes;
	s3->dest_commit_ms = m->commit_us / 1000.0;
}

/* Wait for the destination's answer: COMMIT to stage 3, or SYNCED. */
static int wait_answer(struct src *e, uint8_t want, uint8_t *buf, uint32_t *len)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	int ms = tlm__engine_timeout(e);
	uint8_t type;
	int err;

	err = tlm__msg_recv(c, &type, buf, TLM_MAX_MSG, len, ms);
	if (err) {
		tlm__src_fail(e, err, "no %s from the destination: %s",
			      want == TLM_CM_COMMIT ? "confirmation" : "answer to SYNC",
			      tlm_strerror(err));
		return err;
	}
	if (type == TLM_FT_CTRL && tlm__cm_type(buf, *len) == want)
		return 0;
	if (type == TLM_FT_CTRL && tlm__cm_type(buf, *len) == TLM_CM_FAIL) {
		struct tlm_cm_fail f;

		if (!tlm__cm_fail_decode(buf, *len, &f)) {
			tlm__src_fail(e, f.code, "destination failed: %.120s", f.text);
			return f.code;
		}
	}
	tlm__src_fail(e, -TLM_EFRAME, "unexpected message from the destination");
	return -TLM_EFRAME;
}

static int wait_commit(struct src *e)
{
	struct tlm_cm_commit m;
	uint8_t buf[TLM_MAX_MSG];
	uint32_t len;
	int err = wait_answer(e, TLM_CM_COMMIT, buf, &len);

	if (err)
		return err;
	err = tlm__cm_commit_decode(buf, len, &m);
	if (err) {
		tlm__src_fail(e, err, "malformed confirmation from the destination");
		return err;
	}
	commit_stats(e, &m);
	return 0;
}

/* Flush every data lane: what the engine handed them goes out now. */
static int flush_data(struct src *e)
{
	for (unsigned i = 1; i <= n_data(e); i++) {
		int err = tlm_lane_flush(tlm_session_lane(e->s, i));
		if (err < 0) {
			tlm__src_fail(e, err, "lane %u: %s", i, tlm_strerror(err));
			return err;
		}
	}
	return 0;
}

/* SYNC for want[1..n] records; the answer's round trip, without the
 * destination's wait, in *rtt_ms. */
static int sync_records(struct src *e, const uint64_t *want, double *rtt_ms)
{
	uint8_t msg[TLM_CM_MAX_LEN], buf[TLM_MAX_MSG];
	struct tlm_cm_lanes m = { .n = (uint16_t)n_data(e) };
	uint64_t t0 = tlm__now_ns();
	uint32_t len, waited_us;
	int err;

	for (unsigned i = 1; i <= m.n; i++)
		m.records[i] = want[i];
	err = tlm__cm_sync_encode(msg, sizeof(msg), &m);
	pthread_mutex_lock(&e->ctrl);
	if (err >= 0)
		err = send_ctrl(e, msg, (uint32_t)err);
	if (err)
		tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
	else
		err = wait_answer(e, TLM_CM_SYNCED, buf, &len);
	pthread_mutex_unlock(&e->ctrl);
	if (!err && tlm__cm_synced_decode(buf, len, &waited_us)) {
		err = -TLM_EFRAME;
		tlm__src_fail(e, err, "malformed answer to SYNC");
	}
	if (!err && rtt_ms) {
		double rtt = ms_since(t0) - waited_us / 1000.0;
		*rtt_ms = rtt > 0 ? rtt : 0;
	}
	return err;
}

int tlm__sync_lane(struct src *e, unsigned lane, uint64_t records)
{
	uint64_t want[TLM_MAX_LANES] = { 0 };
	int err = tlm_lane_flush(tlm_session_lane(e->s, lane));

	if (err < 0) {
		tlm__src_fail(e, err, "lane %u: %s", lane, tlm_strerror(err));
		return err;
	}
	want[lane] = records;
	return sync_records(e, want, NULL);
}

/*
 * SYNC: returns once the destination has applied every record sent so far
 * on every data lane. Only while no CHK or PS thread is sending. Measures
 * the control round trip for the downtime model.
 */
static int sync_dest(struct src *e)
{
	int err = flush_data(e);

	return err ? err : sync_records(e, e->lane_records, &e->rtt_ms);
}

/* Tell the destination what each lane had carried when the source paused. */
static int send_paused(struct src *e)
{
	uint8_t msg[TLM_CM_MAX_LEN];
	struct tlm_cm_lanes m = { .n = (uint16_t)n_data(e) };
	int err;

	for (unsigned i = 1; i <= m.n; i++) {
		m.records[i] = __atomic_load_n(&e->lane_records[i], __ATOMIC_RELAXED);
		m.bytes[i] = __atomic_load_n(&e->lane_bytes[i], __ATOMIC_RELAXED);
	}
	err = tlm__cm_paused_encode(msg, sizeof(msg), &m);
	if (err >= 0)
		err = send_ctrl(e, msg, (uint32_t)err);
	if (err)
		tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
	return err;
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
	err = send_paused(e);
	e->st->stage3.pause_ms = ms_since(t0);
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
	struct tlm_cm_lanes m3 = { 0 };
	uint8_t msg[TLM_CM_MAX_LEN];
	const void *dev = NULL;
	size_t devlen = 0;
	unsigned n = n_data(e);
	uint64_t t, pages0, bytes0;
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
	t = tlm__now_ns();
	if (e->tracking && tlm__epoch_tick(e) < 0)
		return e->err;
	s3->dirty_pages = pending_pages(e);
	s3->sync_ms = ms_since(t);
	s3->predicted_ms = e->tracking ? tlm__downtime_model(s3->dirty_pages, e->page_size,
							     e->bw_Bps, s3->fixed_ms) : 0;

	t = tlm__now_ns();
	pages0 = e->st->pages_ps;
	bytes0 = e->st->bytes_ps;
	err = tlm__ps_round(e);
	if (err)
		return err;
	s3->ps_pages = e->st->pages_ps - pages0;
	s3->ps_bytes = e->st->bytes_ps - bytes0;
	s3->ps_ms = ms_since(t);

	t = tlm__now_ns();
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
	s3->last_ms = ms_since(t);

	t = tlm__now_ns();
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
	m3.n = (uint16_t)n;
	for (unsigned i = 1; i <= n; i++)
		m3.records[i] = e->lane_records[i];
	m3.devstate_len = devlen;
	err = tlm__cm_stage3_encode(msg, sizeof(msg), &m3);
	if (err >= 0)
		err = send_ctrl(e, msg, (uint32_t)err);
	for (size_t off = 0; !err && off < devlen;) {
		size_t c = devlen - off > TLM_MAX_DATA_FRAME - 1 ? TLM_MAX_DATA_FRAME - 1 : devlen - off;
		uint8_t *chunk = malloc(c + 1);

		if (!chunk) {
			err = -ENOMEM;
			break;
		}
		err = tlm__cm_devstate_encode(chunk, c + 1, (const uint8_t *)dev + off, c);
		if (err >= 0)
			err = send_ctrl(e, chunk, (uint32_t)err);
		free(chunk);
		off += c;
	}
	if (err) {
		tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
		return err;
	}
	s3->devstate_ms = ms_since(t);

	t = tlm__now_ns();
	err = wait_commit(e);
	s3->wait_ms = ms_since(t);
	return err;
}

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

static int tail(struct src *e)
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
			err = sync_dest(e);
		if (!err)
			e->bw_Bps = (double)(e->st->bytes_chk + e->st->bytes_ps) * 1e9 /
				    (double)(tlm__now_ns() - e->t_pass_ns);
		s3->tail_ms = ms_since(t0);
		return err;
	}
	for (;;) {
		uint64_t t = tlm__now_ns(), b0 = e->st->bytes_ps;
		double ms;
		int64_t dirty;

		err = tlm__ps_round(e);
		if (!err)
			err = sync_dest(e);
		if (err)
			break;
		ms = ms_since(t);
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
	s3->tail_ms = ms_since(t0);
	return err;
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
	int ms = tlm__engine_timeout(e);
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
	struct tlm_cm_start s = {
		.chk = (uint16_t)e->o.chk_lanes, .ps = (uint16_t)e->o.ps_lanes,
		.policy = (uint8_t)e->o.policy, .epoch_ms = e->o.epoch_ms,
		.flags = want_live(e) ? TLM_START_ZC : 0,
	};
	uint8_t m[TLM_CM_START_LEN];
	int len = tlm__cm_start_encode(m, sizeof(m), &s);

	return len < 0 ? len : send_ctrl(e, m, (uint32_t)len);
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
	pthread_condattr_t ca_attr;
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
	pthread_mutex_init(&e->ctrl, NULL);
	/* The epoch tick waits on it with a deadline (core/pagesaver.c). */
	pthread_condattr_init(&ca_attr);
	pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cond, &ca_attr);
	pthread_condattr_destroy(&ca_attr);

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
		uint64_t t;

		if (pause_source(e, &t_pause))
			goto fail;
		t = tlm__now_ns();
		e->t_pass_ns = t;
		if (start_chk(e, ca))
			goto fail;
		join_chk(e, ca);
		if (e->err)
			goto fail;
		st->stage3.chk_ms = ms_since(t);
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
		e->t_pass_ns = tlm__now_ns();
		if (start_chk(e, ca))
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
			err = tail(e);
			if (err)
				goto fail;
		} else {
			err = iterate(e, t_start, &stop_now);
			if (err == -TLM_ENOTCONV) {
				tlm__src_fail(e, err, "did not converge in %u iterations",
					      e->o.max_iterations);
				goto fail;
			}
			if (err || !stop_now)
				goto fail;
			/* The last iteration's round, applied before the pause. */
			err = sync_dest(e);
			if (err)
				goto fail;
		}
	}
	err = stage3(e, &t_pause);
	if (err)
		goto fail;
	st->completed = true;
	st->elapsed_ms = tlm__now_ms() - t_start;
	st->stage3.downtime_ms = ms_since(t_pause);
	st->downtime_ms = (uint64_t)(st->stage3.downtime_ms + 0.5);
	/* Downtime is part of the elapsed time; the two are read at different
	 * resolutions (microseconds rounded, milliseconds truncated), so a
	 * stop-copy, whose downtime is all of it, could read 1 ms over. */
	if (st->elapsed_ms < st->downtime_ms)
		st->elapsed_ms = st->downtime_ms;
	err = 0;
	goto stop_threads;

fail:
	/* The first error any thread met, else the one the failing step
	 * returned (-ENOMEM from iterate() or stage3() fails no thread). */
	err = e->err ? e->err : err < 0 ? err : -EIO;
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
	pthread_mutex_destroy(&e->ctrl);
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
