/* SPDX-License-Identifier: MIT */
/*
 * The checkpoint (CHK) thread: one front-to-back pass over every region,
 * never waiting for convergence. Several CHK threads (one per CHK lane)
 * claim chunks of TLM_CHUNK pages in order from a shared cursor. The cursor
 * moves BEFORE a chunk is read, so "page < chk_next" means "CHK has started
 * (maybe finished) reading it": the page saver relies on exactly that
 * (core/engine.h explains why it is enough).
 */
#include "engine.h"

void *tlm__chk_thread(void *arg)
{
	struct chk_arg *a = arg;
	struct src *e = a->e;
	struct send_batch b;

	if (tlm__batch_init(&b, e, a->lane, 0)) {
		tlm__src_fail(e, -ENOMEM, "CHK: out of memory");
		return NULL;
	}
	for (;;) {
		uint64_t pos = __atomic_load_n(&e->chk_next, __ATOMIC_RELAXED), next;
		unsigned region;
		uint64_t page, end;
		/* The stamp is read BEFORE the claim, so a CHK record never
		 * outranks a page-saver record of the same page (core/engine.h). */
		uint32_t epoch = __atomic_load_n(&e->epoch, __ATOMIC_ACQUIRE);

		/* Claim [page, end) of region; skip to the next region at its end. */
		do {
			region = (unsigned)(pos >> 48);
			page = pos & ((1ull << 48) - 1);
			while (region < e->n_regions && page >= e->r[region].pages) {
				region++;
				page = 0;
			}
			if (region >= e->n_regions) {
				next = src_pos(e->n_regions, 0);
				end = 0;
			} else {
				end = page + TLM_CHUNK < e->r[region].pages ? page + TLM_CHUNK
									    : e->r[region].pages;
				next = src_pos(region, end);
			}
		} while (!__atomic_compare_exchange_n(&e->chk_next, &pos, next, false,
						      __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
		if (region >= e->n_regions)
			break;
		for (uint64_t p = page; p < end; p++)
			if (tlm__batch_add(e, &b, region, p, epoch))
				goto out;
		if (tlm__batch_flush(e, &b))
			goto out;
		__atomic_fetch_add(&e->chk_sent, end - page, __ATOMIC_RELAXED);
		if (tlm__src_stopping(e))
			goto out;
	}
	(void)tlm__batch_flush(e, &b);
out:
	tlm__batch_free(&b);
	return NULL;
}
