/* SPDX-License-Identifier: MIT */
/*
 * Timers. None of them runs by itself: a lane's transmit step
 * (tlm__dpdk_lane_tx), which whoever pumps the lane runs every round (its
 * callers, or the poll thread at least every STALE_NS while they are
 * away), asks whether each is due, and the datapath tells them what
 * happened through the one-line hooks below. Every timer, its deadline,
 * and what expiry does:
 *
 *   retransmission  rto_at: rto_ns after a data packet went out with none
 *                   unacked before it, re-armed by every ACK that moves
 *                   snd_una, disarmed when nothing is unacked. rto_ns
 *                   starts at RTO_INIT_NS, doubles per expiry up to
 *                   RTO_MAX_NS, and goes back to RTO_INIT_NS on an ACK.
 *                   Expiry: go back N (reliab.c).
 *   delayed ACK     an in-order packet with more behind it (HF_MORE) is
 *                   acked once ACK_EVERY of them came or ACK_DELAY_NS
 *                   after the first, whichever is first.
 *   SYN retry       a SYN every SYN_NS until the peer answers (conn.c).
 *   ARP retry       a request every SYN_NS per port while a lane's peer
 *                   MAC is unknown (arp.c).
 *   keepalive       a PING after KA_NS without a packet from the peer (it
 *                   answers with an ACK), then every KA_NS.
 *   dead peer       nothing heard for dead_ms fails the lane.
 *   memif link      after LINK_CHECK_NS without a packet, a link found
 *                   down fails the lane at once (ports live until their
 *                   process exits, so a down link means the peer process
 *                   is gone); so does a burst torn by the peer's unmap
 *                   (poll.c), at the next step.
 *
 * All of it runs with the lane's mu held.
 */
#include "dpdk-internal.h"

/* Should be called for every packet from the lane's peer. */
void tlm__dpdk_timers_any_received(struct dlane *l, uint64_t now)
{
	l->last_rx = now;
}

/* Should be called when a data packet goes out. */
void tlm__dpdk_timers_data_sent(struct dlane *l, uint64_t now)
{
	if (!l->rto_at)
		l->rto_at = now + l->rto_ns;
}

/* Should be called when an ACK acknowledges new data (snd_una moved). */
void tlm__dpdk_timers_ack_received(struct dlane *l, uint64_t now)
{
	l->rto_ns = RTO_INIT_NS;
	l->rto_at = l->snd_una < l->snd_nxt ? now + l->rto_ns : 0;
}

/* Should be called when an in-order data packet's ACK may wait. */
void tlm__dpdk_timers_ack_deferred(struct dlane *l, uint64_t now)
{
	if (!l->ack_pkts++)
		l->ack_first = now;
}

/* Should be called when a packet carrying our current ACK goes out. */
void tlm__dpdk_timers_ack_sent(struct dlane *l)
{
	l->ack_pkts = 0;
}

/* True when the ACKs deferred so far must go now. */
bool tlm__dpdk_timers_ack_due(const struct dlane *l, uint64_t now)
{
	return l->ack_pkts >= ACK_EVERY ||
	       (l->ack_pkts && since(now, l->ack_first) >= ACK_DELAY_NS);
}

/* Should be called before the lane sends data: on expiry of the
 * retransmission timer, goes back N and backs the timer off. */
void tlm__dpdk_timers_retransmit(struct dlane *l, uint64_t now)
{
	if (!l->rto_at || now < l->rto_at || l->snd_una >= l->snd_nxt)
		return;
	tlm__dpdk_rel_timeout(l);
	l->rto_ns = l->rto_ns * 2 > RTO_MAX_NS ? RTO_MAX_NS : l->rto_ns * 2;
	l->rto_at = 0;
}

/* True when a connecting lane's SYN is due (again); the caller sends it. */
bool tlm__dpdk_timers_syn_due(struct dlane *l, uint64_t now)
{
	if (since(now, l->last_syn) <= SYN_NS)
		return false;
	l->last_syn = now;
	return true;
}

/* True when the port may ask for a MAC (again); the caller asks. */
bool tlm__dpdk_timers_arp_due(struct dport *p, uint64_t now)
{
	if (since(now, p->last_arp_req) <= SYN_NS)
		return false;
	p->last_arp_req = now;
	return true;
}

/* Fails the lane with why, naming the port's state for the log. */
static void silent_fail(struct dport *p, struct dlane *l)
{
	char why[160];
	struct rte_eth_link lk = { 0 };

	rte_eth_link_get_nowait(p->port_id, &lk);
	snprintf(why, sizeof(why),
		 "peer silent for %d ms: dead (link %d pool %u lid %x rid %x, rx %llu/%llu tx %llu pkts)",
		 l->dead_ms, lk.link_status, rte_mempool_avail_count(p->pool), l->lid, l->rid,
		 (unsigned long long)l->rx_pkts, (unsigned long long)l->rx_ignored,
		 (unsigned long long)l->tx_pkts);
	tlm__dpdk_lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED, why);
}

/* Should be called at every transmit step of a lane that is neither
 * closing nor dead: the memif link, keepalive and dead-peer timers. */
void tlm__dpdk_timers_liveness(struct dport *p, struct dlane *l, uint64_t now)
{
	if (p->memif && l->state == LS_EST && atomic_load(&p->torn) != l->torn_seen)
		tlm__dpdk_lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
				    "memif rings unmapped under a burst: the peer process is gone");
	if (p->memif && l->state == LS_EST && since(now, l->last_rx) > LINK_CHECK_NS) {
		struct rte_eth_link lk;
		if (rte_eth_link_get_nowait(p->port_id, &lk) == 0 && !lk.link_status)
			tlm__dpdk_lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
					    "memif link down: the peer process is gone");
	}
	if (since(now, l->last_rx) > KA_NS && since(now, l->last_ping) > KA_NS) {
		if (l->mac_known || p->p2p)
			tlm__dpdk_send_ctl(p, l, PT_PING);
		l->last_ping = now;
	}
	if (since(now, l->last_rx) > (uint64_t)l->dead_ms * 1000000ull)
		silent_fail(p, l);
}
