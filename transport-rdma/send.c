/* SPDX-License-Identifier: MIT */
/*
 * The RDMA lanes' send side (lane lock held).
 *
 * Data path. The lane carries the same frame stream as a TCP lane
 * (core/wire.h): DATA/FIN frames in byte mode, PAGE frames (24-byte record
 * header + data, crc32c checked by the receiver) in page mode. The stream is cut into
 * messages of up to SLOT_SIZE bytes, copied into pre-registered send slots
 * and sent with SEND_WITH_IMM; the receiver copies each message into its
 * reassembly buffer and parses frames from there, so a frame may span
 * messages and a message may hold many frames.
 */
#include <string.h>

#include "rdma-internal.h"

int tlm__rdma_tx_check(struct rdma_lane *r, enum tlm_lane_mode mode)
{
	if (r->dead)
		return r->dead;
	if (r->tx_err)
		return r->tx_err;
	if (r->gone)
		return -TLM_EPEERCLOSED;
	if (r->base.mode != mode)
		return -EINVAL;
	if (r->tx_fin)
		return -EPIPE;
	return 0;
}

/*
 * A send that cannot go on waits for the peer to take something (a
 * completion, a credit). The send_timeout clock runs from when the peer
 * last took anything, or from when this send began to wait (*since, 0 at
 * first): a peer that takes nothing for that long fails the lane with
 * -ETIMEDOUT, as a tcp lane's send does (transport-tcp/datapath.c). 0:
 * look again; or the lane's error.
 */
static int tx_wait(struct rdma_lane *r, uint64_t *since)
{
	uint64_t limit = (uint64_t)r->opts.send_timeout, from;
	int rc;

	if (!limit)
		return tlm__rdma_wait_io(r, UINT64_MAX);
	if (!*since)
		*since = tlm__now_ms();
	from = r->tx_moved > *since ? r->tx_moved : *since;
	rc = tlm__rdma_wait_io(r, from + limit);
	if (rc != -ETIMEDOUT)
		return rc;
	rc = tlm__rdma_progress(r);
	if (rc < 0)
		return rc;
	from = r->tx_moved > *since ? r->tx_moved : *since;
	if (tlm__now_ms() < from + limit)
		return 0;
	tlm__err("rdma %s: lane %u: the peer has taken nothing for %d ms; giving up",
		 r->base.peer, r->base.index, r->opts.send_timeout);
	if (!r->tx_err)
		r->tx_err = -ETIMEDOUT;
	return r->tx_err;
}

/* Post the slot being filled, waiting for a credit. */
int tlm__rdma_tx_post(struct rdma_lane *r)
{
	uint64_t since = 0;
	int rc;

	if (r->tx_fill == 0)
		return 0;
	for (;;) {
		if (r->dead)
			return r->dead;
		if (r->tx_err)
			return r->tx_err;
		if (r->gone)
			return r->tx_err = -TLM_EPEERCLOSED;
		/* The last send WR is kept for a credit-only message too. */
		if (r->sent - r->peer_credit < tlm__rdma_data_limit(r) && sq_busy(r) + 1 < r->sq_cap)
			break;
		rc = tx_wait(r, &since);
		if (rc)
			return rc;
	}
	r->slot_recs[r->tx_head] = r->rec_put;
	rc = tlm__rdma_post_send(r, WR_DATA, r->tx_head,
		       r->mem + (size_t)(r->nrecv + r->tx_head) * SLOT_SIZE,
		       (uint32_t)r->tx_fill);
	if (rc)
		return rc;
	r->tx_inflight++;
	r->tx_head = (r->tx_head + 1) % r->nslot;
	r->tx_fill = 0;
	return 0;
}

/* Append bytes to the stream, posting full slots. */
int tlm__rdma_tx_put(struct rdma_lane *r, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	uint64_t since = 0;

	while (n > 0) {
		size_t take;
		int rc;

		if (r->tx_fill == SLOT_SIZE) {
			rc = tlm__rdma_tx_post(r);
			if (rc)
				return rc;
		}
		/* The slot at tx_head is free once fewer than nslot are out. */
		while (r->tx_fill == 0 && r->tx_inflight >= r->nslot) {
			if (r->tx_err)
				return r->tx_err;
			rc = tx_wait(r, &since);
			if (rc)
				return rc;
		}
		take = SLOT_SIZE - r->tx_fill;
		if (take > n)
			take = n;
		memcpy(r->mem + (size_t)(r->nrecv + r->tx_head) * SLOT_SIZE + r->tx_fill, p, take);
		r->tx_fill += take;
		p += take;
		n -= take;
	}
	return 0;
}

/* A LIVE record: its page by RDMA WRITE into the peer's offered region,
 * once the send queue has room. */
static int write_page(struct rdma_lane *r, const struct tlm_page_rec *rec)
{
	uint32_t ps = r->base.page_size;
	struct ibv_mr *mr = rec->region < TLM_MAX_REGIONS ? r->src_mr[rec->region] : NULL;
	const struct tlm_region_offer *o = mr ? &r->remote[rec->region] : NULL;
	const uint8_t *p = rec->data, *base = mr ? mr->addr : NULL;
	uint64_t since = 0;

	if (!mr || !o->offered || rec->len != ps || p < base ||
	    (size_t)(p - base) + ps > mr->length || rec->index >= o->len / ps) {
		tlm__err("rdma %s: lane %u: live record %u:%llu outside the registered regions",
			 r->base.peer, r->base.index, rec->region, (unsigned long long)rec->index);
		return -EINVAL;
	}
	while (sq_busy(r) + 2 >= r->sq_cap) {
		int rc = tlm__rdma_tx_check(r, r->base.mode);

		if (!rc)
			rc = tlm__rdma_post_chain(r);
		if (!rc)
			rc = tx_wait(r, &since);
		if (rc)
			return rc;
	}
	return tlm__rdma_post_write(r, p, ps, mr->lkey, o->addr + rec->index * ps, o->rkey);
}

/* Sealed lanes (seal.c, "Zero copy"): the transport is in byte mode, its
 * bytes the sealed frames, which follow the WRITEs posted here. */
int tlm__rdma_place(struct tlm_lane *l, const struct tlm_page_rec *rec)
{
	struct rdma_lane *r = to_rdma(l);
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	if (!rc)
		rc = write_page(r, rec);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* Staged placement (seal.c, "Staged placement"; regions.c): the sender's
 * staging slot, once its last WRITE completed (a retransmission would read
 * it again), to seal the next page into. */
int tlm__rdma_stage_get(struct tlm_lane *l, uint32_t slot, uint8_t **buf)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t since = 0;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	if (!rc && (!r->staged || !r->stage_remote.offered || slot >= r->stage_n))
		rc = -EINVAL;
	while (!rc && r->sq_retired < r->stage_post[slot]) {
		rc = tlm__rdma_post_chain(r);
		if (!rc)
			rc = tx_wait(r, &since);
		if (!rc)
			rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	}
	if (!rc)
		*buf = r->stage_mem + (size_t)slot * r->stage_size;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* The ciphertext in our slot by RDMA WRITE into the peer's slot of the
 * same number, ahead of the bytes written next. */
int tlm__rdma_stage_put(struct tlm_lane *l, uint32_t slot, uint32_t len)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t since = 0;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	if (!rc && (!r->staged || !r->stage_remote.offered || slot >= r->stage_n ||
		    len == 0 || len > r->stage_size))
		rc = -EINVAL;
	while (!rc && sq_busy(r) + 2 >= r->sq_cap) {
		rc = tlm__rdma_post_chain(r);
		if (!rc)
			rc = tx_wait(r, &since);
		if (!rc)
			rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	}
	if (!rc)
		rc = tlm__rdma_post_write(r, r->stage_mem + (size_t)slot * r->stage_size, len,
					  r->stage_mr->lkey,
					  r->stage_remote.addr + (uint64_t)slot * r->stage_size,
					  r->stage_remote.rkey);
	if (!rc)
		r->stage_post[slot] = r->sq_posted;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void tlm__rdma_count_records(struct tlm_lane *l, unsigned n)
{
	struct rdma_lane *r = to_rdma(l);

	pthread_mutex_lock(&r->mu);
	r->rec_put += n;
	pthread_mutex_unlock(&r->mu);
}

int tlm__rdma_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n)
{
	struct rdma_lane *r = to_rdma(l);
	uint8_t hdr[TLM_FRAME_HDR + TLM_PAGE_HDR];
	int rc;

	if (n > INT_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	rc = tlm__rdma_tx_check(r, TLM_MODE_PAGES);
	for (unsigned i = 0; !rc && i < n; i++) {
		const struct tlm_page_rec *rec = &recs[i];

		if (rec->len > l->page_size || (rec->len && !rec->data)) {
			tlm__err("rdma %s: record %u: len %u with page size %u", l->peer, i,
				 rec->len, l->page_size);
			rc = -EINVAL;
			break;
		}
		if (rec->flags & TLM_PF_LIVE) {
			struct tlm_page_rec placed = *rec;

			placed.flags = (uint16_t)((rec->flags & ~TLM_PF_LIVE) | TLM_PF_PLACED);
			placed.crc = 0;
			rc = write_page(r, rec);
			tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR, TLM_FT_PAGE);
			tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, &placed);
			if (!rc)
				rc = tlm__rdma_tx_put(r, hdr, sizeof(hdr));
		} else {
			tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR + rec->len, TLM_FT_PAGE);
			tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, rec);
			rc = tlm__rdma_tx_put(r, hdr, sizeof(hdr));
			if (!rc && rec->len)
				rc = tlm__rdma_tx_put(r, rec->data, rec->len);
		}
		if (!rc) {
			count_bytes(&l->tx_bytes, rec->len);
			r->rec_put++;
		}
	}
	if (!rc)
		rc = tlm__rdma_tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : (int)n;
}

ssize_t tlm__rdma_write(struct tlm_lane *l, const void *buf, size_t n)
{
	struct rdma_lane *r = to_rdma(l);
	const uint8_t *p = buf;
	size_t done = 0;
	int rc;

	if (n > SSIZE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	rc = tlm__rdma_tx_check(r, TLM_MODE_BYTES);
	while (!rc && done < n) {
		uint8_t hdr[TLM_FRAME_HDR];
		size_t len = n - done;

		if (len > TLM_MAX_DATA_FRAME)
			len = TLM_MAX_DATA_FRAME;
		tlm__frame_hdr_encode(hdr, (uint32_t)len, TLM_FT_DATA);
		rc = tlm__rdma_tx_put(r, hdr, sizeof(hdr));
		if (!rc)
			rc = tlm__rdma_tx_put(r, p + done, len);
		if (!rc) {
			done += len;
			count_bytes(&l->tx_bytes, len);
		}
	}
	if (!rc)
		rc = tlm__rdma_tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : (ssize_t)n;
}

int tlm__rdma_shutdown(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	uint8_t hdr[TLM_FRAME_HDR];
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	if (r->dead || r->tx_err) {
		rc = r->dead ? r->dead : r->tx_err;
	} else if (!r->tx_fin) {
		if (r->gone) {
			rc = -TLM_EPEERCLOSED;
		} else {
			tlm__frame_hdr_encode(hdr, 0, TLM_FT_FIN);
			rc = tlm__rdma_tx_put(r, hdr, sizeof(hdr));
			if (!rc)
				rc = tlm__rdma_tx_post(r);
			if (!rc)
				r->tx_fin = true;
		}
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int tlm__rdma_flush(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	int rc;

	/* Every call posts what it wrote before returning. */
	pthread_mutex_lock(&r->mu);
	rc = r->dead ? r->dead : r->tx_err;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int tlm__rdma_inject_raw(struct tlm_lane *l, const void *buf, size_t n)
{
	struct rdma_lane *r = to_rdma(l);
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = r->dead ? r->dead : r->tx_err;
	if (!rc)
		rc = tlm__rdma_tx_put(r, buf, n);
	if (!rc)
		rc = tlm__rdma_tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int tlm__rdma_wait_sent(struct tlm_lane *l, uint64_t records, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	while (r->rec_done < records) {
		rc = r->dead ? r->dead : r->tx_err ? r->tx_err : r->gone ? -TLM_EPEERCLOSED : 0;
		if (!rc)
			rc = tlm__rdma_wait_io(r, deadline);
		if (rc)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}
