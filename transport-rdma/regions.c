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
 *
 * Staged placement (a sealed lane under encrypt: how has TLM__REG_STAGED;
 * core/seal.c, "Staged placement", does the sealing and opening): no
 * region is registered on either side. Each side registers a staging
 * area instead, one page-sized slot per page in flight (transport_args
 * stage_kib=, default 2 MiB per lane and side): the receiver's for remote
 * write, offered with every region as REGION offered = 2 {rkey, addr,
 * len of the area}, and only ever opened by the receiver itself after the
 * tag checked out; the sender's for local use, sealed into by seal.c and
 * sent from by RDMA WRITE into the receiver's slot of the same number. The
 * sender uses as many slots as both areas have. A sender whose slot's
 * last WRITE is still in flight waits for its completion before the slot
 * is sealed into again (a retransmission would read it again); slots come
 * back from the receiver in seal.c's CREDIT frames. An integrity or clear
 * sender refuses a staged offer, and an encrypt sender an offer to place
 * in clear: pages are then copied.
 */
#include <stdlib.h>
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

/* Our staging area (once per lane), for remote write at the receiver. */
static int stage_setup(struct rdma_lane *r, bool remote)
{
	size_t ps = r->base.page_size, bytes;
	unsigned n = (unsigned)((size_t)r->opts.stage_kib * 1024 / ps);
	int access = IBV_ACCESS_LOCAL_WRITE | (remote ? IBV_ACCESS_REMOTE_WRITE : 0);

	if (r->stage_mr)
		return r->stage_size == ps ? 0 : -EINVAL;
	if (n < 2)
		n = 2;
	bytes = (size_t)n * ps;
	r->stage_post = calloc(n, sizeof(*r->stage_post));
	if (!r->stage_post || posix_memalign((void **)&r->stage_mem, 4096, bytes)) {
		tlm__rdma_stage_drop(r);
		return -ENOMEM;
	}
	memset(r->stage_mem, 0, bytes);
	if (tlm__rdma_mr_get(r->pd, r->stage_mem, bytes, access,
			     "staging buffers (transport_args stage_kib=)", &r->stage_mr)) {
		tlm__rdma_stage_drop(r);
		return -ENOMEM;
	}
	r->stage_cap = r->stage_n = n;
	r->stage_size = (uint32_t)ps;
	return 0;
}

void tlm__rdma_stage_drop(struct rdma_lane *r)
{
	if (r->stage_mr)
		tlm__rdma_mr_put(r->stage_mr);
	free(r->stage_mem);
	free(r->stage_post);
	r->stage_mr = NULL;
	r->stage_mem = NULL;
	r->stage_post = NULL;
	r->stage_cap = r->stage_n = 0;
	r->staged = false;
	memset(r->stage_dst, 0, sizeof(r->stage_dst));
	memset(r->stage_dst_len, 0, sizeof(r->stage_dst_len));
	memset(&r->stage_remote, 0, sizeof(r->stage_remote));
}

/* Receiving side, staged: offer the staging area for the region. */
static int offer_staged(struct rdma_lane *r, unsigned region, void *base, size_t len)
{
	struct tlm_region_offer o = { .region = (uint16_t)region };
	int rc, sent;

	if (r->stage_dst[region])
		return -EBUSY;
	rc = stage_setup(r, true);
	if (!rc) {
		o.offered = o.staged = true;
		o.rkey = r->stage_mr->rkey;
		o.addr = (uintptr_t)r->stage_mem;
		o.len = (uint64_t)r->stage_n * r->stage_size;
		r->stage_dst[region] = base;
		r->stage_dst_len[region] = len;
		r->staged = true;
	}
	sent = offer_send(r, &o);
	if (sent && !rc) {
		r->stage_dst[region] = NULL;
		rc = sent;
	}
	return rc;
}

/* Sending side, staged: the peer's offer (taken) must be a staging area,
 * the same for every region; ours is registered once. */
static int take_staged(struct rdma_lane *r, unsigned region)
{
	const struct tlm_region_offer *o = &r->remote[region];
	uint64_t slots = o->len / r->base.page_size;
	int rc;

	if (o->offered && !o->staged)
		tlm__err("rdma %s: lane %u: the peer offers region %u for RDMA WRITE in clear on "
			 "an encrypt lane; pages are copied", r->base.peer, r->base.index, region);
	if (!o->offered || !o->staged)
		return -EOPNOTSUPP;
	if (slots < 2 || (r->stage_remote.offered &&
			  (o->rkey != r->stage_remote.rkey || o->addr != r->stage_remote.addr ||
			   o->len != r->stage_remote.len))) {
		tlm__err("rdma %s: lane %u: bad staging offer with region %u", r->base.peer,
			 r->base.index, region);
		return -EPROTO;
	}
	rc = stage_setup(r, false);
	if (rc)
		return rc;
	r->stage_remote = *o;
	if (r->stage_n > slots)
		r->stage_n = (unsigned)slots;
	r->staged = true;
	return 0;
}

int tlm__rdma_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms)
{
	bool staged = how & TLM__REG_STAGED;

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
	how &= ~TLM__REG_STAGED;
	if (how == TLM_REG_DST && staged) {
		rc = offer_staged(r, region, base, len);
		goto out;
	}
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
	 * guest replaces (kernels before 6.8). Staged: seal.c reads the
	 * region, the WRITEs go from the staging area. */
	if (!staged)
		rc = tlm__rdma_mr_get(r->pd, base, len, IBV_ACCESS_LOCAL_WRITE, "region memory",
				      &r->src_mr[region]);
	while (!rc && !r->remote_known[region]) {
		rc = rx_parse_offers(r);
		if (!rc && !r->remote_known[region]) {
			rc = tlm__rdma_rx_fill(r, true, deadline);
			rc = rc > 0 ? 0 : rc;
		}
	}
	if (!rc && staged)
		rc = take_staged(r, region);
	else if (!rc && (!r->remote[region].offered || r->remote[region].staged))
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

unsigned tlm__rdma_stage_slots(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	unsigned n;

	pthread_mutex_lock(&r->mu);
	n = r->staged ? r->stage_n : 0;
	pthread_mutex_unlock(&r->mu);
	return n;
}

void tlm__rdma_unregister_regions(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = tlm__now_ms() + CLOSE_DRAIN_MS;

	pthread_mutex_lock(&r->mu);
	/* A sender's staging WRITEs read the area until they complete. */
	if (r->staged && r->stage_remote.offered && !tlm__rdma_post_chain(r))
		while (sq_busy(r) && !r->gone && !r->dead)
			if (tlm__rdma_wait_io(r, deadline) == -ETIMEDOUT)
				break;
	tlm__rdma_regions_drop(r);
	memset(r->remote_known, 0, sizeof(r->remote_known));
	pthread_mutex_unlock(&r->mu);
}
