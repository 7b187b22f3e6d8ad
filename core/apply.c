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
	unsigned n_regions;
	struct { uint8_t *base; uint64_t pages; uint32_t *key; } r[TLM_MAX_REGIONS];
	pthread_spinlock_t stripe[STRIPES];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned lanes_done;
	int err;
	char why[160];
	volatile bool stop;
	bool offered;             /* regions offered to the lanes */
	struct tlm_dest_stats *st;
};

struct rx {
	struct dst *d;
	unsigned lane;
	pthread_t t;
	uint64_t records;
	bool last;
	uint8_t *tmp;
};

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
	if ((rec->flags & TLM_PF_XBZRLE) ? rec->len < 6 :
	    !(rec->flags & TLM_PF_ZERO) && rec->len != d->page_size)
		return -TLM_EFRAME;
	x->records++;
	if (rec->flags & TLM_PF_PLACED) {
		/* The transport checked it against what we offered; the data
		 * is in place and the source ordered the writes (core/engine.h),
		 * so there is nothing to arbitrate, or to touch. */
		__atomic_fetch_add(&d->st->pages_placed, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&d->st->pages_applied, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&d->st->bytes, rec->len, __ATOMIC_RELAXED);
		return 0;
	}
	key = 2 * rec->epoch + ((rec->flags & TLM_PF_PS) ? 1 : 0) + 1;
	page = d->r[rec->region].base + rec->index * d->page_size;
	lk = &d->stripe[(rec->index ^ (uint64_t)rec->region << 7) % STRIPES];
	pthread_spin_lock(lk);
	if (key < d->r[rec->region].key[rec->index]) {
		pthread_spin_unlock(lk);
		__atomic_fetch_add(&d->st->pages_stale, 1, __ATOMIC_RELAXED);
		/* A stale delta would have been encoded against a copy we
		 * never kept: that cannot happen (core/xbzrle.c), so say so. */
		return (rec->flags & TLM_PF_XBZRLE) ? -TLM_EFRAME : 0;
	}
	if (rec->flags & TLM_PF_ZERO) {
		memset(page, 0, d->page_size);
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

	for (unsigned i = 1; i <= nl; i++)
		for (unsigned k = 0; k < d->n_regions; k++) {
			int err = tlm_lane_register_region(tlm_session_lane(d->s, i), k,
							   d->r[k].base,
							   d->r[k].pages * d->page_size,
							   TLM_REG_DST, ms);
			if (err && err != -EOPNOTSUPP)
				tlm__warn("lane %u: region %u not offered for zero copy: %s",
					  i, k, tlm_strerror(err));
		}
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
		int n = tlm_lane_recv_pages(l, &sink, 200);
		if (n < 0) {
			dst_fail(d, n, "lane %u: %s", x->lane, tlm_strerror(n));
			break;
		}
	}
	pthread_mutex_lock(&d->lock);
	if (x->last)
		d->lanes_done++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

static void send_fail(struct dst *d)
{
	uint8_t m[5 + sizeof(d->why)];
	size_t tl = strnlen(d->why, sizeof(d->why) - 1);
	struct tlm_lane *c = tlm_session_lane(d->s, 0);

	m[0] = TLM_CM_FAIL;
	tlm__put32(m + 1, (uint32_t)d->err);
	memcpy(m + 5, d->why, tl);
	if (tlm__msg_send(c, TLM_FT_CTRL, m, (uint32_t)(5 + tl)) == 0)
		(void)tlm_lane_flush(c);
}

int tlm_migrate_dest(struct tlm_session *s, const struct tlm_region *regions,
		     unsigned n, void **devstate, size_t *devstate_len,
		     struct tlm_dest_stats *st)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(s);
	struct tlm_lane *c = tlm_session_lane(s, 0);
	unsigned nl = tlm_session_lanes(s), started = 0;
	uint64_t expect[TLM_MAX_LANES] = { 0 }, devlen = 0, devgot = 0;
	struct rx x[TLM_MAX_LANES];
	uint8_t *dev = NULL, *buf;
	bool stage3 = false, started_msg = false, joined = false;
	struct dst *d;
	int err = 0;

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
	d->page_size = cfg->page_size;
	d->n_regions = n;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_spin_init(&d->stripe[i], PTHREAD_PROCESS_PRIVATE);
	for (unsigned i = 0; i < n; i++) {
		if (regions[i].len != cfg->region_len[i]) {
			snprintf(st->why, sizeof(st->why), "region %u: %zu bytes here, %llu at the source",
				 i, regions[i].len, (unsigned long long)cfg->region_len[i]);
			err = -EINVAL;
			goto out;
		}
		d->r[i].base = regions[i].base;
		d->r[i].pages = regions[i].len / d->page_size;
		d->r[i].key = calloc(d->r[i].pages, sizeof(uint32_t));
		if (!d->r[i].key) {
			err = -ENOMEM;
			goto out;
		}
	}
	for (unsigned i = 1; i <= nl; i++)
		if (cfg->lane_modes[i] != TLM_MODE_PAGES) {
			snprintf(st->why, sizeof(st->why), "lane %u is not in page mode", i);
			err = -EINVAL;
			goto out;
		}
	for (unsigned i = 1; i <= nl; i++) {
		x[i] = (struct rx){ .d = d, .lane = i };
		x[i].tmp = malloc(d->page_size);
		if (!x[i].tmp || pthread_create(&x[i].t, NULL, rx_thread, &x[i])) {
			free(x[i].tmp);
			err = -ENOMEM;
			goto out;
		}
		started++;
	}

	/* The control lane: START, then STAGE3 and the device state, or ABORT. */
	while (!d->stop) {
		uint32_t len;
		uint8_t type;

		if (stage3 && devgot == devlen) {
			bool all;
			pthread_mutex_lock(&d->lock);
			while (d->lanes_done < nl && !d->stop)
				pthread_cond_wait(&d->cond, &d->lock);
			all = d->lanes_done == nl && !d->stop;
			pthread_mutex_unlock(&d->lock);
			if (!all)
				break;
			for (unsigned i = 1; i <= nl; i++)
				if (x[i].records != expect[i])
					dst_fail(d, -TLM_EFRAME, "lane %u: %llu records, the source sent %llu",
						 i, (unsigned long long)x[i].records,
						 (unsigned long long)expect[i]);
			break;
		}
		err = tlm__msg_recv(c, &type, buf, TLM_MAX_DATA_FRAME, &len, 500);
		if (err == -ETIMEDOUT) {
			err = 0;
			continue;
		}
		if (err) {
			dst_fail(d, err, "control lane: %s", tlm_strerror(err));
			break;
		}
		if (type != TLM_FT_CTRL || len < 1) {
			dst_fail(d, -TLM_EFRAME, "unexpected frame on the control lane");
			break;
		}
		switch (buf[0]) {
		case TLM_CM_START:
			if (len != 11 || started_msg || (buf[10] & ~TLM_START_ZC) ||
			    tlm__get16(buf + 1) + tlm__get16(buf + 3) != (int)nl) {
				dst_fail(d, -TLM_EFRAME, "bad START message");
				break;
			}
			started_msg = true;
			if (buf[10] & TLM_START_ZC)
				offer_regions(d, st);
			break;
		case TLM_CM_STAGE3:
			if (stage3 || len != 3 + 8 * nl + 8 || tlm__get16(buf + 1) != nl) {
				dst_fail(d, -TLM_EFRAME, "bad STAGE3 message");
				break;
			}
			for (unsigned i = 1; i <= nl; i++)
				expect[i] = tlm__get64(buf + 3 + 8 * (i - 1));
			devlen = tlm__get64(buf + 3 + 8 * nl);
			if (devlen > (1ull << 30)) {
				dst_fail(d, -TLM_EFRAME, "device state of %llu bytes refused",
					 (unsigned long long)devlen);
				break;
			}
			if (devlen && !(dev = malloc(devlen))) {
				dst_fail(d, -ENOMEM, "no memory for the device state");
				break;
			}
			stage3 = true;
			break;
		case TLM_CM_DEVSTATE:
			if (!stage3 || len - 1 > devlen - devgot) {
				dst_fail(d, -TLM_EFRAME, "unexpected device state");
				break;
			}
			memcpy(dev + devgot, buf + 1, len - 1);
			devgot += len - 1;
			break;
		case TLM_CM_ABORT:
			dst_fail(d, -TLM_EABORTED, "the source aborted the migration");
			break;
		default:
			dst_fail(d, -TLM_EFRAME, "unknown control message %u", buf[0]);
			break;
		}
	}
	/* Stop the receivers before judging. */
	pthread_mutex_lock(&d->lock);
	err = d->err;
	d->stop = true;
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(x[i].t, NULL);
	joined = true;
	/* From here on the source cannot write into the regions. */
	withdraw_regions(d);
	if (!err) {
		uint8_t m = TLM_CM_COMMIT;
		err = tlm__msg_send(c, TLM_FT_CTRL, &m, 1);
		if (!err)
			err = tlm_lane_flush(c);
		if (err)
			snprintf(d->why, sizeof(d->why), "could not confirm: %s", tlm_strerror(err));
	} else if (err != -TLM_EABORTED) {
		send_fail(d);
	}
	if (!err) {
		st->completed = true;
		st->devstate_len = devlen;
		if (devstate) {
			*devstate = dev;
			dev = NULL;
		}
		if (devstate_len)
			*devstate_len = devlen;
	} else {
		snprintf(st->why, sizeof(st->why), "%s", d->why);
	}
out:
	if (!joined) {
		d->stop = true;
		for (unsigned i = 1; i <= started; i++)
			pthread_join(x[i].t, NULL);
	}
	withdraw_regions(d);
	for (unsigned i = 1; i <= started; i++)
		free(x[i].tmp);
	for (unsigned i = 0; i < n && i < TLM_MAX_REGIONS; i++)
		free(d->r[i].key);
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_spin_destroy(&d->stripe[i]);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(dev);
	free(buf);
	free(d);
	return err;
}
