/* SPDX-License-Identifier: MIT */
/*
 * ARP, on ports with an address (ip=; point-to-point ports such as memif
 * have none and send to the broadcast MAC). A small cache of the peers'
 * MACs, learned from their ARP packets and from every packet of ours they
 * send; requests for our address are answered; a lane whose peer's MAC is
 * unknown asks for it (at most every SYN_NS, timers.c) and sends nothing
 * else until the answer comes. Runs under port->lock.
 */
#include "dpdk-internal.h"

void tlm__dpdk_arp_learn(struct dport *p, uint32_t ip, const struct rte_ether_addr *mac)
{
	for (unsigned i = 0; i < p->narp; i++)
		if (p->arp[i].ip == ip) {
			rte_ether_addr_copy(mac, &p->arp[i].mac);
			return;
		}
	unsigned i = p->narp < RTE_DIM(p->arp) ? p->narp++ : 0;
	p->arp[i].ip = ip;
	rte_ether_addr_copy(mac, &p->arp[i].mac);
}

static bool arp_lookup(struct dport *p, uint32_t ip, struct rte_ether_addr *mac)
{
	for (unsigned i = 0; i < p->narp; i++)
		if (p->arp[i].ip == ip) {
			rte_ether_addr_copy(&p->arp[i].mac, mac);
			return true;
		}
	return false;
}

static void arp_send(struct dport *p, uint16_t op, uint32_t tip,
		     const struct rte_ether_addr *tmac)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->pool);

	if (!m)
		return;
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m,
			sizeof(*eh) + sizeof(struct rte_arp_hdr));
	if (!eh) {
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);

	if (tmac)
		rte_ether_addr_copy(tmac, &eh->dst_addr);
	else
		memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	a->arp_hlen = RTE_ETHER_ADDR_LEN;
	a->arp_plen = 4;
	a->arp_opcode = rte_cpu_to_be_16(op);
	rte_ether_addr_copy(&p->mac, &a->arp_data.arp_sha);
	a->arp_data.arp_sip = rte_cpu_to_be_32(p->ip);
	if (tmac)
		rte_ether_addr_copy(tmac, &a->arp_data.arp_tha);
	else
		memset(&a->arp_data.arp_tha, 0, sizeof(a->arp_data.arp_tha));
	a->arp_data.arp_tip = rte_cpu_to_be_32(tip);
	tlm__dpdk_out_pkt(p, NULL, m);
}

/* An ARP packet (eh, checked long enough by tlm__dpdk_parse_pkt): learn
 * the sender if it is asking us or answering, and answer a request. */
void tlm__dpdk_arp_input(struct dport *p, const struct rte_ether_hdr *eh)
{
	const struct rte_arp_hdr *a = (const struct rte_arp_hdr *)(eh + 1);
	uint32_t sip = rte_be_to_cpu_32(a->arp_data.arp_sip);
	uint32_t tip = rte_be_to_cpu_32(a->arp_data.arp_tip);

	if (tip != p->ip)
		return;
	tlm__dpdk_arp_learn(p, sip, &a->arp_data.arp_sha);
	if (a->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REQUEST))
		arp_send(p, RTE_ARP_OP_REPLY, sip, &a->arp_data.arp_sha);
}

/* Does lane l know its peer's MAC (or need none)? If not, ask, when the
 * port's ARP retry timer says so. */
bool tlm__dpdk_arp_resolve(struct dport *p, struct dlane *l, uint64_t now)
{
	if (l->mac_known || p->p2p)
		return true;
	if (arp_lookup(p, l->peer_ip, &l->peer_mac)) {
		l->mac_known = true;
		return true;
	}
	if (tlm__dpdk_timers_arp_due(p, now))
		arp_send(p, RTE_ARP_OP_REQUEST, l->peer_ip, NULL);
	return false;
}
