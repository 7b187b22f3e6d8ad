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
void tlm__dpdk_ooo_add(struct dlane *l, uint64_t a, uint64_t b)
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

void tlm__dpdk_ooo_drain(struct dlane *l)
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
void tlm__dpdk_go_back(struct dlane *l)
{
	l->recover = l->snd_nxt;
	l->snd_nxt = l->snd_una;
	l->sq_next = l->sq_head;
}
