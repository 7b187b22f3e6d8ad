/* SPDX-License-Identifier: MIT */
/*
 * The migration engine: source (CHK thread, epoch tick, PS thread, stage 3)
 * and destination (apply with epoch priority, confirm stage 3).
 *
 * A session for the engine has chk_lanes + ps_lanes data lanes, all in
 * page mode: lanes 1..chk_lanes carry the checkpoint stream, the rest the
 * page saver's. The engine knows nothing of QEMU; it migrates whatever
 * struct tlm_memsrc (memsrc.h) describes.
 */
#ifndef TLM_ENGINE_H
#define TLM_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "tlm.h"
#include "memsrc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Policies: when stage 3 (pause, send the rest) starts. docs/policies.md. */
enum tlm_policy {
	TLM_POLICY_TLM,       /* one CHK pass with PS alongside, then stage 3 */
	TLM_POLICY_PRECOPY,   /* iterate until the rest fits the downtime target */
	TLM_POLICY_STOPCOPY,  /* pause at once, send everything */
	TLM_POLICY_FRS,       /* iterate while re-sending still shrinks the set */
	TLM_POLICY_MP,        /* classify the write pattern, stop early if heavy */
};
/* "tlm", "precopy", "stop-copy", "frs", "mp" -> policy, or -EINVAL. */
int tlm_policy_parse(const char *name);
const char *tlm_policy_name(enum tlm_policy p);

struct tlm_epoch_stat {
	uint32_t epoch;
	uint64_t dirtied;   /* pages the tick found written in this epoch */
	uint64_t sent_ps;   /* pages the page saver sent for it */
};

struct tlm_migrate_stats {
	bool completed;      /* destination confirmed stage 3 */
	bool converged;      /* the policy reached its stop condition itself */
	uint64_t elapsed_ms; /* start to confirmation (stages 1+2+3) */
	uint64_t downtime_ms;/* pause to confirmation (stage 3) */
	uint64_t bytes_chk, bytes_ps;   /* payload bytes on the wire */
	uint64_t pages_chk, pages_ps;   /* page records sent */
	uint64_t pages_zero, pages_xbzrle, pages_final;
	uint64_t iterations; /* precopy-style passes (1 for tlm) */
	uint64_t extra_bytes;/* source memory the engine used (bitmaps, cache) */
	bool zero_copy;      /* pages went straight from the regions (RDMA WRITE) */
	uint64_t register_ms;/* registering the regions on every lane */
	unsigned n_epochs;
	struct tlm_epoch_stat *epochs; /* malloc'ed; tlm_migrate_stats_free() */
	char why[160];       /* why it did not complete, when it did not */
};
void tlm_migrate_stats_free(struct tlm_migrate_stats *st);

struct tlm_migrate_opts {
	enum tlm_policy policy;
	unsigned chk_lanes;      /* default 1 */
	unsigned ps_lanes;       /* default 1 */
	unsigned epoch_ms;       /* default 100 */
	unsigned downtime_ms;    /* precopy target, default 300 */
	unsigned max_iterations; /* precopy cap, default 30 */
	uint64_t xbzrle_cache;   /* bytes; 0 = no delta encoding */
	bool zero_pages;         /* elide zero pages (default on in the CLI) */
	bool copy_pages;         /* never send pages zero-copy, even where the
				  * transport could (zero copy also turns off
				  * zero_pages and xbzrle, which read the page) */
	int timeout_ms;          /* destination confirmation, default 30000 */
	volatile int *abort_flag;/* set non-zero to abort (Ctrl-C) */
	/* Called from the engine's thread about every epoch. */
	void (*progress)(const struct tlm_migrate_stats *st, uint64_t sent_pages,
			 uint64_t total_pages, void *arg);
	void *progress_arg;
};

/* Source side. On success the memory source is left PAUSED (the caller
 * owns what happens next: verify, quit the guest). On any failure it has
 * been resumed (never left paused) and st->why says what happened. A
 * policy that hits its cap without converging returns -TLM_ENOTCONV with
 * st->completed false and the memory source running. */
int tlm_migrate_source(struct tlm_session *s, struct tlm_memsrc *m,
		       const struct tlm_migrate_opts *o, struct tlm_migrate_stats *st);

struct tlm_dest_stats {
	bool completed;
	uint64_t pages_applied, pages_stale; /* stale: lost to a newer epoch */
	uint64_t bytes;
	uint64_t devstate_len;
	uint64_t pages_placed;  /* placed by the transport, not copied by us */
	uint64_t register_ms;   /* offering the regions for zero copy */
	char why[160];
};

/* Destination side: regions[] must match the session's region sizes (the
 * caller allocates them, zero-filled). Returns 0 once stage 3 is confirmed
 * with every lane drained; on any error the regions hold garbage and must
 * be discarded. devstate (optional) receives the device-state blob
 * (malloc'ed, caller frees). */
int tlm_migrate_dest(struct tlm_session *s, const struct tlm_region *regions,
		     unsigned n, void **devstate, size_t *devstate_len,
		     struct tlm_dest_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* TLM_ENGINE_H */
