/* SPDX-License-Identifier: MIT */
/*
 * Lanes: setup, teardown, failure.
 *
 * Setup (client side):
 *   SYN_SENT --SYNACK or any packet from the peer--> EST
 *   SYN_SENT --RST--> failed (-ECONNREFUSED);  --timeout--> -ETIMEDOUT
 *   EST --CLOSE from peer / keepalive silence--> dead (-TLM_EPEERCLOSED)
 * The SYN goes again every SYN_NS until an answer (timers.c). Server side:
 * a SYN to a listener's UDP port makes a lane in EST at once and queues it
 * for accept(); a repeated SYN (our SYNACK was lost) gets the SYNACK
 * again; a SYN to a port nobody listens on gets an RST, so connect fails
 * fast. The SYN asks for a queue and the SYNACK grants it (port.c).
 *
 * Teardown: close() lingers until what was written is acked (LINGER_MS at
 * most), then hands the lane to whoever polls it, which sends CLOSE (up
 * to three times) and marks it gone; close() then unlinks and frees it.
 * A lane that fails stays allocated, with its error sticky, until close.
 */
#include <sys/eventfd.h>

#include "dpdk-internal.h"

static void lane_free(struct dlane *l)
{
	if (!l)
		return;
	if (l->held)
		rte_pktmbuf_free(l->held);
	if (l->efd >= 0)
		close(l->efd);
	for (unsigned i = l->sq_head; l->sq && i != l->sq_tail; i++)
		if (tlm__dpdk_txp_headonly(&l->sq[i % SQ_SLOTS]))
			rte_pktmbuf_free(l->sq[i % SQ_SLOTS].m);
	for (unsigned i = 0; i < l->hn; i++)
		rte_pktmbuf_free(l->hq[(l->hhead + i) % HELD_MAX].m);
	rte_pktmbuf_free(l->om);
	if (l->nstash)
		rte_pktmbuf_free_bulk(l->stash, l->nstash);
	if (l->npend)
		rte_pktmbuf_free_bulk(l->pend, l->npend);
	if (l->nqtx)
		rte_pktmbuf_free_bulk(l->qtx, l->nqtx);
	free(l->sq);
	free(l->rbuf);
	free(l->scratch);
	pthread_mutex_destroy(&l->mu);
	pthread_mutex_destroy(&l->qmu);
	pthread_mutex_destroy(&l->wmu);
	pthread_mutex_destroy(&l->rmu);
	pthread_cond_destroy(&l->cv);
	free(l);
}

static struct dlane *lane_new(struct dport *p, const struct cfg *c)
{
	struct dlane *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->efd = -1;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->wmu, NULL);
	pthread_mutex_init(&l->rmu, NULL);
	pthread_mutex_init(&l->qmu, NULL);
	cv_init_mono(&l->cv);
	l->sq = calloc(SQ_SLOTS, sizeof(*l->sq));
	l->rbuf = malloc(RING_BYTES);
	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!l->sq || !l->rbuf || l->efd < 0) {
		lane_free(l);
		return NULL;
	}
	l->base.ops = &tlm__dpdk_ops;
	l->base.mode = TLM_MODE_BYTES;
	l->base.page_size = TLM_DEFAULT_PAGE_SIZE;
	l->port = p;
	l->dead_ms = c->dead_ms;
	l->window = c->window ? c->window : RTE_MIN(RING_BYTES, WINDOW_PKTS * p->mss);
	l->fault = c->fault;
	/* zero copy where the link guards the bytes by itself: memif (shared
	 * memory) unless told otherwise, any port when told zc=on */
	l->zc_rx = c->zc == ZC_ON || (c->zc == ZC_AUTO && p->memif);
	l->zc_tx = l->zc_rx && p->zcpool && p->zc_segs > 1;
	l->rng = tlm__now_ns() | 1;
	l->rto_ns = RTO_INIT_NS;
	l->peer_edge = RING_BYTES;  /* the peer starts with an empty ring */
	l->adv_edge = RING_BYTES;
	l->last_rx = tlm__now_ns();
	l->torn_seen = atomic_load(&p->torn);
	l->lid = ++p->next_lid;
	if (!l->lid)
		l->lid = ++p->next_lid;
	return l;
}

/* The pollfd turns readable: only once someone asked for it, the rest
 * of the time the syscall per empty-to-data turn is saved. */
void tlm__dpdk_efd_signal(struct dlane *l)
{
	uint64_t one = 1;

	if (atomic_load(&l->efd_on) && write(l->efd, &one, sizeof(one)) < 0) {
		/* counter saturated: still readable, nothing lost */
	}
}

void tlm__dpdk_lane_fail(struct dlane *l, int level, int err, const char *why)
{
	if (l->state == LS_DEAD)
		return;
	l->state = LS_DEAD;
	l->err = err;
	snprintf(l->why, sizeof(l->why), "%s", why);
	tlm__log(level, "dpdk: lane %u (%s): %s", l->base.index, l->base.peer, why);
	pthread_cond_broadcast(&l->cv);
	tlm__dpdk_efd_signal(l);
}

/* The peer closed and the reader has taken all that came before: between
 * frames that is the end of the stream, inside one (a frame's bytes still
 * missing) the peer left it cut. */
void tlm__dpdk_peer_closed_fail(struct dlane *l)
{
	if (l->peer_reset)
		tlm__dpdk_lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
			  "peer refused what we sent and reset the lane (its log says why)");
	else if (l->rcv_nxt == l->rcv_rd && !l->data_left)
		tlm__dpdk_lane_fail(l, TLM_LOG_INFO, -TLM_EPEERCLOSED, "peer closed the lane");
	else
		tlm__dpdk_lane_fail(l, TLM_LOG_WARN, -TLM_EPEERCLOSED, "peer closed the lane mid-stream");
}

/* A packet for a lane in SYN_SENT: the peer's answer. An RST refuses the
 * lane (false: nothing more to do with the packet); anything else
 * establishes it, and says whether the queue it asked for was granted
 * (memif: the SYNACK says so, or the first packet came on it). The packet
 * came the shared way, under port->lock (an inactive lane's queue is
 * nobody's to poll). l->mu held. */
bool tlm__dpdk_conn_rx_syn_sent(struct dlane *l, const struct pkt *k)
{
	if (k->type == PT_RST) {
		tlm__dpdk_lane_fail(l, TLM_LOG_DEBUG, -ECONNREFUSED, "connection refused");
		return false;
	}
	l->rid = k->src;
	l->state = LS_EST;
	if (l->qown && !l->q) {
		if ((k->type == PT_SYNACK && k->seq == l->qown) || k->qid == l->qown)
			l->q = l->qown;
		else
			tlm__dpdk_queue_put(l->port, l);
	}
	pthread_cond_broadcast(&l->cv);
	return true;
}

/* A CLOSE or RST from the peer: the lane fails once the reader has taken
 * what came before (at once for an RST). l->mu held. */
void tlm__dpdk_conn_rx_close(struct dlane *l, const struct pkt *k)
{
	l->peer_closed = true;
	l->peer_reset = k->type == PT_RST;
	if (l->rcv_rd == l->rcv_nxt || l->peer_reset)
		tlm__dpdk_peer_closed_fail(l);
	pthread_cond_broadcast(&l->cv);
}

/* The transmit step of a lane that is closing or dead. Closing: CLOSE
 * (RST if we refused its stream) up to three times, then the lane is
 * gone, for close() to unlink and free. Dead after refusing the peer's
 * stream (a bad frame): the peer learns it now, not after dead_ms of
 * silence. l->mu held. */
void tlm__dpdk_conn_tx_ending(struct dport *p, struct dlane *l)
{
	if (l->closing) {
		if (l->close_sent < 3 && (l->state == LS_EST || l->tell_peer) && l->rid) {
			tlm__dpdk_send_ctl(p, l, l->state == LS_EST ? PT_CLOSE : PT_RST);
			l->close_sent++;
		} else {
			l->gone = true;
			pthread_cond_broadcast(&l->cv);
		}
		return;
	}
	if (l->tell_peer && l->rid && (l->mac_known || p->p2p))
		tlm__dpdk_send_ctl(p, l, PT_RST);
	l->tell_peer = false;
}

struct dlane *tlm__dpdk_find_lane(struct dport *p, uint32_t lid)
{
	for (struct dlane *l = p->lanes; l; l = l->next)
		if (l->lid == lid)
			return l;
	return NULL;
}

static struct dlistener *find_listener(struct dport *p, uint16_t port)
{
	for (struct dlistener *x = p->listeners; x; x = x->next)
		if (x->udp_port == port)
			return x;
	return NULL;
}

void tlm__dpdk_rx_syn(struct dport *p, const struct pkt *k, bool local, uint16_t qid)
{
	struct dlistener *x = find_listener(p, k->dport);

	for (struct dlane *l = p->lanes; l; l = l->next)
		if (l->rid == k->src && l->peer_ip == k->sip && l->rport == k->sport &&
		    l->lport == k->dport && !l->closing) {
			l->need_synack = true;   /* our SYNACK was lost */
			return;
		}
	if (!x) {
		/* nobody listens: refuse, so connect fails fast */
		struct dlane tmp = { .peer_ip = k->sip, .lport = k->dport, .rport = k->sport,
				     .rid = k->src, .local = local, .mac_known = true };
		rte_ether_addr_copy(&k->eh->src_addr, &tmp.peer_mac);
		tlm__dpdk_send_ctl(p, &tmp, PT_RST);
		return;
	}
	struct dlane *l = lane_new(p, &x->cfg);
	if (!l)
		return;   /* the client retries its SYN */
	l->state = LS_EST;
	l->rid = k->src;
	l->peer_ip = k->sip;
	l->lport = k->dport;
	l->rport = k->sport;
	l->local = local;
	rte_ether_addr_copy(&k->eh->src_addr, &l->peer_mac);
	l->mac_known = !p->p2p;
	struct in_addr a = { .s_addr = htonl(k->sip) };
	snprintf(l->base.peer, sizeof(l->base.peer), "%s:%u", inet_ntoa(a), k->sport);
	l->need_synack = true;
	tlm__dpdk_queue_take(p, l, p->memif ? (int)(k->seq < MAX_QUEUES ? k->seq : 0) : (int)qid);
	l->next = p->lanes;
	p->lanes = l;
	if (x->qtail)
		x->qtail->qnext = l;
	else
		x->qhead = l;
	x->qtail = l;
	pthread_cond_broadcast(&x->cv);
}

/* Take a closed lane off the port; port->lock held. */
void tlm__dpdk_lane_unlink(struct dport *p, struct dlane *l)
{
	for (struct dlane **pp = &p->lanes; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			tlm__dpdk_queue_put(p, l);
			return;
		}
}

static int parse_port(const char *port, uint16_t *out)
{
	char *e;
	unsigned long v = strtoul(port ? port : "0", &e, 10);

	if (*e || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* The embedded default: a memif pair per UDP port, server on the
 * listening side, client on the connecting side. Abstract sockets, so a
 * killed process leaves nothing behind and a busy port fails to bind. */
static void memif_names(uint16_t udp, bool server, char *name, size_t nlen,
			char *args, size_t alen, uint32_t mtu)
{
	snprintf(name, nlen, "net_memif_tlm%c%u", server ? 's' : 'c', udp);
	snprintf(args, alen, "%s,role=%s,id=0,socket=/run/tlm-dpdk-%u.sock,socket-abstract=yes%s",
		 name, server ? "server" : "client", udp, mtu > 1500 ? ",bsize=9216" : "");
}

int tlm__dpdk_listen(const char *addr, const char *port, const char *args,
		     struct tlm_xlistener **out)
{
	struct dlistener *x;
	struct dport *p = NULL;
	uint16_t udp;
	int r;

	(void)addr;   /* the port's address is ip= (or none on memif/ring) */
	if (tlm__dpdk_fork_check())
		return -EOPNOTSUPP;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	r = tlm__dpdk_parse_args(args, &x->cfg);
	if (r)
		goto fail;
	r = parse_port(port, &udp);
	if (r)
		goto fail;
	pthread_mutex_lock(&tlm__dpdk_lock);
	r = tlm__dpdk_eal_start(&x->cfg);
	if (r)
		goto unlock;
	if (x->cfg.dev[0]) {
		bool p2p = !x->cfg.ip;
		r = tlm__dpdk_port_get(&x->cfg, x->cfg.dev, x->cfg.vdev[0] ? x->cfg.vdev : NULL, p2p, &p);
		if (r)
			goto unlock;
		if (!udp)
			udp = (uint16_t)(20000 + rte_rand() % 40000);
	} else {
		char name[64], dargs[256];
		bool pick = !udp;
		/* the client's queue count decides: offer every queue it may
		 * ask for (a memif client wanting more than the server has
		 * never gets its link up) */
		x->cfg.queues = MAX_QUEUES;
		r = -EADDRINUSE;
		for (int tries = 0; tries < (pick ? 20 : 1); tries++) {
			if (pick)
				udp = (uint16_t)(20000 + rte_rand() % 40000);
			memif_names(udp, true, name, sizeof(name), dargs, sizeof(dargs), x->cfg.mtu);
			if (rte_eth_dev_get_port_by_name(name, &(uint16_t){ 0 }) == 0)
				continue;   /* ours already, for another listener */
			r = tlm__dpdk_port_get(&x->cfg, name, dargs, true, &p);
			if (!r || r == -EINVAL || r == -ENOMEM)
				break;   /* only a busy socket is worth another port */
		}
		if (r) {
			tlm__err("dpdk: cannot listen on memif port %u: %d", udp, r);
			goto unlock;
		}
		if (!p->ip)
			p->ip = 0xc6120001;   /* 198.18.0.1, informational on p2p */
	}
	tlm__dpdk_lock_port(p);
	if (find_listener(p, udp)) {
		pthread_mutex_unlock(&p->lock);
		tlm__dpdk_port_put(p);
		r = -EADDRINUSE;
		goto unlock;
	}
	x->base.ops = &tlm__dpdk_ops;
	x->port = p;
	x->udp_port = udp;
	cv_init_mono(&x->cv);
	x->next = p->listeners;
	p->listeners = x;
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&tlm__dpdk_lock);
	*out = &x->base;
	return 0;
unlock:
	pthread_mutex_unlock(&tlm__dpdk_lock);
fail:
	free(x);
	return r;
}

int tlm__dpdk_listener_port(const struct tlm_xlistener *xl)
{
	return ((const struct dlistener *)xl)->udp_port;
}

int tlm__dpdk_accept(struct tlm_xlistener *xl, int timeout_ms, struct tlm_lane **out)
{
	struct dlistener *x = (struct dlistener *)xl;
	struct dport *p = x->port;
	uint64_t end = deadline_ns(timeout_ms);
	struct dlane *l;

	if (tlm__dpdk_fork_check())
		return -EOPNOTSUPP;
	tlm__dpdk_lock_port(p);
	while (!x->qhead) {
		if (cv_wait_until(&x->cv, &p->lock, end) == ETIMEDOUT && !x->qhead) {
			pthread_mutex_unlock(&p->lock);
			return -ETIMEDOUT;
		}
	}
	l = x->qhead;
	x->qhead = l->qnext;
	if (!x->qhead)
		x->qtail = NULL;
	l->qnext = NULL;
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&tlm__dpdk_lock);
	p->refs++;    /* the lane holds the port */
	pthread_mutex_unlock(&tlm__dpdk_lock);
	*out = &l->base;
	return 0;
}

/* Hand a lane to the poll thread for a CLOSE and unlinking; wait for it. */
static void lane_release(struct dlane *l)
{
	struct dport *p = l->port;

	pthread_mutex_lock(&l->mu);
	l->closing = true;
	pthread_mutex_unlock(&l->mu);
	tlm__dpdk_kick(p);
	pthread_mutex_lock(&l->mu);
	while (!l->gone)
		cv_wait_until(&l->cv, &l->mu, tlm__now_ns() + 10000000ull);
	pthread_mutex_unlock(&l->mu);
	/* gone is set by whoever polled it last: make sure no poll of it is
	 * still running (no spinner holds it: see spin_sweep in poll.c), and that it is
	 * off the port */
	pthread_mutex_lock(&p->swmu);
	for (unsigned q = 0; q < MAX_QUEUES; q++)
		if (atomic_load(&p->qlane[q]) == l)
			atomic_store(&p->qlane[q], NULL);
	pthread_mutex_unlock(&p->swmu);
	pthread_mutex_lock(&l->qmu);
	tlm__dpdk_lock_port(p);
	tlm__dpdk_lane_unlink(p, l);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&l->qmu);
	tlm__dbg("dpdk: lane %u (%s) closed: %llu pkts out, %llu in, %llu segments re-sent; "
		 "queue %u, %llu pkts in on it",
		 l->base.index, l->base.peer, (unsigned long long)l->tx_pkts,
		 (unsigned long long)l->rx_pkts, (unsigned long long)l->retrans,
		 (unsigned)l->q, (unsigned long long)l->rx_ownq);
	lane_free(l);
}

void tlm__dpdk_listener_close(struct tlm_xlistener *xl)
{
	struct dlistener *x = (struct dlistener *)xl;
	struct dport *p = x->port;
	struct dlane *q;

	if (tlm__dpdk_forked) {
		free(x);   /* the rest belongs to the parent's threads */
		return;
	}
	tlm__dpdk_lock_port(p);
	for (struct dlistener **pp = &p->listeners; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	q = x->qhead;
	x->qhead = x->qtail = NULL;
	pthread_mutex_unlock(&p->lock);
	while (q) {
		struct dlane *n = q->qnext;
		lane_release(q);
		q = n;
	}
	pthread_mutex_lock(&tlm__dpdk_lock);
	tlm__dpdk_port_put(p);
	pthread_mutex_unlock(&tlm__dpdk_lock);
	pthread_cond_destroy(&x->cv);
	free(x);
}

/* The port a connect to UDP port udp at pip goes out of (a reference
 * taken); *local: the listener is in this process, reached in software. */
static int connect_port(const struct cfg *c, uint16_t udp, uint32_t pip, struct dport **out,
			bool *local)
{
	struct dport *p = NULL;
	int r;

	*local = false;
	pthread_mutex_lock(&tlm__dpdk_lock);
	r = tlm__dpdk_eal_start(c);
	if (r) {
		pthread_mutex_unlock(&tlm__dpdk_lock);
		return r;
	}
	if (c->dev[0]) {
		r = tlm__dpdk_port_get(c, c->dev, c->vdev[0] ? c->vdev : NULL, !c->ip, &p);
		/* listening here too on the same port and address: loop */
		if (!r) {
			tlm__dpdk_lock_port(p);
			*local = find_listener(p, udp) && (p->p2p || pip == p->ip);
			pthread_mutex_unlock(&p->lock);
		}
	} else {
		char name[64], dargs[256];
		/* the listener may live in this very process: a memif socket
		 * cannot be both ends, so loop through the server port */
		memif_names(udp, true, name, sizeof(name), dargs, sizeof(dargs), c->mtu);
		for (p = tlm__dpdk_ports; p; p = p->next)
			if (!strcmp(p->name, name))
				break;
		if (p) {
			p->refs++;
			*local = true;
		} else {
			memif_names(udp, false, name, sizeof(name), dargs, sizeof(dargs), c->mtu);
			r = tlm__dpdk_port_get(c, name, dargs, true, &p);
			if (!r && !p->ip)
				p->ip = 0xc6120002;
		}
	}
	pthread_mutex_unlock(&tlm__dpdk_lock);
	if (r)
		tlm__err("dpdk: connect: no port: %d", r);
	*out = p;
	return r;
}

/* A lane in SYN_SENT to pip:udp, on the port's list for its pumps to
 * send the SYN; NULL if out of memory. */
static struct dlane *connect_lane(struct dport *p, const struct cfg *c, const char *addr,
				  uint32_t pip, uint16_t udp, bool local, unsigned index)
{
	struct dlane *l;

	tlm__dpdk_lock_port(p);
	l = lane_new(p, c);
	if (!l) {
		pthread_mutex_unlock(&p->lock);
		return NULL;
	}
	l->state = LS_SYN_SENT;
	l->peer_ip = pip;
	l->rport = udp;
	l->lport = p->next_eph++;
	if (p->next_eph < 49152)
		p->next_eph = 49152;
	l->local = local;
	if (c->peer_mac_set) {
		l->peer_mac = c->peer_mac;
		l->mac_known = true;
	}
	l->base.index = index;
	snprintf(l->base.peer, sizeof(l->base.peer), "%s:%u", addr ? addr : "198.18.0.1", udp);
	tlm__dpdk_queue_take(p, l, -1);   /* memif: reserved, asked for in the SYN */
	l->next = p->lanes;
	p->lanes = l;
	pthread_mutex_unlock(&p->lock);
	tlm__dpdk_kick(p);
	return l;
}

/* Wait for the peer's answer: 0 once established, else why not. */
static int handshake(struct dport *p, struct dlane *l, uint64_t end)
{
	struct waiter w = { 0 };
	int r;

	pthread_mutex_lock(&l->mu);
	while (l->state == LS_SYN_SENT && tlm__dpdk_lane_wait(l, &w, end) != ETIMEDOUT)
		;
	tlm__dpdk_wait_done(l, &w);
	r = l->state == LS_EST ? 0 : l->state == LS_DEAD ? l->err : -ETIMEDOUT;
	if (!r)
		l->last_rx = tlm__now_ns();
	pthread_mutex_unlock(&l->mu);
	if (!r && !l->qown) {
		/* the peer's MAC is known now: rte_flow can steer us */
		tlm__dpdk_lock_port(p);
		tlm__dpdk_queue_take(p, l, -1);
		pthread_mutex_unlock(&p->lock);
	}
	return r;
}

int tlm__dpdk_connect(const char *addr, const char *port, const char *args,
		      unsigned index, int timeout_ms, struct tlm_lane **out)
{
	struct cfg c;
	struct dport *p = NULL;
	struct dlane *l;
	uint16_t udp;
	uint32_t pip = 0xc6120001;   /* default peer: 198.18.0.1 */
	uint64_t end;
	bool local;
	int r;

	if (tlm__dpdk_fork_check())
		return -EOPNOTSUPP;
	if (timeout_ms <= 0)
		timeout_ms = TLM_DEFAULT_TIMEOUT_MS;
	r = tlm__dpdk_parse_args(args, &c);
	if (r)
		return r;
	r = parse_port(port, &udp);
	if (r || !udp)
		return -EINVAL;
	if (addr) {
		struct in_addr a;
		if (inet_pton(AF_INET, addr, &a) == 1)
			pip = ntohl(a.s_addr);
		else if (c.ip) {
			tlm__err("dpdk: connect: '%s' is not an IPv4 address", addr);
			return -EINVAL;
		}
	}
	r = connect_port(&c, udp, pip, &p, &local);
	if (r)
		return r;
	/* the timeout is the wait for the link and the peer: starting this
	 * process's EAL and port (a minute under TCG on a loaded host) is
	 * not part of it */
	end = deadline_ns(timeout_ms);
	if (!local) {
		r = tlm__dpdk_wait_link(p, tlm__left_ms(end / 1000000ull));
		if (r) {
			tlm__err("dpdk: connect: %s: link did not come up", p->name);
			goto put;
		}
	}
	l = connect_lane(p, &c, addr, pip, udp, local, index);
	if (!l) {
		r = -ENOMEM;
		goto put;
	}
	r = handshake(p, l, end);
	if (r) {
		tlm__dbg("dpdk: connect to %s: %d", l->base.peer, r);
		lane_release(l);
		goto put;
	}
	*out = &l->base;
	return 0;
put:
	pthread_mutex_lock(&tlm__dpdk_lock);
	tlm__dpdk_port_put(p);
	pthread_mutex_unlock(&tlm__dpdk_lock);
	return r;
}

void tlm__dpdk_close(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;
	struct dport *p = l->port;
	uint64_t end = deadline_ns(LINGER_MS);

	if (tlm__dpdk_forked)
		return;   /* the parent's lane: not ours to touch */
	/* linger: let what was written reach the peer, like a socket close */
	struct waiter w = { 0 };
	pthread_mutex_lock(&l->mu);
	while (l->state == LS_EST && l->snd_una < l->snd_end &&
	       tlm__dpdk_lane_wait(l, &w, end) != ETIMEDOUT)
		;
	tlm__dpdk_wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	lane_release(l);
	pthread_mutex_lock(&tlm__dpdk_lock);
	tlm__dpdk_port_put(p);
	pthread_mutex_unlock(&tlm__dpdk_lock);
}
