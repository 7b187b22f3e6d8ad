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
 * Files: rdma.c (options, lane setup and teardown, listen/accept/connect,
 * the ops table), cm.c (rdma_cm events and addresses), pd.c (protection
 * domains and registrations shared per process, async events), post.c
 * (posting work requests, completions, flow control, waiting), send.c,
 * recv.c (the datapath, over core/stream.c's frame stream) and regions.c
 * (zero copy: region offers and registration).
 *
 * Errors: ibv_post_* and ibv_req_notify_cq return the error and do not set
 * errno (verbs_err); librdmacm returns -1 and sets errno (cm_err). Neither
 * library's errno is read anywhere else. A peer that disconnects, or whose
 * QP went to the error state, gives -TLM_EPEERCLOSED once every message
 * that arrived before was read.
 */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "rdma-internal.h"

extern const struct tlm_lane_ops tlm__rdma_ops;

/*
 * transport_args: comma-separated key=value. dev=NAME (the RDMA device the
 * address must resolve to), gid=N (the GID index it must use), slots=N
 * (messages in flight per direction; each is a 64 KiB registered buffer),
 * ack_timeout=N (local ACK timeout, 4.096 us * 2^N, 1..31), stage_kib=N
 * (encrypt lanes: KiB of registered staging memory per lane and side,
 * regions.c; 64..1048576, default 2048), send_timeout=MS (a send during
 * which the peer takes nothing that long fails the lane, send.c; default
 * 30000, 0 = never), tamper=N (tests: the N-th page placed in our memory
 * on a sealed lane has a byte flipped before its MAC is checked, or the
 * N-th staged page's ciphertext one before it is opened, recv.c).
 */
static int parse_opts(const char *args, struct rdma_opts *o)
{
	const char *p = args;
	char item[128], whole[128] = "", *val, *e;
	long v;
	int rc;

	memset(o, 0, sizeof(*o));
	o->gid = -1;
	o->nslot = NSLOT_DEFAULT;
	o->ack_timeout = ACK_TIMEOUT_DEFAULT;
	o->stage_kib = STAGE_KIB_DEFAULT;
	o->send_timeout = SEND_TIMEOUT_DEFAULT;
	while ((rc = tlm__kv_next(&p, item, sizeof(item))) > 0) {
		snprintf(whole, sizeof(whole), "%s", item);
		val = tlm__kv_split(item);
		if (!val || !*val || strlen(val) >= sizeof(o->dev))
			goto bad;
		if (!strcmp(item, "dev")) {
			snprintf(o->dev, sizeof(o->dev), "%s", val);
			continue;
		}
		errno = 0;
		v = strtol(val, &e, 10);
		if (*e || errno || v < 0)
			goto bad;
		if (!strcmp(item, "stage_kib") && v >= STAGE_KIB_MIN && v <= STAGE_KIB_MAX) {
			o->stage_kib = (unsigned)v;
			continue;
		}
		if (!strcmp(item, "send_timeout") && v <= SEND_TIMEOUT_MAX) {
			o->send_timeout = (int)v;
			continue;
		}
		if (v > NSLOT_MAX)
			goto bad;
		if (!strcmp(item, "gid"))
			o->gid = (int)v;
		else if (!strcmp(item, "slots") && v >= 2)
			o->nslot = (unsigned)v;
		else if (!strcmp(item, "ack_timeout") && v >= 1 && v <= 31)
			o->ack_timeout = (uint8_t)v;
		else if (!strcmp(item, "tamper") && v >= 1)
			o->tamper = (unsigned)v;
		else
			goto bad;
	}
	if (rc == 0)
		return 0;
	snprintf(whole, sizeof(whole), "%.100s...", item);
bad:
	tlm__err("rdma: bad transport argument '%s' (want dev=NAME, gid=N, slots=2..%d, "
		 "ack_timeout=1..31, stage_kib=%d..%d, send_timeout=MS, tamper=N)", whole,
		 NSLOT_MAX, STAGE_KIB_MIN, STAGE_KIB_MAX);
	return -EINVAL;
}

static void lane_free(struct rdma_lane *r)
{
	if (r->qp_made) {
		tlm__rdma_lanes_unlink(r);
		rdma_destroy_qp(r->id);
	}
	tlm__rdma_regions_drop(r);
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
		tlm__rdma_pd_put(r->pd);
	if (r->id)
		rdma_destroy_id(r->id);
	if (r->ch)
		rdma_destroy_event_channel(r->ch);
	pthread_mutex_destroy(&r->mu);
	free(r->mem);
	tlm__stream_free(&r->rx);
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
	int rc = tlm__stream_init(&r->rx, &r->base, "rdma", RBUF_SIZE);

	r->pend = calloc(r->nrecv, sizeof(*r->pend));
	r->pend_len = calloc(r->nrecv, sizeof(*r->pend_len));
	r->slot_recs = calloc(r->nslot, sizeof(*r->slot_recs));
	if (rc || !r->pend || !r->pend_len || !r->slot_recs ||
	    pthread_mutex_init(&r->mu, NULL)) {
		tlm__stream_free(&r->rx);
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
	r->pd = tlm__rdma_pd_get(ctx);
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
	rc = tlm__rdma_set_nonblock(r->cc->fd);
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
	tlm__rdma_lanes_link(r);
	if (posix_memalign((void **)&r->mem, 4096, bytes))
		return -ENOMEM;
	memset(r->mem, 0, bytes);
	errno = 0;
	r->mr = ibv_reg_mr(r->pd, r->mem, bytes, IBV_ACCESS_LOCAL_WRITE);
	if (!r->mr)
		return tlm__rdma_memlock_err("lane buffers", ", or use fewer slots (transport_args slots=N)",
				   bytes, errno ? -errno : -ENOMEM);
	for (unsigned i = 0; i < r->nrecv; i++) {
		rc = tlm__rdma_post_recv(r, i);
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
	rc = tlm__rdma_resolve(addr, port, true, &ai);
	if (rc)
		goto fail;
	rc = tlm__rdma_make_channel(&xl->ch);
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

#define ESTABLISH_MS 5000

static int rl_listener_pollfd(const struct tlm_xlistener *x)
{
	return ((const struct rdma_listener *)x)->ch->fd;
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

		rc = tlm__rdma_cm_next(xl->ch, deadline, &ev);
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
	tlm__rdma_fmt_peer(rdma_get_peer_addr(r->id), r->base.peer, sizeof(r->base.peer));
	rc = tlm__rdma_make_channel(&r->ch);
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
	/* A request taken is seen through, however short the wait for one
	 * was (the session polls with a zero wait). */
	if (deadline < tlm__now_ms() + ESTABLISH_MS)
		deadline = tlm__now_ms() + ESTABLISH_MS;
	if (!rc)
		rc = tlm__rdma_cm_expect(r->ch, RDMA_CM_EVENT_ESTABLISHED, deadline, "accept", NULL);
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
	rc = tlm__rdma_resolve(addr, port, false, &ai);
	if (rc)
		return rc;
	r = lane_alloc(&o, index);
	if (!r) {
		rc = -ENOMEM;
		goto fail;
	}
	tlm__rdma_fmt_peer(ai->ai_addr, r->base.peer, sizeof(r->base.peer));
	rc = tlm__rdma_make_channel(&r->ch);
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_create_id(r->ch, &r->id, NULL, RDMA_PS_TCP));
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_resolve_addr(r->id, NULL, ai->ai_addr, ms > 0 ? ms : 1));
	if (!rc)
		rc = tlm__rdma_cm_expect(r->ch, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, "resolve address",
			       NULL);
	if (rc)
		goto fail;
	errno = 0;
	rc = cm_err(rdma_resolve_route(r->id, ms > 0 ? ms : 1));
	if (!rc)
		rc = tlm__rdma_cm_expect(r->ch, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, "resolve route",
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
		rc = tlm__rdma_cm_expect(r->ch, RDMA_CM_EVENT_ESTABLISHED, deadline, "connect", &peer_n);
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
	(void)tlm__rdma_post_chain(r);
	while (sq_busy(r) && !r->gone && !r->dead)
		if (tlm__rdma_wait_io(r, deadline) == -ETIMEDOUT)
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
	if (r->rx.data_left)
		rc = -EBUSY;
	else
		l->mode = mode;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static const struct tlm_lane_dp rl_dp = {
	.send_pages = tlm__rdma_send_pages,
	.recv_pages = tlm__rdma_recv_pages,
	.write = tlm__rdma_write,
	.read = tlm__rdma_read,
	.shutdown = tlm__rdma_shutdown,
	.flush = tlm__rdma_flush,
};

const struct tlm_lane_ops tlm__rdma_ops = {
	.name = "rdma",
	.listen = rl_listen,
	.listener_port = rl_listener_port,
	.listener_pollfd = rl_listener_pollfd,
	.accept = rl_accept,
	.listener_close = rl_listener_close,
	.connect = rl_connect_lane,
	.close = rl_close,
	.set_mode = rl_set_mode,
	.pollfd = NULL,
	.inject_raw = tlm__rdma_inject_raw,
	.abort = tlm__rdma_abort,
	.register_region = tlm__rdma_register_region,
	.unregister_regions = tlm__rdma_unregister_regions,
	.wait_sent = tlm__rdma_wait_sent,
	.place = tlm__rdma_place,
	.count_records = tlm__rdma_count_records,
	.placed_page = tlm__rdma_placed_page,
	.stage_slots = tlm__rdma_stage_slots,
	.stage_get = tlm__rdma_stage_get,
	.stage_put = tlm__rdma_stage_put,
	.staged_page = tlm__rdma_staged_page,
	.dp = &rl_dp,
};
