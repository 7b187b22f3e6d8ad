/* SPDX-License-Identifier: MIT */
/*
 * Reliability (per lane): the lane carries one byte stream each way, made
 * of core/wire.h frames (DATA/FIN in byte mode, PAGE in page mode).
 * Packets carry 64-bit byte sequence numbers, a cumulative ACK and a credit
 * window (free bytes of the receiver's ring) on every packet.
 *
 * ACKs. A data packet with more queued behind it says so (HF_MORE); a
 * receiver with nothing to send ACKs such packets once ACK_EVERY of them
 * or ACK_DELAY_NS have passed (timers.c), anything else at once (the last
 * packet of a burst, out of order, old data, a hole filled, a PING, a
 * window update). Senders that set no flags get an ACK a packet.
 *
 * Go-back-N. The sender keeps every packet it built, unchanged, until it
 * is acked (at most RING_BYTES per lane, from the port's tx pool), and
 * goes back N: on a retransmission timeout (timers.c) or 3 duplicate ACKs
 * it rewinds to the oldest unacked packet. A re-sent packet is the same
 * mbuf with one more reference if the PMD has let go of it, a copy if it
 * still holds it, so a rewind never touches a buffer the PMD owns.
 *
 * Out of order. The receiver keeps out-of-order bytes that fit its window
 * in place in its ring (up to 16 ranges) and ACKs past them once the hole
 * fills, so until the ACKs pass the rewind point the sender re-sends one
 * packet per hole (NewReno-like), not the whole window.
 *
 * Credit. A sender never has more than the peer's advertised window past
 * its ACK in flight, nor more than window= unacked; what the PMD's TX ring
 * cannot take stays queued and the lane stops building data packets
 * meanwhile (back-pressure, no drops).
 *
 * All of it runs with the lane's mu held.
 */
#include "dpdk-internal.h"

/* Out-of-order byte ranges held in the receive ring past rcv_nxt, sorted,
 * disjoint. A range that does not fit is dropped: the sender re-sends. */
static void ooo_add(struct dlane *l, uint64_t a, uint64_t b)
{
	unsigned i, j;

	for (i = 0; i < l->nooo && l->ooo[i].b < a; i++)
		;
	/* merge every range that touches [a, b) */
	for (j = i; j < l->nooo && l->ooo[j].a <= b; j++) {
		if (l->ooo[j].a < a)
			a = l->ooo[j].a;
		if (l->ooo[j].b > b)
			b = l->ooo[j].b;
	}
	if (j == i && l->nooo == RTE_DIM(l->ooo))
		return;
	memmove(&l->ooo[i + 1], &l->ooo[j], (l->nooo - j) * sizeof(l->ooo[0]));
	l->nooo = l->nooo - (j - i) + 1;
	l->ooo[i].a = a;
	l->ooo[i].b = b;
}

static void ooo_drain(struct dlane *l)
{
	unsigned n = 0;

	while (n < l->nooo && l->ooo[n].a <= l->rcv_nxt) {
		if (l->ooo[n].b > l->rcv_nxt)
			l->rcv_nxt = l->ooo[n].b;
		n++;
	}
	if (n) {
		memmove(&l->ooo[0], &l->ooo[n], (l->nooo - n) * sizeof(l->ooo[0]));
		l->nooo -= n;
	}
}

/* Go back N: re-send from the oldest unacked byte. */
static void go_back(struct dlane *l)
{
	l->recover = l->snd_nxt;
	l->snd_nxt = l->snd_una;
	l->sq_next = l->sq_head;
}

/* ---- sending ---- */

/* May the data packet t go now? Not past the peer's credit; and in
 * recovery, one segment per hole until the ACKs pass the point of the
 * rewind (the retransmission timer covers a lost re-send). */
bool tlm__dpdk_rel_may_send(const struct dlane *l, const struct txp *t)
{
	if (l->snd_una < l->recover && l->sq_next != l->sq_head && l->snd_nxt < l->recover)
		return false;
	return t->seq + t->len <= l->peer_edge;
}

/* Should be called when the data packet t, the next in the send queue,
 * goes out. */
void tlm__dpdk_rel_sent(struct dlane *l, const struct txp *t)
{
	if (t->seq < l->snd_max)
		l->retrans++;
	l->snd_nxt = t->seq + t->len;
	l->sq_next++;
	if (l->snd_nxt > l->snd_max)
		l->snd_max = l->snd_nxt;
}

/* Should be called when the retransmission timer expires: go back N. */
void tlm__dpdk_rel_timeout(struct dlane *l)
{
	go_back(l);
	l->dupacks = 0;
}

/* Does an ACK of its own have to go now (nothing else carried it)? A
 * window update once the reader freed a quarter of the ring, anything
 * the receive path asked for at once, and the delayed ACKs due. */
bool tlm__dpdk_rel_ack_owed(struct dlane *l, uint64_t now)
{
	if (l->rcv_rd + RING_BYTES - l->adv_edge >= RING_BYTES / 4)
		l->need_ack = true;
	return l->need_ack || tlm__dpdk_timers_ack_due(l, now);
}

/* ---- receiving ---- */

/* The packets the ACK covers leave the send queue. */
static void acked(struct dlane *l, uint64_t ack)
{
	struct rte_mbuf *done[64];
	unsigned nd = 0;

	l->snd_una = ack;
	while (l->sq_head != l->sq_tail) {
		struct txp *t = &l->sq[l->sq_head % SQ_SLOTS];
		if (t->seq + t->len > ack)
			break;
		if (tlm__dpdk_txp_headonly(t))
			done[nd++] = t->m;
		l->sq_head++;
		if (nd == RTE_DIM(done)) {
			rte_pktmbuf_free_bulk(done, nd);
			nd = 0;
		}
	}
	if (nd)
		rte_pktmbuf_free_bulk(done, nd);
}

/* The ACK and credit every packet from the peer carries. */
void tlm__dpdk_rel_rx_ack(struct dlane *l, const struct pkt *k, uint64_t now)
{
	uint64_t ack = k->ack;

	/* only within what we have sent */
	if (ack > l->snd_una && ack <= l->snd_end) {
		acked(l, ack);
		if (l->snd_nxt < ack)
			l->snd_nxt = ack;
		/* partial ACK in recovery: the receiver holds what follows the
		 * next hole, probably, so re-send from the hole on */
		if (ack < l->recover)
			l->snd_nxt = ack;
		if (l->snd_nxt == ack || (int)(l->sq_next - l->sq_head) < 0)
			l->sq_next = l->sq_head;
		l->dupacks = 0;
		tlm__dpdk_timers_ack_received(l, now);
		pthread_cond_broadcast(&l->cv);
	} else if (ack == l->snd_una && !k->dlen && k->type == PT_DATA && l->snd_nxt > l->snd_una &&
		   l->snd_una >= l->recover) {
		/* one rewind per loss: the copies a rewind re-sends come back
		 * as duplicate ACKs too, and must not trigger another */
		if (++l->dupacks == 3)
			go_back(l);
	}
	if (ack >= l->snd_una && ack + k->wnd > l->peer_edge)
		l->peer_edge = ack + k->wnd;
}

/* The stream bytes of k from byte `from` on (len of them): kept in their
 * packet when they are the packet's whole data and the next bytes, with
 * nothing waiting in the ring (the reader parses them in place; true: the
 * lane keeps k->m), else copied into the ring. */
static bool rx_store(struct dlane *l, const struct pkt *k, uint64_t from, size_t len)
{
	const uint8_t *d = k->data + (from - k->seq);

	if (k->m && k->seq == l->rcv_nxt && l->rcv_held == l->rcv_nxt && !l->nooo &&
	    l->hn < HELD_MAX) {
		unsigned i = (l->hhead + l->hn++) % HELD_MAX;
		l->hq[i].m = k->m;
		l->hq[i].p = d;
		l->hq[i].len = (uint32_t)len;
		l->rcv_held = from + len;
		return true;
	}
	size_t off = (size_t)(from % RING_BYTES);
	size_t k1 = RING_BYTES - off < len ? RING_BYTES - off : len;
	memcpy(l->rbuf + off, d, k1);
	memcpy(l->rbuf, d + k1, len - k1);
	return false;
}

/* A data packet's stream bytes. Anything inside our window is kept, in
 * order or not: bytes past rcv_nxt wait in the ring (invisible to the
 * reader) until the hole before them fills, so the sender's go-back-N
 * rewind costs one round trip, not the whole window again. True if the
 * lane keeps k->m. */
bool tlm__dpdk_rel_rx_data(struct dlane *l, const struct pkt *k, uint64_t now)
{
	uint64_t seq = k->seq, fill = l->rcv_nxt - l->rcv_rd;
	unsigned ooo_before = l->nooo;
	bool kept = false, advanced = false;

	if (seq + k->dlen > l->rcv_nxt && seq + k->dlen <= l->rcv_rd + RING_BYTES &&
	    seq <= l->rcv_nxt + RING_BYTES) {
		uint64_t from = seq < l->rcv_nxt ? l->rcv_nxt : seq;
		size_t len = (size_t)(seq + k->dlen - from);

		kept = rx_store(l, k, from, len);
		if (from == l->rcv_nxt) {
			advanced = true;
			l->rcv_nxt += len;
			ooo_drain(l);
			if (fill == 0)
				tlm__dpdk_efd_signal(l);
			/* wake the reader once what it waits for is here,
			 * not for every segment of a page */
			if (l->rcv_nxt - l->rcv_rd >= l->rd_want)
				pthread_cond_broadcast(&l->cv);
		} else {
			ooo_add(l, from, from + len);
		}
	}
	/* in order with more behind it (HF_MORE), the ACK may wait; the last
	 * of what the sender had queued (the end of a write, a request), a
	 * hole filled, out of order or old: it goes now (out of order, it is
	 * the duplicate ACK that triggers the sender's rewind) */
	if (advanced && !ooo_before && !l->nooo && (k->flags & HF_MORE))
		tlm__dpdk_timers_ack_deferred(l, now);
	else
		l->need_ack = true;
	return kept;
}
