/* SPDX-License-Identifier: MIT */
/* Frames that point into pages they do not own (rte_pktmbuf_attach_extbuf),
 * for the lanes' zero-copy sends (dpdk.c) and the raw blast's one-pass
 * sender (bench/lib/raw-dpdk.c). Internal; needs DPDK's headers. */
#ifndef TLM_DPDK_EXTBUF_H
#define TLM_DPDK_EXTBUF_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_mbuf.h>

/* Letting go of a segment frees nothing; the count goes back to 1. */
static inline void tlm__extbuf_no_free(void *addr, void *opaque)
{
	(void)addr;
	rte_mbuf_ext_refcnt_set((struct rte_mbuf_ext_shared_info *)opaque, 1);
}

/* Shared info for segments that point into memory their owner keeps.
 * Freeing such a segment takes DPDK's count from 1 to 0 without an atomic
 * and calls free_cb, which puts it back to 1: so it stays 1, and no free
 * takes the atomic path (a count left at 0 made every later free a locked
 * add, which waits for the PMD's copy of the frame to drain from the
 * store buffer). The value itself never matters, as nothing is freed:
 * two threads racing on it at worst send one free down the atomic path. */
static inline void tlm__extbuf_shinfo_init(struct rte_mbuf_ext_shared_info *sh)
{
	sh->free_cb = tlm__extbuf_no_free;
	sh->fcb_opaque = sh;
	rte_mbuf_ext_refcnt_set(sh, 1);
}

/* m, a data-less mbuf, becomes a segment of the n bytes at a, which the
 * PMD reads in place (iova_va: the IOVA is the address, for DMA). */
static inline void tlm__extbuf_attach(struct rte_mbuf *m, const void *a, uint16_t n,
				      struct rte_mbuf_ext_shared_info *sh, bool iova_va)
{
	rte_pktmbuf_attach_extbuf(m, (void *)(uintptr_t)a,
				  iova_va ? (rte_iova_t)(uintptr_t)a : RTE_BAD_IOVA, n, sh);
	m->data_len = n;
	m->pkt_len = n;
}

#endif
