/* SPDX-License-Identifier: MIT */
/*
 * Zero copy. A TLM_PF_LIVE record (region registered TLM_REG_SRC) goes
 * by reference where the lane's link guards the bytes by itself (zc_tx:
 * memif's shared memory by default, any port with zc=on): its packet is a
 * chain, the headers in one mbuf, then mbufs attached to the page
 * (rte_pktmbuf_attach_extbuf, ZC_SEGS at most), so the PMD's copy or DMA
 * is the only pass over the page. The record carries NOSUM and crc 0: a
 * crc summed before the PMD reads live memory would fail whenever the
 * page is written meanwhile. The page is read when the packet goes out,
 * and again if it is re-sent, so it may arrive as a mix of old and new
 * words (the dirty log sends it again, as on RDMA); the receiver accepts
 * NOSUM only when its own link is trusted alike (zc_rx), and fails the
 * lane otherwise.
 *
 * Page data keeps its 16-byte alignment in the frame (HDR_LEN 38 puts the
 * record header and each packet's data on 16, and zero-copy chunks are
 * multiples of 16): the PMD's copy of a misaligned source runs the slow
 * shifted path, which made zero copy slower than copying. Devices that
 * DMA (not vdevs) need the region registered (rte_extmem_register) and
 * mapped (rte_dev_dma_map) once per process; where that fails the pages
 * are copied. The region must outlive the packets that point into it:
 * unregister_regions waits for their ACKs (or fails the lane and drops
 * them).
 *
 * Everything else, and LIVE pages with zc=off, is copied once from the
 * caller's memory into the packets (no intermediate ring), a LIVE page's
 * crc summed over the copy as it is made (tlm__crc32c_copy), so what is
 * summed is what is sent. The receiver sums the crc while it gathers a record that
 * spans packets. TLM_REG_DST is refused: the receiver copies out of its
 * ring.
 *
 * Light packets: a packet whose page data is one range after its headers
 * (every packet at mtu 1500 and 4200) is kept as its header mbuf plus the
 * range, and gets its page segment only when it goes out
 * (tlm__dpdk_zc_chain).
 */
#include "dpdk-internal.h"

/* Light zero-copy packets. A packet whose page data is one range of a
 * LIVE page after its headers is kept as the header mbuf alone plus the
 * range (txp.za, zl); each time it goes out, a fresh segment is attached
 * to the range and chained (tlm__dpdk_zc_chain). Only the header mbuf carries our
 * reference, so the PMD frees the segment once it has sent it, and the
 * next packet's segment comes back from the mempool cache instead of
 * one freed a window of packets ago. While the PMD still holds the last
 * send (a NIC not done with it), the re-send is a flat copy. */
struct rte_mbuf *tlm__dpdk_zc_chain(struct dport *p, const struct txp *t)
{
	struct rte_mbuf *h = t->m, *e;

	if (rte_mbuf_refcnt_read(h) == 1 && (e = rte_pktmbuf_alloc(p->zcpool))) {
		tlm__dpdk_zc_attach(p, e, t->za, t->zl);
		h->next = e;
		h->nb_segs = 2;
		rte_mbuf_refcnt_update(h, 1);   /* the header mbuf's only */
		return h;
	}
	struct rte_mbuf *c = rte_pktmbuf_alloc(p->txpool);
	if (!c)
		return NULL;
	uint8_t *d = rte_pktmbuf_mtod(c, uint8_t *);
	memcpy(d, rte_pktmbuf_mtod(h, const uint8_t *), h->data_len);
	memcpy(d + h->data_len, t->za, t->zl);
	c->data_len = (uint16_t)(h->data_len + t->zl);
	c->pkt_len = c->data_len;
	return c;
}

/* Ready to free a kept packet with rte_pktmbuf_free? A light one's header
 * mbuf only once the PMD has let go of it (its next then points at a
 * segment the PMD freed): cut it off; else drop just our reference. */
bool tlm__dpdk_txp_headonly(struct txp *t)
{
	struct rte_mbuf *h = t->m;

	if (!t->zl)
		return true;
	if (rte_mbuf_refcnt_read(h) == 1) {
		h->next = NULL;
		h->nb_segs = 1;
		return true;
	}
	rte_mbuf_refcnt_update(h, -1);
	return false;
}

void tlm__dpdk_zc_attach(struct dport *p, struct rte_mbuf *m, const uint8_t *a, uint32_t n)
{
	tlm__extbuf_attach(m, a, (uint16_t)n, &p->zc_shinfo, p->iova_va);
}

/* Regions sent zero-copy, process-wide, for ports whose device reads
 * memory itself (DMA): registered with the EAL as external memory and
 * mapped for the device once, however many lanes send from them. Ports
 * whose PMD copies by virtual address (memif, af_packet) need neither.
 * Under tlm__dpdk_lock. */
static struct zc_map {
	void *base;
	size_t len;
	uint16_t port_id;
	unsigned refs;
} g_zc[64];

static int zc_map(const struct dport *p, void *base, size_t len)
{
	struct rte_eth_dev_info info;
	struct zc_map *e = NULL;
	int r;

	for (unsigned i = 0; i < RTE_DIM(g_zc); i++) {
		if (g_zc[i].refs && g_zc[i].base == base && g_zc[i].len == len &&
		    g_zc[i].port_id == p->port_id) {
			g_zc[i].refs++;
			return 0;
		}
		if (!g_zc[i].refs && !e)
			e = &g_zc[i];
	}
	if (!e || !p->iova_va)
		return -ENOSPC;
	r = rte_extmem_register(base, len, NULL, 0, (size_t)sysconf(_SC_PAGESIZE));
	if (r && rte_errno != EEXIST)
		return -rte_errno;
	r = rte_eth_dev_info_get(p->port_id, &info);
	if (!r)
		r = rte_dev_dma_map(info.device, base, (uint64_t)(uintptr_t)base, len);
	if (r) {
		rte_extmem_unregister(base, len);
		return r < 0 ? r : -EIO;
	}
	*e = (struct zc_map){ .base = base, .len = len, .port_id = p->port_id, .refs = 1 };
	return 0;
}

static void zc_unmap(const struct dport *p, void *base, size_t len)
{
	struct rte_eth_dev_info info;

	for (unsigned i = 0; i < RTE_DIM(g_zc); i++) {
		struct zc_map *e = &g_zc[i];
		if (!e->refs || e->base != base || e->len != len || e->port_id != p->port_id)
			continue;
		if (--e->refs)
			return;
		if (rte_eth_dev_info_get(p->port_id, &info) == 0)
			rte_dev_dma_unmap(info.device, base, (uint64_t)(uintptr_t)base, len);
		rte_extmem_unregister(base, len);
		return;
	}
}

/* Zero copy. Sending, a LIVE record of a region registered TLM_REG_SRC
 * goes by reference where the lane's link guards the bytes (zc_tx): its
 * packets point into the region until acked (wr_ext), so the region must
 * outlive them (tlm__dpdk_unregister_regions waits). Otherwise it is copied into
 * its packets once, its crc summed from that copy, inside send_pages.
 * Receiving, we copy out of our ring: nothing to offer. */
int tlm__dpdk_register_region(struct tlm_lane *tl, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	struct dport *p = l->port;

	(void)timeout_ms;
	if (how != TLM_REG_SRC)
		return -EOPNOTSUPP;
	if (region >= 32 || !base || !len)
		return -EINVAL;
	pthread_mutex_lock(&l->wmu);
	if (l->src_regions & (1u << region)) {
		pthread_mutex_unlock(&l->wmu);
		return 0;
	}
	l->src_regions |= 1u << region;
	if (l->zc_tx && !l->local) {
		int r = 0;
		if (p->dma) {
			pthread_mutex_lock(&tlm__dpdk_lock);
			r = zc_map(p, base, len);
			pthread_mutex_unlock(&tlm__dpdk_lock);
			if (r)
				tlm__dbg("dpdk: region %u not mapped for %s (%d): its pages are copied",
					 region, p->name, r);
		}
		if (!r) {
			l->zc_regions |= 1u << region;
			l->zc_base[region] = base;
			l->zc_len[region] = len;
		}
	}
	pthread_mutex_unlock(&l->wmu);
	return 0;
}

/* Packets that point into the regions are gone: acked, or (the lane
 * failing) dropped; re-sends queued for the PMD sent or dropped; the PMD
 * has let go of them too. */
static void zc_drain(struct dlane *l)
{
	struct dport *p = l->port;
	uint64_t end = deadline_ns(l->dead_ms);
	struct waiter w = { 0 };

	pthread_mutex_lock(&l->mu);
	while (l->snd_una < l->snd_end && l->state == LS_EST &&
	       tlm__dpdk_lane_wait(l, &w, end) != ETIMEDOUT) {
	}
	tlm__dpdk_wait_done(l, &w);
	if (l->snd_una < l->snd_end) {
		tlm__dpdk_lane_fail(l, TLM_LOG_ERR, -ETIMEDOUT,
			  "zero-copy pages still unacked when their region was unregistered");
		while (l->sq_head != l->sq_tail) {
			struct txp *t = &l->sq[l->sq_head++ % SQ_SLOTS];
			if (tlm__dpdk_txp_headonly(t))
				rte_pktmbuf_free(t->m);
		}
		l->sq_next = l->sq_head;
	}
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_lock(&l->qmu);
	if (l->nqtx)
		rte_pktmbuf_free_bulk(l->qtx, l->nqtx);
	l->nqtx = 0;
	if (p->dma)
		rte_eth_tx_done_cleanup(p->port_id, l->q, 0);
	pthread_mutex_unlock(&l->qmu);
	if (!l->q) {
		/* ours may wait among the other lanes' on the shared queue */
		tlm__dpdk_lock_port(p);
		for (int tries = 0; p->ntx && tries < 100; tries++)
			tlm__dpdk_flush_tx(p);
		pthread_mutex_unlock(&p->lock);
	}
}

void tlm__dpdk_unregister_regions(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;

	pthread_mutex_lock(&l->wmu);
	if (l->zc_regions) {
		zc_drain(l);
		pthread_mutex_lock(&tlm__dpdk_lock);
		for (unsigned i = 0; i < 32; i++)
			if ((l->zc_regions & (1u << i)) && l->port->dma)
				zc_unmap(l->port, l->zc_base[i], l->zc_len[i]);
		pthread_mutex_unlock(&tlm__dpdk_lock);
	}
	if (l->src_regions)
		tlm__dbg("dpdk: lane %x: LIVE records sent zero-copy %llu, copied %llu", l->lid,
			 (unsigned long long)l->live_zc, (unsigned long long)l->live_copied);
	l->src_regions = 0;
	l->zc_regions = 0;
	pthread_mutex_unlock(&l->wmu);
}
