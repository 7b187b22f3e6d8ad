/* SPDX-License-Identifier: MIT */
/*
 * The source's side of the control lane: failure (tlm__src_fail, which
 * every engine thread calls), the messages the stage machine sends (START,
 * PAUSED, STAGE3 + DEVSTATE, ABORT) and the exchanges it waits on (SYNC and
 * SYNCED, COMMIT). Messages are encoded and decoded by core/wire.c; this
 * file adds what they mean to the source. Requests and answers are one
 * exchange at a time (e->ctrl); between them the keepalive thread reads
 * the lane (src_ka_check), so a destination that goes silent, or fails,
 * while the source has nothing to ask is noticed within the timeout
 * (core/keepalive.c lists the timers).
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

static int send_ctrl(struct src *e, const uint8_t *msg, uint32_t len)
{
	return tlm__ka_send(&e->ka, msg, len);
}

void tlm__src_silent(struct src *e, const char *what, uint64_t ms)
{
	tlm__src_fail(e, -ETIMEDOUT, "%sthe destination has sent nothing for %llu ms "
		      "(timeout %d ms; gone without closing the lanes?)", what,
		      (unsigned long long)ms, tlm__engine_timeout(e));
	/* It takes nothing more: CHK and PS threads waiting in a send to it
	 * return now, not at the transport's send timeout, and so does a
	 * keepalive waiting on the control lane (an RDMA lane whose peer
	 * reads nothing runs out of message credits). */
	for (unsigned i = 0; i <= tlm__n_data(e); i++)
		tlm__lane_abort(tlm_session_lane(e->s, i), -ETIMEDOUT);
}

/* A FAIL from the destination, or anything else it should not have sent
 * now; fails e either way. */
static int unexpected(struct src *e, const uint8_t *buf, uint32_t len)
{
	struct tlm_cm_fail f;

	if (tlm__cm_type(buf, len) == TLM_CM_FAIL && !tlm__cm_fail_decode(buf, len, &f)) {
		tlm__src_fail(e, f.code, "destination failed: %.120s", f.text);
		return f.code;
	}
	tlm__src_fail(e, -TLM_EFRAME, "unexpected message from the destination");
	return -TLM_EFRAME;
}

/* The keepalive thread's check (core/keepalive.c): read what the
 * destination sent while no exchange waits for an answer (e->ctrl free),
 * and give up on it once it has been silent for the engine's timeout. */
static void src_ka_check(void *arg)
{
	struct src *e = arg;
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	uint8_t buf[TLM_MAX_MSG];
	uint64_t silent;

	if (__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE))
		return;
	if (pthread_mutex_trylock(&e->ctrl) == 0) {
		for (;;) {
			uint32_t len;
			uint8_t type;
			int err = tlm__msg_recv(c, &type, buf, sizeof(buf), &len, 1);

			if (err == -ETIMEDOUT)
				break;
			if (err) {
				tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
				break;
			}
			tlm__ka_heard(&e->ka);
			if (type != TLM_FT_CTRL || tlm__cm_keepalive_decode(buf, len)) {
				(void)unexpected(e, buf, type == TLM_FT_CTRL ? len : 0);
				break;
			}
		}
		pthread_mutex_unlock(&e->ctrl);
	}
	silent = tlm__ka_silent_ms(&e->ka);
	if (silent >= (uint64_t)tlm__engine_timeout(e))
		tlm__src_silent(e, "", silent);
}

static void src_ka_fail(void *arg, int err)
{
	tlm__src_fail(arg, err, "control lane (keepalive): %s", tlm_strerror(err));
}

int tlm__src_ka_start(struct src *e)
{
	int err = tlm__ka_start(&e->ka, src_ka_check, src_ka_fail, e);

	if (err)
		tlm__src_fail(e, err, "cannot start the keepalive thread");
	return err;
}

void tlm__send_abort(struct src *e)
{
	uint8_t m[1];

	if (tlm__cm_abort_encode(m, sizeof(m)) > 0)
		(void)send_ctrl(e, m, sizeof(m));
}

#define DEST_REASON_MS 3000   /* longest wait for the destination's FAIL */

void tlm__src_dest_reason(struct src *e)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	uint64_t deadline = tlm__now_ms() + DEST_REASON_MS;
	uint8_t buf[TLM_MAX_MSG];
	struct tlm_cm_fail f;
	int err;

	pthread_mutex_lock(&e->lock);
	err = e->err;
	pthread_mutex_unlock(&e->lock);
	if (err != -TLM_EPEERCLOSED && err != -ECONNRESET && err != -EPIPE)
		return;
	pthread_mutex_lock(&e->ctrl);
	for (;;) {
		int left = tlm__left_ms(deadline);
		uint32_t len;
		uint8_t type;

		if (!left || tlm__msg_recv(c, &type, buf, sizeof(buf), &len, left) ||
		    type != TLM_FT_CTRL)
			break;
		if (!tlm__cm_keepalive_decode(buf, len))
			continue;
		if (tlm__cm_type(buf, len) == TLM_CM_FAIL && !tlm__cm_fail_decode(buf, len, &f)) {
			pthread_mutex_lock(&e->lock);
			tlm__dbg("the source's own reason: %s", e->st->why);
			snprintf(e->st->why, sizeof(e->st->why), "destination failed: %.138s",
				 f.text);
			e->err = f.code < 0 ? f.code : -EIO;
			pthread_mutex_unlock(&e->lock);
		}
		break;
	}
	pthread_mutex_unlock(&e->ctrl);
}

/* The destination's stage-3 accounting, after COMMIT (engine.h). */
static void commit_stats(struct src *e, const struct tlm_cm_commit *m)
{
	struct tlm_stage3_stats *s3 = &e->st->stage3;
	unsigned n = tlm__n_data(e);

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

/* Wait for the destination's answer: COMMIT to stage 3, or SYNCED. Called
 * with e->ctrl held since the request went out. KEEPALIVEs on the way are
 * skipped; the wait ends when the destination has been silent for the
 * engine's timeout, however long it is alive and busy. */
static int wait_answer(struct src *e, uint8_t want, uint8_t *buf, uint32_t *len)
{
	struct tlm_lane *c = tlm_session_lane(e->s, 0);
	int ms = tlm__engine_timeout(e);
	const char *what = want == TLM_CM_COMMIT ? "no confirmation from the destination: "
						 : "no answer to SYNC: ";
	uint8_t type;
	int err;

	for (;;) {
		uint64_t silent = tlm__ka_silent_ms(&e->ka);

		/* Read even when the time is up: what waits unread (while
		 * nobody read the lane) proves the destination alive. */
		err = tlm__msg_recv(c, &type, buf, TLM_MAX_MSG, len,
				    silent >= (uint64_t)ms ? 1 : ms - (int)silent);
		if (err == -ETIMEDOUT) {
			silent = tlm__ka_silent_ms(&e->ka);
			if (silent < (uint64_t)ms)
				continue;
			tlm__src_silent(e, what, silent);
			return err;
		}
		if (err) {
			tlm__src_fail(e, err, "%s%s", what, tlm_strerror(err));
			return err;
		}
		tlm__ka_heard(&e->ka);
		if (type == TLM_FT_CTRL && !tlm__cm_keepalive_decode(buf, *len))
			continue;
		if (type == TLM_FT_CTRL && tlm__cm_type(buf, *len) == want)
			return 0;
		return unexpected(e, buf, type == TLM_FT_CTRL ? *len : 0);
	}
}

int tlm__wait_commit(struct src *e)
{
	struct tlm_cm_commit m;
	uint8_t buf[TLM_MAX_MSG];
	uint32_t len;
	int err = wait_answer(e, TLM_CM_COMMIT, buf, &len);

	pthread_mutex_unlock(&e->ctrl);   /* taken by tlm__send_stage3 */

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
	for (unsigned i = 1; i <= tlm__n_data(e); i++) {
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
	struct tlm_cm_lanes m = { .n = (uint16_t)tlm__n_data(e) };
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
		double rtt = tlm__ms_since(t0) - waited_us / 1000.0;
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

int tlm__sync_dest(struct src *e)
{
	int err = flush_data(e);

	return err ? err : sync_records(e, e->lane_records, &e->rtt_ms);
}

int tlm__send_paused(struct src *e)
{
	uint8_t msg[TLM_CM_MAX_LEN];
	struct tlm_cm_lanes m = { .n = (uint16_t)tlm__n_data(e) };
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

int tlm__send_start(struct src *e)
{
	struct tlm_cm_start s = {
		.chk = (uint16_t)e->o.chk_lanes, .ps = (uint16_t)e->o.ps_lanes,
		.policy = (uint8_t)e->o.policy, .epoch_ms = e->o.epoch_ms,
		.flags = tlm__want_live(e) ? TLM_START_ZC : 0,
	};
	uint8_t m[TLM_CM_START_LEN];
	int len = tlm__cm_start_encode(m, sizeof(m), &s);

	return len < 0 ? len : send_ctrl(e, m, (uint32_t)len);
}

int tlm__send_stage3(struct src *e, const void *dev, size_t devlen)
{
	struct tlm_cm_lanes m = { .n = (uint16_t)tlm__n_data(e), .devstate_len = devlen };
	uint8_t msg[TLM_CM_MAX_LEN];
	int err;

	for (unsigned i = 1; i <= m.n; i++)
		m.records[i] = e->lane_records[i];
	err = tlm__cm_stage3_encode(msg, sizeof(msg), &m);
	/* Nothing follows STAGE3 and the device state but ABORT: the
	 * destination stops reading the control lane once it has them, and
	 * the caller may use the lane after the migration. The wait for
	 * COMMIT judges the destination's silence from here on. */
	tlm__ka_stop(&e->ka);
	/* Held until COMMIT is in (tlm__wait_commit), or released here on
	 * failure. */
	pthread_mutex_lock(&e->ctrl);
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
		pthread_mutex_unlock(&e->ctrl);
		tlm__src_fail(e, err, "control lane: %s", tlm_strerror(err));
	}
	return err;
}
