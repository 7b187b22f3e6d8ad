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

/*
 * Stage 3 step by step, in milliseconds on the source's clock. The steps
 * follow one another, so pause_ms + chk_ms + sync_ms + ps_ms + last_ms +
 * devstate_ms + wait_ms is the downtime. The destination's part (its
 * backlog and drain) is measured on its clock from the moment it learnt of
 * the pause. docs/downtime.md explains each figure and the model.
 */
struct tlm_stage3_stats {
	double pause_ms;        /* stopping the memory source */
	double chk_ms;          /* stop-copy: the whole checkpoint pass */
	double sync_ms;         /* the final get-and-clear of the dirty set */
	uint64_t dirty_pages;   /* pages it found written */
	uint64_t ps_pages, ps_bytes; /* the last page-saver round */
	double ps_ms;           /* ... reading and handing them to the lanes */
	double last_ms;         /* the LAST record on every data lane */
	double devstate_ms;     /* device state fetched, STAGE3 and it sent */
	double wait_ms;         /* STAGE3 sent until COMMIT came back */
	double downtime_ms;     /* the downtime itself, to the microsecond */
	/* Destination: records (and their payload bytes) the source had sent
	 * but the destination had not applied when it learnt of the pause. */
	uint64_t backlog_records, backlog_bytes;
	uint64_t lane_backlog_records[TLM_MAX_LANES]; /* per data lane, [1..n] */
	double lane_drain_ms[TLM_MAX_LANES]; /* pause until the lane's last
					      * record was applied (0: before) */
	double dest_commit_ms;  /* pause until the destination sent COMMIT */
	/* The downtime model: predicted = final dirty bytes / bandwidth_Bps
	 * + fixed_ms, from figures measured before the pause. */
	double bandwidth_Bps;   /* the data lanes, end to end, before the pause */
	double fixed_ms;        /* the last tick's cost + a control round trip */
	double predicted_ms;
	double write_rate_pps;  /* pages the guest dirtied per second, lately */
	bool lanes_keep_up;     /* write_rate x page size below bandwidth */
	unsigned tail_rounds;   /* tlm: short page-saver rounds after CHK */
	double tail_ms;         /* ... and their time (not downtime) */
};

struct tlm_migrate_stats {
	bool completed;      /* destination confirmed stage 3 */
	bool converged;      /* the policy reached its stop condition itself */
	uint64_t elapsed_ms; /* start to confirmation (stages 1+2+3) */
	uint64_t downtime_ms;/* pause to confirmation (stage 3) */
	uint64_t bytes_chk, bytes_ps;   /* payload bytes on the wire */
	uint64_t pages_chk, pages_ps;   /* page records sent */
	uint64_t pages_zero, pages_xbzrle;
	uint64_t iterations; /* precopy-style passes (1 for tlm) */
	uint64_t extra_bytes;/* source memory the engine used (bitmaps, cache) */
	bool zero_copy;      /* pages went straight from the regions (RDMA WRITE) */
	uint64_t register_ms;/* registering the regions on every lane */
	unsigned n_epochs;
	struct tlm_epoch_stat *epochs; /* malloc'ed; tlm_migrate_stats_free() */
	char why[160];       /* why it did not complete, when it did not */
	struct tlm_stage3_stats stage3; /* where the downtime went */
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
	int timeout_ms;          /* waits on the destination (answers,
				  * confirmation); 0 = 30000 */
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
	uint64_t pages_zero_kept; /* zero records for pages already zero:
				   * left untouched (never faulted in) */
	uint64_t backlog_records; /* sent but not applied at the pause */
	double drain_ms;        /* pause until every lane's last record was applied */
	uint64_t pages_placed_encrypted; /* of pages_placed: sealed through the
				  * transport's staging buffers and opened
				  * into place (--protect encrypt, RDMA) */
};

/* Destination side: regions[] must match the session's region sizes (the
 * caller allocates them, zero-filled). A page the source sends as zeros is
 * only read, never written, while it still reads zero: memory the guest
 * never wrote stays unallocated (an anonymous mapping, or guest RAM, is
 * zero where untouched). Returns 0 once stage 3 is confirmed
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
