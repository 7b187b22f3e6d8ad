/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint files (TLC): a checkpoint is a migration whose destination
 * memory is a file. docs/checkpoint.md has the format; core/ckpt.c the
 * writer, the checker and the reader.
 *
 * Writer: tlm_ckpt_begin() prepares PATH.tmp and maps its regions, the
 * engine's destination (tlm_migrate_dest) fills them, tlm_ckpt_commit()
 * computes the digests, writes the header, fsyncs and renames PATH.tmp to
 * PATH. Until that rename PATH is untouched, so a writer that dies at any
 * point leaves the previous checkpoint as it was. When PATH already holds
 * a valid checkpoint of the same layout the new one is incremental: PATH.tmp
 * starts as a copy of it and only the pages whose content changed are
 * written.
 *
 * Reader: tlm_ckpt_open() validates the whole file (header, every page
 * against its digest, the device state) before it hands out anything, and
 * offers it as a memory source for tlm_migrate_source (restore).
 *
 * These declarations stay internal for now: a new public header changes
 * the patched QEMU's cache key (scripts/build-qemu.sh) and QEMU does not
 * need them.
 */
#ifndef TLM_CORE_CKPT_H
#define TLM_CORE_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tlm/tlm.h"
#include "tlm/memsrc.h"

#define TLM_CKPT_VERSION 1

struct tlm_ckpt_layout {
	uint32_t page_size;
	unsigned n;
	uint64_t len[TLM_MAX_REGIONS];
	char name[TLM_MAX_REGIONS][TLM_REGION_NAME_MAX + 1];
};

struct tlm_ckpt_stats {
	bool incremental;        /* PATH held a checkpoint of the same layout */
	uint64_t epoch;          /* 1 for a new file, +1 per checkpoint into it */
	uint64_t pages_total;
	uint64_t pages_written;  /* pages whose content went to the file */
	uint64_t pages_data;     /* non-zero pages in the image */
	uint64_t file_bytes;     /* apparent size */
	uint64_t disk_bytes;     /* blocks allocated (st_blocks x 512) */
	uint64_t copied_bytes;   /* incremental: the previous file copied first */
	bool reflinked;          /* ... by a reflink (no data copied) */
	uint64_t devstate_len;
	double commit_ms;        /* digests, header, fsync, rename */
	char why[200];           /* on failure */
};

struct tlm_ckpt_w;

/* Writer. out: the regions to fill (valid until commit or abort). */
int tlm_ckpt_begin(const char *path, const struct tlm_ckpt_layout *lay,
		   struct tlm_ckpt_w **out, struct tlm_ckpt_stats *st);
void tlm_ckpt_regions(struct tlm_ckpt_w *w, const struct tlm_region **r, unsigned *n);
/* Digests, header, fsync, rename; frees w whatever happens. */
int tlm_ckpt_commit(struct tlm_ckpt_w *w, const void *devstate, size_t devlen,
		    struct tlm_ckpt_stats *st);
/* Drops PATH.tmp; PATH stays as it was. */
void tlm_ckpt_abort(struct tlm_ckpt_w *w);

/* An accepted session's whole migration into PATH: begin with the peer's
 * regions, tlm_migrate_dest, commit (or abort). dest_why gets the engine's
 * reason when the migration itself failed. */
struct tlm_session;
int tlm_ckpt_receive(struct tlm_session *s, const char *path, struct tlm_ckpt_stats *st);

/* What a valid file holds. */
struct tlm_ckpt_info {
	uint32_t version;
	struct tlm_ckpt_layout lay;
	uint64_t epoch;
	uint64_t time_ns;        /* CLOCK_REALTIME at commit */
	uint64_t devstate_len;
	uint64_t file_bytes, disk_bytes;
	uint64_t pages_data;     /* pages stored with data (not holes) */
	uint64_t bad_pages;      /* check: pages whose digest did not match */
	uint64_t first_bad[8];   /* ... their global indexes */
};

/* Validates header, every region's page table digest, every page and the
 * device state (pages: false checks only header and tables). 0 if valid;
 * otherwise -TLM_EVERSION (another format version), -TLM_EFRAME (damaged
 * or truncated), -errno (cannot read), with why saying which and where. */
int tlm_ckpt_check(const char *path, bool pages, struct tlm_ckpt_info *info, char *why,
		   size_t wl);

/* Reader: validates like tlm_ckpt_check(pages = true), then maps it. */
struct tlm_ckpt_r;
int tlm_ckpt_open(const char *path, struct tlm_ckpt_r **out, char *why, size_t wl);
const struct tlm_ckpt_info *tlm_ckpt_r_info(const struct tlm_ckpt_r *r);
void tlm_ckpt_r_regions(const struct tlm_ckpt_r *r, const struct tlm_region **reg,
			unsigned *n);
/* The file as a memory source that never changes (nothing to track; pause
 * and resume do nothing) and hands out the stored device state. */
struct tlm_memsrc *tlm_ckpt_memsrc(struct tlm_ckpt_r *r);
void tlm_ckpt_close(struct tlm_ckpt_r *r);

#endif /* TLM_CORE_CKPT_H */
