/* SPDX-License-Identifier: MIT */
/*
 * Our frames: Ethernet, IPv4, UDP (checksum 0: the Ethernet FCS or
 * memif's copy guards the bits), then HDR_LEN bytes of lane header:
 *
 *   0  magic "TL"      2  version      3  type (PT_*)
 *   4  dst lane id     8  src lane id  12 window (free bytes of our ring)
 *   16 seq (64-bit byte sequence; SYN/SYNACK: the queue asked for/granted)
 *   24 ack (cumulative)               32 flags (HF_MORE)   33 pad to 38
 *
 * then the lane's stream bytes. HDR_LEN 38 puts the stream on 16 bytes
 * (see ZC_ALIGN). Control frames (SYN, ACK, PING, CLOSE, RST) come from
 * the rx pool, so data packets, which may use up the tx pool while they
 * wait for ACKs, never starve the ACKs. Fault injection (fault=) drops,
 * duplicates or swaps what a lane sends, here, on the way out.
 */
#include "dpdk-internal.h"

static double rnd01(uint64_t *s)
{
	/* xorshift64*: fault injection only needs cheap, seeded noise */
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return (double)((x * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

void tlm__dpdk_put_hdr(uint8_t *h, uint8_t type, uint32_t dst, uint32_t src,
		       uint32_t wnd, uint64_t seq, uint64_t ack, uint8_t flags)
{
	tlm__put16(h, MAGIC);
	h[2] = PROTO_VER;
	h[3] = type;
	tlm__put32(h + 4, dst);
	tlm__put32(h + 8, src);
	tlm__put32(h + 12, wnd);
	tlm__put64(h + 16, seq);
	tlm__put64(h + 24, ack);
	h[32] = flags;
	memset(h + 33, 0, HDR_LEN - 33);
}

/* IPv4 header checksum from the fields we set, without reading the
 * header back: loads of just-stored bytes stall on store forwarding. */
static uint16_t ip_cksum(uint32_t tot, uint32_t src, uint32_t dst)
{
	uint32_t sum = 0x4500 + tot + (64 << 8 | IPPROTO_UDP) + (src >> 16) + (src & 0xffff) +
		       (dst >> 16) + (dst & 0xffff);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Ethernet, IPv4 and UDP headers at b, for plen bytes after our header. */
void tlm__dpdk_put_l2l4(const struct dport *p, uint8_t *b, const struct rte_ether_addr *dmac,
			uint32_t dip, uint16_t sport, uint16_t dport, uint32_t plen)
{
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)b;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);
	uint32_t tot = L2L4_LEN + HDR_LEN + plen;

	if (dmac)
		rte_ether_addr_copy(dmac, &eh->dst_addr);
	else
		memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(tot - sizeof(*eh)));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(p->ip);
	ip->dst_addr = rte_cpu_to_be_32(dip);
	ip->hdr_checksum = rte_cpu_to_be_16(ip_cksum(tot - (uint32_t)sizeof(*eh), p->ip, dip));
	uh->src_port = rte_cpu_to_be_16(sport);
	uh->dst_port = rte_cpu_to_be_16(dport);
	uh->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*uh) + HDR_LEN + plen));
	uh->dgram_cksum = 0;  /* optional in IPv4; Ethernet FCS / memif copy guard the bits */
}

/* A control frame (from the rx pool: data packets may use up the tx pool
 * while they wait for the acks this sends); payload room plen. */
static struct rte_mbuf *mk_pkt(struct dport *p, const struct rte_ether_addr *dmac,
			       uint32_t dip, uint16_t sport, uint16_t dport,
			       uint32_t plen, uint8_t **hdr)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->pool);

	if (!m)
		return NULL;
	uint8_t *b = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(L2L4_LEN + HDR_LEN + plen));
	if (!b) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	tlm__dpdk_put_l2l4(p, b, dmac, dip, sport, dport, plen);
	*hdr = b + L2L4_LEN;
	return m;
}

/* Queue a packet for the next tx_burst: the lane's own queue (its pump
 * holds qmu), the port's shared one (port->lock held), or local delivery. */
static void q_add(struct rte_mbuf **v, unsigned *n, unsigned cap, struct rte_mbuf *m)
{
	if (*n < cap)
		v[(*n)++] = m;
	else
		rte_pktmbuf_free(m);
}

void tlm__dpdk_out_pkt(struct dport *p, struct dlane *l, struct rte_mbuf *m)
{
	if (l && l->local)
		q_add(p->loopq, &p->nloop, RTE_DIM(p->loopq), m);
	else if (l && l->q)
		q_add(l->qtx, &l->nqtx, RTE_DIM(l->qtx), m);
	else
		q_add(p->txq, &p->ntx, RTE_DIM(p->txq), m);
}

void tlm__dpdk_send_ctl(struct dport *p, struct dlane *l, uint8_t type)
{
	uint8_t *h;
	struct rte_mbuf *m = mk_pkt(p, l->mac_known ? &l->peer_mac : NULL, l->peer_ip,
				    l->lport, l->rport, 0, &h);
	uint64_t fill = l->rcv_nxt - l->rcv_rd;
	uint32_t wnd = (uint32_t)(RING_BYTES - fill);

	if (!m)
		return;
	/* SYN: the queue we want the peer to use (memif); SYNACK: the one
	 * granted, 0 for the shared one */
	tlm__dpdk_put_hdr(h, type, l->rid, l->lid, wnd,
		type == PT_SYN || type == PT_SYNACK ? l->qown : l->snd_nxt, l->rcv_nxt, 0);
	l->adv_edge = l->rcv_nxt + wnd;
	l->need_ack = false;
	tlm__dpdk_timers_ack_sent(l);
	l->tx_pkts++;
	tlm__dpdk_out_data(p, l, m);
	if (!l->q && !l->local)
		p->tx_urgent = true;   /* queue 0 (port->lock held): not held back */
}

/* 1: one of our UDP packets, parsed into k; 0: ARP; -1: not for us. */
int tlm__dpdk_parse_pkt(const struct dport *p, struct rte_mbuf *m, bool local, struct pkt *k)
{
	if (m->nb_segs > 1 && rte_pktmbuf_linearize(m))
		return -1;
	uint32_t len = rte_pktmbuf_data_len(m);
	uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)b;

	if (len < sizeof(*eh))
		return -1;
	if (!local && rte_is_same_ether_addr(&eh->src_addr, &p->mac))
		return -1;   /* our own frame seen again (af_packet taps) */
	k->eh = eh;
	if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return len < sizeof(*eh) + sizeof(struct rte_arp_hdr) || p->p2p ? -1 : 0;
	if (eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		return -1;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	if (len < sizeof(*eh) + sizeof(*ip) || ip->version_ihl != RTE_IPV4_VHL_DEF ||
	    ip->next_proto_id != IPPROTO_UDP)
		return -1;
	uint32_t iplen = rte_be_to_cpu_16(ip->total_length);
	if (iplen > len - sizeof(*eh) || iplen < sizeof(*ip) + sizeof(struct rte_udp_hdr) + HDR_LEN)
		return -1;
	if (!p->p2p && rte_be_to_cpu_32(ip->dst_addr) != p->ip)
		return -1;
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);
	uint32_t ulen = rte_be_to_cpu_16(uh->dgram_len);
	if (ulen != iplen - sizeof(*ip))
		return -1;
	uint8_t *h = (uint8_t *)(uh + 1);
	if (tlm__get16(h) != MAGIC || h[2] != PROTO_VER)
		return -1;
	k->type = h[3];
	k->dst = tlm__get32(h + 4);
	k->src = tlm__get32(h + 8);
	k->wnd = tlm__get32(h + 12);
	k->seq = tlm__get64(h + 16);
	k->ack = tlm__get64(h + 24);
	k->flags = h[32];
	k->sip = rte_be_to_cpu_32(ip->src_addr);
	k->sport = rte_be_to_cpu_16(uh->src_port);
	k->dport = rte_be_to_cpu_16(uh->dst_port);
	k->data = h + HDR_LEN;
	k->dlen = ulen - (uint32_t)sizeof(*uh) - HDR_LEN;
	k->m = m;
	return 1;
}

/* Sending side fault injection: drop, duplicate or swap with the next. */
void tlm__dpdk_out_data(struct dport *p, struct dlane *l, struct rte_mbuf *m)
{
	struct fault *f = &l->fault;

	if (f->drop > 0 || f->dup > 0 || f->reorder > 0) {
		if (f->drop > 0 && rnd01(&l->rng) < f->drop) {
			rte_pktmbuf_free(m);
			return;
		}
		if (f->dup > 0 && rnd01(&l->rng) < f->dup) {
			struct rte_mbuf *c = rte_pktmbuf_copy(m, p->pool, 0, UINT32_MAX);
			if (c)
				tlm__dpdk_out_pkt(p, l, c);
		}
		if (!l->held && f->reorder > 0 && rnd01(&l->rng) < f->reorder) {
			l->held = m;
			return;
		}
	}
	tlm__dpdk_out_pkt(p, l, m);
	if (l->held) {
		tlm__dpdk_out_pkt(p, l, l->held);
		l->held = NULL;
	}
}
