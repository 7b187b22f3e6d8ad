/* SPDX-License-Identifier: MIT */
/*
 * What the RDMA lanes share per process: protection domains and memory
 * registrations (counted), and the device's async events, which name a
 * QP or a port and are routed to the lanes they concern. All of it under
 * one lock (g_mu).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "rdma-internal.h"

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

struct ibv_pd *tlm__rdma_pd_get(struct ibv_context *ctx)
{
	struct shared_pd *p;
	struct ibv_pd *pd = NULL;

	pthread_mutex_lock(&g_mu);
	for (p = g_pds; p && p->ctx != ctx; p = p->next)
		;
	if (!p && (p = calloc(1, sizeof(*p)))) {
		p->ctx = ctx;
		/* Async events are read when a lane waits (tlm__rdma_wait_io). */
		(void)tlm__rdma_set_nonblock(ctx->async_fd);
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

void tlm__rdma_pd_put(struct ibv_pd *pd)
{
	pthread_mutex_lock(&g_mu);
	pd_put_locked(pd);
	pthread_mutex_unlock(&g_mu);
}

/* Registration failed: say which limit to raise, and by how much. */
int tlm__rdma_memlock_err(const char *what, const char *hint, size_t need, int err)
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

int tlm__rdma_mr_get(struct ibv_pd *pd, void *base, size_t len, int access, const char *what,
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
		rc = tlm__rdma_memlock_err(what, "", len, errno ? -errno : -ENOMEM);
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

void tlm__rdma_mr_put(struct ibv_mr *mr)
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

/* The device's async events, for whichever of our lanes they concern. */
void tlm__rdma_async_drain(struct ibv_context *ctx)
{
	pthread_mutex_lock(&g_mu);
	async_drain_locked(ctx);
	pthread_mutex_unlock(&g_mu);
}

void tlm__rdma_lanes_link(struct rdma_lane *r)
{
	pthread_mutex_lock(&g_mu);
	r->next = g_lanes;
	g_lanes = r;
	pthread_mutex_unlock(&g_mu);
}

void tlm__rdma_lanes_unlink(struct rdma_lane *r)
{
	pthread_mutex_lock(&g_mu);
	for (struct rdma_lane **pp = &g_lanes; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	pthread_mutex_unlock(&g_mu);
}

void tlm__rdma_regions_drop(struct rdma_lane *r)
{
	for (unsigned i = 0; i < TLM_MAX_REGIONS; i++) {
		if (r->src_mr[i])
			tlm__rdma_mr_put(r->src_mr[i]);
		if (r->dst_mr[i])
			tlm__rdma_mr_put(r->dst_mr[i]);
		r->src_mr[i] = r->dst_mr[i] = NULL;
	}
	tlm__rdma_stage_drop(r);
}
