/* SPDX-License-Identifier: MIT */
/*
 * RDMA lanes: one RC queue pair per lane (rdma-core: libibverbs + librdmacm).
 *
 * Connection setup (each lane on its own, with its own rdma_cm event
 * channel so a lane's DISCONNECTED event is seen by that lane alone):
 *
 *   connecting side                        accepting side
 *   rdma_create_id(RDMA_PS_TCP)            listen(): rdma_bind_addr,
 *   rdma_resolve_addr  -> ADDR_RESOLVED      rdma_listen
 *   rdma_resolve_route -> ROUTE_RESOLVED   accept(): CONNECT_REQUEST on the
 *   setup: PD, CQ + completion channel,      listener's channel; the new id
 *     RC QP, buffers registered, every       moves to a channel of its own
 *     receive posted                         (rdma_migrate_id); setup (same)
 *   rdma_connect(private: our #receives)   rdma_accept(private: ours)
 *   ESTABLISHED (private: the peer's)      ESTABLISHED
 *
 * The RoCE GID (v2 where the port has one for the address) and the device
 * are chosen by rdma_cm from the address; transport_args dev=NAME and
 * gid=N check that the choice is the expected one instead of silently
 * using another port.
 *
 * Data path. The lane carries the same frame stream as a TCP lane
 * (core/wire.h): DATA/FIN frames in byte mode, PAGE frames (24-byte record
 * header + data, crc32c checked here) in page mode. The stream is cut into
 * messages of up to SLOT_SIZE bytes, copied into pre-registered send slots
 * and sent with SEND_WITH_IMM; the receiver copies each message into its
 * reassembly buffer and parses frames from there, so a frame may span
 * messages and a message may hold many frames.
 *
 * Zero copy (page mode, when the engine registers its regions): the
 * receiving side registers each region for remote write and sends a REGION
 * frame {addr, len, rkey} (or "not offered") on the lane; the sending side
 * registers its own regions and waits for those offers. A record flagged
 * TLM_PF_LIVE then goes as one RDMA WRITE from the source page to its place
 * in the destination's region, and its 24-byte header as a PLACED record
 * in the ordinary frame stream: the header's SEND comes after the WRITE on
 * the same queue pair, so when the receiver sees the header the data is in
 * place, and the receiver never touches the data. WRITEs are signaled
 * every WRITE_SIGNAL work requests (a completion retires every request
 * posted before it); the send queue holds WRITE_DEPTH of them plus the
 * SENDs. wait_sent() reports records whose header SEND completed, which
 * means their WRITEs completed too. Regions are registered once per
 * process and protection domain (one PD per device, shared by the lanes),
 * so N lanes do not pin the same memory N times.
 *
 * Flow control, so that a SEND never meets an empty receive queue (no RNR):
 * each side posts `nrecv` receives before connecting and tells the peer the
 * number. Every message's immediate carries the sender's cumulative count
 * of receives it has re-posted (its credits to us). A side may have at
 * most nrecv - 1 data messages unaccounted for (sent - peer's count); the
 * last receive is kept for a zero-length credit-only message, sent when
 * half the receives were re-posted without a message to carry the count.
 * Zero-length messages are re-posted at once, so credit updates are never
 * held up by a full reassembly buffer. Data messages are re-posted once
 * their bytes moved into the reassembly buffer: a reader that stops
 * reading stops the credits and so the sender (bounded memory).
 *
 * Threads: one thread may send while another receives (the relay does).
 * Both sides of a lane share one CQ, so all lane state sits under one
 * mutex, dropped only while sleeping on the completion channel. Waits
 * sleep at most WAIT_SLICE_MS at a time: the two threads share the
 * channel, and an event taken by one must not leave the other asleep.
 *
 * Errors: ibv_post_* and ibv_req_notify_cq return the error and do not set
 * errno (verbs_err); librdmacm returns -1 and sets errno (cm_err). Neither
 * library's errno is read anywhere else. A peer that disconnects, or whose
 * QP went to the error state, gives -TLM_EPEERCLOSED once every message
 * that arrived before was read.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "tlm-internal.h"

extern const struct tlm_lane_ops tlm__rdma_ops;

#define SLOT_SIZE      (64u * 1024)       /* bytes per message */
#define NSLOT_DEFAULT  16                 /* send slots; receives = +1 */
#define NSLOT_MAX      1024
#define RBUF_SIZE      (1024u * 1024)     /* reassembly buffer per lane */
#define WAIT_SLICE_MS  50
#define CLOSE_DRAIN_MS TLM_DEFAULT_TIMEOUT_MS /* close() waits this long for acks */
#define RX_FILLS_MAX   32
/* Local ACK timeout, 4.096 us * 2^N: 18 = about 1 s, so a busy peer (a
 * Soft-RoCE one in a TCG VM acks late) is not taken for a lost packet
 * seven times in a row, which would kill the QP. */
#define ACK_TIMEOUT_DEFAULT 18

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
	bool gone;                 /* disconnected, or the QP failed */
	int async_ev;              /* 1 + the ibv_event_type that failed us (atomic) */
	struct rdma_lane *next;    /* g_lanes */

	/* rx */
	uint8_t *rbuf;             /* RBUF_SIZE; [rstart, rend) unparsed */
	size_t rstart, rend;
	uint32_t data_left;        /* byte mode: payload left in this DATA frame */
	bool rx_fin;
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

/* ---- error conventions, one helper per library ---- */

/* ibv_post_*, ibv_req_notify_cq: 0 or a positive errno, errno untouched. */
static int verbs_err(int rc)
{
	return rc > 0 ? -rc : rc < 0 ? -EIO : 0;
}

/* librdmacm: -1 with errno set. */
static int cm_err(int rc)
{
	if (rc == 0)
		return 0;
	return errno ? -errno : -EIO;
}

static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
}

static int left_of(uint64_t deadline)
{
	if (deadline == UINT64_MAX)
		return INT_MAX;
	return tlm__left_ms(deadline);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/*
 * transport_args: comma-separated key=value. dev=NAME (the RDMA device the
 * address must resolve to), gid=N (the GID index it must use), slots=N
 * (messages in flight per direction; each is a 64 KiB registered buffer),
 * ack_timeout=N (local ACK timeout, 4.096 us * 2^N, 1..31).
 */
static int parse_opts(const char *args, struct rdma_opts *o)
{
	const char *p = args;

	memset(o, 0, sizeof(*o));
	o->gid = -1;
	o->nslot = NSLOT_DEFAULT;
	o->ack_timeout = ACK_TIMEOUT_DEFAULT;
	while (p && *p) {
		const char *end = strchr(p, ','), *eq;
		size_t len = end ? (size_t)(end - p) : strlen(p), klen, vlen;
		char val[64];
		char *e;
		long v;

		eq = memchr(p, '=', len);
		if (!eq)
			goto bad;
		klen = (size_t)(eq - p);
		vlen = len - klen - 1;
		if (vlen == 0 || vlen >= sizeof(val))
			goto bad;
		memcpy(val, eq + 1, vlen);
		val[vlen] = 0;
		if (klen == 3 && !memcmp(p, "dev", 3)) {
			memcpy(o->dev, val, vlen + 1);
		} else if ((klen == 3 && !memcmp(p, "gid", 3)) ||
			   (klen == 5 && !memcmp(p, "slots", 5)) ||
			   (klen == 11 && !memcmp(p, "ack_timeout", 11))) {
			v = strtol(val, &e, 10);
			if (*e || v < 0 || v > NSLOT_MAX)
				goto bad;
			if (klen == 3) {
				o->gid = (int)v;
			} else if (klen == 5) {
				if (v < 2)
					goto bad;
				o->nslot = (unsigned)v;
			} else {
				if (v < 1 || v > 31)
					goto bad;
				o->ack_timeout = (uint8_t)v;
			}
		} else {
			goto bad;
		}
		p = end ? end + 1 : NULL;
		continue;
bad:
		tlm__err("rdma: bad transport argument '%.*s' (want dev=NAME, gid=N, "
			 "slots=2..%d, ack_timeout=1..31)", (int)len, p, NSLOT_MAX);
		return -EINVAL;
	}
	return 0;
}

static void fmt_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;

		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		port = ntohs(s->sin_port);
		snprintf(out, cap, "%s:%u", host, port);
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)sa;

		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		port = ntohs(s->sin6_port);
		snprintf(out, cap, "[%s]:%u", host, port);
	} else {
		snprintf(out, cap, "?");
	}
}

static int resolve(const char *addr, const char *port, bool passive,
		   struct addrinfo **out)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	int rc = getaddrinfo(addr, port ? port : "0", &hints, out);

	if (rc) {
		tlm__err("rdma: cannot resolve %s:%s: %s", addr ? addr : "*",
			 port ? port : "0", gai_strerror(rc));
		return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	}
	return 0;
}

static int make_channel(struct rdma_event_channel **out)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	int err;

	if (!ch) {
		err = errno ? -errno : -ENODEV;
		tlm__err("rdma: no rdma_cm (%s): is an RDMA device present "
			 "(e.g. rdma_rxe with 'rdma link add')?", strerror(-err));
		return err == -ENOENT ? -ENODEV : err;
	}
	err = set_nonblock(ch->fd);
	if (err) {
		rdma_destroy_event_channel(ch);
		return err;
	}
	*out = ch;
	return 0;
}

/*
 * Wait for the next event on a channel. The event is returned un-acked
 * (its id and private data stay valid until rdma_ack_cm_event).
 */
static int cm_next(struct rdma_event_channel *ch, uint64_t deadline,
		   struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int rc;

		errno = 0;
		rc = rdma_get_cm_event(ch, ev);
		if (rc == 0)
			return 0;
		rc = cm_err(rc);
		if (rc != -EAGAIN && rc != -EWOULDBLOCK && rc != -EINTR)
			return rc;
		rc = poll(&p, 1, left_of(deadline) == INT_MAX ? -1 : left_of(deadline));
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

static int cm_event_err(const struct rdma_cm_event *ev)
{
	switch (ev->event) {
	case RDMA_CM_EVENT_REJECTED:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return -TLM_EPEERCLOSED;
	default:
		return -EPROTO;
	}
}

/* Wait for one expected event; anything else fails. */
static int cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
		     uint64_t deadline, const char *what, uint32_t *peer_nrecv)
{
	struct rdma_cm_event *ev;
	int rc = cm_next(ch, deadline, &ev);

	if (rc) {
		tlm__err("rdma: %s: %s", what, rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
		return rc;
	}
	if (ev->event != want) {
		rc = cm_event_err(ev);
		tlm__err("rdma: %s: %s (status %d)", what, rdma_event_str(ev->event),
			 ev->status);
	} else if (peer_nrecv) {
		const uint8_t *pd = ev->param.conn.private_data;

		*peer_nrecv = pd && ev->param.conn.private_data_len >= 4 ? tlm__get32(pd) : 0;
	}
	rdma_ack_cm_event(ev);
	return rc;
}

/* ---- protection domains and memory registrations, shared per process ----
 *
 * rdma_cm opens each device once per process, so every lane on a device
 * sees the same ibv_context: one PD per context, and one registration per
 * (PD, range, access), counted. */

struct shared_pd {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	unsigned refs;
	struct shared_pd *next;
};

struct shared_mr {
	struct ibv_mr *mr;
	struct shared_pd *spd;
	int access;
	unsigned refs;
	struct shared_mr *next;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shared_pd *g_pds;
static struct shared_mr *g_mrs;
static struct rdma_lane *g_lanes;  /* lanes with a QP, for async events */

static struct ibv_pd *pd_get(struct ibv_context *ctx)
{
	struct shared_pd *p;
	struct ibv_pd *pd = NULL;

	pthread_mutex_lock(&g_mu);
	for (p = g_pds; p && p->ctx != ctx; p = p->next)
		;
	if (!p && (p = calloc(1, sizeof(*p)))) {
		p->ctx = ctx;
		/* Async events are read when a lane waits (wait_io). */
		(void)set_nonblock(ctx->async_fd);
		p->pd = ibv_alloc_pd(ctx);
		if (p->pd) {
			p->next = g_pds;
			g_pds = p;
		} else {
			free(p);
			p = NULL;
		}
	}
	if (p) {
		p->refs++;
		pd = p->pd;
	}
	pthread_mutex_unlock(&g_mu);
	return pd;
}

/* Lock held. */
static void pd_put_locked(struct ibv_pd *pd)
{
	for (struct shared_pd **pp = &g_pds; *pp; pp = &(*pp)->next) {
		struct shared_pd *p = *pp;

		if (p->pd != pd)
			continue;
		if (--p->refs == 0) {
			*pp = p->next;
			ibv_dealloc_pd(p->pd);
			free(p);
		}
		return;
	}
}

static void pd_put(struct ibv_pd *pd)
{
	pthread_mutex_lock(&g_mu);
	pd_put_locked(pd);
	pthread_mutex_unlock(&g_mu);
}

/* Registration failed: say which limit to raise, and by how much. */
static int memlock_err(const char *what, const char *hint, size_t need, int err)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		unsigned long long cur = (unsigned long long)rl.rlim_cur;

		tlm__err("rdma: cannot register %zu KiB of %s (%s): "
			 "RLIMIT_MEMLOCK is %llu KiB; raise it by at least %zu KiB "
			 "(ulimit -l %llu, or LimitMEMLOCK= / memlock in limits.conf)%s",
			 need >> 10, what, strerror(-err), cur >> 10, need >> 10,
			 (cur + need + 1023) >> 10, hint);
		return -ENOMEM;
	}
	tlm__err("rdma: cannot register %zu KiB of %s: %s", need >> 10, what, strerror(-err));
	return err;
}

static int mr_get(struct ibv_pd *pd, void *base, size_t len, int access, const char *what,
		  struct ibv_mr **out)
{
	struct shared_mr *m;
	struct shared_pd *p;
	int rc = 0;

	pthread_mutex_lock(&g_mu);
	for (m = g_mrs; m; m = m->next)
		if (m->mr->pd == pd && m->mr->addr == base && m->mr->length == len &&
		    m->access == access)
			break;
	if (m) {
		m->refs++;
		*out = m->mr;
		goto out;
	}
	for (p = g_pds; p && p->pd != pd; p = p->next)
		;
	m = calloc(1, sizeof(*m));
	if (!p || !m) {
		free(m);
		rc = -ENOMEM;
		goto out;
	}
	errno = 0;
	m->mr = ibv_reg_mr(pd, base, len, access);
	if (!m->mr) {
		rc = memlock_err(what, "", len, errno ? -errno : -ENOMEM);
		free(m);
		goto out;
	}
	m->spd = p;
	m->access = access;
	m->refs = 1;
	p->refs++;
	m->next = g_mrs;
	g_mrs = m;
	*out = m->mr;
out:
	pthread_mutex_unlock(&g_mu);
	return rc;
}

static void mr_put(struct ibv_mr *mr)
{
	pthread_mutex_lock(&g_mu);
	for (struct shared_mr **pp = &g_mrs; *pp; pp = &(*pp)->next) {
		struct shared_mr *m = *pp;

		if (m->mr != mr)
			continue;
		if (--m->refs == 0) {
			struct ibv_pd *pd = m->mr->pd;

			*pp = m->next;
			ibv_dereg_mr(m->mr);
			free(m);
			pd_put_locked(pd);
		}
		break;
	}
	pthread_mutex_unlock(&g_mu);
}

/*
 * The device's async events (one queue per device, shared by its lanes):
 * a QP or CQ error fails its lane; a port error (link down) or a fatal
 * device error fails every lane on it, at once rather than after the
 * retries run out. Lock held.
 */
static void async_drain_locked(struct ibv_context *ctx)
{
	struct ibv_async_event ev;

	while (ibv_get_async_event(ctx, &ev) == 0) {
		for (struct rdma_lane *l = g_lanes; l; l = l->next) {
			bool hit = false;

			if (l->id->verbs != ctx)
				continue;
			switch (ev.event_type) {
			case IBV_EVENT_QP_FATAL:
			case IBV_EVENT_QP_REQ_ERR:
			case IBV_EVENT_QP_ACCESS_ERR:
				hit = ev.element.qp == l->id->qp;
				break;
			case IBV_EVENT_CQ_ERR:
				hit = ev.element.cq == l->cq;
				break;
			case IBV_EVENT_PORT_ERR:
				hit = ev.element.port_num == l->id->port_num;
				break;
			case IBV_EVENT_DEVICE_FATAL:
				hit = true;
				break;
			default:
				break;
			}
			if (hit)
				__atomic_store_n(&l->async_ev, (int)ev.event_type + 1, __ATOMIC_RELAXED);
		}
		ibv_ack_async_event(&ev);
	}
}

static void lanes_link(struct rdma_lane *r)
{
	pthread_mutex_lock(&g_mu);
	r->next = g_lanes;
	g_lanes = r;
	pthread_mutex_unlock(&g_mu);
}

static void lanes_unlink(struct rdma_lane *r)
{
	pthread_mutex_lock(&g_mu);
	for (struct rdma_lane **pp = &g_lanes; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	pthread_mutex_unlock(&g_mu);
}

static void regions_drop(struct rdma_lane *r)
{
	for (unsigned i = 0; i < TLM_MAX_REGIONS; i++) {
		if (r->src_mr[i])
			mr_put(r->src_mr[i]);
		if (r->dst_mr[i])
			mr_put(r->dst_mr[i]);
		r->src_mr[i] = r->dst_mr[i] = NULL;
	}
}

/* ---- lane setup and teardown ---- */

static void lane_free(struct rdma_lane *r)
{
	if (r->qp_made) {
		lanes_unlink(r);
		rdma_destroy_qp(r->id);
	}
	regions_drop(r);
	if (r->mr)
		ibv_dereg_mr(r->mr);
	if (r->cq) {
		if (r->cq_unacked)
			ibv_ack_cq_events(r->cq, r->cq_unacked);
		ibv_destroy_cq(r->cq);
	}
	if (r->cc)
		ibv_destroy_comp_channel(r->cc);
	if (r->pd)
		pd_put(r->pd);
	if (r->id)
		rdma_destroy_id(r->id);
	if (r->ch)
		rdma_destroy_event_channel(r->ch);
	pthread_mutex_destroy(&r->mu);
	free(r->mem);
	free(r->rbuf);
	free(r->pend);
	free(r->pend_len);
	free(r->slot_recs);
	free(r);
}

static struct rdma_lane *lane_alloc(const struct rdma_opts *o, unsigned index)
{
	struct rdma_lane *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->opts = *o;
	r->nslot = o->nslot;
	r->nrecv = o->nslot + 1;
	r->rbuf = malloc(RBUF_SIZE);
	r->pend = calloc(r->nrecv, sizeof(*r->pend));
	r->pend_len = calloc(r->nrecv, sizeof(*r->pend_len));
	r->slot_recs = calloc(r->nslot, sizeof(*r->slot_recs));
	if (!r->rbuf || !r->pend || !r->pend_len || !r->slot_recs ||
	    pthread_mutex_init(&r->mu, NULL)) {
		free(r->rbuf);
		free(r->pend);
		free(r->pend_len);
		free(r->slot_recs);
		free(r);
		return NULL;
	}
	r->base.ops = &tlm__rdma_ops;
	r->base.mode = TLM_MODE_BYTES;
	r->base.page_size = TLM_DEFAULT_PAGE_SIZE;
	r->base.index = index;
	return r;
}

static int post_recv(struct rdma_lane *r, unsigned slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(r->mem + (size_t)slot * SLOT_SIZE),
		.length = SLOT_SIZE,
		.lkey = r->mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = WR_RECV | slot, .sg_list = &sge, .num_sge = 1 };
	struct ibv_recv_wr *bad;

	return verbs_err(ibv_post_recv(r->id->qp, &wr, &bad));
}

/* Device and GID as asked in transport_args. */
static int check_route(struct rdma_lane *r)
{
	const char *name = ibv_get_device_name(r->id->verbs->device);

	if (r->opts.dev[0] && strcmp(name, r->opts.dev) != 0) {
		tlm__err("rdma: %s resolves to device %s, not %s (--rdma-dev, dev=)", r->base.peer,
			 name, r->opts.dev);
		return -ENODEV;
	}
	if (r->opts.gid >= 0) {
		struct ibv_gid_entry g;
		const union ibv_gid *sgid = &r->id->route.addr.addr.ibaddr.sgid;
		int rc = ibv_query_gid_ex(r->id->verbs, r->id->port_num, (uint32_t)r->opts.gid,
					  &g, 0);

		if (rc) {
			tlm__err("rdma: %s port %u has no GID index %d", name,
				 r->id->port_num, r->opts.gid);
			return -ENODEV;
		}
		if (memcmp(&g.gid, sgid, sizeof(g.gid)) != 0) {
			char want[INET6_ADDRSTRLEN], got[INET6_ADDRSTRLEN];

			inet_ntop(AF_INET6, g.gid.raw, want, sizeof(want));
			inet_ntop(AF_INET6, sgid->raw, got, sizeof(got));
			tlm__err("rdma: %s: GID index %d is %s but the route to %s uses %s "
				 "(--rdma-gid, gid=)",
				 name, r->opts.gid, want, r->base.peer, got);
			return -EADDRNOTAVAIL;
		}
		/* RoCE v1 frames are not routable: say so rather than fail. */
		if (g.gid_type == IBV_GID_TYPE_ROCE_V1)
			tlm__warn("rdma: %s GID index %d is RoCE v1 (not routable)", name,
				  r->opts.gid);
	}
	tlm__dbg("rdma: lane %u to %s on %s port %u", r->base.index, r->base.peer, name,
		 r->id->port_num);
	return 0;
}

/* PD, CQ, QP, registered buffers, every receive posted. */
static int lane_setup(struct rdma_lane *r)
{
	struct ibv_context *ctx = r->id->verbs;
	size_t bytes = (size_t)(r->nrecv + r->nslot) * SLOT_SIZE;
	struct ibv_qp_init_attr qa = { 0 };
	struct ibv_device_attr da;
	int rc;

	rc = check_route(r);
	if (rc)
		return rc;
	errno = 0;
	rc = cm_err(rdma_set_option(r->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT,
				    &r->opts.ack_timeout, sizeof(r->opts.ack_timeout)));
	if (rc)
		tlm__dbg("rdma: cannot set the ACK timeout: %s", strerror(-rc));
	r->pd = pd_get(ctx);
	if (!r->pd)
		return -ENOMEM;
	/* SENDs (data + one credit) and the WRITEs of zero copy. */
	r->sq_cap = r->nrecv + 1 + WRITE_DEPTH;
	if (ibv_query_device(ctx, &da) == 0 && da.max_qp_wr > 0 &&
	    r->sq_cap > (unsigned)da.max_qp_wr)
		r->sq_cap = (unsigned)da.max_qp_wr;
	if (r->sq_cap < r->nrecv + 1 + 2 * WRITE_SIGNAL) {
		tlm__err("rdma: %s allows %d work requests per queue; %u needed",
			 ibv_get_device_name(ctx->device), da.max_qp_wr,
			 r->nrecv + 1 + 2 * WRITE_SIGNAL);
		return -EINVAL;
	}
	r->cc = ibv_create_comp_channel(ctx);
	if (!r->cc)
		return -ENOMEM;
	rc = set_nonblock(r->cc->fd);
	if (rc)
		return rc;
	r->cq = ibv_create_cq(ctx, (int)(r->nrecv + r->sq_cap + 2), NULL, r->cc, 0);
	if (!r->cq)
		return -ENOMEM;
	qa.send_cq = r->cq;
	qa.recv_cq = r->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;
	qa.cap.max_send_wr = r->sq_cap;
	qa.cap.max_recv_wr = r->nrecv;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	errno = 0;
	rc = cm_err(rdma_create_qp(r->id, r->pd, &qa));
	if (rc) {
		tlm__err("rdma: cannot create a QP: %s", strerror(-rc));
		return rc;
	}
	r->qp_made = true;
	lanes_link(r);
	if (posix_memalign((void **)&r->mem, 4096, bytes))
		return -ENOMEM;
	memset(r->mem, 0, bytes);
	errno = 0;
	r->mr = ibv_reg_mr(r->pd, r->mem, bytes, IBV_ACCESS_LOCAL_WRITE);
	if (!r->mr)
		return memlock_err("lane buffers", ", or use fewer slots (transport_args slots=N)",
				   bytes, errno ? -errno : -ENOMEM);
	for (unsigned i = 0; i < r->nrecv; i++) {
		rc = post_recv(r, i);
		if (rc)
			return rc;
	}
	return 0;
}

static void conn_param(struct rdma_lane *r, struct rdma_conn_param *cp, uint8_t priv[4])
{
	memset(cp, 0, sizeof(*cp));
	tlm__put32(priv, r->nrecv);
	cp->private_data = priv;
	cp->private_data_len = 4;
	cp->responder_resources = 1;
	cp->initiator_depth = 1;
	cp->retry_count = 7;
	/* Credits keep receives posted ahead; RNR retry is only a backstop. */
	cp->rnr_retry_count = 7;
}

static void set_peer_nrecv(struct rdma_lane *r, uint32_t n)
{
	/* A peer that sent none posted as many as we did. */
	r->peer_nrecv = n >= 2 && n <= NSLOT_MAX + 1 ? n : r->nrecv;
}

/* ---- completions and waiting (lock held) ---- */

static int lane_fail(struct rdma_lane *r, int err)
{
	if (!r->dead)
		r->dead = err;
	return r->dead;
}

static unsigned data_limit(const struct rdma_lane *r)
{
	return r->peer_nrecv - 1;
}

static int post_chain(struct rdma_lane *r)
{
	struct ibv_send_wr *bad;
	int rc;

	if (!r->chain_n)
		return 0;
	for (unsigned i = 0; i + 1 < r->chain_n; i++)
		r->chain[i].next = &r->chain[i + 1];
	r->chain[r->chain_n - 1].next = NULL;
	r->chain_n = 0;
	rc = verbs_err(ibv_post_send(r->id->qp, r->chain, &bad));
	if (rc) {
		tlm__err("rdma %s: lane %u: post write: %s", r->base.peer, r->base.index,
			 strerror(-rc));
		r->tx_err = r->gone ? -TLM_EPEERCLOSED : rc;
		return r->tx_err;
	}
	return 0;
}

static int post_send(struct rdma_lane *r, uint64_t kind, unsigned slot, const void *buf,
		     uint32_t len)
{
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = len, .lkey = r->mr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = kind | (uint64_t)slot << WR_SLOT_SHIFT | ((r->sq_posted + 1) & WR_SEQ),
		.sg_list = len ? &sge : NULL,
		.num_sge = len ? 1 : 0,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(r->reposted),
	};
	struct ibv_send_wr *bad;
	int rc = post_chain(r);   /* numbered before us: posted before us */

	if (rc)
		return rc;
	rc = verbs_err(ibv_post_send(r->id->qp, &wr, &bad));
	if (rc) {
		tlm__err("rdma %s: lane %u: post send: %s", r->base.peer, r->base.index,
			 strerror(-rc));
		r->tx_err = r->gone ? -TLM_EPEERCLOSED : rc;
		return r->tx_err;
	}
	r->credited = r->reposted;
	r->sent++;
	r->sq_posted++;
	r->unsignaled = 0;
	return 0;
}

/* One page by RDMA WRITE, chained to the next ones (one doorbell per
 * WRITE_CHAIN); signaled every WRITE_SIGNAL so the send queue drains (a
 * completion retires every request posted before it). */
static int post_write(struct rdma_lane *r, const void *src, uint32_t len, uint32_t lkey,
		      uint64_t raddr, uint32_t rkey)
{
	bool sig = r->unsignaled + 1 >= WRITE_SIGNAL;
	struct ibv_sge *sge = &r->chain_sge[r->chain_n];
	struct ibv_send_wr *wr = &r->chain[r->chain_n];

	*sge = (struct ibv_sge){ .addr = (uintptr_t)src, .length = len, .lkey = lkey };
	*wr = (struct ibv_send_wr){
		.wr_id = WR_WRITE | ((r->sq_posted + 1) & WR_SEQ),
		.sg_list = sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = sig ? IBV_SEND_SIGNALED : 0,
	};
	wr->wr.rdma.remote_addr = raddr;
	wr->wr.rdma.rkey = rkey;
	r->sq_posted++;
	r->unsignaled = sig ? 0 : r->unsignaled + 1;
	return ++r->chain_n == WRITE_CHAIN ? post_chain(r) : 0;
}

/* Return credits without data when half the receives went unreported. */
static void maybe_credit(struct rdma_lane *r)
{
	uint32_t owed = r->reposted - r->credited;

	if (r->gone || r->tx_err || owed == 0 || owed < r->nrecv / 2)
		return;
	if (r->sent - r->peer_credit >= r->peer_nrecv || sq_busy(r) >= r->sq_cap)
		return;
	post_send(r, WR_CREDIT, 0, NULL, 0);
}

/* Move received messages into the reassembly buffer, in order, while
 * there is room; each one moved frees its receive for re-posting. */
static int rx_drain(struct rdma_lane *r)
{
	int moved = 0;

	while (r->pend_cnt) {
		unsigned slot = r->pend[r->pend_head];
		uint32_t len = r->pend_len[r->pend_head];
		int rc;

		if (r->rstart == r->rend) {
			r->rstart = r->rend = 0;
		} else if (RBUF_SIZE - r->rend < len) {
			memmove(r->rbuf, r->rbuf + r->rstart, r->rend - r->rstart);
			r->rend -= r->rstart;
			r->rstart = 0;
		}
		if (RBUF_SIZE - r->rend < len)
			break;
		memcpy(r->rbuf + r->rend, r->mem + (size_t)slot * SLOT_SIZE, len);
		r->rend += len;
		r->pend_head = (r->pend_head + 1) % r->nrecv;
		r->pend_cnt--;
		moved++;
		if (!r->gone) {
			rc = post_recv(r, slot);
			if (rc)
				return lane_fail(r, rc);
			r->reposted++;
		}
	}
	return moved;
}

/* Reap completions and cm events. Returns how many there were. */
static int progress(struct rdma_lane *r)
{
	struct ibv_wc wc[16];
	int total = 0, n, aev = __atomic_load_n(&r->async_ev, __ATOMIC_RELAXED);

	if (aev && !r->gone) {
		tlm__err("rdma %s: lane %u: %s%s", r->base.peer, r->base.index,
			 ibv_event_type_str((enum ibv_event_type)(aev - 1)),
			 aev - 1 == IBV_EVENT_PORT_ERR ? " (link down?)" : "");
		r->gone = true;
		if (!r->tx_err)
			r->tx_err = -TLM_EPEERCLOSED;
		total++;
	}

	for (;;) {
		struct rdma_cm_event *ev;

		if (rdma_get_cm_event(r->ch, &ev) != 0)
			break;   /* EAGAIN: the channel is non-blocking */
		if (ev->event == RDMA_CM_EVENT_DISCONNECTED ||
		    ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
			tlm__dbg("rdma %s: lane %u: %s", r->base.peer, r->base.index,
				 rdma_event_str(ev->event));
			r->gone = true;
		}
		rdma_ack_cm_event(ev);
		total++;
	}
	while ((n = ibv_poll_cq(r->cq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			uint64_t kind = wc[i].wr_id & WR_KIND;
			unsigned slot = (unsigned)(wc[i].wr_id & ~WR_KIND);

			if (kind != WR_RECV) {
				/* Post numbers are kept mod 2^40 in wr_id. */
				uint64_t seq = (r->sq_posted & ~WR_SEQ) | (wc[i].wr_id & WR_SEQ);

				if (seq > r->sq_posted)
					seq -= WR_SEQ + 1;
				if (seq > r->sq_retired)
					r->sq_retired = seq;
				slot = (unsigned)((wc[i].wr_id & ~WR_KIND) >> WR_SLOT_SHIFT);
			}
			if (kind == WR_DATA) {
				r->tx_inflight--;
				if (wc[i].status == IBV_WC_SUCCESS && r->slot_recs[slot] > r->rec_done)
					r->rec_done = r->slot_recs[slot];
			}
			if (wc[i].status != IBV_WC_SUCCESS) {
				if (wc[i].status != IBV_WC_WR_FLUSH_ERR)
					tlm__dbg("rdma %s: lane %u: completion: %s", r->base.peer,
						 r->base.index, ibv_wc_status_str(wc[i].status));
				r->gone = true;
				if (kind != WR_RECV && !r->tx_err)
					r->tx_err = -TLM_EPEERCLOSED;
				continue;
			}
			if (kind != WR_RECV)
				continue;
			if (wc[i].wc_flags & IBV_WC_WITH_IMM)
				r->peer_credit = ntohl(wc[i].imm_data);
			if (wc[i].byte_len == 0) {
				/* Credit-only: nothing to keep. */
				if (!r->gone) {
					int rc = post_recv(r, slot);

					if (rc)
						return lane_fail(r, rc);
					r->reposted++;
				}
				continue;
			}
			r->pend[(r->pend_head + r->pend_cnt) % r->nrecv] = slot;
			r->pend_len[(r->pend_head + r->pend_cnt) % r->nrecv] = wc[i].byte_len;
			r->pend_cnt++;
		}
		total += n;
	}
	if (n < 0)
		return lane_fail(r, -EIO);
	rx_drain(r);
	maybe_credit(r);
	return total;
}

/*
 * Sleep until a completion or cm event may be there, or the deadline.
 * Lock held on entry and exit, dropped while asleep. Returns 0 (look
 * again), -ETIMEDOUT, or a lane error.
 */
static int wait_io(struct rdma_lane *r, uint64_t deadline)
{
	struct pollfd p[3] = {
		{ .fd = r->cc->fd, .events = POLLIN },
		{ .fd = r->ch->fd, .events = POLLIN },
		{ .fd = r->id->verbs->async_fd, .events = POLLIN },
	};
	int left = left_of(deadline), rc;
	struct ibv_cq *cq;
	void *ctx;

	if (left == 0)
		return -ETIMEDOUT;
	rc = verbs_err(ibv_req_notify_cq(r->cq, 0));
	if (rc)
		return lane_fail(r, rc);
	/* Completions that came before arming raise no event. */
	rc = progress(r);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	pthread_mutex_unlock(&r->mu);
	rc = poll(p, 3, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
	pthread_mutex_lock(&r->mu);
	if (rc < 0 && errno != EINTR)
		return -errno;
	if (rc > 0 && p[2].revents) {
		pthread_mutex_lock(&g_mu);
		async_drain_locked(r->id->verbs);
		pthread_mutex_unlock(&g_mu);
	}
	while (ibv_get_cq_event(r->cc, &cq, &ctx) == 0) {
		if (++r->cq_unacked >= 64) {
			ibv_ack_cq_events(r->cq, r->cq_unacked);
			r->cq_unacked = 0;
		}
	}
	return 0;
}

/* ---- tx (lock held) ---- */

static int tx_check(struct rdma_lane *r, enum tlm_lane_mode mode)
{
	if (r->dead)
		return r->dead;
	if (r->tx_err)
		return r->tx_err;
	if (r->gone)
		return -TLM_EPEERCLOSED;
	if (r->base.mode != mode)
		return -EINVAL;
	if (r->tx_fin)
		return -EPIPE;
	return 0;
}

/* Post the slot being filled, waiting for a credit. */
static int tx_post(struct rdma_lane *r)
{
	int rc;

	if (r->tx_fill == 0)
		return 0;
	for (;;) {
		if (r->dead)
			return r->dead;
		if (r->tx_err)
			return r->tx_err;
		if (r->gone)
			return r->tx_err = -TLM_EPEERCLOSED;
		/* The last send WR is kept for a credit-only message too. */
		if (r->sent - r->peer_credit < data_limit(r) && sq_busy(r) + 1 < r->sq_cap)
			break;
		rc = wait_io(r, UINT64_MAX);
		if (rc && rc != -ETIMEDOUT)
			return rc;
	}
	r->slot_recs[r->tx_head] = r->rec_put;
	rc = post_send(r, WR_DATA, r->tx_head,
		       r->mem + (size_t)(r->nrecv + r->tx_head) * SLOT_SIZE,
		       (uint32_t)r->tx_fill);
	if (rc)
		return rc;
	r->tx_inflight++;
	r->tx_head = (r->tx_head + 1) % r->nslot;
	r->tx_fill = 0;
	return 0;
}

/* Append bytes to the stream, posting full slots. */
static int tx_put(struct rdma_lane *r, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n > 0) {
		size_t take;
		int rc;

		if (r->tx_fill == SLOT_SIZE) {
			rc = tx_post(r);
			if (rc)
				return rc;
		}
		/* The slot at tx_head is free once fewer than nslot are out. */
		while (r->tx_fill == 0 && r->tx_inflight >= r->nslot) {
			if (r->tx_err)
				return r->tx_err;
			rc = wait_io(r, UINT64_MAX);
			if (rc && rc != -ETIMEDOUT)
				return rc;
		}
		take = SLOT_SIZE - r->tx_fill;
		if (take > n)
			take = n;
		memcpy(r->mem + (size_t)(r->nrecv + r->tx_head) * SLOT_SIZE + r->tx_fill, p, take);
		r->tx_fill += take;
		p += take;
		n -= take;
	}
	return 0;
}

/* A LIVE record: its page by RDMA WRITE into the peer's offered region,
 * once the send queue has room. */
static int write_page(struct rdma_lane *r, const struct tlm_page_rec *rec)
{
	uint32_t ps = r->base.page_size;
	struct ibv_mr *mr = rec->region < TLM_MAX_REGIONS ? r->src_mr[rec->region] : NULL;
	const struct tlm_region_offer *o = mr ? &r->remote[rec->region] : NULL;
	const uint8_t *p = rec->data, *base = mr ? mr->addr : NULL;

	if (!mr || !o->offered || rec->len != ps || p < base ||
	    (size_t)(p - base) + ps > mr->length || rec->index >= o->len / ps) {
		tlm__err("rdma %s: lane %u: live record %u:%llu outside the registered regions",
			 r->base.peer, r->base.index, rec->region, (unsigned long long)rec->index);
		return -EINVAL;
	}
	while (sq_busy(r) + 2 >= r->sq_cap) {
		int rc = tx_check(r, TLM_MODE_PAGES);

		if (!rc)
			rc = post_chain(r);
		if (!rc)
			rc = wait_io(r, UINT64_MAX);
		if (rc && rc != -ETIMEDOUT)
			return rc;
	}
	return post_write(r, p, ps, mr->lkey, o->addr + rec->index * ps, o->rkey);
}

static int rl_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n)
{
	struct rdma_lane *r = to_rdma(l);
	uint8_t hdr[TLM_FRAME_HDR + TLM_PAGE_HDR];
	int rc;

	if (n > INT_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	rc = tx_check(r, TLM_MODE_PAGES);
	for (unsigned i = 0; !rc && i < n; i++) {
		const struct tlm_page_rec *rec = &recs[i];

		if (rec->len > l->page_size || (rec->len && !rec->data)) {
			tlm__err("rdma %s: record %u: len %u with page size %u", l->peer, i,
				 rec->len, l->page_size);
			rc = -EINVAL;
			break;
		}
		if (rec->flags & TLM_PF_LIVE) {
			struct tlm_page_rec placed = *rec;

			placed.flags = (uint16_t)((rec->flags & ~TLM_PF_LIVE) | TLM_PF_PLACED);
			placed.crc = 0;
			rc = write_page(r, rec);
			tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR, TLM_FT_PAGE);
			tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, &placed);
			if (!rc)
				rc = tx_put(r, hdr, sizeof(hdr));
		} else {
			tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR + rec->len, TLM_FT_PAGE);
			tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, rec);
			rc = tx_put(r, hdr, sizeof(hdr));
			if (!rc && rec->len)
				rc = tx_put(r, rec->data, rec->len);
		}
		if (!rc) {
			count_bytes(&l->tx_bytes, rec->len);
			r->rec_put++;
		}
	}
	if (!rc)
		rc = tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : (int)n;
}

static ssize_t rl_write(struct tlm_lane *l, const void *buf, size_t n)
{
	struct rdma_lane *r = to_rdma(l);
	const uint8_t *p = buf;
	size_t done = 0;
	int rc;

	if (n > SSIZE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	rc = tx_check(r, TLM_MODE_BYTES);
	while (!rc && done < n) {
		uint8_t hdr[TLM_FRAME_HDR];
		size_t len = n - done;

		if (len > TLM_MAX_DATA_FRAME)
			len = TLM_MAX_DATA_FRAME;
		tlm__frame_hdr_encode(hdr, (uint32_t)len, TLM_FT_DATA);
		rc = tx_put(r, hdr, sizeof(hdr));
		if (!rc)
			rc = tx_put(r, p + done, len);
		if (!rc) {
			done += len;
			count_bytes(&l->tx_bytes, len);
		}
	}
	if (!rc)
		rc = tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : (ssize_t)n;
}

static int rl_shutdown(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	uint8_t hdr[TLM_FRAME_HDR];
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	if (r->dead || r->tx_err) {
		rc = r->dead ? r->dead : r->tx_err;
	} else if (!r->tx_fin) {
		if (r->gone) {
			rc = -TLM_EPEERCLOSED;
		} else {
			tlm__frame_hdr_encode(hdr, 0, TLM_FT_FIN);
			rc = tx_put(r, hdr, sizeof(hdr));
			if (!rc)
				rc = tx_post(r);
			if (!rc)
				r->tx_fin = true;
		}
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int rl_flush(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	int rc;

	/* Every call posts what it wrote before returning. */
	pthread_mutex_lock(&r->mu);
	rc = r->dead ? r->dead : r->tx_err;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int rl_inject_raw(struct tlm_lane *l, const void *buf, size_t n)
{
	struct rdma_lane *r = to_rdma(l);
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = r->dead ? r->dead : r->tx_err;
	if (!rc)
		rc = tx_put(r, buf, n);
	if (!rc)
		rc = tx_post(r);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* ---- rx (lock held) ---- */

static size_t rx_avail(const struct rdma_lane *r)
{
	return r->rend - r->rstart;
}

/*
 * Get more stream bytes into the reassembly buffer. Returns > 0 when some
 * came, -EAGAIN if none and we may not wait, -ETIMEDOUT, -TLM_EPEERCLOSED
 * once the peer is gone and everything it sent was taken, or a lane error.
 */
static int rx_fill(struct rdma_lane *r, bool wait, uint64_t deadline)
{
	/* Bytes the caller has seen. The other thread's progress() may add
	 * more while we sleep unlocked; those count as arrived too. */
	size_t before = rx_avail(r);

	for (;;) {
		int rc;

		if (r->pend_cnt)
			rx_drain(r);
		rc = progress(r);
		if (rc < 0)
			return rc;
		if (r->dead)
			return r->dead;
		if (rx_avail(r) > before)
			return 1;
		if (r->gone && r->pend_cnt == 0)
			return -TLM_EPEERCLOSED;
		if (!wait)
			return -EAGAIN;
		rc = wait_io(r, deadline);
		if (rc)
			return rc;
	}
}

static int rx_check(struct rdma_lane *r, enum tlm_lane_mode mode)
{
	if (r->dead)
		return r->dead;
	if (r->base.mode != mode)
		return -EINVAL;
	return 0;
}

static int rx_parse_pages(struct rdma_lane *r, const struct tlm_page_sink *sink, int *err)
{
	int delivered = 0;

	*err = 0;
	while (rx_avail(r) >= TLM_FRAME_HDR) {
		const uint8_t *p = r->rbuf + r->rstart;
		struct tlm_frame_hdr fh;
		struct tlm_page_rec rec;
		int rc;

		rc = tlm__frame_hdr_decode(p, r->base.page_size, &fh);
		if (rc < 0 || fh.type != TLM_FT_PAGE || fh.len < TLM_PAGE_HDR) {
			tlm__err("rdma %s: lane %u: %s in page mode", r->base.peer,
				 r->base.index, rc < 0 ? "malformed frame header"
						       : "frame of another kind");
			*err = lane_fail(r, -TLM_EFRAME);
			break;
		}
		if (rx_avail(r) < TLM_FRAME_HDR + (size_t)fh.len)
			break;
		rc = tlm__page_hdr_decode(p + TLM_FRAME_HDR, fh.len, r->base.page_size, &rec);
		if (rc < 0) {
			tlm__err("rdma %s: lane %u: malformed page record", r->base.peer,
				 r->base.index);
			*err = lane_fail(r, -TLM_EFRAME);
			break;
		}
		if (rec.flags & TLM_PF_PLACED) {
			/* Only into what we offered; the WRITE put it there. */
			struct ibv_mr *mr = r->dst_mr[rec.region];

			rc = mr && rec.len == r->base.page_size &&
			     rec.index < mr->length / r->base.page_size ? 0 : -TLM_EFRAME;
			if (rc < 0) {
				tlm__err("rdma %s: lane %u: placed record %u:%llu outside what we offered",
					 r->base.peer, r->base.index, rec.region,
					 (unsigned long long)rec.index);
				*err = lane_fail(r, rc);
				break;
			}
		} else {
			rec.data = rec.len ? p + TLM_FRAME_HDR + TLM_PAGE_HDR : NULL;
			rc = tlm__page_verify(&rec);
		}
		if (rc < 0) {
			tlm__err("rdma %s: lane %u: page %u:%llu failed its crc", r->base.peer,
				 r->base.index, rec.region, (unsigned long long)rec.index);
			*err = lane_fail(r, rc);
			break;
		}
		rc = sink->apply(sink->arg, &rec);
		if (rc < 0) {
			*err = lane_fail(r, rc);
			break;
		}
		r->rstart += TLM_FRAME_HDR + fh.len;
		count_bytes(&r->base.rx_bytes, rec.len);
		delivered++;
	}
	return delivered;
}

static int rl_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	int delivered = 0, fills = 0, err, rc;

	pthread_mutex_lock(&r->mu);
	rc = rx_check(r, TLM_MODE_PAGES);
	while (!rc) {
		/* Records before an error are reported first; the lane is dead
		 * by then, so the next call returns the error. */
		rc = rx_parse_pages(r, sink, &err);
		delivered += rc;
		rc = 0;
		if (err) {
			rc = delivered ? 0 : err;
			break;
		}
		if (delivered > 0 && fills >= RX_FILLS_MAX)
			break;
		rc = rx_fill(r, delivered == 0, deadline);
		fills++;
		if (rc > 0) {
			rc = 0;
			continue;
		}
		if (delivered > 0 || rc == -ETIMEDOUT || rc == -EAGAIN) {
			rc = 0;
			break;
		}
		if (rc == -TLM_EPEERCLOSED && rx_avail(r))
			tlm__err("rdma %s: lane %u: peer closed mid-record", l->peer, l->index);
	}
	pthread_mutex_unlock(&r->mu);
	return rc ? rc : delivered;
}

static ssize_t rl_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	uint8_t *out = buf;
	size_t got = 0;
	ssize_t ret;
	int rc;

	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	pthread_mutex_lock(&r->mu);
	rc = rx_check(r, TLM_MODE_BYTES);
	if (rc) {
		ret = rc;
		goto out;
	}
	if (r->rx_fin) {
		ret = 0;
		goto out;
	}
	while (got < n) {
		if (r->data_left > 0 && rx_avail(r) > 0) {
			size_t take = rx_avail(r);

			if (take > r->data_left)
				take = r->data_left;
			if (take > n - got)
				take = n - got;
			memcpy(out + got, r->rbuf + r->rstart, take);
			r->rstart += take;
			r->data_left -= (uint32_t)take;
			count_bytes(&l->rx_bytes, take);
			got += take;
			continue;
		}
		if (r->data_left == 0 && rx_avail(r) >= TLM_FRAME_HDR) {
			struct tlm_frame_hdr fh;

			rc = tlm__frame_hdr_decode(r->rbuf + r->rstart, l->page_size, &fh);
			if (rc < 0 || (fh.type != TLM_FT_DATA && fh.type != TLM_FT_FIN) ||
			    (fh.type == TLM_FT_FIN && fh.len != 0)) {
				if (got)
					break;   /* the error shows on the next call */
				tlm__err("rdma %s: lane %u: %s in byte mode", l->peer, l->index,
					 rc < 0 ? "malformed frame header" : "frame of another kind");
				ret = lane_fail(r, -TLM_EFRAME);
				goto out;
			}
			r->rstart += TLM_FRAME_HDR;
			if (fh.type == TLM_FT_FIN) {
				r->rx_fin = true;
				break;
			}
			r->data_left = fh.len;
			continue;
		}
		rc = rx_fill(r, got == 0, deadline);
		if (rc > 0)
			continue;
		if (got)
			break;
		ret = rc == -EAGAIN ? -ETIMEDOUT : rc;
		goto out;
	}
	ret = (ssize_t)got;
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* ---- zero copy: regions ---- */

/* Sending side: take the peer's REGION frames from the stream (nothing
 * else comes this way on a sender's page lane). */
static int rx_parse_offers(struct rdma_lane *r)
{
	while (rx_avail(r) >= TLM_FRAME_HDR) {
		const uint8_t *p = r->rbuf + r->rstart;
		struct tlm_region_offer o;
		struct tlm_frame_hdr fh;
		int rc = tlm__frame_hdr_decode(p, r->base.page_size, &fh);

		if (rc == 0 && fh.type != TLM_FT_REGION)
			rc = -TLM_EFRAME;
		if (rc == 0 && rx_avail(r) < TLM_FRAME_HDR + (size_t)fh.len)
			break;
		if (rc == 0)
			rc = tlm__region_decode(p + TLM_FRAME_HDR, fh.len, &o);
		if (rc < 0) {
			tlm__err("rdma %s: lane %u: bad frame where region offers were due",
				 r->base.peer, r->base.index);
			return lane_fail(r, -TLM_EFRAME);
		}
		r->remote[o.region] = o;
		r->remote_known[o.region] = true;
		r->rstart += TLM_FRAME_HDR + TLM_REGION_LEN;
	}
	return 0;
}

static int offer_send(struct rdma_lane *r, const struct tlm_region_offer *o)
{
	uint8_t f[TLM_FRAME_HDR + TLM_REGION_LEN];
	int rc;

	tlm__frame_hdr_encode(f, TLM_REGION_LEN, TLM_FT_REGION);
	tlm__region_encode(f + TLM_FRAME_HDR, o);
	rc = tx_put(r, f, sizeof(f));
	return rc ? rc : tx_post(r);
}

static int rl_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	struct tlm_region_offer o = { .region = (uint16_t)region };
	int rc;

	if (len == 0 || len % l->page_size)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	rc = tx_check(r, TLM_MODE_PAGES);
	if (rc)
		goto out;
	if (how == TLM_REG_DST) {
		if (r->dst_mr[region]) {
			rc = -EBUSY;
			goto out;
		}
		/* The peer is told either way, so it never waits in vain. */
		rc = mr_get(r->pd, base, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
			    "region memory", &r->dst_mr[region]);
		if (!rc) {
			o.offered = true;
			o.rkey = r->dst_mr[region]->rkey;
			o.addr = (uintptr_t)base;
			o.len = len;
		}
		int sent = offer_send(r, &o);
		if (sent && !rc) {
			mr_put(r->dst_mr[region]);
			r->dst_mr[region] = NULL;
			rc = sent;
		}
		goto out;
	}
	if (r->src_mr[region]) {
		rc = -EBUSY;
		goto out;
	}
	/* LOCAL_WRITE although we only read: a read-only pin of a page never
	 * written could pin the shared zero page, which a later write by the
	 * guest replaces (kernels before 6.8). */
	rc = mr_get(r->pd, base, len, IBV_ACCESS_LOCAL_WRITE, "region memory",
		    &r->src_mr[region]);
	while (!rc && !r->remote_known[region]) {
		rc = rx_parse_offers(r);
		if (!rc && !r->remote_known[region]) {
			rc = rx_fill(r, true, deadline);
			rc = rc > 0 ? 0 : rc;
		}
	}
	if (!rc && !r->remote[region].offered)
		rc = -EOPNOTSUPP;
	if (rc == -ETIMEDOUT)
		tlm__err("rdma %s: lane %u: no region offer from the peer", l->peer, l->index);
	if (rc && r->src_mr[region]) {
		mr_put(r->src_mr[region]);
		r->src_mr[region] = NULL;
	}
out:
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static void rl_unregister_regions(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);

	pthread_mutex_lock(&r->mu);
	regions_drop(r);
	memset(r->remote_known, 0, sizeof(r->remote_known));
	pthread_mutex_unlock(&r->mu);
}

static int rl_wait_sent(struct tlm_lane *l, uint64_t records, int timeout_ms)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = deadline_of(timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	while (r->rec_done < records) {
		rc = r->dead ? r->dead : r->tx_err ? r->tx_err : r->gone ? -TLM_EPEERCLOSED : 0;
		if (!rc)
			rc = wait_io(r, deadline);
		if (rc)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* ---- control ---- */

static int rl_listen(const char *addr, const char *port, const char *args,
		       struct tlm_xlistener **out)
{
	struct rdma_listener *xl = calloc(1, sizeof(*xl));
	struct addrinfo *ai = NULL;
	int rc;

	if (!xl)
		return -ENOMEM;
	rc = parse_opts(args, &xl->opts);
	if (rc)
		goto fail;
	rc = resolve(addr, port, true, &ai);
	if (rc)
		goto fail;
	rc = make_channel(&xl->ch);
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_create_id(xl->ch, &xl->id, NULL, RDMA_PS_TCP));
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_bind_addr(xl->id, ai->ai_addr));
	if (!rc) {
		errno = 0;
		rc = cm_err(rdma_listen(xl->id, 64));
	}
	if (rc) {
		tlm__err("rdma: cannot listen on %s:%s: %s", addr ? addr : "*",
			 port ? port : "0", strerror(-rc));
		goto fail;
	}
	freeaddrinfo(ai);
	xl->base.ops = &tlm__rdma_ops;
	*out = &xl->base;
	return 0;
fail:
	if (ai)
		freeaddrinfo(ai);
	if (xl->id)
		rdma_destroy_id(xl->id);
	if (xl->ch)
		rdma_destroy_event_channel(xl->ch);
	free(xl);
	return rc;
}

static int rl_listener_port(const struct tlm_xlistener *x)
{
	const struct rdma_listener *xl = (const struct rdma_listener *)x;

	return ntohs(rdma_get_src_port(xl->id));
}

static int rl_accept(struct tlm_xlistener *x, int timeout_ms, struct tlm_lane **out)
{
	struct rdma_listener *xl = (struct rdma_listener *)x;
	uint64_t deadline = deadline_of(timeout_ms);
	struct rdma_conn_param cp;
	struct rdma_lane *r;
	uint32_t peer_n = 0;
	uint8_t priv[4];
	int rc;

	for (;;) {
		struct rdma_cm_event *ev;

		rc = cm_next(xl->ch, deadline, &ev);
		if (rc)
			return rc;
		if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
			/* e.g. a half-made connection that went away */
			tlm__dbg("rdma: listener: %s", rdma_event_str(ev->event));
			rdma_ack_cm_event(ev);
			continue;
		}
		r = lane_alloc(&xl->opts, 0);
		if (!r) {
			rdma_reject(ev->id, NULL, 0);
			rdma_ack_cm_event(ev);
			return -ENOMEM;
		}
		r->id = ev->id;
		if (ev->param.conn.private_data && ev->param.conn.private_data_len >= 4)
			peer_n = tlm__get32(ev->param.conn.private_data);
		rdma_ack_cm_event(ev);
		break;
	}
	set_peer_nrecv(r, peer_n);
	fmt_peer(rdma_get_peer_addr(r->id), r->base.peer, sizeof(r->base.peer));
	rc = make_channel(&r->ch);
	if (!rc) {
		errno = 0;
		rc = cm_err(rdma_migrate_id(r->id, r->ch));
	}
	if (!rc)
		rc = lane_setup(r);
	if (rc) {
		rdma_reject(r->id, NULL, 0);
		goto fail;
	}
	conn_param(r, &cp, priv);
	errno = 0;
	rc = cm_err(rdma_accept(r->id, &cp));
	if (!rc)
		rc = cm_expect(r->ch, RDMA_CM_EVENT_ESTABLISHED, deadline, "accept", NULL);
	if (rc)
		goto fail;
	*out = &r->base;
	return 0;
fail:
	lane_free(r);
	return rc;
}

static int rl_connect_lane(const char *addr, const char *port, const char *args,
			     unsigned index, int timeout_ms, struct tlm_lane **out)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int ms = timeout_ms < 0 || timeout_ms > 60000 ? 60000 : timeout_ms;
	struct rdma_opts o;
	struct rdma_conn_param cp;
	struct addrinfo *ai = NULL;
	struct rdma_lane *r = NULL;
	uint32_t peer_n = 0;
	uint8_t priv[4];
	int rc;

	rc = parse_opts(args, &o);
	if (rc)
		return rc;
	rc = resolve(addr, port, false, &ai);
	if (rc)
		return rc;
	r = lane_alloc(&o, index);
	if (!r) {
		rc = -ENOMEM;
		goto fail;
	}
	fmt_peer(ai->ai_addr, r->base.peer, sizeof(r->base.peer));
	rc = make_channel(&r->ch);
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_create_id(r->ch, &r->id, NULL, RDMA_PS_TCP));
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_resolve_addr(r->id, NULL, ai->ai_addr, ms > 0 ? ms : 1));
	if (!rc)
		rc = cm_expect(r->ch, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, "resolve address",
			       NULL);
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_resolve_route(r->id, ms > 0 ? ms : 1));
	if (!rc)
		rc = cm_expect(r->ch, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, "resolve route",
			       NULL);
	if (rc)
		goto fail;
	rc = lane_setup(r);
	if (rc)
		goto fail;
	conn_param(r, &cp, priv);
	errno = 0;
	rc = cm_err(rdma_connect(r->id, &cp));
	if (!rc)
		rc = cm_expect(r->ch, RDMA_CM_EVENT_ESTABLISHED, deadline, "connect", &peer_n);
	if (rc) {
		tlm__err("rdma: lane %u to %s failed: %s", index, r->base.peer,
			 tlm_strerror(rc));
		goto fail;
	}
	set_peer_nrecv(r, peer_n);
	freeaddrinfo(ai);
	*out = &r->base;
	return 0;
fail:
	if (r)
		lane_free(r);
	freeaddrinfo(ai);
	return rc;
}

static void rl_listener_close(struct tlm_xlistener *x)
{
	struct rdma_listener *xl = (struct rdma_listener *)x;

	if (!xl)
		return;
	rdma_destroy_id(xl->id);
	rdma_destroy_event_channel(xl->ch);
	free(xl);
}

static void rl_close(struct tlm_lane *l)
{
	struct rdma_lane *r = to_rdma(l);
	uint64_t deadline = tlm__now_ms() + CLOSE_DRAIN_MS;

	if (!l)
		return;
	/* Disconnecting flushes sends still in flight: wait until the peer's
	 * adapter acknowledged them, so what was written is delivered, as a
	 * TCP close would. */
	pthread_mutex_lock(&r->mu);
	(void)post_chain(r);
	while (sq_busy(r) && !r->gone && !r->dead)
		if (wait_io(r, deadline) == -ETIMEDOUT)
			break;
	pthread_mutex_unlock(&r->mu);
	rdma_disconnect(r->id);
	lane_free(r);
}

static int rl_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode)
{
	struct rdma_lane *r = to_rdma(l);
	int rc = 0;

	if (mode != TLM_MODE_BYTES && mode != TLM_MODE_PAGES)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	/* Switching inside a DATA frame would misparse its rest. */
	if (r->data_left)
		rc = -EBUSY;
	else
		l->mode = mode;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static const struct tlm_lane_dp rl_dp = {
	.send_pages = rl_send_pages,
	.recv_pages = rl_recv_pages,
	.write = rl_write,
	.read = rl_read,
	.shutdown = rl_shutdown,
	.flush = rl_flush,
};

const struct tlm_lane_ops tlm__rdma_ops = {
	.name = "rdma",
	.listen = rl_listen,
	.listener_port = rl_listener_port,
	.accept = rl_accept,
	.listener_close = rl_listener_close,
	.connect = rl_connect_lane,
	.close = rl_close,
	.set_mode = rl_set_mode,
	.pollfd = NULL,
	.inject_raw = rl_inject_raw,
	.register_region = rl_register_region,
	.unregister_regions = rl_unregister_regions,
	.wait_sent = rl_wait_sent,
	.dp = &rl_dp,
};
