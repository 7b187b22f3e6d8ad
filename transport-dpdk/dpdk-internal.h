/* SPDX-License-Identifier: MIT */
/*
 * What the DPDK lanes' files share: constants, the port, lane and
 * listener structs, and each file's entry points, grouped by the file
 * that implements them. dpdk.c describes the whole (layout, queues,
 * cores, locking); each file opens with its own contract.
 *
 * Names: tlm__dpdk_ for what crosses files, file statics unprefixed; the
 * static inline helpers below are small enough to be everyone's.
 */
#ifndef TLM_DPDK_INTERNAL_H
#define TLM_DPDK_INTERNAL_H

/* rte_dev_dma_map/unmap (zero copy on devices that DMA) are experimental
 * in DPDK 22.11 */
#define ALLOW_EXPERIMENTAL_API
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_arp.h>
#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_flow.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_prefetch.h>
#include <rte_udp.h>

#include "tlm-internal.h"
#include "extbuf.h"
#include "eal.h"
#include "bench.h"

#define BURST        32
#define WR_CHUNK     65536 /* bytes per commit in byte mode (d_write, inject_raw) */
#define NB_DESC      1024
#define POOL_MBUFS   8191             /* rx and control packets, per port */
#define TXPOOL_BYTES (40u << 20)      /* data packets kept until acked, per port */
#define RING_BYTES   (2u << 20)       /* per lane and direction */
#define WINDOW_PKTS  320              /* default window= in full packets */
#define SQ_SLOTS     4096             /* packets in flight per lane (>= RING_BYTES / min mss) */
#define STASH        16               /* tx mbufs a writer takes at once */
#define RX_BACKLOG   (256u << 10)     /* recv_pages polls for more below this */
#define HELD_MAX     256              /* rx packets a lane keeps uncopied (a window of jumbo frames) */
#define ZC_MIN       512              /* LIVE data shorter than this is copied */
#define ZC_ALIGN     16               /* zero-copy data keeps its alignment in the frame */
#define ZC_SEGS      8                /* segments per zero-copy packet, at most */
#define ZC_MBUFS     32767            /* data-less mbufs for zero-copy segments, per port */
#define MAX_QUEUES   16
#define DEF_QUEUES   MAX_QUEUES       /* queue pairs per port: the control lane and
				       * 14 data lanes on queues of their own (unused
				       * memif queues cost no memory) */
#define HDR_LEN      38               /* our header inside UDP (32, flags, 5 pad: see ZC_ALIGN) */
#define HF_MORE      0x01             /* flags: more data is queued right behind this packet */
#define L2L4_LEN     (14 + 20 + 8)    /* Ethernet + IPv4 + UDP */
#define MAGIC        0x544c           /* "TL" */
#define PROTO_VER    3
#define KA_NS        (200ull * 1000000)
#define LINK_CHECK_NS (20ull * 1000000) /* memif: look at the link after this much silence */
#define SYN_NS       (100ull * 1000000)
#define SPIN_NS      (100ull * 1000)  /* a waiting caller polls its queue this long */
#define STALE_NS     (300ull * 1000)  /* the poll thread covers a queue left alone this long */
#define SLOTLESS_NS  (200ull * 1000)  /* a caller with no spin slot sleeps this long at most */
#define TX_HOLD_NS   (20ull * 1000)   /* a caller's round holds a short data burst this long */
#define ACK_EVERY    16               /* in-order packets an ACK may wait for ... */
#define ACK_DELAY_NS (20ull * 1000)   /* ... or this long after the first of them */
#define RTO_INIT_NS  (20ull * 1000000)
#define RTO_MAX_NS   (400ull * 1000000)
#define LINGER_MS    2000
#define DEFAULT_DEAD_MS 3000

enum { PT_SYN = 1, PT_SYNACK, PT_DATA, PT_PING, PT_CLOSE, PT_RST };
enum { LS_SYN_SENT = 1, LS_EST, LS_DEAD };

struct fault {
	double drop, reorder, dup;
};

struct cfg {
	char dev[128];          /* port name or PCI address to use as is */
	char vdev[512];         /* devargs to create: "name,k=v,..." */
	char eal[512];
	uint32_t ip;            /* our IPv4 (host order); 0 = point-to-point */
	struct rte_ether_addr peer_mac; /* static, instead of ARP */
	bool peer_mac_set;
	uint32_t mtu;
	int dead_ms;
	unsigned queues;        /* queue pairs wanted (memif: both ends must agree) */
	unsigned spinners;      /* spin slots per port (0: spin_budget) */
	uint32_t window;        /* unacked bytes per lane, at most (0: WINDOW_PKTS) */
	int zc;                 /* ZC_AUTO, ZC_ON, ZC_OFF */
	struct fault fault;
	unsigned flow_refuse;   /* test: refuse the port's N-th lane rule (0: none) */
	unsigned start_delay_ms;   /* test: a new port starts this much later */
};

enum { ZC_AUTO, ZC_ON, ZC_OFF };

/* A data packet in the send queue: headers but the lane header's
 * ack/window are written when it goes out. Held (one mbuf reference)
 * until acked, so a rewind re-sends it without rebuilding. */
struct txp {
	struct rte_mbuf *m;
	uint64_t seq;
	uint32_t len;
	uint32_t zl;            /* > 0: a light zero-copy packet (tlm__dpdk_zc_chain) */
	const uint8_t *za;
};

/* A received packet kept for the reader: len stream bytes at p. */
struct rxp {
	struct rte_mbuf *m;
	const uint8_t *p;
	uint32_t len;
};

struct dlane {
	struct tlm_lane base;   /* first: core casts */
	struct dport *port;
	struct dlane *next;
	struct dlane *qnext;

	pthread_mutex_t mu;
	pthread_cond_t cv;      /* state, data, space, acks */
	pthread_mutex_t wmu;    /* one writer at a time keeps frames whole */
	pthread_mutex_t rmu;    /* one reader at a time */
	int state;
	int err;                /* sticky error once dead */
	int bad;                /* -TLM_EFRAME/-TLM_ECRC: the stream is unusable */
	bool peer_closed;       /* CLOSE received: error after buffered data */
	bool tell_peer;         /* we refused its stream: RST it, once */
	bool peer_reset;        /* it refused ours (RST) */
	unsigned torn_seen;     /* port->torn when we began */
	bool closing, gone;     /* close(): poll thread sends CLOSE, unlinks */
	int close_sent;
	bool local;             /* peer lane is on this port in this process */
	uint32_t lid, rid;
	uint32_t peer_ip;
	uint16_t lport, rport;
	struct rte_ether_addr peer_mac;
	bool mac_known;
	int dead_ms;
	struct fault fault;
	uint64_t rng;
	struct rte_mbuf *held;  /* reorder fault: sent after the next one */

	/* Own queue pair (q > 0): the lane's callers poll it themselves
	 * (pump), the poll thread only when they leave it alone; q == 0: the
	 * port's shared queue, served by the poll thread. */
	uint16_t q;
	uint16_t qown;          /* queue reserved for us (memif: until the
				 * peer's SYNACK grants it, then q = qown) */
	struct rte_flow *flow;  /* steers our UDP port to q (NICs) */
	pthread_mutex_t qmu;    /* whoever polls q; before port->lock and mu */
	struct rte_mbuf *qtx[BURST * 4];
	unsigned nqtx;
	_Atomic uint64_t last_pump;
	atomic_uint asleep;     /* callers waiting without a spin slot */

	/* send queue: packets [sq_head, sq_tail) hold bytes [snd_una,
	 * snd_end); sq_next is the packet at snd_nxt, the next to go */
	struct txp *sq;
	unsigned sq_head, sq_next, sq_tail;
	uint64_t snd_una, snd_nxt, snd_end, peer_edge;
	uint32_t window;        /* snd_end - snd_una at most */
	uint64_t rto_at, rto_ns;
	uint64_t recover;       /* snd_nxt at the last rewind */
	uint64_t snd_max;       /* highest byte ever sent (re-send stats) */
	unsigned dupacks;
	bool wr_shut;
	/* the writer's packets not yet queued (under wmu): the open one and
	 * the sealed ones of a LIVE record whose crc is still being summed */
	struct rte_mbuf *om;
	uint32_t olen;
	struct rte_mbuf *stash[STASH];   /* from the pool, in bulk */
	unsigned nstash;
	struct rte_mbuf *pend[TLM_MAX_PAGE_SIZE / 256]; /* > WR_CHUNK / smallest mss */
	struct { const uint8_t *a; uint32_t l; } pendz[TLM_MAX_PAGE_SIZE / 256];
	unsigned npend;
	const uint8_t *oza;     /* the open packet's light range (tlm__dpdk_zc_chain) */
	uint32_t ozl;
	uint64_t wr_records;    /* records handed to send_pages */
	uint32_t wr_left;       /* bytes left of a write filled in place (wopen) */
	/* (records so far, snd_end) after each send_pages, for wait_sent;
	 * under mu */
	struct { uint64_t records, seq; } sent_at[64];
	uint64_t nsent_at;
	uint32_t src_regions;   /* bit per region registered TLM_REG_SRC */
	uint32_t zc_regions;    /* ... of those, the ones sent zero-copy */
	void *zc_base[32];
	size_t zc_len[32];
	uint64_t live_zc, live_copied; /* LIVE records sent each way (stats) */
	bool zc_tx;             /* LIVE pages go zero-copy (NOSUM) */
	bool zc_rx;             /* NOSUM records accepted: our link guards bytes */
	struct rte_mbuf *ot;    /* the open packet's last segment (NULL: om) */
	uint32_t ohlen;         /* stream bytes in om itself */
	/* receive ring: bytes [rcv_rd, rcv_nxt) wait for the reader; those
	 * in [rcv_rd, rcv_held) are in packets kept as they came (in order,
	 * nothing in the ring after them), not copied to the ring */
	uint8_t *rbuf;
	uint64_t rcv_rd, rcv_nxt, rcv_held, adv_edge;
	struct rxp hq[HELD_MAX];
	unsigned hhead, hn;
	uint32_t hoff;          /* bytes of hq[hhead] already read */
	struct { uint64_t a, b; } ooo[16];
	unsigned nooo;
	bool need_ack, need_synack;   /* need_ack: an ACK goes at once */
	unsigned ack_pkts;      /* in-order data packets not acked yet ... */
	uint64_t ack_first;     /* ... since then (ACK_EVERY, ACK_DELAY_NS) */
	uint64_t last_rx, last_ping, last_syn;
	uint32_t data_left;     /* bytes left in the current DATA frame */
	size_t rd_want;         /* bytes the waiting reader needs (0: none) */
	bool eof;
	atomic_bool efd_on;     /* pollfd() was asked for: keep efd current */
	int efd;
	uint8_t *scratch;       /* one whole frame for recv_pages */
	char why[160];
	uint64_t retrans;       /* segments re-sent (stats) */
	uint64_t rx_pkts, tx_pkts, rx_ignored;
	uint64_t rx_ownq;       /* of rx_pkts, those that came in on q (q > 0) */
};

/* One of our packets, parsed. */
struct pkt {
	const struct rte_ether_hdr *eh;
	uint8_t type;
	uint16_t sport, dport;
	uint32_t dst, src, sip, wnd, dlen;
	uint64_t seq, ack;
	uint8_t flags;          /* HF_MORE */
	const uint8_t *data;
	struct rte_mbuf *m;
	uint16_t qid;           /* the queue it came in on */
};

struct dlistener {
	struct tlm_xlistener base;
	struct dport *port;
	struct dlistener *next;
	uint16_t udp_port;
	struct dlane *qhead, *qtail;
	pthread_cond_t cv;      /* on port->lock */
	struct cfg cfg;
};

struct dport {
	struct dport *next;
	char name[128];
	int refs;               /* listeners + lanes; under tlm__dpdk_lock */
	uint16_t port_id;
	bool made_vdev;
	bool p2p;               /* no ARP, no IP filter, broadcast dst MAC */
	bool memif;             /* the sender picks the queue: lanes agree on q */
	bool flow;              /* rte_flow steers lanes to their queues */
	struct rte_flow *rest;  /* ... and the frames of no lane to queue 0 */
	bool flow_said;         /* why not has been logged */
	unsigned flow_refuse;   /* cfg.flow_refuse of whoever opened the port */
	unsigned lane_rules;    /* lane rules asked for so far; under lock */
	uint16_t nq;            /* queue pairs; 0 is shared */
	struct dlane *qowner[MAX_QUEUES];   /* under lock */
	struct rte_mempool *pool;   /* rx and control packets */
	struct rte_mempool *txpool; /* data packets (held until acked) */
	struct rte_mempool *zcpool; /* data-less mbufs that point at LIVE pages */
	struct rte_mbuf_ext_shared_info zc_shinfo; /* theirs, shared; frees nothing */
	uint64_t txoff;         /* tx offloads the port offers */
	bool dma;               /* the device reads memory itself (not a vdev) */
	bool iova_va;           /* IOVA is the virtual address (extbuf, DMA map) */
	atomic_uint torn;       /* memif bursts cut short by the unmap race */
	/* Spinning callers: at most spin_max at once (the cores this process
	 * may use; memif: half, the peer process shares them). Callers of
	 * lanes with a queue of their own that find no slot sleep (asleep),
	 * and the spinners poll their queues too (qlane, read under swmu). */
	atomic_uint spinners;
	unsigned spin_max;
	atomic_uint nasleep;
	pthread_mutex_t swmu;
	struct dlane *_Atomic qlane[MAX_QUEUES];
	unsigned zc_segs;       /* segments per packet it takes (0: one only) */
	struct rte_ether_addr mac;
	uint32_t ip;
	uint32_t mss;
	uint16_t next_eph;

	pthread_t thr;
	atomic_bool stop;
	atomic_int want_lock;
	pthread_mutex_t lock;
	pthread_mutex_t kmu;
	pthread_cond_t kcv;
	atomic_bool kicked;     /* work was handed over since the last round */
	atomic_bool sleeping;   /* the poll thread is (about to be) asleep */

	struct dlane *lanes;
	struct dlistener *listeners;
	uint32_t next_lid;
	struct { uint32_t ip; struct rte_ether_addr mac; } arp[16];
	unsigned narp;
	uint64_t last_arp_req;

	struct rte_mbuf *txq[BURST * 8];
	unsigned ntx;
	/* Callers of lanes on queue 0 drive it themselves (q0_pump): one of
	 * them spins on it at a time (q0_spin), the rest sleep and are
	 * signalled; a round that finds port->lock taken leaves q0_more for
	 * its holder. Their rounds hold data packets back (tx_since) until a
	 * burst is full, a control frame waits (tx_urgent) or TX_HOLD_NS. */
	_Atomic uint64_t last_q0_pump;
	atomic_bool q0_spin;
	atomic_bool q0_more;
	atomic_bool q0_pumping;
	bool tx_urgent;
	uint64_t tx_since;
	uint64_t tx_bursts, tx_burst_pkts;  /* tx_bursts on queue 0 and their packets (stats) */
	struct rte_mbuf *loopq[BURST * 4];
	unsigned nloop;
};

static inline void cv_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

/* Wait on cv until deadline_ns (CLOCK_MONOTONIC); 0 or ETIMEDOUT. */
static inline int cv_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
			       .tv_nsec = (long)(deadline_ns % 1000000000ull) };

	return pthread_cond_timedwait(cv, mu, &ts);
}

/* Time since t. A round's "now" is taken once, and other threads stamp
 * lanes meanwhile, so t may be a little ahead of now: that is 0, not an
 * unsigned wrap to "forever ago". */
static inline uint64_t since(uint64_t now, uint64_t t)
{
	return now > t ? now - t : 0;
}

/* The CLOCK_MONOTONIC deadline timeout_ms from now; < 0: none. */
static inline uint64_t deadline_ns(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX / 2;
	return tlm__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* A caller's wait: how long it may spin, and whether it holds one of the
 * port's spin slots (released by tlm__dpdk_wait_done, or when it goes to sleep). */
struct waiter {
	uint64_t spin_end;
	bool slot;
	bool q0slot;            /* the one caller spinning on queue 0 */
};

/* dpdk.c: the process's ports (they live as long as the process) and the
 * lock over that list, the EAL's start and the zero-copy mappings. */
extern pthread_mutex_t tlm__dpdk_lock;
extern struct dport *tlm__dpdk_ports;
extern const struct tlm_lane_ops tlm__dpdk_ops;

/* eal.c APIs: */
/* Set in a child forked after the EAL started: the poll threads, the
 * hugepage-less memory and the memif sockets stayed with the parent, and
 * a lock may have been held across the fork. Every op refuses there. */
extern volatile sig_atomic_t tlm__dpdk_forked;
int tlm__dpdk_fork_check(void);                 /* 0, or -EOPNOTSUPP in such a child */
int tlm__dpdk_eal_start(const struct cfg *c);   /* once per process; tlm__dpdk_lock held */
void tlm__dpdk_lcore_join(void);                /* a data-moving thread takes an lcore id */

/* args.c APIs: */
int tlm__dpdk_parse_args(const char *args, struct cfg *c);

/* pkt.c APIs: */
void tlm__dpdk_put_hdr(uint8_t *h, uint8_t type, uint32_t dst, uint32_t src,
		       uint32_t wnd, uint64_t seq, uint64_t ack, uint8_t flags);
void tlm__dpdk_put_l2l4(const struct dport *p, uint8_t *b, const struct rte_ether_addr *dmac,
			uint32_t dip, uint16_t sport, uint16_t dport, uint32_t plen);
/* 1: one of our UDP packets, parsed into k; 0: ARP; -1: not for us. */
int tlm__dpdk_parse_pkt(const struct dport *p, struct rte_mbuf *m, bool local, struct pkt *k);
/* A control frame (SYN, SYNACK, an ACK as PT_DATA, PING, CLOSE, RST). */
void tlm__dpdk_send_ctl(struct dport *p, struct dlane *l, uint8_t type);
/* Queue m for the next tx_burst of l's queue (l NULL: the shared one);
 * out_data passes it through l's fault injection first. */
void tlm__dpdk_out_pkt(struct dport *p, struct dlane *l, struct rte_mbuf *m);
void tlm__dpdk_out_data(struct dport *p, struct dlane *l, struct rte_mbuf *m);

/* arp.c APIs (port->lock held): */
void tlm__dpdk_arp_learn(struct dport *p, uint32_t ip, const struct rte_ether_addr *mac);
void tlm__dpdk_arp_input(struct dport *p, const struct rte_ether_hdr *eh);
bool tlm__dpdk_arp_resolve(struct dport *p, struct dlane *l, uint64_t now);

/* port.c APIs: */
int tlm__dpdk_port_get(const struct cfg *c, const char *name, const char *devargs,
		       bool p2p, struct dport **out);   /* tlm__dpdk_lock held */
void tlm__dpdk_port_put(struct dport *p);               /* tlm__dpdk_lock held */
int tlm__dpdk_wait_link(struct dport *p, int timeout_ms);
/* A queue of its own for l, if one is free (want: the queue the peer's
 * SYN asked for, -1 on the connecting side); port->lock held. */
void tlm__dpdk_queue_take(struct dport *p, struct dlane *l, int want);
void tlm__dpdk_queue_put(struct dport *p, struct dlane *l);

/* conn.c APIs: */
int tlm__dpdk_listen(const char *addr, const char *port, const char *args,
		     struct tlm_xlistener **out);
int tlm__dpdk_listener_port(const struct tlm_xlistener *xl);
int tlm__dpdk_accept(struct tlm_xlistener *xl, int timeout_ms, struct tlm_lane **out);
void tlm__dpdk_listener_close(struct tlm_xlistener *xl);
int tlm__dpdk_connect(const char *addr, const char *port, const char *args,
		      unsigned index, int timeout_ms, struct tlm_lane **out);
void tlm__dpdk_close(struct tlm_lane *tl);
struct dlane *tlm__dpdk_find_lane(struct dport *p, uint32_t lid);   /* port->lock held */
void tlm__dpdk_lane_unlink(struct dport *p, struct dlane *l);       /* port->lock held */
void tlm__dpdk_rx_syn(struct dport *p, const struct pkt *k, bool local, uint16_t qid);
bool tlm__dpdk_conn_rx_syn_sent(struct dlane *l, const struct pkt *k);
void tlm__dpdk_conn_rx_close(struct dlane *l, const struct pkt *k);
void tlm__dpdk_conn_tx_ending(struct dport *p, struct dlane *l);
/* The lane is dead from now on, with err (sticky) and why (logged at level). */
void tlm__dpdk_lane_fail(struct dlane *l, int level, int err, const char *why);
void tlm__dpdk_peer_closed_fail(struct dlane *l);
void tlm__dpdk_efd_signal(struct dlane *l);   /* the pollfd turns readable */

/* reliab.c APIs (l->mu held): */
bool tlm__dpdk_rel_may_send(const struct dlane *l, const struct txp *t);
void tlm__dpdk_rel_sent(struct dlane *l, const struct txp *t);
void tlm__dpdk_rel_timeout(struct dlane *l);
bool tlm__dpdk_rel_ack_owed(struct dlane *l, uint64_t now);
void tlm__dpdk_rel_rx_ack(struct dlane *l, const struct pkt *k, uint64_t now);
bool tlm__dpdk_rel_rx_data(struct dlane *l, const struct pkt *k, uint64_t now);

/* timers.c APIs (l->mu held; timers.c lists every timer): */
void tlm__dpdk_timers_any_received(struct dlane *l, uint64_t now);
void tlm__dpdk_timers_data_sent(struct dlane *l, uint64_t now);
void tlm__dpdk_timers_ack_received(struct dlane *l, uint64_t now);
void tlm__dpdk_timers_ack_deferred(struct dlane *l, uint64_t now);
void tlm__dpdk_timers_ack_sent(struct dlane *l);
bool tlm__dpdk_timers_ack_due(const struct dlane *l, uint64_t now);
void tlm__dpdk_timers_retransmit(struct dlane *l, uint64_t now);
bool tlm__dpdk_timers_syn_due(struct dlane *l, uint64_t now);
bool tlm__dpdk_timers_arp_due(struct dport *p, uint64_t now);
void tlm__dpdk_timers_liveness(struct dport *p, struct dlane *l, uint64_t now);

/* poll.c APIs: */
void *tlm__dpdk_poll_main(void *arg);           /* the port's poll thread */
void tlm__dpdk_lock_port(struct dport *p);      /* port->lock, ahead of the poll thread */
void tlm__dpdk_kick(struct dport *p);           /* work for the poll thread */
/* Bursts on memif ports may run into its unmap race: catch the fault. */
void tlm__dpdk_guard_bursts(void);
unsigned tlm__dpdk_flush_tx(struct dport *p);   /* queue 0's packets to the PMD */
unsigned tlm__dpdk_own_pump(struct dlane *l);   /* poll l's own queue, once */
/* A round of queue 0 by the calling thread, if port->lock is free (else
 * its holder does one more); hold: data may wait for a fuller burst. */
unsigned tlm__dpdk_q0_pump(struct dport *p, bool hold);
/* Move l's packets now: its own queue's pump, or a round of queue 0. */
unsigned tlm__dpdk_drive(struct dlane *l, bool hold);
/* Wait for l to change (l->mu held, released meanwhile); 0 or ETIMEDOUT
 * past end. wait_done ends a series of waits. */
int tlm__dpdk_lane_wait(struct dlane *l, struct waiter *w, uint64_t end);
void tlm__dpdk_wait_done(struct dlane *l, struct waiter *w);

/* send.c APIs: */
void tlm__dpdk_lane_tx(struct dport *p, struct dlane *l, uint64_t now);
int tlm__dpdk_send_pages(struct tlm_lane *tl, const struct tlm_page_rec *recs, unsigned n);
ssize_t tlm__dpdk_write(struct tlm_lane *tl, const void *buf, size_t n);
int tlm__dpdk_shutdown(struct tlm_lane *tl);
int tlm__dpdk_flush(struct tlm_lane *tl);
int tlm__dpdk_inject_raw(struct tlm_lane *tl, const void *buf, size_t n);
int tlm__dpdk_wait_sent(struct tlm_lane *tl, uint64_t records, int timeout_ms);
/* A write filled in place (tlm_lane_dp wopen, wspan, wput: seal.c). */
int tlm__dpdk_wopen(struct tlm_lane *tl, size_t n);
ssize_t tlm__dpdk_wspan(struct tlm_lane *tl, uint8_t **p);
int tlm__dpdk_wput(struct tlm_lane *tl, size_t k);

/* recv.c APIs: */
/* Any packet, any lane (port->lock held); qid: the queue it came in on. */
void tlm__dpdk_rx_pkt(struct dport *p, struct rte_mbuf *m, bool local, uint16_t qid);
/* A packet for lane l (l->mu held); true if the lane keeps k->m. */
bool tlm__dpdk_rx_lane(struct dlane *l, const struct pkt *k, uint64_t now);
ssize_t tlm__dpdk_read(struct tlm_lane *tl, void *buf, size_t n, int timeout_ms);
int tlm__dpdk_recv_pages(struct tlm_lane *tl, const struct tlm_page_sink *sink, int timeout_ms);
/* Bytes read in place (tlm_lane_dp rspan, rtake: seal.c). */
ssize_t tlm__dpdk_rspan(struct tlm_lane *tl, const uint8_t **p, int timeout_ms);
void tlm__dpdk_rtake(struct tlm_lane *tl, size_t k);

/* zc.c APIs: */
int tlm__dpdk_register_region(struct tlm_lane *tl, unsigned region, void *base, size_t len,
			      unsigned how, int timeout_ms);
void tlm__dpdk_unregister_regions(struct tlm_lane *tl);
/* m (data-less) becomes a segment of the n bytes at a. */
void tlm__dpdk_zc_attach(struct dport *p, struct rte_mbuf *m, const uint8_t *a, uint32_t n);
/* A light packet ready to go: its header mbuf chained to a fresh segment. */
struct rte_mbuf *tlm__dpdk_zc_chain(struct dport *p, const struct txp *t);
/* May a kept packet be freed now (a light one's header mbuf cut loose)? */
bool tlm__dpdk_txp_headonly(struct txp *t);

#endif
