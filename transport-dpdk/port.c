/* SPDX-License-Identifier: MIT */
/*
 * Ports: one DPDK port (a probed device, or a vdev we create), its queue
 * pairs, mbuf pools and poll thread, shared by every lane and listener on
 * it; found by name and reference-counted under tlm__dpdk_lock, and kept
 * until the process exits.
 *
 * Queues of their own. On memif the sender picks the queue (the client's
 * tx queue q is the server's rx queue q): the connecting side reserves a
 * free q and asks for it in its SYN (sent on queue 0); the accepting
 * side's lane takes q if it is free there too and says which in its
 * SYNACK; the connecting side uses q only once granted. A memif queue is
 * polled only by the lane that owns it: polling one the peer did not set
 * up reads another queue's ring (the shared one's) and corrupts both
 * streams. The embedded memif server offers all MAX_QUEUES, so the
 * connecting side's queues= decides (with vdev= memif the server needs at
 * least the client's queues=, or the link never comes up). On a NIC whose
 * rte_flow_validate accepts it, a rule steers the lane's UDP port pair to
 * q. Packets no lane's rule matches (ARP, SYNs, the shared queue's
 * lanes) must reach queue 0: a port that spreads them over its queues
 * otherwise (net_tap hashes flows over its queues, and a queue no lane
 * owns is never polled) gets a rule of lower priority that sends every
 * other frame there; a port that refuses either rule runs on queue 0
 * alone, and says so once (tlm__info). net_tap does all this through TC
 * flower on its kernel side (tests/dpdk: the tap-flow case, in the VM
 * harness, whose kernel has cls_flower).
 */
#include "dpdk-internal.h"

static unsigned g_pool_seq;   /* mempool names; under tlm__dpdk_lock */

/* Say once per port why its lanes share queue 0. */
static void flow_refused(struct dport *p, const char *rule, const struct rte_flow_error *e)
{
	if (p->flow_said)
		return;
	p->flow_said = true;
	tlm__info("dpdk: %s: rte_flow refused %s (%s): lanes without a rule share queue 0",
		  p->name, rule, e->message ? e->message : rte_strerror(rte_errno));
}

/* A rule sending the frames pat matches to queue q, at priority prio
 * (0 first); NULL, with err set, if the port refuses it. */
static struct rte_flow *flow_rule(struct dport *p, const struct rte_flow_item *pat,
				  uint32_t prio, uint16_t q, struct rte_flow_error *err)
{
	struct rte_flow_attr attr = { .ingress = 1, .priority = prio };
	struct rte_flow_action_queue qa = { .index = q };
	struct rte_flow_action act[] = {
		{ .type = RTE_FLOW_ACTION_TYPE_QUEUE, .conf = &qa },
		{ .type = RTE_FLOW_ACTION_TYPE_END },
	};

	memset(err, 0, sizeof(*err));
	if (rte_flow_validate(p->port_id, &attr, pat, act, err))
		return NULL;
	return rte_flow_create(p->port_id, &attr, pat, act, err);
}

/* A rule steering the lane's packets (its UDP port pair) to queue q. */
static struct rte_flow *flow_steer(struct dport *p, uint16_t lport, uint16_t rport, uint16_t q,
				   struct rte_flow_error *err)
{
	struct rte_flow_item_udp spec = { 0 }, mask = { 0 };

	spec.hdr.dst_port = rte_cpu_to_be_16(lport);
	spec.hdr.src_port = rte_cpu_to_be_16(rport);
	mask.hdr.dst_port = mask.hdr.src_port = 0xffff;
	struct rte_flow_item pat[] = {
		{ .type = RTE_FLOW_ITEM_TYPE_ETH },
		{ .type = RTE_FLOW_ITEM_TYPE_IPV4 },
		{ .type = RTE_FLOW_ITEM_TYPE_UDP, .spec = &spec, .mask = &mask },
		{ .type = RTE_FLOW_ITEM_TYPE_END },
	};
	return flow_rule(p, pat, 0, q, err);
}

/* Every frame no lane's rule takes goes to queue 0 (priority 1: after
 * theirs). */
static struct rte_flow *flow_rest(struct dport *p, struct rte_flow_error *err)
{
	struct rte_flow_item pat[] = {
		{ .type = RTE_FLOW_ITEM_TYPE_ETH },
		{ .type = RTE_FLOW_ITEM_TYPE_END },
	};
	return flow_rule(p, pat, 1, 0, err);
}

/* Give l a queue pair of its own if one is free. memif, where the
 * sender picks the queue: the connecting side (want < 0) reserves a free
 * q and asks for it in its SYN, which goes on the shared queue; the
 * accepting side takes q = want if it is free here too and says so in
 * its SYNACK, and only then does the connecting side use q (tlm__dpdk_rx_lane).
 * A queue is only ever polled once its lane owns it: a memif queue the
 * peer did not set up reads ring 0, the shared queue's ring. NICs: any
 * free q, once rte_flow steers the lane there. Otherwise l stays on the
 * shared queue (software demux by the poll thread). port->lock held. */
void tlm__dpdk_queue_take(struct dport *p, struct dlane *l, int want)
{
	uint16_t q = 0;

	if (l->qown || l->local || p->nq < 2 || (!p->p2p && !l->mac_known))
		return;
	if (p->memif && want >= 0) {
		q = want > 0 && want < p->nq && !p->qowner[want] ? (uint16_t)want : 0;
	} else if (p->memif || p->flow) {
		for (q = 1; q < p->nq && p->qowner[q]; q++)
			;
		if (q == p->nq)
			q = 0;
		if (q && p->flow) {
			struct rte_flow_error err;
			if (p->flow_refuse && ++p->lane_rules == p->flow_refuse) {
				err = (struct rte_flow_error){ .type = RTE_FLOW_ERROR_TYPE_UNSPECIFIED,
					.message = "flow_refuse= in transport_args" };
				l->flow = NULL;
			} else {
				l->flow = flow_steer(p, l->lport, l->rport, q, &err);
			}
			if (!l->flow) {
				flow_refused(p, "a lane's rule", &err);
				q = 0;
			}
		}
	}
	if (q) {
		p->qowner[q] = l;
		l->qown = q;
		if (!p->memif || want >= 0)
			l->q = q;
	}
}

void tlm__dpdk_queue_put(struct dport *p, struct dlane *l)
{
	if (!l->qown)
		return;
	if (l->flow)
		rte_flow_destroy(p->port_id, l->flow, NULL);
	p->qowner[l->qown] = NULL;
	l->qown = 0;
}

static void port_destroy(struct dport *p)
{
	if (p->thr) {
		atomic_store(&p->stop, true);
		tlm__dpdk_kick(p);
		pthread_join(p->thr, NULL);
	}
	if (p->ntx)
		rte_pktmbuf_free_bulk(p->txq, p->ntx);
	if (p->port_id != UINT16_MAX) {
		if (p->rest)
			rte_flow_destroy(p->port_id, p->rest, NULL);
		rte_eth_dev_stop(p->port_id);
		rte_eth_dev_close(p->port_id);
	}
	if (p->made_vdev)
		rte_eal_hotplug_remove("vdev", p->name);
	if (p->pool)
		rte_mempool_free(p->pool);
	if (p->txpool)
		rte_mempool_free(p->txpool);
	if (p->zcpool)
		rte_mempool_free(p->zcpool);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->kmu);
	pthread_mutex_destroy(&p->swmu);
	pthread_cond_destroy(&p->kcv);
	free(p);
}

/* Configure p->nq queue pairs and start. */
static int port_start(struct dport *p)
{
	struct rte_eth_conf conf = { .txmode.offloads = p->txoff };
	uint16_t nrx = NB_DESC, ntx = NB_DESC;
	int r = rte_eth_dev_configure(p->port_id, p->nq, p->nq, &conf);

	if (r)
		return r;
	rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &nrx, &ntx);
	for (uint16_t q = 0; q < p->nq && !r; q++) {
		r = rte_eth_rx_queue_setup(p->port_id, q, nrx, rte_eth_dev_socket_id(p->port_id),
					   NULL, p->pool);
		if (!r)
			r = rte_eth_tx_queue_setup(p->port_id, q, ntx,
						   rte_eth_dev_socket_id(p->port_id), NULL);
	}
	if (r)
		return r;
	rte_eth_promiscuous_enable(p->port_id);
	/* a memif client may find the server still busy with a previous
	 * client of the same id for a moment: retry briefly */
	for (int tries = 0; (r = rte_eth_dev_start(p->port_id)) && tries < 20; tries++)
		usleep(50000);
	return r;
}

/* An mbuf pool the lanes' threads share. They may outnumber the cores,
 * and a ring-based pool stalls every other sender, spinning in its
 * dequeue, while one thread is preempted between moving the ring's head
 * and its tail. So the lock-free stack, unless the EAL was told which
 * ops to use (--mbuf-pool-ops-name) or cannot do it. */
static struct rte_mempool *pool_new(const char *name, unsigned n, uint16_t room)
{
	struct rte_mempool *mp = NULL;

	if (!rte_mbuf_user_mempool_ops())
		mp = rte_pktmbuf_pool_create_by_ops(name, n, 256, 0, room, rte_socket_id(),
						    "lf_stack");
	if (!mp)
		mp = rte_pktmbuf_pool_create(name, n, 256, 0, room, rte_socket_id());
	if (mp)
		tlm__dbg("dpdk: pool %s: %u mbufs, ops %s", name, n, rte_mempool_get_ops(mp->ops_index)->name);
	return mp;
}

/* How many callers may spin-poll at once: one per core this process may
 * run on, half of them on memif, whose peer process runs on the same
 * cores. More spinners than cores only take turns at the CPU while the
 * one with packets waits for its slice. */
static unsigned spin_budget(bool memif)
{
	cpu_set_t cs;
	unsigned n = 1;

	if (sched_getaffinity(0, sizeof(cs), &cs) == 0 && CPU_COUNT(&cs) > 0)
		n = (unsigned)CPU_COUNT(&cs);
	if (memif)
		n /= 2;
	return n ? n : 1;
}

/* p->port_id for the port called name: probed already, or the vdev
 * devargs describes, created now. */
static int port_find(struct dport *p, const char *name, const char *devargs)
{
	int r;

	if (rte_eth_dev_get_port_by_name(name, &p->port_id) == 0)
		return 0;
	p->port_id = UINT16_MAX;
	if (!devargs) {
		tlm__err("dpdk: no port named '%s'", name);
		return -ENODEV;
	}
	const char *a = strchr(devargs, ',');
	tlm__dpdk_clear_error();
	r = rte_eal_hotplug_add("vdev", name, a ? a + 1 : "");
	if (r) {
		/* the PMD's own words: its first error line while it probed */
		tlm__err("dpdk: cannot create %s: %s", devargs,
			 *tlm__dpdk_first_error() ? tlm__dpdk_first_error() : "the bus says no more");
		/* -1 is the bus's "could not" (not EPERM) */
		return r == -1 ? -ENODEV : r < 0 ? r : -r;
	}
	p->made_vdev = true;
	if (rte_eth_dev_get_port_by_name(name, &p->port_id) != 0) {
		p->port_id = UINT16_MAX;
		return -ENODEV;
	}
	return 0;
}

/* The port's mbuf pools, for buffers of room bytes. rx: NICs (not memif)
 * fill every rx ring up front; tx: data kept until acked; zero copy (if
 * the port takes chains: headers, then segments that point into LIVE
 * pages), data-less mbufs. */
static int port_pools(struct dport *p, const struct rte_eth_dev_info *info, uint16_t room)
{
	char pname[RTE_MEMPOOL_NAMESIZE];

	snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
	p->pool = pool_new(pname, POOL_MBUFS + (p->memif ? 0 : (p->nq - 1u) * NB_DESC), room);
	snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
	p->txpool = pool_new(pname, TXPOOL_BYTES / (room + 256u) | 1023, room);
	if (!p->pool || !p->txpool) {
		tlm__err("dpdk: mbuf pool: %s", rte_strerror(rte_errno));
		return -ENOMEM;
	}
	if (info->tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) {
		p->txoff |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
		p->zc_segs = RTE_MIN((unsigned)info->tx_desc_lim.nb_seg_max, (unsigned)ZC_SEGS);
		snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
		p->zcpool = pool_new(pname, ZC_MBUFS, 0);
		if (!p->zcpool)
			tlm__dbg("dpdk: %s: no zero-copy pool (%s): LIVE pages are copied", p->name,
				 rte_strerror(rte_errno));
		tlm__extbuf_shinfo_init(&p->zc_shinfo);
	}
	return 0;
}

/* Start with p->nq queue pairs. Lanes get queues of their own where the
 * sender picks the queue (memif) or rte_flow can steer them there (a
 * lane's rule to queue 1 and the rule for the rest to queue 0 both
 * taken); elsewhere one queue, demultiplexed in software. */
static int port_queues(struct dport *p)
{
	int r = port_start(p);

	if (!r && p->nq > 1 && !p->memif) {
		struct rte_flow_error err;
		struct rte_flow *f = flow_steer(p, 9, 9, 1, &err);
		if (f) {
			rte_flow_destroy(p->port_id, f, NULL);
			p->rest = flow_rest(p, &err);
			if (!p->rest)
				flow_refused(p, "the rule for frames of no lane", &err);
		} else {
			flow_refused(p, "a lane's rule", &err);
		}
		p->flow = p->rest != NULL;
		if (!p->flow) {
			rte_eth_dev_stop(p->port_id);
			p->nq = 1;
			r = port_start(p);
		}
	}
	if (r)
		tlm__err("dpdk: %s: start failed: %d", p->name, r);
	return r;
}

/* Set up the port p->port_id for mtu c->mtu and start it. */
static int port_setup(struct dport *p, const struct cfg *c)
{
	uint32_t frame = c->mtu + RTE_ETHER_HDR_LEN;
	uint16_t room = (uint16_t)RTE_MAX(frame + RTE_PKTMBUF_HEADROOM,
					  (uint32_t)RTE_MBUF_DEFAULT_BUF_SIZE);
	struct rte_eth_dev_info info;
	int r = rte_eth_dev_info_get(p->port_id, &info);

	if (r)
		return r;
	/* memif reports a 1518-byte limit but carries larger frames in
	 * chained ring buffers (bsize): let mtu= go up to 9000 there */
	p->memif = !strncmp(info.driver_name, "net_memif", 9);
	p->spin_max = c->spinners ? c->spinners : spin_budget(p->memif);
	p->flow_refuse = c->flow_refuse;
	if (p->memif)
		tlm__dpdk_guard_bursts();
	p->dma = strcmp(rte_bus_name(rte_dev_bus(info.device)), "vdev") != 0;
	p->iova_va = rte_eal_iova_mode() == RTE_IOVA_VA;
	if (info.max_rx_pktlen && c->mtu + RTE_ETHER_HDR_LEN > info.max_rx_pktlen && !p->memif) {
		tlm__err("dpdk: %s: mtu %u above the port's %u", p->name, c->mtu, info.max_rx_pktlen);
		return -EINVAL;
	}
	unsigned nq = RTE_MIN(info.max_rx_queues, info.max_tx_queues);
	if (nq > c->queues)
		nq = c->queues;
	p->nq = (uint16_t)(nq ? nq : 1);
	r = port_pools(p, &info, room);
	if (!r)
		r = port_queues(p);
	if (r)
		return r;
	tlm__dbg("dpdk: %s: %u queue pair(s)%s", p->name, p->nq,
		 p->memif ? " (memif)" : p->flow ? " (rte_flow)" : "");
	rte_eth_macaddr_get(p->port_id, &p->mac);
	p->mss = c->mtu - (uint32_t)(sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr)) -
		 HDR_LEN;
	p->ip = c->ip;
	return 0;
}

/* Find or make the port; under tlm__dpdk_lock. Takes a reference. */
int tlm__dpdk_port_get(const struct cfg *c, const char *name, const char *devargs,
		       bool p2p, struct dport **out)
{
	struct dport *p;
	int r;

	for (p = tlm__dpdk_ports; p; p = p->next)
		if (!strcmp(p->name, name)) {
			p->refs++;
			*out = p;
			return 0;
		}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->port_id = UINT16_MAX;
	snprintf(p->name, sizeof(p->name), "%s", name);
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->kmu, NULL);
	pthread_mutex_init(&p->swmu, NULL);
	cv_init_mono(&p->kcv);
	p->p2p = p2p;
	p->next_eph = (uint16_t)(49152 + (getpid() % 8192));
	p->next_lid = (uint32_t)rte_rand();

	if (c->start_delay_ms)
		usleep(c->start_delay_ms * 1000u);
	r = port_find(p, name, devargs);
	if (!r)
		r = port_setup(p, c);
	if (r)
		goto fail;
	r = pthread_create(&p->thr, NULL, tlm__dpdk_poll_main, p);
	if (r) {
		p->thr = 0;
		r = -r;
		goto fail;
	}
	p->refs = 1;
	p->next = tlm__dpdk_ports;
	tlm__dpdk_ports = p;
	*out = p;
	return 0;
fail:
	port_destroy(p);
	return r < 0 ? r : -EIO;
}

/* Drop a reference; under tlm__dpdk_lock. A port stays up (its poll thread
 * sleeping) after the last one: like the EAL, ports live as long as the
 * process, because a memif vdev removed and re-added under the same socket
 * in one process does not come back reliably. */
void tlm__dpdk_port_put(struct dport *p)
{
	p->refs--;
}

/* Wait for the link; a memif client whose server went away (and maybe
 * came back) only reconnects on a restart, so restart it, rarely: the
 * handshake takes long on a busy machine, and a restart in the middle of
 * it can trip the server's EAL interrupt thread (memif closes the socket
 * before the interrupt thread forgets it). Under port->lock, which the
 * poll thread bursts under too. */
int tlm__dpdk_wait_link(struct dport *p, int timeout_ms)
{
	uint64_t now = tlm__now_ms(), end = now + (uint64_t)timeout_ms, kick_at = now + 3000;
	struct rte_eth_link link;

	for (;;) {
		if (rte_eth_link_get_nowait(p->port_id, &link) == 0 && link.link_status)
			return 0;
		now = tlm__now_ms();
		if (now >= end)
			return -ETIMEDOUT;
		if (now >= kick_at) {
			tlm__dpdk_lock_port(p);
			rte_eth_dev_stop(p->port_id);
			int r = rte_eth_dev_start(p->port_id);
			pthread_mutex_unlock(&p->lock);
			tlm__warn("dpdk: %s: link still down, port restarted: %d", p->name, r);
			kick_at = now + 3000;
		}
		usleep(2000);
	}
}
