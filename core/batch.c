/* SPDX-License-Identifier: MIT */
/*
 * Batches of page records: CHK and PS threads snapshot (or, zero copy,
 * point at) up to TLM_BURST pages, elide zero pages, delta-encode re-sent
 * ones, and hand the batch to one lane in one call (core/engine.h has the
 * contract under "batch.c APIs").
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

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
	if (e->o.zero_pages && tlm__page_zero(snap, ps)) {
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
