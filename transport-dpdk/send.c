/* SPDX-License-Identifier: MIT */
/*
 * The send path. The writer (send_pages, write, under wmu) builds packets
 * straight from the caller's bytes (one copy; the PMD's own copy or DMA
 * is the other), or points them at LIVE pages (zc.c), and queues them on
 * the lane's send queue, waiting there for credit (back-pressure). A
 * lane's transmit step (tlm__dpdk_lane_tx, run by whoever pumps the
 * lane: poll.c) sends what is due: control frames, the queued data the
 * window allows, ACKs, and whatever the timers ask for (timers.c).
 *
 * A LIVE record's header stays in one packet, and its packets stay with
 * the writer until its crc, summed as it is copied, is written in. A
 * record that fits a packet of its own is not split across two (jumbo
 * frames carry two whole pages each), so the receiver reads it in place.
 * send_pages/write send a short packet only at the end of a call.
 */
#include "dpdk-internal.h"

/* Room for a whole data burst in the lane's tx queue? */
static bool tx_room(const struct dport *p, const struct dlane *l)
{
	if (l->local)
		return p->nloop + 2 <= RTE_DIM(p->loopq);
	if (l->q)
		return l->nqtx + 2 <= RTE_DIM(l->qtx);
	return p->ntx + 2 <= RTE_DIM(p->txq);
}

/* The queued data packets the window allows, as many as a burst. */
static void tx_data(struct dport *p, struct dlane *l, uint64_t now)
{
	uint32_t wnd = (uint32_t)(RING_BYTES - (l->rcv_nxt - l->rcv_rd));

	for (unsigned n = 0; n < BURST && l->sq_next != l->sq_tail && tx_room(p, l); n++) {
		struct txp *t = &l->sq[l->sq_next % SQ_SLOTS];
		if (!tlm__dpdk_rel_may_send(l, t))
			break;
		/* the packet stays ours for a re-send: the PMD gets another
		 * reference, or a copy while it still holds the last one */
		struct rte_mbuf *m = t->m;
		if (t->zl)
			m = tlm__dpdk_zc_chain(p, t);
		else if (rte_mbuf_refcnt_read(m) > 1)
			m = rte_pktmbuf_copy(m, p->txpool, 0, UINT32_MAX);
		else
			rte_pktmbuf_refcnt_update(m, 1);
		if (!m)
			break;
		uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
		if (l->mac_known)
			rte_ether_addr_copy(&l->peer_mac, (struct rte_ether_addr *)b);
		tlm__dpdk_put_hdr(b + L2L4_LEN, PT_DATA, l->rid, l->lid, wnd, t->seq, l->rcv_nxt,
				  l->sq_next + 1 != l->sq_tail ? HF_MORE : 0);
		l->adv_edge = l->rcv_nxt + wnd;
		tlm__dpdk_rel_sent(l, t);
		l->need_ack = false;
		tlm__dpdk_timers_ack_sent(l);
		l->tx_pkts++;
		tlm__dpdk_timers_data_sent(l, now);
		tlm__dpdk_out_data(p, l, m);
	}
	if (l->held) {
		/* nothing came after it this round: let it go now */
		tlm__dpdk_out_pkt(p, l, l->held);
		l->held = NULL;
	}
}

/* A lane's transmit step, run by whoever pumps it (poll.c): what its
 * state, the window and its timers say is due. */
void tlm__dpdk_lane_tx(struct dport *p, struct dlane *l, uint64_t now)
{
	pthread_mutex_lock(&l->mu);
	if (l->closing || l->state == LS_DEAD) {
		tlm__dpdk_conn_tx_ending(p, l);
		goto out;
	}
	if (!tlm__dpdk_arp_resolve(p, l, now))
		goto timers;
	if (l->state == LS_SYN_SENT) {
		if (tlm__dpdk_timers_syn_due(l, now))
			tlm__dpdk_send_ctl(p, l, PT_SYN);
		goto out;
	}
	if (l->need_synack) {
		tlm__dpdk_send_ctl(p, l, PT_SYNACK);
		l->need_synack = false;
	}
	tlm__dpdk_timers_retransmit(l, now);
	tx_data(p, l, now);
	if (tlm__dpdk_rel_ack_owed(l, now))
		tlm__dpdk_send_ctl(p, l, PT_DATA);
timers:
	tlm__dpdk_timers_liveness(p, l, now);
out:
	pthread_mutex_unlock(&l->mu);
}

/* The writer builds packets straight from the caller's bytes (one copy;
 * the PMD's own copy or DMA is the other) and queues them for the pump.
 * All of this runs under wmu. */

/* Sealed packets go to the send queue, waiting for room (everything
 * unacked is kept: back-pressure), then out. */
static int wr_commit(struct dlane *l, bool hold)
{
	struct waiter w = { 0 };
	unsigned i = 0;
	int r = 0;

	if (!l->npend)
		return 0;
	pthread_mutex_lock(&l->mu);
	while (i < l->npend) {
		uint32_t len = rte_pktmbuf_pkt_len(l->pend[i]) - L2L4_LEN - HDR_LEN;
		if (l->state != LS_EST || l->peer_closed) {
			r = l->state != LS_EST && l->err ? l->err : -TLM_EPEERCLOSED;
			break;
		}
		if (l->snd_end + len - l->snd_una > l->window || l->sq_tail - l->sq_head == SQ_SLOTS) {
			tlm__dpdk_lane_wait(l, &w, UINT64_MAX / 2);
			continue;
		}
		struct txp *t = &l->sq[l->sq_tail % SQ_SLOTS];
		t->za = l->pendz[i].a;
		t->zl = l->pendz[i].l;
		t->m = l->pend[i++];
		t->seq = l->snd_end;
		t->len = len;
		l->snd_end += len;
		l->sq_tail++;
	}
	tlm__dpdk_wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	if (i < l->npend)
		rte_pktmbuf_free_bulk(l->pend + i, l->npend - i);
	l->npend = 0;
	/* hold: more is coming, a short burst may wait for it (TX_HOLD_NS) */
	tlm__dpdk_drive(l, hold);
	return r;
}

/* An open packet with room, from the tx pool (waiting while acks are
 * due to give mbufs back). */
static int wr_open(struct dlane *l)
{
	struct waiter w = { 0 };
	int r = 0;

	while (!l->om && !r) {
		if (!l->nstash && !rte_pktmbuf_alloc_bulk(l->port->txpool, l->stash, STASH))
			l->nstash = STASH;
		if (l->nstash) {
			/* buffers come back cold (acked a window ago): fetch
			 * the next one while this one fills */
			l->om = l->stash[--l->nstash];
			l->ot = NULL;
			l->olen = 0;
			l->ohlen = 0;
			l->ozl = 0;
			if (l->nstash) {
				struct rte_mbuf *nx = l->stash[l->nstash - 1];
				uint8_t *d = (uint8_t *)nx->buf_addr + nx->data_off;
				rte_prefetch0(nx);
				rte_prefetch0(d);
				rte_prefetch0(d + 64);
			}
			break;
		}
		pthread_mutex_lock(&l->mu);
		if (l->state != LS_EST)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		else
			tlm__dpdk_lane_wait(l, &w, tlm__now_ns() + 1000000ull);
		pthread_mutex_unlock(&l->mu);
	}
	tlm__dpdk_wait_done(l, &w);
	return r;
}

/* Where copied bytes go next: om after the headers, or the segment of
 * their own that follows a zero-copy one (wr_direct). */
static uint8_t *wr_ptr(const struct dlane *l)
{
	if (!l->ot)
		return rte_pktmbuf_mtod(l->om, uint8_t *) + L2L4_LEN + HDR_LEN + l->ohlen;
	return rte_pktmbuf_mtod(l->ot, uint8_t *) + l->ot->data_len;
}

static void wr_took(struct dlane *l, uint32_t k)
{
	if (l->ot)
		l->ot->data_len = (uint16_t)(l->ot->data_len + k);
	else
		l->ohlen += k;
	l->olen += k;
}

/* The open packet is done: its headers, then it waits in pend. */
static void wr_seal(struct dlane *l)
{
	struct rte_mbuf *m = l->om;

	if (!m)
		return;
	l->om = NULL;
	l->ot = NULL;
	if (!l->olen) {
		rte_pktmbuf_free(m);
		return;
	}
	l->pendz[l->npend].a = l->oza;
	l->pendz[l->npend].l = l->ozl;
	l->ozl = 0;
	/* (not rte_pktmbuf_append: that grows the last segment) */
	uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
	m->data_len = (uint16_t)(L2L4_LEN + HDR_LEN + l->ohlen);
	m->pkt_len = L2L4_LEN + HDR_LEN + l->olen;
	tlm__dpdk_put_l2l4(l->port, b, l->mac_known ? &l->peer_mac : NULL, l->peer_ip, l->lport,
		 l->rport, l->olen);
	l->pend[l->npend++] = m;
}

static void wr_chain(struct dlane *l, struct rte_mbuf *m)
{
	(l->ot ? l->ot : l->om)->next = m;
	l->ot = m;
	l->om->nb_segs++;
}

static int wr_bytes(struct dlane *l, const uint8_t *s, size_t n, uint32_t *crc);

/* More than one range in the packet after all: the light range becomes
 * a segment of its own now (copied, if no segment is to be had). */
static int wr_unlight(struct dlane *l)
{
	struct dport *p = l->port;
	const uint8_t *a = l->oza;
	uint32_t n = l->ozl;
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->zcpool);

	l->ozl = 0;
	l->olen -= n;
	if (!m)
		return wr_bytes(l, a, n, NULL);
	tlm__dpdk_zc_attach(p, m, a, n);
	wr_chain(l, m);
	l->olen += n;
	return 0;
}

/* An open packet whose tail takes copied bytes: after a zero-copy
 * segment, a segment of their own (or the next packet). */
static int wr_direct(struct dlane *l)
{
	int r = wr_open(l);

	if (!r && l->ozl)
		r = wr_unlight(l);
	if (r || !l->ot || RTE_MBUF_DIRECT(l->ot))
		return r;
	struct rte_mbuf *m = l->om->nb_segs < l->port->zc_segs ?
			     rte_pktmbuf_alloc(l->port->txpool) : NULL;
	if (!m) {
		wr_seal(l);
		return wr_open(l);
	}
	wr_chain(l, m);
	return 0;
}

/* Append n bytes to the stream. crc: sum them as copied, from the copy
 * (LIVE data may change under us; what is summed is what is sent). */
static int wr_bytes(struct dlane *l, const uint8_t *s, size_t n, uint32_t *crc)
{
	uint32_t mss = l->port->mss;

	while (n) {
		int r = wr_direct(l);
		if (r)
			return r;
		uint8_t *d = wr_ptr(l);
		size_t k = n < mss - l->olen ? n : mss - l->olen;
		if (crc)
			*crc = tlm__crc32c_copy(*crc, d, s, k);
		else
			memcpy(d, s, k);
		wr_took(l, (uint32_t)k);
		s += k;
		n -= k;
		if (l->olen == mss)
			wr_seal(l);
	}
	return 0;
}

/* Append n bytes of a LIVE page by reference: segments that point into
 * the page, which the PMD reads when it sends the packet (and again if it
 * re-sends it). With no segment to spare, the bytes are copied. */
static int wr_ext(struct dlane *l, const uint8_t *s, size_t n)
{
	struct dport *p = l->port;
	uint32_t mss = p->mss;

	while (n) {
		int r = wr_open(l);
		if (r)
			return r;
		size_t k = n < mss - l->olen ? n : mss - l->olen;
		if (k < n && k > ZC_ALIGN)
			k &= ~(size_t)(ZC_ALIGN - 1);
		if (!l->ot && !l->ozl) {
			/* the packet's only range: noted, its segment made
			 * when the packet goes out (tlm__dpdk_zc_chain) */
			l->oza = s;
			l->ozl = (uint32_t)k;
			l->olen += (uint32_t)k;
			if (l->olen == mss)
				wr_seal(l);
			s += k;
			n -= k;
			continue;
		}
		if (l->ozl) {
			r = wr_unlight(l);
			if (r)
				return r;
		}
		struct rte_mbuf *m = l->om->nb_segs < p->zc_segs ? rte_pktmbuf_alloc(p->zcpool) :
				     NULL;
		if (!m) {
			r = wr_bytes(l, s, k, NULL);
			if (r)
				return r;
		} else {
			tlm__dpdk_zc_attach(p, m, s, (uint32_t)k);
			wr_chain(l, m);
			l->olen += (uint32_t)k;
			if (l->olen == mss)
				wr_seal(l);
		}
		s += k;
		n -= k;
	}
	return 0;
}

/* End of a call: the tail goes now, short or not. */
static int wr_push(struct dlane *l)
{
	wr_seal(l);
	return wr_commit(l, false);
}

int tlm__dpdk_send_pages(struct tlm_lane *tl, const struct tlm_page_rec *recs, unsigned n)
{
	struct dlane *l = (struct dlane *)tl;
	uint8_t h[TLM_FRAME_HDR + TLM_PAGE_HDR];
	int r = 0;

	tlm__dpdk_lcore_join();

	if (tl->mode != TLM_MODE_PAGES)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (recs[i].len > tl->page_size || (recs[i].len && !recs[i].data) ||
		    ((recs[i].flags & TLM_PF_LIVE) &&
		     (recs[i].region >= 32 || !(l->src_regions & (1u << recs[i].region)))))
			return -EINVAL;
	pthread_mutex_lock(&l->wmu);
	if (l->wr_shut) {
		r = -EPIPE;
		goto out;
	}
	for (unsigned i = 0; i < n && !r; i++) {
		struct tlm_page_rec hr = recs[i];
		bool live = hr.flags & TLM_PF_LIVE;
		bool zc = live && hr.len >= ZC_MIN && (l->zc_regions & (1u << hr.region)) &&
			  !l->local;
		uint32_t crc = 0;

		hr.flags &= (uint16_t)~TLM_PF_LIVE;
		if (zc) {
			hr.flags |= TLM__PF_NOSUM;
			hr.crc = 0;
			l->live_zc++;
		} else if (live) {
			l->live_copied++;
		}
		tlm__frame_hdr_encode(h, TLM_PAGE_HDR + hr.len, TLM_FT_PAGE);
		tlm__page_hdr_encode(h + TLM_FRAME_HDR, &hr);
		/* a LIVE record's header stays in one packet, and its packets
		 * stay with us until the crc is written in. A record that
		 * fits a packet of its own is not split either (jumbo frames:
		 * two whole pages each), so the receiver reads it in place
		 * instead of gathering its pieces. */
		uint32_t room = l->om ? l->port->mss - l->olen : 0;
		if (l->om && (room < sizeof(h) ||
			      (room < sizeof(h) + hr.len && sizeof(h) + hr.len <= l->port->mss)))
			wr_seal(l);
		r = wr_direct(l);
		if (r)
			break;
		uint8_t *crcp = wr_ptr(l) + TLM_FRAME_HDR + 20;
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r && zc)
			r = wr_ext(l, recs[i].data, hr.len);
		else if (!r)
			r = wr_bytes(l, recs[i].data, hr.len, live ? &crc : NULL);
		if (r)
			break;
		if (live && !zc)
			tlm__put32(crcp, crc);
		tl->tx_bytes += hr.len;
		if (l->npend >= BURST)
			r = wr_commit(l, true);
	}
	if (!r)
		r = wr_push(l);
	if (r)
		goto out;   /* the lane is failing: wait_sent reports its error */
	l->wr_records += n;
	pthread_mutex_lock(&l->mu);
	l->sent_at[l->nsent_at % RTE_DIM(l->sent_at)].records = l->wr_records;
	l->sent_at[l->nsent_at % RTE_DIM(l->sent_at)].seq = l->snd_end;
	l->nsent_at++;
	pthread_mutex_unlock(&l->mu);
out:
	pthread_mutex_unlock(&l->wmu);
	return r ? r : (int)n;
}

ssize_t tlm__dpdk_write(struct tlm_lane *tl, const void *buf, size_t n)
{
	struct dlane *l = (struct dlane *)tl;
	const uint8_t *s = buf;
	size_t done = 0;
	int r = 0;

	tlm__dpdk_lcore_join();

	pthread_mutex_lock(&l->wmu);
	if (l->wr_shut)
		r = -EPIPE;
	while (!r && done < n) {
		uint8_t h[TLM_FRAME_HDR];
		size_t k = n - done > WR_CHUNK ? WR_CHUNK : n - done;
		tlm__frame_hdr_encode(h, (uint32_t)k, TLM_FT_DATA);
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r)
			r = wr_bytes(l, s + done, k, NULL);
		if (!r)
			r = wr_commit(l, true);
		if (!r) {
			done += k;
			tl->tx_bytes += k;
		}
	}
	if (!r)
		r = wr_push(l);
	pthread_mutex_unlock(&l->wmu);
	return r ? r : (ssize_t)n;
}

int tlm__dpdk_shutdown(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;
	uint8_t h[TLM_FRAME_HDR];
	int r = 0;

	pthread_mutex_lock(&l->wmu);
	if (!l->wr_shut) {
		tlm__frame_hdr_encode(h, 0, TLM_FT_FIN);
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r)
			r = wr_push(l);
		l->wr_shut = true;
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

int tlm__dpdk_flush(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;

	pthread_mutex_lock(&l->mu);
	/* a peer that closed after taking everything we wrote is no error:
	 * nothing is left to push */
	int r = l->state == LS_EST || (l->snd_una == l->snd_end && !l->bad) ? 0 : l->err;
	pthread_mutex_unlock(&l->mu);
	tlm__dpdk_drive(l, false);
	return r;
}

int tlm__dpdk_inject_raw(struct tlm_lane *tl, const void *buf, size_t n)
{
	struct dlane *l = (struct dlane *)tl;

	const uint8_t *b = buf;
	int r = 0;

	/* In pieces, as tlm__dpdk_write does: pend[] holds WR_CHUNK's packets. */
	pthread_mutex_lock(&l->wmu);
	for (size_t done = 0; !r && done < n; done += WR_CHUNK) {
		r = wr_bytes(l, b + done, n - done < WR_CHUNK ? n - done : WR_CHUNK, NULL);
		if (!r)
			r = wr_push(l);
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

/* The first `records` records acked: the peer holds them in its ring and
 * applies them in order. (Returning at once would do too: LIVE pages are
 * copied inside send_pages, and the destination keeps the newest epoch of
 * a page whichever lane brings it.) The target is the end of the first
 * send_pages call that covered them, or a later one if that call is no
 * longer remembered. */
int tlm__dpdk_wait_sent(struct tlm_lane *tl, uint64_t records, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms), target = 0;
	struct waiter w = { 0 };
	int r = 0;

	pthread_mutex_lock(&l->mu);
	uint64_t n = l->nsent_at, keep = RTE_DIM(l->sent_at);
	for (uint64_t i = n > keep ? n - keep : 0; i < n && records; i++)
		if (l->sent_at[i % keep].records >= records) {
			target = l->sent_at[i % keep].seq;
			break;
		}
	if (records && !target) {
		/* never all handed over: a send failed, or is still going */
		if (l->state != LS_EST)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		target = l->snd_end;
	}
	while (l->snd_una < target && !r) {
		if (l->state != LS_EST || l->peer_closed)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		else if (tlm__dpdk_lane_wait(l, &w, end) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	tlm__dpdk_wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	return r;
}

/*
 * A write filled in place (seal.c seals its frames straight into our
 * packets): wopen puts the DATA frame's header in, wspan hands out the
 * open packet's copy tail (after the headers, or a segment of its own),
 * wput takes what was written there, sealing a full packet and queueing
 * a burst of them as write does; the last byte pushes the tail out. Each
 * call takes wmu; the lane's one writer keeps the write whole between
 * them (wr_left says how much of it is missing).
 */
int tlm__dpdk_wopen(struct tlm_lane *tl, size_t n)
{
	struct dlane *l = (struct dlane *)tl;
	uint8_t h[TLM_FRAME_HDR];
	int r;

	if (!n || n > TLM_MAX_DATA_FRAME)
		return -EINVAL;
	tlm__dpdk_lcore_join();
	pthread_mutex_lock(&l->wmu);
	if (l->wr_shut || l->wr_left) {
		r = l->wr_shut ? -EPIPE : -EBUSY;
	} else {
		tlm__frame_hdr_encode(h, (uint32_t)n, TLM_FT_DATA);
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r)
			l->wr_left = (uint32_t)n;
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

ssize_t tlm__dpdk_wspan(struct tlm_lane *tl, uint8_t **p)
{
	struct dlane *l = (struct dlane *)tl;
	ssize_t r;

	pthread_mutex_lock(&l->wmu);
	r = l->wr_left ? wr_direct(l) : -EINVAL;
	if (!r) {
		uint32_t room = l->port->mss - l->olen;

		*p = wr_ptr(l);
		r = room < l->wr_left ? room : l->wr_left;
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

int tlm__dpdk_wput(struct tlm_lane *tl, size_t k)
{
	struct dlane *l = (struct dlane *)tl;
	int r = 0;

	pthread_mutex_lock(&l->wmu);
	if (!l->om || k > l->wr_left || k > l->port->mss - l->olen) {
		r = -EINVAL;
		goto out;
	}
	wr_took(l, (uint32_t)k);
	l->wr_left -= (uint32_t)k;
	if (l->olen == l->port->mss)
		wr_seal(l);
	if (!l->wr_left)
		r = wr_push(l);
	else if (l->npend >= BURST || l->npend * l->port->mss >= WR_CHUNK)
		r = wr_commit(l, true);   /* as write does, a chunk at a time */
	if (r)
		l->wr_left = 0;   /* the lane is failing: the write is lost */
out:
	pthread_mutex_unlock(&l->wmu);
	return r;
}
