/* SPDX-License-Identifier: MIT */
/*
 * Zero copy for RDMA lanes.
 *
 * Zero copy (page mode, when the engine registers its regions): the
 * receiving side registers each region for remote write and sends a REGION
 * frame {addr, len, rkey} (or "not offered") on the lane; the sending side
 * registers its own regions and waits for those offers. A record flagged
 * TLM_PF_LIVE then goes as one RDMA WRITE from the source page to its place
 * in the destination's region, and its 24-byte header as a PLACED record
 * in the ordinary frame stream: the header's SEND comes after the WRITE on
 * the same queue pair, so when the receiver sees the header the data is in
 * place, and the receiver never touches the data. WRITEs are signaled
 * every WRITE_SIGNAL work requests (a completion retires every request
 * posted before it); the send queue holds WRITE_DEPTH of them plus the
 * SENDs. wait_sent() reports records whose header SEND completed, which
 * means their WRITEs completed too. Regions are registered once per
 * process and protection domain (one PD per device, shared by the lanes),
 * so N lanes do not pin the same memory N times.
 */
#include <string.h>

#include "rdma-internal.h"

/* Sending side: take the peer's REGION frames from the stream (nothing
 * else comes this way on a sender's page lane). */
static int rx_parse_offers(struct rdma_lane *r)
{
	while (tlm__stream_avail(&r->rx) >= TLM_FRAME_HDR) {
		const uint8_t *p = r->rx.buf + r->rx.start;
		struct tlm_region_offer o;
		struct tlm_frame_hdr fh;
		int rc = tlm__frame_hdr_decode(p, r->base.page_size, &fh);

		if (rc == 0 && fh.type != TLM_FT_REGION)
			rc = -TLM_EFRAME;
		if (rc == 0 && tlm__stream_avail(&r->rx) < TLM_FRAME_HDR + (size_t)fh.len)
			break;
		if (rc == 0)
			rc = tlm__region_decode(p + TLM_FRAME_HDR, fh.len, &o);
		if (rc < 0) {
			tlm__err("rdma %s: lane %u: bad frame where region offers were due",
				 r->base.peer, r->base.index);
			return tlm__rdma_lane_fail(r, -TLM_EFRAME);
		}
		r->remote[o.region] = o;
		r->remote_known[o.region] = true;
		r->rx.start += TLM_FRAME_HDR + TLM_REGION_LEN;
	}
	return 0;
}

static int offer_send(struct rdma_lane *r, const struct tlm_region_offer *o)
{
	uint8_t f[TLM_FRAME_HDR + TLM_REGION_LEN];
	int rc;

	tlm__frame_hdr_encode(f, TLM_REGION_LEN, TLM_FT_REGION);
	tlm__region_encode(f + TLM_FRAME_HDR, o);
	rc = tlm__rdma_tx_put(r, f, sizeof(f));
	return rc ? rc : tlm__rdma_tx_post(r);
}

int tlm__rdma_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	struct tlm_region_offer o = { .region = (uint16_t)region };
	int rc;

	if (len == 0 || len % l->page_size)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	/* A sealed lane's transport stays in byte mode (seal.c). */
	rc = tlm__rdma_tx_check(r, l->seal ? TLM_MODE_BYTES : TLM_MODE_PAGES);
	if (rc)
		goto out;
	if (how == TLM_REG_DST) {
		if (r->dst_mr[region]) {
			rc = -EBUSY;
			goto out;
		}
		/* The peer is told either way, so it never waits in vain. */
		rc = tlm__rdma_mr_get(r->pd, base, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
			    "region memory", &r->dst_mr[region]);
		if (!rc) {
			o.offered = true;
			o.rkey = r->dst_mr[region]->rkey;
			o.addr = (uintptr_t)base;
			o.len = len;
		}
		int sent = offer_send(r, &o);
		if (sent && !rc) {
			tlm__rdma_mr_put(r->dst_mr[region]);
			r->dst_mr[region] = NULL;
			rc = sent;
		}
		goto out;
	}
	if (r->src_mr[region]) {
		rc = -EBUSY;
		goto out;
	}
	/* LOCAL_WRITE although we only read: a read-only pin of a page never
	 * written could pin the shared zero page, which a later write by the
	 * guest replaces (kernels before 6.8). */
	rc = tlm__rdma_mr_get(r->pd, base, len, IBV_ACCESS_LOCAL_WRITE, "region memory",
		    &r->src_mr[region]);
	while (!rc && !r->remote_known[region]) {
		rc = rx_parse_offers(r);
		if (!rc && !r->remote_known[region]) {
			rc = tlm__rdma_rx_fill(r, true, deadline);
			rc = rc > 0 ? 0 : rc;
		}
	}
	if (!rc && !r->remote[region].offered)
		rc = -EOPNOTSUPP;
	if (rc == -ETIMEDOUT)
		tlm__err("rdma %s: lane %u: no region offer from the peer", l->peer, l->index);
	if (rc && r->src_mr[region]) {
		tlm__rdma_mr_put(r->src_mr[region]);
		r->src_mr[region] = NULL;
	}
out:
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void tlm__rdma_unregister_regions(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);

	pthread_mutex_lock(&r->mu);
	tlm__rdma_regions_drop(r);
	memset(r->remote_known, 0, sizeof(r->remote_known));
	pthread_mutex_unlock(&r->mu);
}
