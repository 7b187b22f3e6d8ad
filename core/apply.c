/* SPDX-License-Identifier: MIT */
/*
 * The destination: one receiver thread per data lane applies records into
 * the regions; the control lane brings START, STAGE3 (+ device state) or
 * ABORT.
 *
 * Priority: each page keeps the key (2 * epoch + 1 if from the page saver)
 * of the record it holds, plus one, 0 meaning "nothing yet". A record with
 * a lower key than the page's is stale and dropped (counted). The check and
 * the copy happen under one of 1024 striped locks, so the CHK and PS
 * receivers can never interleave on the same page.
 *
 * Zero copy: when START asks, the regions are offered to every lane; a
 * transport that can (RDMA) lets the source write pages straight into them
 * and hands us PLACED records, which are only counted: the source's rule
 * (core/engine.h) replaces the arbitration by key. The offer is withdrawn
 * before we return, whatever happened.
 *
 * Placed pages with a MAC (a sealed lane under integrity, core/seal.c):
 * the lane checks each page's MAC where the WRITE put it and flags a
 * mismatch (TLM__PF_UNCHECKED) instead of failing, since the page may
 * have changed at the source between its MAC and the WRITE's read, or a
 * later WRITE of it (a higher key, or the same key later on the same lane)
 * may have landed before the check. Both mean a later record of the page
 * comes, and its write is the last (core/engine.h): so each page keeps
 * the verdict of its highest-key record, and stage 3 is confirmed only if
 * no page's last record failed its MAC (-TLM_ESEAL). Only records that had
 * a MAC (TLM__PF_MAC, kept for us) take that path: placed pages of a clear
 * lane (--protect none) are only counted.
 *
 * Zero pages: a page that must end up zero is only read while it still
 * reads zero, never written, so memory the guest never wrote is never
 * faulted in here (a read of untouched anonymous memory maps the shared
 * zero page). That holds for any region the caller gives, guest RAM
 * included, since the page itself is checked, not an assumption about it.
 *
 * Flow control the source can see: SYNC asks for an answer once every
 * lane has applied a given number of records, so the source knows the
 * destination is not behind before it pauses. PAUSED says what the source
 * had sent when it paused: the difference from what was applied is the
 * backlog the downtime has to wait for, reported back with COMMIT along
 * with how long each lane took to drain.
 *
 * Liveness: a keepalive thread (core/keepalive.c, which lists the timers)
 * sends KEEPALIVE on a control lane idle for a while, and every send on
 * the control lane goes through it; the control loop gives up on a source
 * it has heard nothing from, on any lane, for the session's timeout.
 *
 * Stage 3 is confirmed (COMMIT) only when STAGE3 has arrived, every lane
 * has delivered its LAST record, and each lane's record count equals what
 * the source says it sent. Any error discards the whole attempt: a FAIL
 * goes back, and the caller must not use the regions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define STRIPES 1024

struct dst {
	struct tlm_session *s;
	uint32_t page_size;
	uint16_t refused;         /* TLM_PF_ZERO/XBZRLE the session did not allow */
	unsigned n_regions;
	struct {
		uint8_t *base;
		uint64_t pages;
		uint32_t *key;
		uint64_t *unchecked;  /* pages whose last record failed its MAC */
	} r[TLM_MAX_REGIONS];
	uint64_t n_unchecked;     /* bits set in the above (atomic) */
	pthread_spinlock_t stripe[STRIPES];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned lanes_done;
	int err;
	char why[160];
	volatile bool stop;
	bool offered;             /* regions offered to the lanes */
	bool zeroed;              /* TLM__DEST_ZEROED (core/engine.h) */
	bool placeable;           /* a lane may place pages (zero copy; atomic) */
	bool syncing;             /* the control thread waits for a SYNC */
	int silent_ms;            /* the session's timeout: a silent source */
	struct tlm__ka ka;        /* the control lane's keepalive */
	struct tlm_dest_stats *st;
};

struct rx {
	struct dst *d;
	unsigned lane;
	pthread_t t;
	uint64_t records;         /* applied (rx thread writes, atomic) */
	uint64_t bytes;           /* their payload bytes (atomic) */
	uint64_t t_data_ns;       /* when the lane last applied records */
	bool last;
	uint8_t *tmp;
};

/* Only the lane's rx thread writes its counters; the control thread reads. */
static void rx_count(struct rx *x, uint32_t len)
{
	__atomic_store_n(&x->records, x->records + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&x->bytes, x->bytes + len, __ATOMIC_RELEASE);
}

/* Write zeros over a page only if it is not zero already (see above). */
static bool zero_page(uint8_t *page, uint32_t n)
{
	if (tlm__page_zero(page, n))
		return false;
	memset(page, 0, n);
	return true;
}

static void dst_fail(struct dst *d, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void dst_fail(struct dst *d, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&d->lock);
	if (!d->err) {
		d->err = err ? err : -EIO;
		va_start(ap, fmt);
		vsnprintf(d->why, sizeof(d->why), fmt, ap);
		va_end(ap);
	}
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

/* The page's MAC verdict, if rec is its last record so far (see the top). */
static void placed_verdict(struct dst *d, const struct tlm_page_rec *rec)
{
	uint32_t key = 2 * rec->epoch + ((rec->flags & TLM_PF_PS) ? 1 : 0) + 1;
	pthread_spinlock_t *lk = &d->stripe[(rec->index ^ (uint64_t)rec->region << 7) % STRIPES];
	uint64_t *w = &d->r[rec->region].unchecked[rec->index / 64];
	uint64_t bit = 1ull << (rec->index % 64), old;
	bool bad = rec->flags & TLM__PF_UNCHECKED;

	pthread_spin_lock(lk);
	if (key >= d->r[rec->region].key[rec->index]) {
		d->r[rec->region].key[rec->index] = key;
		old = bad ? __atomic_fetch_or(w, bit, __ATOMIC_RELAXED)
			  : __atomic_fetch_and(w, ~bit, __ATOMIC_RELAXED);
		if (bad && !(old & bit))
			__atomic_fetch_add(&d->n_unchecked, 1, __ATOMIC_RELAXED);
		else if (!bad && (old & bit))
			__atomic_fetch_sub(&d->n_unchecked, 1, __ATOMIC_RELAXED);
	}
	pthread_spin_unlock(lk);
}

static int apply(void *arg, const struct tlm_page_rec *rec)
{
	struct rx *x = arg;
	struct dst *d = x->d;
	uint32_t key;
	uint8_t *page;
	pthread_spinlock_t *lk;
	int err = 0;

	if (rec->flags & TLM_PF_LAST) {
		if (x->last)
			return -TLM_EFRAME;
		x->last = true;
		return 0;
	}
	if (x->last || rec->region >= d->n_regions || rec->index >= d->r[rec->region].pages)
		return -TLM_EFRAME;
	if (rec->flags & d->refused)
		return -TLM_EFRAME;   /* a record the session's capabilities exclude */
	if ((rec->flags & TLM_PF_XBZRLE) ? rec->len < 6 :
	    !(rec->flags & TLM_PF_ZERO) && rec->len != d->page_size)
		return -TLM_EFRAME;
	if (rec->flags & TLM_PF_PLACED) {
		/* The transport checked it against what we offered; the data
		 * is in place and the source ordered the writes (core/engine.h),
		 * so there is nothing to arbitrate, or to touch; only the
		 * verdict of the page's MAC is kept, if it is the last record. */
		if (rec->flags & TLM__PF_MAC)
			placed_verdict(d, rec);
		__atomic_fetch_add(&d->st->pages_placed, 1, __ATOMIC_RELAXED);
		if (rec->flags & TLM_PF_STAGED)
			__atomic_fetch_add(&d->st->pages_placed_encrypted, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&d->st->pages_applied, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&d->st->bytes, rec->len, __ATOMIC_RELAXED);
		rx_count(x, rec->len);
		return 0;
	}
	key = 2 * rec->epoch + ((rec->flags & TLM_PF_PS) ? 1 : 0) + 1;
	page = d->r[rec->region].base + rec->index * d->page_size;
	lk = &d->stripe[(rec->index ^ (uint64_t)rec->region << 7) % STRIPES];
	pthread_spin_lock(lk);
	if (key < d->r[rec->region].key[rec->index]) {
		pthread_spin_unlock(lk);
		__atomic_fetch_add(&d->st->pages_stale, 1, __ATOMIC_RELAXED);
		rx_count(x, rec->len);
		/* A stale delta would have been encoded against a copy we
		 * never kept: that cannot happen (core/xbzrle.c), so say so. */
		return (rec->flags & TLM_PF_XBZRLE) ? -TLM_EFRAME : 0;
	}
	if ((rec->flags & TLM_PF_ZERO) ||
	    (!(rec->flags & TLM_PF_XBZRLE) && tlm__page_zero(rec->data, d->page_size))) {
		/* In regions that started zero, a page nothing was applied to
		 * yet is zero: it is not even read (a read of a file's hole
		 * through its mapping fills the page cache). Not with zero
		 * copy, where placed pages leave no key. */
		if ((d->zeroed && !d->r[rec->region].key[rec->index] &&
		     !__atomic_load_n(&d->placeable, __ATOMIC_ACQUIRE)) ||
		    !zero_page(page, d->page_size))
			__atomic_fetch_add(&d->st->pages_zero_kept, 1, __ATOMIC_RELAXED);
	} else if (rec->flags & TLM_PF_XBZRLE) {
		memcpy(x->tmp, page, d->page_size);
		err = tlm__xbz_decode(rec->data, rec->len, x->tmp, d->page_size);
		if (!err)
			memcpy(page, x->tmp, d->page_size);
	} else {
		memcpy(page, rec->data, d->page_size);
	}
	if (!err)
		d->r[rec->region].key[rec->index] = key;
	pthread_spin_unlock(lk);
	if (err)
		return err;
	__atomic_fetch_add(&d->st->pages_applied, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&d->st->bytes, rec->len, __ATOMIC_RELAXED);
	rx_count(x, rec->len);
	return 0;
}

/* Offer the regions to every lane for zero copy, when START asks (the
 * source then registers its own: core/engine-src.c). A lane that cannot
 * take them tells the peer so; the pages then come as copies, as always. */
static void offer_regions(struct dst *d, struct tlm_dest_stats *st)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(d->s);
	int ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : TLM_DEFAULT_TIMEOUT_MS;
	unsigned nl = tlm_session_lanes(d->s);
	uint64_t t0 = tlm__now_ms();
	bool any = false;

	/* Placeable before the first offer (a page may be placed as soon as
	 * one is out), and no longer once none was taken. */
	__atomic_store_n(&d->placeable, true, __ATOMIC_RELEASE);
	for (unsigned i = 1; i <= nl; i++)
		tlm__seal_defer_macs(tlm_session_lane(d->s, i));
	for (unsigned i = 1; i <= nl; i++)
		for (unsigned k = 0; k < d->n_regions; k++) {
			int err = tlm_lane_register_region(tlm_session_lane(d->s, i), k,
							   d->r[k].base,
							   d->r[k].pages * d->page_size,
							   TLM_REG_DST, ms);
			if (err && err != -EOPNOTSUPP)
				tlm__warn("lane %u: region %u not offered for zero copy: %s",
					  i, k, tlm_strerror(err));
			any |= !err;
		}
	__atomic_store_n(&d->placeable, any, __ATOMIC_RELEASE);
	d->offered = true;
	st->register_ms = tlm__now_ms() - t0;
}

static void withdraw_regions(struct dst *d)
{
	if (!d->offered)
		return;
	for (unsigned i = 1; i <= tlm_session_lanes(d->s); i++)
		tlm_lane_unregister_regions(tlm_session_lane(d->s, i));
	d->offered = false;
}

static void *rx_thread(void *arg)
{
	struct rx *x = arg;
	struct dst *d = x->d;
	struct tlm_lane *l = tlm_session_lane(d->s, x->lane);
	struct tlm_page_sink sink = { apply, x };

	while (!x->last && !d->stop) {
		uint64_t before = x->records;
		int n = tlm_lane_recv_pages(l, &sink, 200);

		if (x->records != before)
			__atomic_store_n(&x->t_data_ns, tlm__now_ns(), __ATOMIC_RELEASE);
		if (n < 0) {
			const char *why = n == -TLM_ESEAL ? tlm__seal_why(l) : NULL;

			/* The source's "destination failed: ..." names it too. */
			dst_fail(d, n, "lane %u: %s", x->lane, why ? why : tlm_strerror(n));
			break;
		}
		if (n > 0 && __atomic_load_n(&d->syncing, __ATOMIC_ACQUIRE)) {
			pthread_mutex_lock(&d->lock);
			pthread_cond_broadcast(&d->cond);
			pthread_mutex_unlock(&d->lock);
		}
	}
	pthread_mutex_lock(&d->lock);
	if (x->last)
		d->lanes_done++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* What the destination knew when the source paused (PAUSED). */
struct pause_info {
	bool seen;
	uint64_t t_ns;
	uint64_t records[TLM_MAX_LANES];   /* backlog per lane */
	uint64_t bytes;                    /* backlog, all lanes */
};

static int on_paused(struct dst *d, struct rx *x, unsigned nl, const uint8_t *msg, uint32_t len,
		     struct pause_info *pi)
{
	struct tlm_cm_lanes m;

	if (pi->seen || tlm__cm_paused_decode(msg, len, &m) || m.n != nl)
		return -TLM_EFRAME;
	pi->seen = true;
	pi->t_ns = tlm__now_ns();
	for (unsigned i = 1; i <= nl; i++) {
		uint64_t sent = m.records[i];
		uint64_t sent_b = m.bytes[i];
		uint64_t got = __atomic_load_n(&x[i].records, __ATOMIC_ACQUIRE);
		uint64_t got_b = __atomic_load_n(&x[i].bytes, __ATOMIC_ACQUIRE);

		pi->records[i] = sent > got ? sent - got : 0;
		pi->bytes += sent_b > got_b ? sent_b - got_b : 0;
		d->st->backlog_records += pi->records[i];
	}
	return 0;
}

/* SYNC: answer once every lane has applied what the source names. */
static uint64_t records_in(const struct rx *x, unsigned nl);

static int on_sync(struct dst *d, struct rx *x, unsigned nl, const uint8_t *msg, uint32_t len)
{
	uint64_t t0 = tlm__now_ns(), moved = t0, seen = records_in(x, nl);
	uint8_t ans[TLM_CM_SYNCED_LEN];
	struct tlm_cm_lanes m;
	bool ok = false;

	if (tlm__cm_sync_decode(msg, len, &m) || m.n != nl)
		return -TLM_EFRAME;
	const uint64_t *want = m.records;
	__atomic_store_n(&d->syncing, true, __ATOMIC_RELEASE);
	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		struct timespec ts;

		ok = true;
		for (unsigned i = 1; i <= nl; i++)
			if (__atomic_load_n(&x[i].records, __ATOMIC_ACQUIRE) < want[i])
				ok = false;
		if (ok)
			break;
		/* The records named were sent before SYNC: lanes that bring
		 * none of them for the timeout have a source gone silent. */
		if (records_in(x, nl) != seen) {
			seen = records_in(x, nl);
			moved = tlm__now_ns();
		} else if (tlm__now_ns() - moved >= (uint64_t)d->silent_ms * 1000000) {
			pthread_mutex_unlock(&d->lock);
			__atomic_store_n(&d->syncing, false, __ATOMIC_RELEASE);
			dst_fail(d, -ETIMEDOUT, "SYNC: the source's lanes have brought nothing "
				 "for %llu ms (timeout %d ms)",
				 (unsigned long long)((tlm__now_ns() - moved) / 1000000),
				 d->silent_ms);
			return 0;
		}
		/* The receivers wake us as records come; the timeout only
		 * covers a wake-up that raced with the check. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_nsec -= 1000000000L;
			ts.tv_sec++;
		}
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	}
	pthread_mutex_unlock(&d->lock);
	__atomic_store_n(&d->syncing, false, __ATOMIC_RELEASE);
	if (!ok)
		return 0;       /* failing already: the failure answers */
	tlm__cm_synced_encode(ans, sizeof(ans), (uint32_t)((tlm__now_ns() - t0) / 1000));
	return tlm__ka_send(&d->ka, ans, sizeof(ans));
}

static uint32_t us_since(uint64_t t0, uint64_t t)
{
	uint64_t us = t > t0 ? (t - t0) / 1000 : 0;
	return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* COMMIT, with the stage-3 accounting when the source said when it paused. */
static int send_commit(struct dst *d, struct rx *x, unsigned nl, const struct pause_info *pi)
{
	struct tlm_cm_commit cm = { .stats = pi->seen, .n = (uint16_t)nl };
	uint8_t m[TLM_CM_MAX_LEN];
	uint64_t now = tlm__now_ns();
	int len;

	if (pi->seen) {
		for (unsigned i = 1; i <= nl; i++) {
			uint32_t drain = us_since(pi->t_ns, x[i].t_data_ns);

			cm.backlog[i] = pi->records[i] > UINT32_MAX ? UINT32_MAX
								    : (uint32_t)pi->records[i];
			cm.drain_us[i] = drain;
			if (drain / 1000.0 > d->st->drain_ms)
				d->st->drain_ms = drain / 1000.0;
		}
		cm.backlog_bytes = pi->bytes;
		cm.commit_us = us_since(pi->t_ns, now);
	}
	len = tlm__cm_commit_encode(m, sizeof(m), &cm);
	if (len < 0)
		return len;
	return tlm__ka_send(&d->ka, m, (uint32_t)len);
}

static void send_fail(struct dst *d)
{
	uint8_t m[5 + TLM_CM_FAIL_TEXT];
	int len = tlm__cm_fail_encode(m, sizeof(m), d->err, d->why);

	if (len > 0)
		(void)tlm__ka_send(&d->ka, m, (uint32_t)len);
}

/* What the control lane has said so far. */
struct ctl {
	bool started, stage3;
	uint64_t expect[TLM_MAX_LANES];   /* STAGE3: records per lane */
	uint64_t devlen, devgot;
	uint8_t *dev;
	struct pause_info pi;
};

/* One control message (a CTRL payload); a bad one fails d. */
static void on_ctrl(struct dst *d, struct rx *x, unsigned nl, const uint8_t *buf, uint32_t len,
		    struct ctl *k)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(d->s);
	struct tlm_cm_start cs;
	struct tlm_cm_lanes c3;
	const uint8_t *chunk;
	size_t chunk_len;
	int err;

	switch (tlm__cm_type(buf, len)) {
	case TLM_CM_START:
		if (k->started || tlm__cm_start_decode(buf, len, &cs) || cs.chk + cs.ps != (int)nl) {
			dst_fail(d, -TLM_EFRAME, "bad START message");
			break;
		}
		k->started = true;
		if (cs.flags & TLM_START_ZC)
			offer_regions(d, d->st);
		break;
	case TLM_CM_STAGE3:
		if (k->stage3 || tlm__cm_stage3_decode(buf, len, &c3) || c3.n != nl ||
		    (c3.devstate_len && !(cfg->caps & TLM_CAP_DEVSTATE))) {
			dst_fail(d, -TLM_EFRAME, "bad STAGE3 message");
			break;
		}
		for (unsigned i = 1; i <= nl; i++)
			k->expect[i] = c3.records[i];
		k->devlen = c3.devstate_len;
		if (k->devlen > (1ull << 30)) {
			dst_fail(d, -TLM_EFRAME, "device state of %llu bytes refused",
				 (unsigned long long)k->devlen);
			break;
		}
		if (k->devlen && !(k->dev = malloc(k->devlen))) {
			dst_fail(d, -ENOMEM, "no memory for the device state");
			break;
		}
		k->stage3 = true;
		break;
	case TLM_CM_DEVSTATE:
		if (!k->stage3 || tlm__cm_devstate_decode(buf, len, &chunk, &chunk_len) ||
		    chunk_len > k->devlen - k->devgot) {
			dst_fail(d, -TLM_EFRAME, "unexpected device state");
			break;
		}
		memcpy(k->dev + k->devgot, chunk, chunk_len);
		k->devgot += chunk_len;
		break;
	case TLM_CM_PAUSED:
		if (k->stage3 || on_paused(d, x, nl, buf, len, &k->pi))
			dst_fail(d, -TLM_EFRAME, "bad PAUSED message");
		break;
	case TLM_CM_SYNC:
		err = k->stage3 ? -TLM_EFRAME : on_sync(d, x, nl, buf, len);
		if (err)
			dst_fail(d, err, "SYNC: %s", tlm_strerror(err));
		break;
	case TLM_CM_KEEPALIVE:
		if (tlm__cm_keepalive_decode(buf, len))
			dst_fail(d, -TLM_EFRAME, "bad KEEPALIVE message");
		break;
	case TLM_CM_ABORT:
		if (tlm__cm_abort_decode(buf, len))
			dst_fail(d, -TLM_EFRAME, "bad ABORT message");
		else
			dst_fail(d, -TLM_EABORTED, "the source aborted the migration");
		break;
	default:
		dst_fail(d, -TLM_EFRAME, "unknown control message %u", buf[0]);
		break;
	}
}

/* Once STAGE3 and the whole device state are in: every lane's receiver
 * done (LAST), each with as many records as the source says it sent. */
static void drained(struct dst *d, struct rx *x, unsigned nl, const struct ctl *k)
{
	uint64_t seen = records_in(x, nl), moved = tlm__now_ns();
	bool all;

	pthread_mutex_lock(&d->lock);
	while (d->lanes_done < nl && !d->stop) {
		struct timespec ts;

		/* The records left were sent before STAGE3: lanes that bring
		 * none of them for the timeout have a source gone silent. */
		if (records_in(x, nl) != seen) {
			seen = records_in(x, nl);
			moved = tlm__now_ns();
		} else if (tlm__now_ns() - moved >= (uint64_t)d->silent_ms * 1000000) {
			pthread_mutex_unlock(&d->lock);
			dst_fail(d, -ETIMEDOUT, "stage 3: the source's lanes have brought nothing "
				 "for %llu ms (timeout %d ms)",
				 (unsigned long long)((tlm__now_ns() - moved) / 1000000),
				 d->silent_ms);
			return;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_nsec -= 1000000000L;
			ts.tv_sec++;
		}
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	}
	all = d->lanes_done == nl && !d->stop;
	pthread_mutex_unlock(&d->lock);
	if (!all)
		return;
	for (unsigned i = 1; i <= nl; i++)
		if (x[i].records != k->expect[i])
			dst_fail(d, -TLM_EFRAME, "lane %u: %llu records, the source sent %llu",
				 i, (unsigned long long)x[i].records,
				 (unsigned long long)k->expect[i]);
	if (__atomic_load_n(&d->n_unchecked, __ATOMIC_RELAXED))
		dst_fail(d, -TLM_ESEAL, "%llu pages placed by RDMA WRITE do not match their MAC "
			 "(modified in transit)",
			 (unsigned long long)__atomic_load_n(&d->n_unchecked, __ATOMIC_RELAXED));
}

/* The control lane: START, then STAGE3 and the device state, or ABORT,
 * until every lane is drained or d fails. buf: TLM_MAX_DATA_FRAME bytes. */
/* Records every lane has delivered so far (each rx thread counts its own). */
static uint64_t records_in(const struct rx *x, unsigned nl)
{
	uint64_t n = 0;

	for (unsigned i = 1; i <= nl; i++)
		n += __atomic_load_n(&x[i].records, __ATOMIC_ACQUIRE);
	return n;
}

static void control_loop(struct dst *d, struct rx *x, unsigned nl, uint8_t *buf, struct ctl *k)
{
	int silent_ms = d->silent_ms;
	struct tlm_lane *c = tlm_session_lane(d->s, 0);
	uint64_t heard = tlm__now_ms(), seen = 0;

	while (!d->stop) {
		uint32_t len;
		uint8_t type;
		int err;

		if (k->stage3 && k->devgot == k->devlen) {
			drained(d, x, nl, k);
			return;
		}
		err = tlm__msg_recv(c, &type, buf, TLM_MAX_DATA_FRAME, &len, 500);
		if (err == -ETIMEDOUT) {
			/* A source that vanished without closing (power, cable,
			 * a frozen host) sends nothing on any lane: give up on
			 * it after the session's timeout, not never. */
			uint64_t n = records_in(x, nl), now = tlm__now_ms();

			if (n != seen) {
				seen = n;
				heard = now;
			} else if (now - heard >= (uint64_t)silent_ms) {
				dst_fail(d, -ETIMEDOUT, "the source has sent nothing for %llu ms "
					 "(timeout %d ms; gone without closing the lanes?)",
					 (unsigned long long)(now - heard), silent_ms);
				return;
			}
			continue;
		}
		heard = tlm__now_ms();
		if (err) {
			dst_fail(d, err, "control lane: %s", tlm_strerror(err));
			return;
		}
		if (type != TLM_FT_CTRL || len < 1) {
			dst_fail(d, -TLM_EFRAME, "unexpected frame on the control lane");
			return;
		}
		on_ctrl(d, x, nl, buf, len, k);
	}
}

static void dst_ka_fail(void *arg, int err)
{
	dst_fail(arg, err, "control lane (keepalive): %s", tlm_strerror(err));
}

/* d for these regions, or -errno with st->why (d is set up far enough
 * for dst_free either way). */
static int dst_setup(struct dst *d, const struct tlm_region *regions, unsigned n)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(d->s);
	struct tlm_dest_stats *st = d->st;

	d->page_size = cfg->page_size;
	d->silent_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : TLM_DEFAULT_TIMEOUT_MS;
	tlm__ka_init(&d->ka, tlm_session_lane(d->s, 0), d->silent_ms);
	d->refused = (cfg->caps & TLM_CAP_ZERO_PAGE ? 0 : TLM_PF_ZERO) |
		     (cfg->caps & TLM_CAP_XBZRLE ? 0 : TLM_PF_XBZRLE);
	d->n_regions = n;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_spin_init(&d->stripe[i], PTHREAD_PROCESS_PRIVATE);
	for (unsigned i = 0; i < n; i++) {
		if (regions[i].len != cfg->region_len[i]) {
			snprintf(st->why, sizeof(st->why), "region %u: %zu bytes here, %llu at the source",
				 i, regions[i].len, (unsigned long long)cfg->region_len[i]);
			return -EINVAL;
		}
		d->r[i].base = regions[i].base;
		d->r[i].pages = regions[i].len / d->page_size;
		d->r[i].key = calloc(d->r[i].pages, sizeof(uint32_t));
		d->r[i].unchecked = calloc((d->r[i].pages + 63) / 64, sizeof(uint64_t));
		if (!d->r[i].key || !d->r[i].unchecked)
			return -ENOMEM;
	}
	for (unsigned i = 1; i <= tlm_session_lanes(d->s); i++)
		if (cfg->lane_modes[i] != TLM_MODE_PAGES) {
			snprintf(st->why, sizeof(st->why), "lane %u is not in page mode", i);
			return -EINVAL;
		}
	return 0;
}

static void dst_free(struct dst *d, unsigned n)
{
	tlm__ka_destroy(&d->ka);
	withdraw_regions(d);
	for (unsigned i = 0; i < n && i < TLM_MAX_REGIONS; i++) {
		free(d->r[i].key);
		free(d->r[i].unchecked);
	}
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_spin_destroy(&d->stripe[i]);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

/* Stop the receivers and wait for them. */
static void stop_rx(struct dst *d, struct rx *x, unsigned started)
{
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(x[i].t, NULL);
	for (unsigned i = 1; i <= started; i++)
		free(x[i].tmp);
}

int tlm_migrate_dest(struct tlm_session *s, const struct tlm_region *regions,
		     unsigned n, void **devstate, size_t *devstate_len,
		     struct tlm_dest_stats *st)
{
	return tlm__migrate_dest(s, regions, n, 0, devstate, devstate_len, st);
}

int tlm__migrate_dest(struct tlm_session *s, const struct tlm_region *regions, unsigned n,
		      unsigned flags, void **devstate, size_t *devstate_len,
		      struct tlm_dest_stats *st)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(s);
	unsigned nl = tlm_session_lanes(s), started = 0;
	struct rx x[TLM_MAX_LANES];
	struct ctl k = { 0 };
	uint8_t *buf;
	struct dst *d;
	int err;

	memset(st, 0, sizeof(*st));
	if (devstate)
		*devstate = NULL;
	if (devstate_len)
		*devstate_len = 0;
	if (n != cfg->n_regions) {
		snprintf(st->why, sizeof(st->why), "%u regions given, the session has %u",
			 n, cfg->n_regions);
		return -EINVAL;
	}
	d = calloc(1, sizeof(*d));
	buf = malloc(TLM_MAX_DATA_FRAME);
	if (!d || !buf) {
		free(d);
		free(buf);
		return -ENOMEM;
	}
	d->s = s;
	d->st = st;
	d->zeroed = flags & TLM__DEST_ZEROED;
	err = dst_setup(d, regions, n);
	for (unsigned i = 1; !err && i <= nl; i++) {
		x[i] = (struct rx){ .d = d, .lane = i };
		x[i].tmp = malloc(d->page_size);
		if (!x[i].tmp || pthread_create(&x[i].t, NULL, rx_thread, &x[i])) {
			free(x[i].tmp);
			err = -ENOMEM;
			break;
		}
		started++;
	}
	if (!err && tlm__ka_start(&d->ka, NULL, dst_ka_fail, d))
		err = -EAGAIN;
	if (err) {
		stop_rx(d, x, started);
		goto out;
	}
	control_loop(d, x, nl, buf, &k);
	/* Stop the receivers before judging: no failure comes after this. */
	pthread_mutex_lock(&d->lock);
	err = d->err;
	d->stop = true;
	pthread_mutex_unlock(&d->lock);
	stop_rx(d, x, started);
	/* From here on the source cannot write into the regions. */
	withdraw_regions(d);
	/* COMMIT or FAIL is the last word on the control lane: no keepalive
	 * may follow it into what the caller reads next. A source judged
	 * silent gets neither: its control lane is failed first, so that a
	 * keepalive waiting there (an RDMA lane whose peer reads nothing runs
	 * out of message credits) returns. */
	if (err == -ETIMEDOUT)
		tlm__lane_abort(tlm_session_lane(d->s, 0), -ETIMEDOUT);
	tlm__ka_stop(&d->ka);
	if (!err) {
		err = send_commit(d, x, nl, &k.pi);
		if (err)
			snprintf(d->why, sizeof(d->why), "could not confirm: %s", tlm_strerror(err));
	} else if (err != -TLM_EABORTED) {
		send_fail(d);
	}
	if (!err) {
		st->completed = true;
		st->devstate_len = k.devlen;
		if (devstate) {
			*devstate = k.dev;
			k.dev = NULL;
		}
		if (devstate_len)
			*devstate_len = k.devlen;
	} else {
		snprintf(st->why, sizeof(st->why), "%s", d->why);
	}
out:
	dst_free(d, n);
	free(k.dev);
	free(buf);
	return err;
}
