/* SPDX-License-Identifier: MIT */
/*
 * The checkpoint (CHK) thread: one front-to-back pass over every region,
 * never waiting for convergence. Several CHK threads (one per CHK lane)
 * claim chunks of TLM_CHUNK pages in order from a shared cursor. The cursor
 * moves BEFORE a chunk is read, so "page < chk_next" means "CHK has started
 * (maybe finished) reading it": the page saver relies on exactly that
 * (core/engine.h explains why it is enough). With zero copy the thread
 * also waits for its writes, TLM_CHK_DEPTH chunks behind, and says so in
 * `inflight`.
 *
 * Flow control: a CHK lane may run at most 2 x TLM_CHK_WINDOW records
 * ahead of what the destination has applied. Bytes alone do not bound the
 * destination's work (a zero page is a 32-byte record, so the lane's
 * buffers could hold a million of them): every TLM_CHK_WINDOW records the
 * thread asks (SYNC) for the previous window's records to be applied,
 * which costs a round trip when the destination keeps up.
 */
#include "engine.h"

uint64_t tlm__chk_done(struct src *e, uint64_t *chk_next)
{
	/* chk_next first: a claim it shows had its `inflight` set before. */
	uint64_t next = __atomic_load_n(&e->chk_next, __ATOMIC_SEQ_CST), done = next;
	struct chk_arg *ca = __atomic_load_n(&e->chk, __ATOMIC_SEQ_CST);

	for (unsigned i = 0; ca && i < e->o.chk_lanes; i++) {
		uint64_t f = __atomic_load_n(&ca[i].inflight, __ATOMIC_SEQ_CST);
		if (f < done)
			done = f;
	}
	*chk_next = next;
	return done;
}

/* Claim the next chunk: [*page, *end) of *region. Returns false at the end
 * of the pass. */
static bool claim(struct src *e, struct chk_arg *a, bool fenced, unsigned *region,
		  uint64_t *page, uint64_t *end, uint32_t *epoch)
{
	uint64_t pos = __atomic_load_n(&e->chk_next, __ATOMIC_SEQ_CST), next;

	do {
		/* The stamp is read BEFORE the claim, so a CHK record never
		 * outranks a page-saver record of the same page (core/engine.h). */
		*epoch = __atomic_load_n(&e->epoch, __ATOMIC_ACQUIRE);
		/* Nothing older in flight: publish where this claim starts
		 * (pos is at most that) before the claim can be seen. */
		if (e->live && fenced)
			__atomic_store_n(&a->inflight, pos, __ATOMIC_SEQ_CST);
		*region = (unsigned)(pos >> 48);
		*page = pos & ((1ull << 48) - 1);
		while (*region < e->n_regions && *page >= e->r[*region].pages) {
			(*region)++;
			*page = 0;
		}
		if (*region >= e->n_regions) {
			next = src_pos(e->n_regions, 0);
			*end = 0;
		} else {
			*end = *page + TLM_CHUNK < e->r[*region].pages ? *page + TLM_CHUNK
								      : e->r[*region].pages;
			next = src_pos(*region, *end);
		}
	} while (!__atomic_compare_exchange_n(&e->chk_next, &pos, next, false,
					      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
	return *region < e->n_regions;
}

/*
 * Wait until lane `lane` has sent its first `records` records (their pages
 * may change again). The destination takes them at its own pace, so a wait
 * that runs past the engine's timeout T is judged as the keepalive's check
 * judges the control lane: a destination silent for T there is gone (the
 * same failure, whichever of the two sees it first); one that still
 * answers is waited for, up to 2 T on this lane. 0, or a negative errno
 * with e failed.
 */
static int wait_sent(struct src *e, unsigned lane, uint64_t records)
{
	struct tlm_lane *l = tlm_session_lane(e->s, lane);
	int ms = tlm__engine_timeout(e);
	uint64_t t0 = tlm__now_ms();

	for (;;) {
		uint64_t t1 = tlm__now_ms(), silent, waited;
		int err = tlm_lane_wait_sent(l, records, ms);

		/* -ETIMEDOUT before the time is up is the lane's own
		 * failure (a send that stalled), not this wait's. */
		if (err != -ETIMEDOUT || tlm__now_ms() - t1 < (uint64_t)ms) {
			if (err)
				tlm__src_fail(e, err, "lane %u: %s", lane, tlm_strerror(err));
			return err;
		}
		silent = tlm__ka_silent_ms(&e->ka);
		waited = tlm__now_ms() - t0;
		if (silent >= (uint64_t)ms) {
			tlm__src_silent(e, "", silent);
			return err;
		}
		if (tlm__src_stopping(e))
			return -ECANCELED;
		if (waited >= 2 * (uint64_t)ms) {
			tlm__src_fail(e, err, "lane %u: the destination took nothing on it for "
				      "%llu ms (timeout %d ms), though it answers on the control "
				      "lane", lane, (unsigned long long)waited, ms);
			return err;
		}
	}
}

void *tlm__chk_thread(void *arg)
{
	struct chk_arg *a = arg;
	struct src *e = a->e;
	/* Zero copy: the chunks in flight, oldest first. */
	struct { uint64_t pos, records; } q[TLM_CHK_DEPTH];
	unsigned nq = 0;
	struct send_batch b;

	if (tlm__batch_init(&b, e, a->lane, 0)) {
		tlm__src_fail(e, -ENOMEM, "CHK: out of memory");
		return NULL;
	}
	for (;;) {
		unsigned region;
		uint64_t page, end;
		uint32_t epoch;

		if (e->live && nq == TLM_CHK_DEPTH) {
			if (wait_sent(e, a->lane, q[0].records))
				goto out;
			q[0] = q[1];
			nq--;
			__atomic_store_n(&a->inflight, q[0].pos, __ATOMIC_SEQ_CST);
		}
		if (!claim(e, a, nq == 0, &region, &page, &end, &epoch))
			break;
		for (uint64_t p = page; p < end; p++)
			if (tlm__batch_add(e, &b, region, p, epoch))
				goto out;
		if (tlm__batch_flush(e, &b))
			goto out;
		__atomic_fetch_add(&e->chk_sent, end - page, __ATOMIC_RELAXED);
		{
			uint64_t sent = __atomic_load_n(&e->lane_records[a->lane], __ATOMIC_RELAXED);

			if (sent - a->mark >= TLM_CHK_WINDOW) {
				if (a->mark && tlm__sync_lane(e, a->lane, a->mark))
					goto out;
				a->mark = sent;
			}
		}
		if (e->live) {
			q[nq].pos = src_pos(region, page);
			q[nq].records = __atomic_load_n(&e->lane_records[a->lane], __ATOMIC_RELAXED);
			nq++;
		}
		if (tlm__src_stopping(e))
			goto out;
	}
	if (nq)
		(void)wait_sent(e, a->lane, q[nq - 1].records);
out:
	/* Done or failed: either way nothing of ours may hold the page saver
	 * back (on failure nothing is sent any more). */
	__atomic_store_n(&a->inflight, UINT64_MAX, __ATOMIC_SEQ_CST);
	tlm__batch_free(&b);
	return NULL;
}
