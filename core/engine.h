/* SPDX-License-Identifier: MIT */
/*
 * Engine internals shared by engine-src.c, chk.c, pagesaver.c, epoch.c,
 * precopy.c, src-ctl.c, batch.c, apply.c, keepalive.c,
 * policy.c and xbzrle.c.
 *
 * Why the destination ends with the source's memory at the pause:
 *
 * Every record carries a key = 2 * epoch + (1 if sent by the page saver);
 * the destination applies a record only if its key is >= the page's key.
 * A page's page-saver records all go on one lane (chosen by the page's
 * bitmap word), so among them arrival order is read order, and their
 * epochs never decrease. CHK reads the epoch BEFORE it claims a chunk by
 * advancing the cursor `chk_next`, and the page saver sends page p only
 * once it has seen the cursor pass p, reading the epoch after that: so a
 * CHK record never outranks a page-saver record of the same page, and the
 * destination's copy of a page, once the page saver has sent it, changes
 * only by later page-saver records on that one lane (which is what lets
 * XBZRLE encode against the last copy sent on the lane).
 *
 * Why the highest-key record holds the content at the pause: take the last
 * write W to page p before the pause. If CHK's claim of p came after W,
 * CHK's copy has W. The tick after W (at the latest, stage 3's) puts p in
 * a dirty set; when the page saver looks at that set:
 *  - p >= chk_next: CHK has not claimed p, so it reads p after W, and the
 *    page saver never sent p before (the cursor only grows): CHK's record
 *    is the only one, and final;
 *  - p < chk_next: the page saver reads p now, after W, and its record
 *    outranks CHK's and every earlier page-saver record of p.
 * Stage 3's tick and round come after the pause, so nothing escapes.
 *
 * Zero copy (`live`: pages go by RDMA WRITE straight from the regions into
 * the destination's): the destination cannot arbitrate by key any more,
 * since the data lands before it sees the record, so the source keeps a
 * page from being in flight on two lanes at once. Reads move to the moment
 * the transport reads the page, which is after the record was stamped, so
 * every "reads p after W" above still holds. CHK threads publish
 * `inflight`, the first page of their oldest chunk whose writes may not
 * have completed (set BEFORE the claim that makes it visible through
 * chk_next); the page saver sends p only below chk_done = min(chk_next,
 * every inflight), keeps pages in [chk_done, chk_next) pending for a later
 * round, and drops those >= chk_next as before. CHK never touches a page
 * below chk_next again, and a page's page-saver writes all go on one queue
 * pair, in order: so no two writes of a page ever overlap, and the last
 * one written is the last one read. Stage 3 runs after every CHK thread
 * waited for its writes, so its round sends everything.
 */
#ifndef TLM_CORE_ENGINE_H
#define TLM_CORE_ENGINE_H

#include <pthread.h>
#include <string.h>

#include "keepalive.h"
#include "tlm-internal.h"
#include "tlm/engine.h"

#define TLM_BURST 128            /* pages per send_pages call */
#define TLM_CHUNK 256            /* pages CHK claims at a time */
#define TLM_CHK_DEPTH 2          /* zero copy: chunks a CHK thread has in flight */
#define TLM_CHK_WINDOW 16384     /* records a CHK lane may be ahead of the
				  * destination's apply, twice over at most */

/* Control messages: TLM_CM_* and their codecs in wire.h. */

struct tlm_xbz_cache;

/* One region as the source engine sees it. */
struct src_region {
	uint8_t *base;
	uint64_t pages;
	uint64_t words;           /* bitmap words */
	uint64_t *pending;        /* dirty, not yet sent by PS (atomics) */
	uint64_t *fresh;          /* scratch for get_dirty (tick thread only) */
};

struct src {
	struct tlm_session *s;
	struct tlm_memsrc *m;
	struct tlm_migrate_opts o;
	struct tlm_migrate_stats *st;
	uint32_t page_size;
	unsigned n_regions;
	struct src_region r[TLM_MAX_REGIONS];
	uint64_t total_pages;

	/* CHK: chunks are claimed in order; chk_next is (region << 48 | page)
	 * of the first page no CHK thread has started reading. */
	uint64_t chk_next;
	uint64_t chk_sent;        /* pages CHK has handed to lanes */
	struct chk_arg *chk;      /* the CHK threads (their `inflight`) */
	bool live;                /* zero copy: records point into the regions */

	/* epochs */
	uint32_t epoch;           /* current epoch (atomic) */
	pthread_mutex_t lock;     /* epochs[], round counters */
	pthread_mutex_t ctrl;     /* a request and its answer on the control lane,
				   * or the keepalive thread reading it */
	struct tlm__ka ka;        /* the control lane's keepalive (keepalive.c) */
	pthread_cond_t cond;
	uint64_t round;           /* PS rounds started (a round per tick) */
	bool tick_stop;           /* the epoch tick thread leaves */
	pthread_t tick;           /* the epoch tick thread (tlm), while tick_on */
	bool tick_on;
	struct ps_arg *ps;        /* the PS threads */
	bool stop;                /* threads: finish up */
	int err;                  /* first error of any thread */
	unsigned ps_busy;         /* PS threads inside a round */
	bool ps_cut;              /* PS threads: end the round after this word,
				   * leaving the rest pending (atomic) */
	unsigned n_epochs, cap_epochs;

	uint64_t lane_records[TLM_MAX_LANES]; /* records sent per data lane */
	uint64_t lane_bytes[TLM_MAX_LANES];
	struct tlm_xbz_cache *xbz[TLM_MAX_LANES];
	bool paused;
	bool tracking;             /* dirty tracking on (not for stop-copy) */

	/* For the downtime model (tlm__downtime_model), all before the pause. */
	double bw_Bps;             /* data lanes, end to end (sent to applied) */
	double tick_ms;            /* cost of the last tick */
	double rtt_ms;             /* control round trip, destination's wait excluded */
	double rate_pps;           /* pages found dirty per second, last tick */
	uint64_t t_tick_ns;        /* when the last tick started */
	uint64_t t_pass_ns;        /* when the CHK pass started */
	uint64_t t_step_ns;        /* paused: when the last stage-3 step ended */
	uint64_t ps_ns, ps_bytes;  /* PS threads: time inside rounds, bytes sent
				    * in them (atomics) */
};

/* apply.c APIs: tlm_migrate_dest with flags. TLM__DEST_ZEROED: the regions
 * are all zero at the start and nothing but this call writes them (a new
 * checkpoint file, core/ckpt.c), so a zero page it never wrote is left
 * alone without being read. */
#define TLM__DEST_ZEROED 1u
int tlm__migrate_dest(struct tlm_session *s, const struct tlm_region *regions, unsigned n,
		      unsigned flags, void **devstate, size_t *devstate_len,
		      struct tlm_dest_stats *st);

/* An all-zero page? Whole cache lines at a time; n is a multiple of 64.
 * p may be unaligned (page data inside a transport's receive buffer), so
 * the words are loaded with memcpy, which compiles to plain loads. */
static inline bool tlm__page_zero(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i += 64) {
		uint64_t w[8];

		memcpy(w, p + i, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			return false;
	}
	return true;
}

/* How long the engine waits on the destination (an answer, a window of
 * records applied, a region registered): tlm_migrate_opts.timeout_ms, or
 * TLM_ENGINE_TIMEOUT_MS. Longer than a session step's default
 * (TLM_DEFAULT_TIMEOUT_MS): the destination may be draining every lane. */
#define TLM_ENGINE_TIMEOUT_MS 30000

static inline int tlm__engine_timeout(const struct src *e)
{
	return e->o.timeout_ms > 0 ? e->o.timeout_ms : TLM_ENGINE_TIMEOUT_MS;
}

static inline unsigned tlm__n_data(const struct src *e)
{
	return e->o.chk_lanes + e->o.ps_lanes;
}

static inline double tlm__ms_since(uint64_t t0_ns)
{
	return (double)(tlm__now_ns() - t0_ns) / 1e6;
}

/* Zero copy where every data lane can do it (mixing would let a copied CHK
 * record land over a newer placed one). Registration pins the regions, so
 * it comes before dirty tracking starts: pinning touches every page. */
static inline bool tlm__want_live(const struct src *e)
{
	return !e->o.copy_pages && !e->o.xbzrle_cache;
}

static inline uint64_t src_pos(unsigned region, uint64_t page)
{
	return (uint64_t)region << 48 | page;
}

/* The source's files, from the top (each calls only files below it):
 *   engine-src.c  the stage machine
 *   chk.c, pagesaver.c, epoch.c, precopy.c   CHK, PS, the tick, the rounds
 *                 after the pass (precopy.c and PS use the tick's APIs;
 *                 PS asks CHK how far it wrote, tlm__chk_done)
 *   batch.c       page records in bursts onto the lanes
 *   src-ctl.c     the control lane and the engine's failure
 */

/* src-ctl.c APIs: */
/* Records the first error (err, or -EIO for 0) with its reason in
 * st->why and stops every thread. */
void tlm__src_fail(struct src *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* True once the engine is stopping (a failure, or abort_flag). */
bool tlm__src_stopping(struct src *e);
/* The destination has been silent for ms on the control lane: fail e
 * saying so (what, then the time and the timeout), and abort every lane so
 * that no thread waits on in a send the destination never takes. */
void tlm__src_silent(struct src *e, const char *what, uint64_t ms);
/* Flow control: returns once the destination has applied `records` on
 * data lane `lane` (SYNC). Any thread, while it alone sends on that lane. */
int tlm__sync_lane(struct src *e, unsigned lane, uint64_t records);
/* SYNC: returns once the destination has applied every record sent so far
 * on every data lane. Only while no CHK or PS thread is sending. Measures
 * the control round trip for the downtime model. */
int tlm__sync_dest(struct src *e);
int tlm__send_start(struct src *e);
/* PAUSED: what each lane had carried when the source paused. */
int tlm__send_paused(struct src *e);
/* STAGE3 with every lane's record count, then the device state. On
 * success it returns holding e->ctrl, for tlm__wait_commit. */
int tlm__send_stage3(struct src *e, const void *dev, size_t devlen);
/* Waits for COMMIT and keeps the destination's stage-3 accounting;
 * releases e->ctrl. */
int tlm__wait_commit(struct src *e);
/* The control lane's keepalive thread (e->ka, initialised by the caller),
 * which also reads the lane between exchanges and fails e once the
 * destination has been silent for the engine's timeout. */
int tlm__src_ka_start(struct src *e);
void tlm__send_abort(struct src *e);
/* After a failure because the destination closed a data lane: its FAIL on
 * the control lane, if one comes within a few seconds, says why (a page
 * it refused, say) and becomes the migration's error. Threads stopped,
 * keepalives stopped. */
void tlm__src_dest_reason(struct src *e);

/* precopy.c APIs: */
/* tlm, once CHK is done: the tail rounds. */
int tlm__tail(struct src *e);
/* precopy, frs, mp: iterate on the PS lanes after the CHK pass; *stop_now
 * when the policy says pause now, -TLM_ENOTCONV when it gives up. */
int tlm__iterate(struct src *e, uint64_t t_start, bool *stop_now);

/* batch.c APIs: */
/* Snapshot, encode and send pages of one region on one lane. */
struct send_batch {
	struct tlm_page_rec recs[TLM_BURST];
	uint8_t *buf;             /* TLM_BURST pages of staging */
	uint8_t *enc;             /* TLM_BURST pages for XBZRLE output */
	unsigned n;
	unsigned lane;
	uint16_t flags;
};
int tlm__batch_init(struct send_batch *b, struct src *e, unsigned lane, uint16_t flags);
void tlm__batch_free(struct send_batch *b);
int tlm__batch_add(struct src *e, struct send_batch *b, unsigned region, uint64_t page,
		   uint32_t epoch);
int tlm__batch_flush(struct src *e, struct send_batch *b);

/* chk.c APIs: */
void *tlm__chk_thread(void *arg);      /* arg: struct chk_arg */
struct chk_arg {
	struct src *e;
	unsigned lane;
	pthread_t t;
	uint64_t inflight;   /* zero copy: see above; UINT64_MAX = none (atomic) */
	uint64_t mark;       /* flow control: records sent at the last window */
};
/* Zero copy: the first position whose CHK write may not have completed. */
uint64_t tlm__chk_done(struct src *e, uint64_t *chk_next);

/* pagesaver.c APIs: */
struct ps_arg { struct src *e; unsigned lane; unsigned k; pthread_t t; uint64_t done_round; bool running; };
void *tlm__ps_thread(void *arg);
/* Run one page-saver round on every PS thread and wait for it. */
int tlm__ps_round(struct src *e);
/* Cut the round under way short (what it has not sent stays pending) and
 * wait until every PS thread is idle. */
int tlm__ps_cut(struct src *e);

/* epoch.c APIs: */
/* The epoch tick: get-and-clear every region's dirty set into pending.
 * Returns pages found dirty, or a negative error. */
int64_t tlm__epoch_tick(struct src *e);
void *tlm__tick_thread(void *arg);   /* arg: struct src; tlm policy */
/* Books dirtied pages and pages the PS sent to an epoch's stats. */
void tlm__epoch_account(struct src *e, uint32_t epoch, uint64_t dirtied, uint64_t sent);

/* xbzrle.c APIs: delta encoding of re-sent pages against the last copy
 * sent on the same lane. The encoded form starts with the crc32c of the
 * base page so the destination refuses a delta against the wrong base. */
struct tlm_xbz_cache *tlm__xbz_create(uint64_t bytes, uint32_t page_size);
void tlm__xbz_destroy(struct tlm_xbz_cache *c);
size_t tlm__xbz_bytes(const struct tlm_xbz_cache *c);
/* Encodes cur against the cached copy of key into out (page_size bytes
 * room). Returns encoded length, or 0 when a plain page is better (no
 * cached copy, or the delta is too large). Always caches cur for key. */
uint32_t tlm__xbz_encode(struct tlm_xbz_cache *c, uint64_t key, const uint8_t *cur,
			 uint8_t *out);
/* Applies an encoded delta to page (page_size bytes) in place. */
int tlm__xbz_decode(const uint8_t *enc, uint32_t len, uint8_t *page, uint32_t page_size);

/* policy.c APIs: decide after a precopy-style iteration whether to enter
 * stage 3. dirty: pages dirty now; prev: dirty set size of the previous
 * iteration; overlap: pages dirty in both; bw: bytes/s measured. */
struct iter_info {
	uint64_t iteration, dirty, prev_dirty, overlap, sent_bytes;
	double bw_Bps, dirty_rate_pps;
	double fixed_ms;     /* stage 3's fixed costs (tick, round trip) */
	uint32_t page_size;
};
enum { POL_CONTINUE, POL_STOP_CONVERGED, POL_STOP_HEURISTIC, POL_GIVE_UP };
int tlm__policy_decide(const struct tlm_migrate_opts *o, const struct iter_info *it);
/* The downtime model: ms to send pages over lanes carrying bw_Bps end to
 * end, plus stage 3's fixed costs. HUGE_VAL when bw_Bps is unknown. */
double tlm__downtime_model(uint64_t pages, uint32_t page_size, double bw_Bps, double fixed_ms);

#endif /* TLM_CORE_ENGINE_H */
