/* SPDX-License-Identifier: MIT */
/*
 * Posting work requests and reaping completions (lane lock held).
 *
 * Flow control, so that a SEND never meets an empty receive queue (no RNR):
 * each side posts `nrecv` receives before connecting and tells the peer the
 * number. Every message's immediate carries the sender's cumulative count
 * of receives it has re-posted (its credits to us). A side may have at
 * most nrecv - 1 data messages unaccounted for (sent - peer's count); the
 * last receive is kept for a zero-length credit-only message, sent when
 * half the receives were re-posted without a message to carry the count.
 * Zero-length messages are re-posted at once, so credit updates are never
 * held up by a full reassembly buffer. Data messages are re-posted once
 * their bytes moved into the reassembly buffer: a reader that stops
 * reading stops the credits and so the sender (bounded memory).
 *
 *
 * Threads: one thread may send while another receives (the relay does).
 * Both sides of a lane share one CQ, so all lane state sits under one
 * mutex, dropped only while sleeping on the completion channel. Waits
 * sleep at most WAIT_SLICE_MS at a time: the two threads share the
 * channel, and an event taken by one must not leave the other asleep.
 */
#include <poll.h>
#include <string.h>
#include <arpa/inet.h>

#include "rdma-internal.h"

int tlm__rdma_post_recv(struct rdma_lane *r, unsigned slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(r->mem + (size_t)slot * SLOT_SIZE),
		.length = SLOT_SIZE,
		.lkey = r->mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = WR_RECV | slot, .sg_list = &sge, .num_sge = 1 };
	struct ibv_recv_wr *bad;

	return verbs_err(ibv_post_recv(r->id->qp, &wr, &bad));
}

int tlm__rdma_lane_fail(struct rdma_lane *r, int err)
{
	if (!r->dead)
		r->dead = err;
	return r->dead;
}

/*
 * The lane's abort op (core/lane.c, tlm__lane_abort), from any thread: a
 * thread of ours holds the lock only between sleeps (tlm__rdma_wait_io
 * drops it), so taking it here is bounded. The error is the lane's from
 * now on; the QP goes to the error state, so every work request posted
 * flushes with an error and the completions wake a waiter at once (the
 * others look at `dead` at their next slice); nothing is freed, the owner
 * closes the lane. A lane that failed first keeps its own error.
 */
void tlm__rdma_abort(struct tlm_lane *l, int err)
{
	struct rdma_lane *r = to_rdma(l);
	struct ibv_qp_attr qa = { .qp_state = IBV_QPS_ERR };

	pthread_mutex_lock(&r->mu);
	tlm__rdma_lane_fail(r, err);
	if (!r->aborted && r->qp_made) {
		/* Any state may go to the error state; one that is there
		 * already (the peer's disconnect, a QP error) stays. */
		(void)ibv_modify_qp(r->id->qp, &qa, IBV_QP_STATE);
		r->aborted = true;
	}
	pthread_mutex_unlock(&r->mu);
}

unsigned tlm__rdma_data_limit(const struct rdma_lane *r)
{
	return r->peer_nrecv - 1;
}

int tlm__rdma_post_chain(struct rdma_lane *r)
{
	struct ibv_send_wr *bad;
	int rc;

	if (!r->chain_n)
		return 0;
	if (r->dead) {
		/* Nothing more goes out on a failed lane. */
		r->chain_n = 0;
		return r->dead;
	}
	for (unsigned i = 0; i + 1 < r->chain_n; i++)
		r->chain[i].next = &r->chain[i + 1];
	r->chain[r->chain_n - 1].next = NULL;
	r->chain_n = 0;
	rc = verbs_err(ibv_post_send(r->id->qp, r->chain, &bad));
	if (rc) {
		tlm__err("rdma %s: lane %u: post write: %s", r->base.peer, r->base.index,
			 strerror(-rc));
		r->tx_err = r->gone ? -TLM_EPEERCLOSED : rc;
		return r->tx_err;
	}
	return 0;
}

int tlm__rdma_post_send(struct rdma_lane *r, uint64_t kind, unsigned slot, const void *buf,
			uint32_t len)
{
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = len, .lkey = r->mr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = kind | (uint64_t)slot << WR_SLOT_SHIFT | ((r->sq_posted + 1) & WR_SEQ),
		.sg_list = len ? &sge : NULL,
		.num_sge = len ? 1 : 0,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(r->reposted),
	};
	struct ibv_send_wr *bad;
	int rc = tlm__rdma_post_chain(r);   /* numbered before us: posted before us */

	if (rc)
		return rc;
	rc = verbs_err(ibv_post_send(r->id->qp, &wr, &bad));
	if (rc) {
		tlm__err("rdma %s: lane %u: post send: %s", r->base.peer, r->base.index,
			 strerror(-rc));
		r->tx_err = r->gone ? -TLM_EPEERCLOSED : rc;
		return r->tx_err;
	}
	r->credited = r->reposted;
	r->sent++;
	r->sq_posted++;
	r->unsignaled = 0;
	return 0;
}

/* One page by RDMA WRITE, chained to the next ones (one doorbell per
 * WRITE_CHAIN); signaled every WRITE_SIGNAL so the send queue drains (a
 * completion retires every request posted before it). */
int tlm__rdma_post_write(struct rdma_lane *r, const void *src, uint32_t len, uint32_t lkey,
			 uint64_t raddr, uint32_t rkey)
{
	bool sig = r->unsignaled + 1 >= WRITE_SIGNAL;
	struct ibv_sge *sge = &r->chain_sge[r->chain_n];
	struct ibv_send_wr *wr = &r->chain[r->chain_n];

	*sge = (struct ibv_sge){ .addr = (uintptr_t)src, .length = len, .lkey = lkey };
	*wr = (struct ibv_send_wr){
		.wr_id = WR_WRITE | ((r->sq_posted + 1) & WR_SEQ),
		.sg_list = sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = sig ? IBV_SEND_SIGNALED : 0,
	};
	wr->wr.rdma.remote_addr = raddr;
	wr->wr.rdma.rkey = rkey;
	r->sq_posted++;
	r->unsignaled = sig ? 0 : r->unsignaled + 1;
	return ++r->chain_n == WRITE_CHAIN ? tlm__rdma_post_chain(r) : 0;
}

/* Return credits without data when half the receives went unreported. */
static void maybe_credit(struct rdma_lane *r)
{
	uint32_t owed = r->reposted - r->credited;

	if (r->gone || r->dead || r->tx_err || owed == 0 || owed < r->nrecv / 2)
		return;
	if (r->sent - r->peer_credit >= r->peer_nrecv || sq_busy(r) >= r->sq_cap)
		return;
	tlm__rdma_post_send(r, WR_CREDIT, 0, NULL, 0);
}

/* Move received messages into the reassembly buffer, in order, while
 * there is room; each one moved frees its receive for re-posting. */
int tlm__rdma_rx_drain(struct rdma_lane *r)
{
	int moved = 0;

	while (r->pend_cnt) {
		unsigned slot = r->pend[r->pend_head];
		uint32_t len = r->pend_len[r->pend_head];
		int rc;

		if (tlm__stream_room(&r->rx, len) < len)
			break;
		memcpy(tlm__stream_tail(&r->rx), r->mem + (size_t)slot * SLOT_SIZE, len);
		tlm__stream_put(&r->rx, len);
		r->pend_head = (r->pend_head + 1) % r->nrecv;
		r->pend_cnt--;
		moved++;
		if (!r->gone && !r->dead) {
			rc = tlm__rdma_post_recv(r, slot);
			if (rc)
				return tlm__rdma_lane_fail(r, rc);
			r->reposted++;
		}
	}
	return moved;
}

/* Reap completions and cm events. Returns how many there were. */
int tlm__rdma_progress(struct rdma_lane *r)
{
	struct ibv_wc wc[16];
	int total = 0, n, aev = __atomic_load_n(&r->async_ev, __ATOMIC_RELAXED);
	uint64_t retired = r->sq_retired;
	uint32_t credit = r->peer_credit;

	if (aev && !r->gone) {
		tlm__err("rdma %s: lane %u: %s%s", r->base.peer, r->base.index,
			 ibv_event_type_str((enum ibv_event_type)(aev - 1)),
			 aev - 1 == IBV_EVENT_PORT_ERR ? " (link down?)" : "");
		r->gone = true;
		if (!r->tx_err)
			r->tx_err = -TLM_EPEERCLOSED;
		total++;
	}

	for (;;) {
		struct rdma_cm_event *ev;

		if (rdma_get_cm_event(r->ch, &ev) != 0)
			break;   /* EAGAIN: the channel is non-blocking */
		if (ev->event == RDMA_CM_EVENT_DISCONNECTED ||
		    ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
			tlm__dbg("rdma %s: lane %u: %s", r->base.peer, r->base.index,
				 rdma_event_str(ev->event));
			r->gone = true;
		}
		rdma_ack_cm_event(ev);
		total++;
	}
	while ((n = ibv_poll_cq(r->cq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			uint64_t kind = wc[i].wr_id & WR_KIND;
			unsigned slot = (unsigned)(wc[i].wr_id & ~WR_KIND);

			if (kind != WR_RECV) {
				/* Post numbers are kept mod 2^40 in wr_id. */
				uint64_t seq = (r->sq_posted & ~WR_SEQ) | (wc[i].wr_id & WR_SEQ);

				if (seq > r->sq_posted)
					seq -= WR_SEQ + 1;
				if (seq > r->sq_retired)
					r->sq_retired = seq;
				slot = (unsigned)((wc[i].wr_id & ~WR_KIND) >> WR_SLOT_SHIFT);
			}
			if (kind == WR_DATA) {
				r->tx_inflight--;
				if (wc[i].status == IBV_WC_SUCCESS && r->slot_recs[slot] > r->rec_done)
					r->rec_done = r->slot_recs[slot];
			}
			if (wc[i].status != IBV_WC_SUCCESS) {
				if (wc[i].status != IBV_WC_WR_FLUSH_ERR)
					tlm__dbg("rdma %s: lane %u: completion: %s", r->base.peer,
						 r->base.index, ibv_wc_status_str(wc[i].status));
				r->gone = true;
				if (kind != WR_RECV && !r->tx_err)
					r->tx_err = -TLM_EPEERCLOSED;
				continue;
			}
			if (kind != WR_RECV)
				continue;
			if (wc[i].wc_flags & IBV_WC_WITH_IMM)
				r->peer_credit = ntohl(wc[i].imm_data);
			if (wc[i].byte_len == 0) {
				/* Credit-only: nothing to keep. */
				if (!r->gone && !r->dead) {
					int rc = tlm__rdma_post_recv(r, slot);

					if (rc)
						return tlm__rdma_lane_fail(r, rc);
					r->reposted++;
				}
				continue;
			}
			r->pend[(r->pend_head + r->pend_cnt) % r->nrecv] = slot;
			r->pend_len[(r->pend_head + r->pend_cnt) % r->nrecv] = wc[i].byte_len;
			r->pend_cnt++;
		}
		total += n;
	}
	if (n < 0)
		return tlm__rdma_lane_fail(r, -EIO);
	if (r->sq_retired != retired || r->peer_credit != credit)
		r->tx_moved = tlm__now_ms();
	tlm__rdma_rx_drain(r);
	maybe_credit(r);
	return total;
}

/*
 * Sleep until a completion or cm event may be there, or the deadline.
 * Lock held on entry and exit, dropped while asleep. Returns 0 (look
 * again), -ETIMEDOUT, or a lane error (the lane's `dead`, set by an
 * abort from another thread too, ends every wait).
 */
int tlm__rdma_wait_io(struct rdma_lane *r, uint64_t deadline)
{
	struct pollfd p[3] = {
		{ .fd = r->cc->fd, .events = POLLIN },
		{ .fd = r->ch->fd, .events = POLLIN },
		{ .fd = r->id->verbs->async_fd, .events = POLLIN },
	};
	int left = left_of(deadline), rc;
	struct ibv_cq *cq;
	void *ctx;

	if (r->dead)
		return r->dead;
	if (left == 0)
		return -ETIMEDOUT;
	rc = verbs_err(ibv_req_notify_cq(r->cq, 0));
	if (rc)
		return tlm__rdma_lane_fail(r, rc);
	/* Completions that came before arming raise no event. */
	rc = tlm__rdma_progress(r);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	pthread_mutex_unlock(&r->mu);
	rc = poll(p, 3, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
	pthread_mutex_lock(&r->mu);
	if (rc < 0 && errno != EINTR)
		return -errno;
	if (rc > 0 && p[2].revents) {
		tlm__rdma_async_drain(r->id->verbs);
	}
	while (ibv_get_cq_event(r->cc, &cq, &ctx) == 0) {
		if (++r->cq_unacked >= 64) {
			ibv_ack_cq_events(r->cq, r->cq_unacked);
			r->cq_unacked = 0;
		}
	}
	return r->dead;   /* tlm__rdma_abort, while we slept */
}
