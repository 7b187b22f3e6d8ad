/* SPDX-License-Identifier: MIT */
/*
 * The RDMA lanes' receive side (lane lock held): messages moved into the
 * frame stream (core/stream.c) as their receives complete, frames parsed
 * from there; PLACED records checked against the regions we offered.
 */
#include "rdma-internal.h"

/*
 * Get more stream bytes into the reassembly buffer. Returns > 0 when some
 * came, -EAGAIN if none and we may not wait, -ETIMEDOUT, -TLM_EPEERCLOSED
 * once the peer is gone and everything it sent was taken, or a lane error.
 */
int tlm__rdma_rx_fill(struct rdma_lane *r, bool wait, uint64_t deadline)
{
	/* Bytes the caller has seen. The other thread's tlm__rdma_progress() may add
	 * more while we sleep unlocked; those count as arrived too. */
	size_t before = tlm__stream_avail(&r->rx);

	for (;;) {
		int rc;

		if (r->pend_cnt)
			tlm__rdma_rx_drain(r);
		rc = tlm__rdma_progress(r);
		if (rc < 0)
			return rc;
		if (r->dead)
			return r->dead;
		if (tlm__stream_avail(&r->rx) > before)
			return 1;
		if (r->gone && r->pend_cnt == 0)
			return -TLM_EPEERCLOSED;
		if (!wait)
			return -EAGAIN;
		rc = tlm__rdma_wait_io(r, deadline);
		if (rc)
			return rc;
	}
}

static int rx_check(struct rdma_lane *r, enum tlm_lane_mode mode)
{
	if (r->dead)
		return r->dead;
	if (r->base.mode != mode)
		return -EINVAL;
	return 0;
}

/* A PLACED record: only into what we offered; the WRITE put it there. */
static int placed_ok(void *arg, struct tlm_page_rec *rec, const uint8_t *hdr, const uint8_t *mac)
{
	const struct rdma_lane *r = arg;
	const struct ibv_mr *mr = r->dst_mr[rec->region];

	(void)hdr;
	/* A MAC is for sealed lanes (seal.c checks it): not here. */
	return !mac && mr && rec->len == r->base.page_size &&
	       rec->index < mr->length / r->base.page_size ? 0 : -TLM_EFRAME;
}

/* Sealed lanes: where a PLACED record's page is, for seal.c to check its
 * MAC. transport_args tamper=N (tests) flips a byte of the N-th page
 * asked for first, as if the WRITE had been changed on the way. */
const uint8_t *tlm__rdma_placed_page(struct tlm_lane *l, const struct tlm_page_rec *rec)
{
	struct rdma_lane *r = to_rdma(l);
	const struct ibv_mr *mr;
	uint8_t *page = NULL;

	pthread_mutex_lock(&r->mu);
	if (r->staged) {
		/* Staged: the region was offered, not registered. */
		uint8_t *base = rec->region < TLM_MAX_REGIONS ? r->stage_dst[rec->region] : NULL;

		if (base && rec->len == l->page_size &&
		    rec->index < r->stage_dst_len[rec->region] / l->page_size)
			page = base + rec->index * l->page_size;
		pthread_mutex_unlock(&r->mu);
		return page;
	}
	mr = rec->region < TLM_MAX_REGIONS ? r->dst_mr[rec->region] : NULL;
	if (mr && rec->len == l->page_size && rec->index < mr->length / l->page_size)
		page = (uint8_t *)mr->addr + rec->index * l->page_size;
	if (page && r->opts.tamper && ++r->placed_seen == r->opts.tamper)
		page[rec->index % l->page_size] ^= 0x20;
	pthread_mutex_unlock(&r->mu);
	return page;
}

/* Staged placement: the receiver's staging slot holding a staged page's
 * ciphertext, for seal.c to open into place. transport_args tamper=N
 * (tests) flips a byte of the N-th one asked for first, as if the WRITE
 * had been changed on the way. */
const uint8_t *tlm__rdma_staged_page(struct tlm_lane *l, uint32_t slot, uint32_t len)
{
	struct rdma_lane *r = to_rdma(l);
	uint8_t *ct = NULL;

	pthread_mutex_lock(&r->mu);
	if (r->staged && !r->stage_remote.offered && slot < r->stage_n && len == r->stage_size)
		ct = r->stage_mem + (size_t)slot * r->stage_size;
	if (ct && r->opts.tamper && ++r->placed_seen == r->opts.tamper)
		ct[(slot * 61u + 7) % len] ^= 0x20;
	pthread_mutex_unlock(&r->mu);
	return ct;
}

/* Whole PAGE frames to the sink (tlm__stream_parse_pages); a bad one
 * fails the lane. */
static int rx_parse_pages(struct rdma_lane *r, const struct tlm_page_sink *sink, int *err)
{
	int delivered = tlm__stream_parse_pages(&r->rx, sink, placed_ok, r, err);

	if (*err)
		*err = tlm__rdma_lane_fail(r, *err);
	return delivered;
}

int tlm__rdma_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	int delivered = 0, fills = 0, err, rc;

	pthread_mutex_lock(&r->mu);
	rc = rx_check(r, TLM_MODE_PAGES);
	while (!rc) {
		/* Records before an error are reported first; the lane is dead
		 * by then, so the next call returns the error. */
		rc = rx_parse_pages(r, sink, &err);
		delivered += rc;
		rc = 0;
		if (err) {
			rc = delivered ? 0 : err;
			break;
		}
		if (delivered > 0 && fills >= RX_FILLS_MAX)
			break;
		rc = tlm__rdma_rx_fill(r, delivered == 0, deadline);
		fills++;
		if (rc > 0) {
			rc = 0;
			continue;
		}
		if (delivered > 0 || rc == -ETIMEDOUT || rc == -EAGAIN) {
			rc = 0;
			break;
		}
		if (rc == -TLM_EPEERCLOSED && tlm__stream_avail(&r->rx))
			tlm__err("rdma %s: lane %u: peer closed mid-record", l->peer, l->index);
	}
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : delivered;
}

ssize_t tlm__rdma_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	uint8_t *out = buf;
	size_t got = 0;
	ssize_t ret;
	int rc;

	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	pthread_mutex_lock(&r->mu);
	rc = rx_check(r, TLM_MODE_BYTES);
	if (rc) {
		ret = rc;
		goto out;
	}
	if (r->rx.fin) {
		ret = 0;
		goto out;
	}
	for (;;) {
		ret = tlm__stream_read(&r->rx, out, n, got);
		if (ret < 0) {
			ret = tlm__rdma_lane_fail(r, (int)ret);
			goto out;
		}
		got = (size_t)ret;
		/* done, or a bad frame next (the next call says so) */
		if (got == n || r->rx.fin || !tlm__stream_need(&r->rx))
			break;
		rc = tlm__rdma_rx_fill(r, got == 0, deadline);
		if (rc > 0)
			continue;
		if (got)
			break;
		ret = rc == -EAGAIN ? -ETIMEDOUT : rc;
		goto out;
	}
	ret = (ssize_t)got;
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}
