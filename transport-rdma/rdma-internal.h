/* SPDX-License-Identifier: MIT */
/*
 * What the RDMA lanes' files share: constants, the lane, and each file's
 * entry points, grouped by the file that implements them (rdma.c says
 * which file holds what). Names: tlm__rdma_ across files, file statics
 * unprefixed; the static inline helpers below are everyone's.
 */
#ifndef TLM_RDMA_INTERNAL_H
#define TLM_RDMA_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "tlm-internal.h"
#include "stream.h"

extern const struct tlm_lane_ops tlm__rdma_ops;

#define SLOT_SIZE      (64u * 1024)       /* bytes per message */
#define NSLOT_DEFAULT  16                 /* send slots; receives = +1 */
#define NSLOT_MAX      1024
/* Staged placement (encrypt lanes, regions.c): staging memory per lane and
 * side, in KiB; one slot per page. */
#define STAGE_KIB_DEFAULT 2048
#define STAGE_KIB_MIN     64
#define STAGE_KIB_MAX     (1024 * 1024)
#define RBUF_SIZE      (1024u * 1024)     /* reassembly buffer per lane */
#define WAIT_SLICE_MS  50
#define CLOSE_DRAIN_MS TLM_DEFAULT_TIMEOUT_MS /* close() waits this long for acks */
#define RX_FILLS_MAX   32
/* Local ACK timeout, 4.096 us * 2^N: 18 = about 1 s, so a busy peer (a
 * Soft-RoCE one in a TCG VM acks late) is not taken for a lost packet
 * seven times in a row, which would kill the QP. */
#define ACK_TIMEOUT_DEFAULT 18
/* A send whose peer takes nothing for this long fails (send_timeout=MS;
 * tcp's default, transport-tcp/tcp.c). */
#define SEND_TIMEOUT_DEFAULT 30000
#define SEND_TIMEOUT_MAX 86400000

_Static_assert(RBUF_SIZE >= TLM_FRAME_HDR + TLM_MAX_FRAME + SLOT_SIZE,
	       "reassembly buffer must hold the largest frame plus a message");

/* wr_id: kind in the top bits; receives: the slot in the rest; send
 * queue requests: the slot << WR_SLOT_SHIFT and their post number (which
 * a completion retires up to: send completions come in order). */
#define WR_WRITE  (0ull << 62)
#define WR_RECV   (1ull << 62)
#define WR_DATA   (2ull << 62)
#define WR_CREDIT (3ull << 62)
#define WR_KIND   (3ull << 62)
#define WR_SLOT_SHIFT 40
#define WR_SEQ    ((1ull << WR_SLOT_SHIFT) - 1)

#define WRITE_DEPTH  256   /* RDMA WRITEs in flight per lane */
#define WRITE_SIGNAL 16    /* signal every Nth WRITE */
#define WRITE_CHAIN  32    /* WRITEs posted with one ibv_post_send */

struct rdma_opts {
	char dev[64];      /* "" = any device */
	int gid;           /* -1 = any GID index */
	unsigned nslot;
	uint8_t ack_timeout;
	unsigned tamper;   /* tests: flip a byte of the N-th placed page checked
			    * (integrity) or staged page opened (encrypt) */
	unsigned stage_kib; /* staging memory per lane and side (encrypt) */
	int send_timeout;  /* ms; 0 = never (send.c, tx_wait) */
};

struct rdma_listener {
	struct tlm_xlistener base;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct rdma_opts opts;
};

struct rdma_lane {
	struct tlm_lane base;
	struct rdma_opts opts;
	pthread_mutex_t mu;

	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	bool qp_made;
	struct ibv_mr *mr;
	uint8_t *mem;              /* nrecv receive slots, then nslot send slots */
	unsigned nslot, nrecv;     /* ours */
	unsigned peer_nrecv;       /* the peer's posted receives */
	unsigned cq_unacked;       /* CQ events taken, not yet acked */

	int dead;                  /* 0, or the error every call returns */
	bool aborted;              /* tlm__rdma_abort moved the QP to IBV_QPS_ERR */
	bool gone;                 /* disconnected, or the QP failed */
	int async_ev;              /* 1 + the ibv_event_type that failed us (atomic) */
	struct rdma_lane *next;    /* g_lanes */

	/* rx */
	struct tlm__stream rx;     /* RBUF_SIZE: messages moved in, not yet parsed */
	unsigned *pend;            /* FIFO of received data slots not yet copied */
	uint32_t *pend_len;
	unsigned pend_head, pend_cnt;
	uint32_t reposted;         /* cumulative receives re-posted */
	uint32_t credited;         /* `reposted` as last told to the peer */

	/* tx */
	uint32_t sent;             /* cumulative messages sent */
	uint32_t peer_credit;      /* the peer's cumulative re-post count */
	unsigned tx_head;          /* slot being filled; never in flight */
	unsigned tx_inflight;      /* data slots posted, not completed */
	unsigned sq_cap;           /* send queue depth */
	uint64_t sq_posted;        /* send queue requests posted ... */
	uint64_t sq_retired;       /* ... and known complete */
	uint64_t tx_moved;         /* tlm__now_ms() when the peer last took
				    * anything: a send completed, a credit */
	unsigned unsignaled;       /* WRITEs posted since the last signaled one */
	struct ibv_send_wr chain[WRITE_CHAIN]; /* WRITEs not posted yet ... */
	struct ibv_sge chain_sge[WRITE_CHAIN];
	unsigned chain_n;          /* ... (numbered already: posted before any SEND) */
	uint64_t rec_put;          /* records whose header is in the stream */
	uint64_t rec_done;         /* records whose header SEND completed */
	uint64_t *slot_recs;       /* per send slot: rec_put when it was posted */

	/* zero copy: our registered regions and the peer's offers */
	struct ibv_mr *src_mr[TLM_MAX_REGIONS];
	struct ibv_mr *dst_mr[TLM_MAX_REGIONS];
	struct tlm_region_offer remote[TLM_MAX_REGIONS];
	bool remote_known[TLM_MAX_REGIONS];
	size_t tx_fill;
	int tx_err;
	bool tx_fin;
	unsigned placed_seen;      /* placed or staged pages asked for (tamper=) */

	/* staged placement (encrypt lanes; regions.c): our staging area,
	 * stage_cap slots of stage_size bytes (the page size), of which
	 * stage_n are used (the sender: as many as the peer offered too);
	 * the sender's per-slot post number of its last WRITE, and the
	 * receiver's regions (offered, not registered) */
	bool staged;
	struct ibv_mr *stage_mr;
	uint8_t *stage_mem;
	unsigned stage_cap, stage_n;
	uint32_t stage_size;
	uint64_t *stage_post;
	struct tlm_region_offer stage_remote;
	uint8_t *stage_dst[TLM_MAX_REGIONS];
	size_t stage_dst_len[TLM_MAX_REGIONS];
};

static inline struct rdma_lane *to_rdma(struct tlm_lane *l)
{
	return (struct rdma_lane *)l;
}

static inline unsigned sq_busy(const struct rdma_lane *r)
{
	return (unsigned)(r->sq_posted - r->sq_retired);
}

static inline void count_bytes(uint64_t *ctr, uint64_t n)
{
	__atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
}

/* ibv_post_*, ibv_req_notify_cq: 0 or a positive errno, errno untouched. */
static inline int verbs_err(int rc)
{
	return rc > 0 ? -rc : rc < 0 ? -EIO : 0;
}

/* librdmacm: -1 with errno set. */
static inline int cm_err(int rc)
{
	if (rc == 0)
		return 0;
	return errno ? -errno : -EIO;
}

static inline uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
}

static inline int left_of(uint64_t deadline)
{
	if (deadline == UINT64_MAX)
		return INT_MAX;
	return tlm__left_ms(deadline);
}

/* cm.c APIs: */
struct addrinfo;
int tlm__rdma_set_nonblock(int fd);
void tlm__rdma_fmt_peer(const struct sockaddr *sa, char *out, size_t cap);
int tlm__rdma_resolve(const char *addr, const char *port, bool passive,
		      struct addrinfo **out);
int tlm__rdma_make_channel(struct rdma_event_channel **out);
int tlm__rdma_cm_next(struct rdma_event_channel *ch, uint64_t deadline,
		      struct rdma_cm_event **ev);
int tlm__rdma_cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
			uint64_t deadline, const char *what, uint32_t *peer_nrecv);

/* pd.c APIs: */
struct ibv_pd *tlm__rdma_pd_get(struct ibv_context *ctx);
void tlm__rdma_pd_put(struct ibv_pd *pd);
int tlm__rdma_memlock_err(const char *what, const char *hint, size_t need, int err);
int tlm__rdma_mr_get(struct ibv_pd *pd, void *base, size_t len, int access, const char *what,
		     struct ibv_mr **out);
void tlm__rdma_mr_put(struct ibv_mr *mr);
void tlm__rdma_async_drain(struct ibv_context *ctx);
void tlm__rdma_lanes_link(struct rdma_lane *r);
void tlm__rdma_lanes_unlink(struct rdma_lane *r);
void tlm__rdma_regions_drop(struct rdma_lane *r);

/* post.c APIs: */
int tlm__rdma_post_recv(struct rdma_lane *r, unsigned slot);
int tlm__rdma_lane_fail(struct rdma_lane *r, int err);
void tlm__rdma_abort(struct tlm_lane *l, int err);
unsigned tlm__rdma_data_limit(const struct rdma_lane *r);
int tlm__rdma_post_chain(struct rdma_lane *r);
int tlm__rdma_post_send(struct rdma_lane *r, uint64_t kind, unsigned slot, const void *buf,
			uint32_t len);
int tlm__rdma_post_write(struct rdma_lane *r, const void *src, uint32_t len, uint32_t lkey,
			 uint64_t raddr, uint32_t rkey);
int tlm__rdma_rx_drain(struct rdma_lane *r);
int tlm__rdma_progress(struct rdma_lane *r);
int tlm__rdma_wait_io(struct rdma_lane *r, uint64_t deadline);

/* send.c APIs: */
int tlm__rdma_tx_check(struct rdma_lane *r, enum tlm_lane_mode mode);
int tlm__rdma_tx_post(struct rdma_lane *r);
int tlm__rdma_tx_put(struct rdma_lane *r, const void *buf, size_t n);
int tlm__rdma_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n);
int tlm__rdma_place(struct tlm_lane *l, const struct tlm_page_rec *rec);
void tlm__rdma_count_records(struct tlm_lane *l, unsigned n);
ssize_t tlm__rdma_write(struct tlm_lane *l, const void *buf, size_t n);
int tlm__rdma_shutdown(struct tlm_lane *l);
int tlm__rdma_flush(struct tlm_lane *l);
int tlm__rdma_inject_raw(struct tlm_lane *l, const void *buf, size_t n);
int tlm__rdma_wait_sent(struct tlm_lane *l, uint64_t records, int timeout_ms);
int tlm__rdma_stage_get(struct tlm_lane *l, uint32_t slot, uint8_t **buf);
int tlm__rdma_stage_put(struct tlm_lane *l, uint32_t slot, uint32_t len);

/* recv.c APIs: */
int tlm__rdma_rx_fill(struct rdma_lane *r, bool wait, uint64_t deadline);
int tlm__rdma_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms);
ssize_t tlm__rdma_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms);
const uint8_t *tlm__rdma_placed_page(struct tlm_lane *l, const struct tlm_page_rec *rec);
const uint8_t *tlm__rdma_staged_page(struct tlm_lane *l, uint32_t slot, uint32_t len);

/* regions.c APIs: */
int tlm__rdma_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms);
void tlm__rdma_unregister_regions(struct tlm_lane *l);
unsigned tlm__rdma_stage_slots(struct tlm_lane *l);
void tlm__rdma_stage_drop(struct rdma_lane *r);

#endif
