/* SPDX-License-Identifier: MIT */
/*
 * DPDK lanes: UDP/IPv4 frames on a DPDK port, with our own reliability.
 * This file holds the ops table; the rest is split by concern:
 *
 *   args.c    transport_args (key=value) into a struct cfg
 *   eal.c     the EAL's start, once per process, and its log capture
 *   port.c    ports: queues, mbuf pools, rte_flow steering, the link
 *   conn.c    lanes: setup and teardown (SYN, accept, CLOSE), failure
 *   pkt.c     our frames: building, parsing, fault injection
 *   arp.c     ARP, on ports with an address (ip=)
 *   reliab.c  ACKs, credit, go-back-N, the out-of-order ranges
 *   timers.c  retransmission, keepalive, SYN retry, delayed ACK
 *   poll.c    the poll thread, pumps, spin slots, guarded bursts
 *   send.c    the writer (send_pages, write) and a lane's transmit step
 *   recv.c    the receive path (rx dispatch, read, recv_pages)
 *   zc.c      zero copy: regions, segments that point into pages
 *
 * Layout. The EAL is per process: it starts once, on the first listen or
 * connect, from transport_args "dpdk-args=..." (default: --no-huge --no-pci
 * -m 512 --file-prefix tlm-<pid>). A "dport" is one DPDK port with nq
 * queue pairs and one poll thread (port.c).
 *
 * Queues. Queue 0 is shared: the poll thread serves it and demultiplexes
 * in software by connection id (SYNs, ARP, and every lane without a queue
 * of its own). A lane gets queue q > 0 to itself where the port can keep
 * its packets apart (memif, where the sender picks the queue, or rte_flow
 * on a NIC: port.c says how the two ends agree on q). Everything else
 * (af_packet, ring, NICs without rte_flow, more lanes than queues, loops
 * within one process) stays on queue 0; packets that reach a lane's queue
 * but are not its own take the shared path.
 *
 * Cores. A lane with its own queue runs to completion: the thread calling
 * send_pages/write builds the packets and tx_bursts them itself, the one
 * calling recv_pages/read rx_bursts and parses, and either one, waiting,
 * keeps polling before it sleeps (poll.c). Lanes on queue 0 are driven
 * by their callers too, one round of the shared queue at a time under
 * port->lock; the poll thread covers it while they are away.
 *
 * Lifetime: ports, like the EAL, live until the process exits (a memif
 * vdev removed and re-added in one process does not come back reliably).
 * Nothing here survives fork(): a child forked after the EAL started gets
 * -EOPNOTSUPP from every op (start lanes in the process that uses them).
 *
 * Locking: lane->qmu is held by whoever polls a lane's own queue;
 * port->lock guards the lane/listener lists and queue 0 and is held by the
 * poll thread for a whole round; lane->mu guards one lane's send queue,
 * ring and state. Order: qmu, port->lock, mu; the poll thread, holding
 * port->lock, only ever trylocks qmu. wmu/rmu keep one writer / one
 * reader per lane and come before all of them. tlm__dpdk_lock (the port
 * list, references, the EAL's start) comes before port->lock.
 *
 * Measured figures (goodput, cycles per page) are in docs/dpdk.md.
 */
#include "dpdk-internal.h"

pthread_mutex_t tlm__dpdk_lock = PTHREAD_MUTEX_INITIALIZER;
struct dport *tlm__dpdk_ports;

static int d_set_mode(struct tlm_lane *tl, enum tlm_lane_mode mode)
{
	tl->mode = mode;
	return 0;
}

static int d_pollfd(const struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)(uintptr_t)tl;

	/* from now on the eventfd follows the ring; catch it up once */
	pthread_mutex_lock(&l->mu);
	if (!atomic_exchange(&l->efd_on, true) &&
	    (l->rcv_nxt > l->rcv_rd || l->state == LS_DEAD || l->peer_closed))
		tlm__dpdk_efd_signal(l);
	pthread_mutex_unlock(&l->mu);
	return l->efd;
}

static const struct tlm_lane_dp dpdk_dp = {
	.send_pages = tlm__dpdk_send_pages,
	.recv_pages = tlm__dpdk_recv_pages,
	.write = tlm__dpdk_write,
	.read = tlm__dpdk_read,
	.shutdown = tlm__dpdk_shutdown,
	.flush = tlm__dpdk_flush,
	.wopen = tlm__dpdk_wopen,
	.wspan = tlm__dpdk_wspan,
	.wput = tlm__dpdk_wput,
	.rspan = tlm__dpdk_rspan,
	.rtake = tlm__dpdk_rtake,
};

const struct tlm_lane_ops tlm__dpdk_ops = {
	.name = "dpdk",
	.listen = tlm__dpdk_listen,
	.listener_port = tlm__dpdk_listener_port,
	.accept = tlm__dpdk_accept,
	.listener_close = tlm__dpdk_listener_close,
	.connect = tlm__dpdk_connect,
	.close = tlm__dpdk_close,
	.set_mode = d_set_mode,
	.pollfd = d_pollfd,
	.inject_raw = tlm__dpdk_inject_raw,
	.register_region = tlm__dpdk_register_region,
	.unregister_regions = tlm__dpdk_unregister_regions,
	.wait_sent = tlm__dpdk_wait_sent,
	.dp = &dpdk_dp,
};
