/* SPDX-License-Identifier: MIT */
/*
 * Memory sources: what the migration engine migrates. The engine knows
 * nothing of QEMU; it takes regions, a get-and-clear of dirty pages, pause
 * and resume, and an optional device-state blob.
 */
#ifndef TLM_MEMSRC_H
#define TLM_MEMSRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tlm_region {
	void *base;         /* page aligned */
	size_t len;         /* multiple of page_size */
	const char *name;
};

/*
 * get_dirty(): the set of pages of region r written since the previous call
 * returned (or since start_tracking), atomically cleared: ORs one bit per
 * page into bitmap (bit i of word i/64 = page i) and returns how many pages
 * this call reports, or a negative error. Guarantee: every write that completes before
 * the call returns is either in this call's set or in the next call's; no
 * write is ever lost between two calls. A caller that reads the pages of
 * the returned set after the call returns reads content at least as new as
 * the writes reported.
 */
struct tlm_memsrc_ops {
	int (*regions)(void *ctx, const struct tlm_region **out, unsigned *n);
	int (*start_tracking)(void *ctx);
	int (*get_dirty)(void *ctx, unsigned region, uint64_t *bitmap);
	int (*stop_tracking)(void *ctx);
	int (*pause)(void *ctx);   /* returns once no guest write is in flight */
	int (*resume)(void *ctx);
	/* Optional: device state to send in stage 3 (NULL: none). */
	int (*device_state)(void *ctx, const void **buf, size_t *len);
};

struct tlm_memsrc {
	const struct tlm_memsrc_ops *ops;
	void *ctx;
	uint32_t page_size;
};

/* ---- the in-process memory source (core/memsrc-local.c) ---- */

enum tlm_tracker {
	TLM_TRACK_AUTO = 0,      /* pagemap-scan if the kernel has it, else mprotect */
	TLM_TRACK_PAGEMAP_SCAN,  /* userfaultfd WP async + PAGEMAP_SCAN (6.7+) */
	TLM_TRACK_MPROTECT,      /* mprotect + SIGSEGV */
};

struct tlm_local;

/* Allocates n regions of the given sizes (rounded up to pages) with mmap. */
int tlm_local_create(const size_t *sizes, unsigned n, enum tlm_tracker tracker,
		     struct tlm_local **out);
void tlm_local_destroy(struct tlm_local *m);
/* The memory source view of it (valid while m lives). */
struct tlm_memsrc *tlm_local_memsrc(struct tlm_local *m);
/* Which tracker was picked: "pagemap-scan" or "mprotect". */
const char *tlm_local_tracker_name(const struct tlm_local *m);
/* 1 if the running kernel supports the pagemap-scan tracker. */
int tlm_local_pagemap_scan_supported(void);
/* Bytes the tracker itself uses (bitmaps), for reports. */
size_t tlm_local_tracker_bytes(const struct tlm_local *m);

#ifdef __cplusplus
}
#endif
#endif /* TLM_MEMSRC_H */
