/* SPDX-License-Identifier: MIT */
/*
 * DPDK lanes: UDP/IPv4 frames on a DPDK port, with our own reliability.
 *
 * Layout. The EAL is per process: it starts once, on the first listen or
 * connect, from transport_args "dpdk-args=..." (default: --no-huge --no-pci
 * -m 512 --file-prefix tlm-<pid>). A "dport" is one DPDK port with nq
 * queue pairs and one poll thread.
 *
 * Queues. Queue 0 is shared: the poll thread serves it and demultiplexes
 * in software by connection id (SYNs, ARP, and every lane without a queue
 * of its own). A lane gets queue q > 0 to itself where the port can keep
 * its packets apart. On memif the sender picks the queue (the client's tx
 * queue q is the server's rx queue q): the connecting side reserves a free
 * q and asks for it in its SYN (sent on queue 0); the accepting side's
 * lane takes q if it is free there too and says which in its SYNACK; the
 * connecting side uses q only once granted. A memif queue is polled only
 * by the lane that owns it: polling one the peer did not set up reads
 * another queue's ring (seen: the shared one's) and corrupts both
 * streams. The embedded memif server offers all MAX_QUEUES, so the
 * connecting side's queues= decides (with vdev= memif the server needs at
 * least the client's queues=, or the link never comes up). On a NIC whose rte_flow_validate accepts it, a rule steers
 * the lane's UDP port pair to q (no NIC here: that path is untested).
 * Everything else (af_packet, ring, NICs without rte_flow, more lanes than
 * queues, loops within one process) stays on queue 0; packets that reach
 * a lane's queue but are not its own take the shared path.
 *
 * Cores. A lane with its own queue runs to completion: the thread calling
 * send_pages/write builds the packets and tx_bursts them itself, the one
 * calling recv_pages/read rx_bursts and parses, and either one, waiting,
 * keeps polling (SPIN_NS after the last packet moved) before sleeping on
 * the lane's condition variable. So such a lane needs its caller's core
 * and nothing else; the poll thread only covers queues left alone for
 * STALE_NS (timers, keepalive, acks while nobody calls) and sleeps when
 * nothing moves. Spinning is budgeted per port (spinners=, default one
 * per core, half on memif whose peer shares the cores): a caller that
 * finds every slot taken sleeps, and the spinners poll its queue for it
 * and wake it as its packets come. Unbudgeted, 4 lanes on 2 cores had 8
 * callers spinning on each other's time. Lanes on queue 0 also cost the poll thread's core while
 * traffic flows: their callers kick it and sleep on the lane's condition
 * variable until it has moved their packets.
 *
 * Zero copy. A TLM_PF_LIVE record (region registered TLM_REG_SRC) goes
 * by reference where the lane's link guards the bytes by itself (zc_tx:
 * memif's shared memory by default, any port with zc=on): its packet is a
 * chain, the headers in one mbuf, then mbufs attached to the page
 * (rte_pktmbuf_attach_extbuf, ZC_SEGS at most), so the PMD's copy or DMA
 * is the only pass over the page. The record carries NOSUM and crc 0: a
 * crc summed before the PMD reads live memory would fail whenever the
 * page is written meanwhile. The page is read when the packet goes out,
 * and again if it is re-sent, so it may arrive as a mix of old and new
 * words (the dirty log sends it again, as on RDMA); the receiver accepts
 * NOSUM only when its own link is trusted alike (zc_rx), and fails the
 * lane otherwise. Page data keeps its 16-byte alignment in the frame
 * (HDR_LEN 38 puts the record header and each packet's data on 16, and
 * zero-copy chunks are multiples of 16): the PMD's copy of a misaligned
 * source runs the slow shifted path, which made zero copy slower than
 * copying. Devices that DMA (not vdevs) need the region registered
 * (rte_extmem_register) and mapped (rte_dev_dma_map) once per process;
 * where that fails the pages are copied. The region must outlive the
 * packets that point into it: unregister_regions waits for their ACKs (or
 * fails the lane and drops them). Everything else, and LIVE pages with
 * zc=off, is copied once from the caller's memory into the packets (no
 * intermediate ring), a LIVE page's crc summed in the same pass
 * (tlm__crc32c_copy), so what is summed is what is sent. The receiver
 * sums the crc while it gathers a record that spans packets.
 * TLM_REG_DST is refused: the receiver copies out of its ring.
 * A packet whose page data is one range after its headers (every packet
 * at mtu 1500 and 4200) is kept as its header mbuf plus the range, and
 * gets its page segment only when it goes out (zc_chain, "light").
 * Measured on memif (`tlm bench transport --no-raw`, 4 GiB, zc=on and
 * zc=off alternating, 6 pairs each, a 2-vCPU AMD EPYC VM): median goodput
 * equal at mtu 1500 (3.8 and 3.9 GB/s: the sender's per-packet work, not
 * the copy, bounds it there), 7.1 against 5.0 GB/s at 4200 (one page per
 * packet; 1430 against 2008 cycles per page sent) and 7.6 against 5.0 at
 * 9000. Since then (same machine kind, 1 lane, defaults: mtu 9000, a
 * window of 320 packets, records not split, 256 packets held, a bounded
 * receive backlog): 13-17 GB/s in its fast periods, about 600 cycles per
 * page on each side.
 *
 * transport_args (comma-separated key=value; values may be quoted):
 *   dpdk-args="..."   EAL arguments (first lane of the process only)
 *   port=NAME|PCI     use an already probed port
 *   vdev=NAME,k=v...  create this vdev; keys we do not know (role=,
 *                     socket=, iface=, ...) go to it as devargs
 *   ip=A.B.C.D        our address: turns on ARP and IP filtering (af_packet,
 *                     NICs); without it the port is point-to-point (memif)
 *   peer-mac=MAC      static peer MAC instead of ARP (connecting side)
 *   mtu=N             576..9000 (default: 9000 on the embedded memif, in
 *                     9216-byte buffers, two whole pages a frame; 1500 on
 *                     a device port)
 *   window=N[K|M]     unacked bytes a lane keeps in flight, 16K..2M
 *                     (default 320 full packets, at most 2M: 450K at mtu
 *                     1500, 2M at 9000; more than a LAN's round trip at
 *                     100 Gb/s, few enough that the packets kept for
 *                     re-sends stay in cache and memif's 1024-slot rings
 *                     do not overflow)
 *   spinners=N        callers that may spin-poll at once on the port
 *                     (default: the cores this process may use, half of
 *                     them on memif; set by whoever opens the port first)
 *   queues=N          queue pairs, 1..16 (default 16; ignored by the
 *                     embedded memif server, which offers 16)
 *   dead_ms=N         keepalive silence that fails a lane (default 3000)
 *   zc=auto|on|off    LIVE pages by reference, without crc (NOSUM), and
 *                     NOSUM accepted: auto = on memif only
 *   fault=drop=P,reorder=P,dup=P   fault injection on what we send
 * No device keys: the embedded default, a memif pair per UDP port (server
 * on the listening side, client on the connecting side, abstract socket
 * "/run/tlm-dpdk-<port>.sock"); a connect to a port this process listens on
 * loops through the server's port in software.
 *
 * Lane setup (state machine, client side):
 *   SYN_SENT --SYNACK or any packet from the peer--> EST
 *   SYN_SENT --RST--> failed (-ECONNREFUSED);  --timeout--> -ETIMEDOUT
 *   EST --CLOSE from peer / keepalive silence--> dead (-TLM_EPEERCLOSED)
 * Server side: a SYN to a listener's UDP port makes a lane in EST at once
 * and queues it for accept(); a repeated SYN (our SYNACK was lost) gets the
 * SYNACK again.
 *
 * Reliability (per lane): the lane carries one byte stream each way, made
 * of core/wire.h frames (DATA/FIN in byte mode, PAGE in page mode).
 * Packets carry 64-bit byte sequence numbers, a cumulative ACK and a credit
 * window (free bytes of the receiver's ring) on every packet. A data
 * packet with more queued behind it says so (HF_MORE); a receiver with
 * nothing to send ACKs such packets once ACK_EVERY of them or
 * ACK_DELAY_NS have passed (its pumps look), anything else at once (the
 * last packet of a burst, out of order, old data, a hole filled, a PING,
 * a window update). Senders that set no flags get an ACK a packet. The sender
 * keeps every packet it built, unchanged, until it is acked (at most
 * RING_BYTES per lane, from the port's tx pool), and goes back N: on a
 * retransmission timeout or 3 duplicate ACKs it rewinds to the oldest
 * unacked packet. A re-sent packet is the same mbuf with one more
 * reference if the PMD has let go of it, a copy if it still holds it, so
 * a rewind never touches a buffer the PMD owns. The receiver keeps
 * out-of-order bytes that fit its window in place in its ring (up to 16
 * ranges) and ACKs past them once the hole fills, so until the ACKs pass
 * the rewind point the sender re-sends one packet per hole
 * (NewReno-like), not the whole window. Records are parsed in place from
 * the ring unless they wrap. send_pages/write send a short packet only
 * at the end of a call. What the PMD's TX ring cannot take stays queued
 * and the lane stops building data packets meanwhile (back-pressure, no
 * drops). Keepalive: a PING after KA_NS of silence (the peer answers with
 * an ACK); nothing heard for dead_ms (default 3000) fails the lane, and on
 * memif a link found down after 20 ms of silence fails it at once.
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
 * reader per lane and come before all of them.
 */
/* rte_dev_dma_map/unmap (zero copy on devices that DMA) are experimental
 * in DPDK 22.11 */
#define ALLOW_EXPERIMENTAL_API
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
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
#include "raw.h"

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
#define ACK_EVERY    16               /* in-order packets an ACK may wait for ... */
#define ACK_DELAY_NS (20ull * 1000)   /* ... or this long after the first of them */
#define RTO_INIT_NS  (20ull * 1000000)
#define RTO_MAX_NS   (400ull * 1000000)
#define LINGER_MS    2000
#define DEFAULT_DEAD_MS 3000

extern const struct tlm_lane_ops tlm__dpdk_ops;

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
};

enum { ZC_AUTO, ZC_ON, ZC_OFF };

struct dport;

/* A data packet in the send queue: headers but the lane header's
 * ack/window are written when it goes out. Held (one mbuf reference)
 * until acked, so a rewind re-sends it without rebuilding. */
struct txp {
	struct rte_mbuf *m;
	uint64_t seq;
	uint32_t len;
	uint32_t zl;            /* > 0: a light zero-copy packet (zc_chain) */
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
	const uint8_t *oza;     /* the open packet's light range (zc_chain) */
	uint32_t ozl;
	uint64_t wr_records;    /* records handed to send_pages */
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
	int refs;               /* listeners + lanes; under g_lock */
	uint16_t port_id;
	bool made_vdev;
	bool p2p;               /* no ARP, no IP filter, broadcast dst MAC */
	bool memif;             /* the sender picks the queue: lanes agree on q */
	bool flow;              /* rte_flow steers lanes to their queues */
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
	struct rte_mbuf *loopq[BURST * 4];
	unsigned nloop;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_eal_up;
/* Set in a child forked after the EAL started: the poll threads, the
 * hugepage-less memory and the memif sockets stayed with the parent, and
 * a lock may have been held across the fork. Every op refuses there. */
static volatile sig_atomic_t g_forked;
static int g_eal_err;
static struct dport *g_ports;
static unsigned g_pool_seq;

/* ---- small helpers ---- */

/* A thread that moves data gets an lcore id on first use, so the mempools
 * give it a per-thread cache (hot LIFO buffers instead of the shared ring
 * per mbuf); it gives the id back when it exits. Past RTE_MAX_LCORE
 * threads the rest go without. */
static pthread_key_t g_lcore_key;
static bool g_lcore_key_ok;
static pthread_once_t g_lcore_once = PTHREAD_ONCE_INIT;
static __thread bool t_lcore_tried;

static void lcore_exit(void *arg)
{
	(void)arg;
	rte_thread_unregister();
}

static void lcore_key_init(void)
{
	g_lcore_key_ok = !pthread_key_create(&g_lcore_key, lcore_exit);
}

static void lcore_join(void)
{
	if (t_lcore_tried)
		return;
	t_lcore_tried = true;
	if (rte_lcore_id() != LCORE_ID_ANY)
		return;
	pthread_once(&g_lcore_once, lcore_key_init);
	if (g_lcore_key_ok && rte_thread_register() == 0) {
		if (rte_lcore_id() == LCORE_ID_ANY || pthread_setspecific(g_lcore_key, (void *)1))
			rte_thread_unregister();
	}
}

static void lock_port(struct dport *p)
{
	atomic_fetch_add(&p->want_lock, 1);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_sub(&p->want_lock, 1);
}

static void kick(struct dport *p)
{
	/* Dekker pair with poll_main: either it sees kicked before it
	 * sleeps, or we see it sleeping and signal under kmu, which it holds
	 * until it waits. No syscall while it is busy. */
	atomic_store(&p->kicked, true);
	if (!atomic_load(&p->sleeping))
		return;
	pthread_mutex_lock(&p->kmu);
	pthread_cond_signal(&p->kcv);
	pthread_mutex_unlock(&p->kmu);
}

static void cv_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

/* Wait on cv until deadline_ns (CLOCK_MONOTONIC); 0 or ETIMEDOUT. */
static int cv_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns)
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

static uint64_t deadline_ns(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX / 2;
	return tlm__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

static double rnd01(uint64_t *s)
{
	/* xorshift64*: fault injection only needs cheap, seeded noise */
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return (double)((x * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* ---- transport_args ---- */

/* Splits "k=v,k=v" where a value may be quoted ("..." or '...'). Keys the
 * transport does not know are passed on as devargs of the vdev. */
static int parse_fault_kv(struct fault *f, const char *k, const char *v)
{
	char *end;
	double d = strtod(v, &end);

	if (end == v || *end || !(d >= 0 && d <= 1))
		return -EINVAL;
	if (!strcmp(k, "drop"))
		f->drop = d;
	else if (!strcmp(k, "reorder"))
		f->reorder = d;
	else if (!strcmp(k, "dup"))
		f->dup = d;
	else
		return -EINVAL;
	return 0;
}

static int append(char *dst, size_t cap, const char *sep, const char *s)
{
	size_t n = strlen(dst);
	int r = snprintf(dst + n, cap - n, "%s%s", n ? sep : "", s);

	return r < 0 || (size_t)r >= cap - n ? -EINVAL : 0;
}

static int parse_args(const char *args, struct cfg *c)
{
	char tok[512], item[512];
	const char *p = args;
	char extra[512] = "";

	memset(c, 0, sizeof(*c));
	c->dead_ms = DEFAULT_DEAD_MS;
	c->queues = DEF_QUEUES;
	while (p && *p) {
		size_t n = 0;
		char q = 0;

		while (*p == ',' || *p == ' ')
			p++;
		if (!*p)
			break;
		while (*p && (q || *p != ',')) {
			if (!q && (*p == '"' || *p == '\'')) {
				q = *p++;
				continue;
			}
			if (q && *p == q) {
				q = 0;
				p++;
				continue;
			}
			if (n + 1 >= sizeof(tok))
				return -EINVAL;
			tok[n++] = *p++;
		}
		tok[n] = 0;
		snprintf(item, sizeof(item), "%s", tok);
		char *k = tok, *v;
		if (!strncmp(k, "--", 2))
			k += 2;
		/* dpdk-args=... or "--dpdk-args ...": EAL args may hold '=' */
		if (!strncmp(k, "dpdk-args", 9) && (k[9] == '=' || k[9] == ' ')) {
			if (append(c->eal, sizeof(c->eal), " ", k + 10))
				return -EINVAL;
			continue;
		}
		v = strchr(k, '=');
		if (!v) {
			tlm__err("dpdk: transport_args: '%s' is not key=value", tok);
			return -EINVAL;
		}
		*v++ = 0;
		if (!strcmp(k, "port")) {
			snprintf(c->dev, sizeof(c->dev), "%s", v);
		} else if (!strcmp(k, "vdev")) {
			if (append(c->vdev, sizeof(c->vdev), ",", v))
				goto bad;
		} else if (!strcmp(k, "ip")) {
			struct in_addr a;
			if (inet_pton(AF_INET, v, &a) != 1)
				goto bad;
			c->ip = ntohl(a.s_addr);
		} else if (!strcmp(k, "peer-mac")) {
			if (rte_ether_unformat_addr(v, &c->peer_mac))
				goto bad;
			c->peer_mac_set = true;
		} else if (!strcmp(k, "mtu")) {
			c->mtu = (uint32_t)strtoul(v, NULL, 10);
			if (c->mtu < 576 || c->mtu > 9000)
				goto bad;
		} else if (!strcmp(k, "queues")) {
			c->queues = (unsigned)strtoul(v, NULL, 10);
			if (c->queues < 1 || c->queues > MAX_QUEUES)
				goto bad;
		} else if (!strcmp(k, "window")) {
			char *end;
			unsigned long long w = strtoull(v, &end, 10);
			if (*end == 'K' || *end == 'k')
				w <<= 10, end++;
			else if (*end == 'M' || *end == 'm')
				w <<= 20, end++;
			if (*end || w < (16u << 10) || w > RING_BYTES)
				goto bad;
			c->window = (uint32_t)w;
		} else if (!strcmp(k, "spinners")) {
			c->spinners = (unsigned)strtoul(v, NULL, 10);
			if (c->spinners < 1 || c->spinners > 256)
				goto bad;
		} else if (!strcmp(k, "zc")) {
			if (!strcmp(v, "auto"))
				c->zc = ZC_AUTO;
			else if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "1"))
				c->zc = ZC_ON;
			else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "0"))
				c->zc = ZC_OFF;
			else
				goto bad;
		} else if (!strcmp(k, "dead_ms")) {
			c->dead_ms = atoi(v);
			if (c->dead_ms < 100)
				goto bad;
		} else if (!strcmp(k, "fault")) {
			/* fault=drop=P,reorder=P: the rest arrive as keys of
			 * their own; quoted, they are all in v */
			char *save = NULL;
			for (char *kv = strtok_r(v, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
				char *v2 = strchr(kv, '=');
				if (!v2)
					goto bad;
				*v2++ = 0;
				if (parse_fault_kv(&c->fault, kv, v2))
					goto bad;
			}
		} else if (!strcmp(k, "drop") || !strcmp(k, "reorder") || !strcmp(k, "dup")) {
			if (parse_fault_kv(&c->fault, k, v))
				goto bad;
		} else {
			v[-1] = '=';
			if (append(extra, sizeof(extra), ",", k))
				goto bad;
		}
	}
	if (extra[0]) {
		if (!c->vdev[0]) {
			tlm__err("dpdk: transport_args: device args '%s' without vdev=", extra);
			return -EINVAL;
		}
		if (append(c->vdev, sizeof(c->vdev), ",", extra))
			return -EINVAL;
	}
	if (c->vdev[0] && !c->dev[0]) {
		size_t k = strcspn(c->vdev, ",");
		snprintf(c->dev, sizeof(c->dev), "%.*s", (int)k, c->vdev);
	}
	if (!c->mtu)
		c->mtu = c->dev[0] ? TLM__DPDK_PORT_MTU : TLM__DPDK_MEMIF_MTU;
	return 0;
bad:
	tlm__err("dpdk: transport_args: '%s': bad or too long a value", item);
	return -EINVAL;
}

/* ---- EAL ---- */

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
	(void)cookie;
	/* EAL and PMD chatter goes to our log at debug level, never stderr */
	tlm__dpdk_log_line("dpdk", buf, n);
	return (ssize_t)n;
}

static void after_fork_child(void)
{
	g_forked = 1;
}

static int forked(void)
{
	if (!g_forked)
		return 0;
	tlm__err("dpdk: this process was forked after the EAL started; DPDK lanes "
		 "do not survive fork(): start them in the process that uses them");
	return -EOPNOTSUPP;
}

/* The EAL leaves its runtime directory (/var/run/dpdk/<prefix>: config,
 * memseg arrays, IPC socket) behind at exit; with a prefix per process that
 * piles up. Remove ours at exit when we chose the prefix. Not earlier:
 * hotplug (our vdevs) looks for peers in that directory. */
static char g_rundir[256];
static pid_t g_rundir_pid;

static void remove_rundir(void)
{
	DIR *d;
	struct dirent *e;

	/* a child forked after we started exits too: not its directory */
	if (getpid() != g_rundir_pid || !(d = opendir(g_rundir)))
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	rmdir(g_rundir);
}

static int eal_init(const struct cfg *c)
{
	char buf[640], *argv[64];
	int argc = 0, r;
	cpu_set_t cpus;

	if (g_eal_up)
		return 0;
	if (g_eal_err)
		return g_eal_err;
	if (c->eal[0] && (strstr(c->eal, "--file-prefix") || strstr(c->eal, "--in-memory")))
		snprintf(buf, sizeof(buf), "tlm %s", c->eal);
	else if (c->eal[0])   /* two processes here must not share a prefix */
		snprintf(buf, sizeof(buf), "tlm %s --file-prefix tlm-%d", c->eal, (int)getpid());
	else
		snprintf(buf, sizeof(buf), "tlm --no-huge --no-pci -m 512 --file-prefix tlm-%d",
			 (int)getpid());
	for (char *s = strtok(buf, " "); s && argc < 60; s = strtok(NULL, " "))
		argv[argc++] = s;
	/* one lcore: our poll threads are plain pthreads registered later */
	argv[argc++] = "-l";
	argv[argc++] = "0";
	argv[argc++] = "--no-telemetry";
	argv[argc] = NULL;

	FILE *lf = fopencookie(NULL, "w", (cookie_io_functions_t){ .write = log_write });
	if (lf) {
		setvbuf(lf, NULL, _IOLBF, 0);
		rte_openlog_stream(lf);
	}
	/* rte_eal_init pins the calling thread to lcore 0; give it back its
	 * cores, it is the application's thread, not ours */
	r = pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	int n = tlm__dpdk_eal_init(argc, argv);
	if (!r)
		pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	if (n < 0) {
		g_eal_err = rte_errno ? -rte_errno : -EINVAL;
		tlm__err("dpdk: EAL init failed: %s (EAL arguments: %s)", rte_strerror(rte_errno),
			 c->eal[0] ? c->eal : "the default, --no-huge --no-pci -m 512");
		return g_eal_err;
	}
	g_eal_up = true;
	pthread_atfork(NULL, NULL, after_fork_child);
	if (!strstr(c->eal, "--file-prefix") && !strstr(c->eal, "--in-memory")) {
		/* the prefix is ours (tlm-<pid>): so is the directory */
		snprintf(g_rundir, sizeof(g_rundir), "%s", rte_eal_get_runtime_dir());
		g_rundir_pid = getpid();
		if (g_rundir[0])
			atexit(remove_rundir);
	}
	return 0;
}

/* ---- packets ---- */

static void put_hdr(uint8_t *h, uint8_t type, uint32_t dst, uint32_t src,
		    uint32_t wnd, uint64_t seq, uint64_t ack, uint8_t flags)
{
	tlm__put16(h, MAGIC);
	h[2] = PROTO_VER;
	h[3] = type;
	tlm__put32(h + 4, dst);
	tlm__put32(h + 8, src);
	tlm__put32(h + 12, wnd);
	tlm__put64(h + 16, seq);
	tlm__put64(h + 24, ack);
	h[32] = flags;
	memset(h + 33, 0, HDR_LEN - 33);
}

/* IPv4 header checksum from the fields we set, without reading the
 * header back: loads of just-stored bytes stall on store forwarding
 * (rte_ipv4_cksum here cost hundreds of cycles a packet). */
static uint16_t ip_cksum(uint32_t tot, uint32_t src, uint32_t dst)
{
	uint32_t sum = 0x4500 + tot + (64 << 8 | IPPROTO_UDP) + (src >> 16) + (src & 0xffff) +
		       (dst >> 16) + (dst & 0xffff);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Ethernet, IPv4 and UDP headers at b, for plen bytes after our header. */
static void put_l2l4(const struct dport *p, uint8_t *b, const struct rte_ether_addr *dmac,
		     uint32_t dip, uint16_t sport, uint16_t dport, uint32_t plen)
{
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)b;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);
	uint32_t tot = L2L4_LEN + HDR_LEN + plen;

	if (dmac)
		rte_ether_addr_copy(dmac, &eh->dst_addr);
	else
		memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(tot - sizeof(*eh)));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(p->ip);
	ip->dst_addr = rte_cpu_to_be_32(dip);
	ip->hdr_checksum = rte_cpu_to_be_16(ip_cksum(tot - (uint32_t)sizeof(*eh), p->ip, dip));
	uh->src_port = rte_cpu_to_be_16(sport);
	uh->dst_port = rte_cpu_to_be_16(dport);
	uh->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*uh) + HDR_LEN + plen));
	uh->dgram_cksum = 0;  /* optional in IPv4; Ethernet FCS / memif copy guard the bits */
}

/* A control frame (from the rx pool: data packets may use up the tx pool
 * while they wait for the acks this sends); payload room plen. */
static struct rte_mbuf *mk_pkt(struct dport *p, const struct rte_ether_addr *dmac,
			       uint32_t dip, uint16_t sport, uint16_t dport,
			       uint32_t plen, uint8_t **hdr)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->pool);

	if (!m)
		return NULL;
	uint8_t *b = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(L2L4_LEN + HDR_LEN + plen));
	if (!b) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	put_l2l4(p, b, dmac, dip, sport, dport, plen);
	*hdr = b + L2L4_LEN;
	return m;
}

/* Queue a packet for the next tx_burst: the lane's own queue (its pump
 * holds qmu), the port's shared one (port->lock held), or local delivery. */
static void q_add(struct rte_mbuf **v, unsigned *n, unsigned cap, struct rte_mbuf *m)
{
	if (*n < cap)
		v[(*n)++] = m;
	else
		rte_pktmbuf_free(m);
}

static void out_pkt(struct dport *p, struct dlane *l, struct rte_mbuf *m)
{
	if (l && l->local)
		q_add(p->loopq, &p->nloop, RTE_DIM(p->loopq), m);
	else if (l && l->q)
		q_add(l->qtx, &l->nqtx, RTE_DIM(l->qtx), m);
	else
		q_add(p->txq, &p->ntx, RTE_DIM(p->txq), m);
}

/* ---- memif's unmap race ----
 * When the peer process goes, memif's interrupt thread unmaps the shared
 * rings (memif_disconnect) with no lock against a burst that runs on
 * another thread: a burst that passed its "connected" check can then
 * touch a ring that is gone. On memif ports the bursts run guarded: such a
 * fault (SIGSEGV or SIGBUS inside a burst, on the thread that runs it)
 * ends the burst, the port counts it (torn), and the lanes fail as for
 * any peer that vanished (the link is down). An rx burst that faulted
 * moved nothing; a tx burst's packets count as sent and are not freed,
 * since the PMD may have freed some (a leak, never a double free). A
 * fault anywhere else goes to the handler installed before ours, or ends
 * the process as it would have. */
static __thread sigjmp_buf *t_guard;
static struct sigaction g_old_segv, g_old_bus;
static pthread_once_t g_guard_once = PTHREAD_ONCE_INIT;

static void guard_sig(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *jb = t_guard;
	const struct sigaction *old = sig == SIGBUS ? &g_old_bus : &g_old_segv;

	if (jb) {
		t_guard = NULL;
		siglongjmp(*jb, 1);
	}
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
	} else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
	} else {
		/* returning runs the access again, which now kills */
		signal(sig, SIG_DFL);
	}
}

static void guard_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_sig;
	/* not blocked in the handler: siglongjmp leaves the mask alone */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &g_old_segv);
	sigaction(SIGBUS, &sa, &g_old_bus);
}

static uint16_t burst(struct dport *p, bool tx, uint16_t q, struct rte_mbuf **v, uint16_t n)
{
	sigjmp_buf jb;
	uint16_t r;

	if (p->memif) {
		if (sigsetjmp(jb, 0)) {
			atomic_fetch_add(&p->torn, 1);
			return tx ? n : 0;
		}
		t_guard = &jb;
	}
	r = tx ? rte_eth_tx_burst(p->port_id, q, v, n) : rte_eth_rx_burst(p->port_id, q, v, n);
	t_guard = NULL;
	return r;
}

/* Hand queued packets to the PMD. What its ring cannot take now stays
 * queued for the next round (lanes stop making data packets meanwhile):
 * dropping it would cost a retransmission timeout each time the peer's
 * poll thread naps and the ring fills. */
static unsigned flush_q(struct dport *p, uint16_t q, struct rte_mbuf **v, unsigned *n)
{
	unsigned done = 0;

	for (int tries = 0; done < *n && tries < 4; tries++) {
		done += burst(p, true, q, v + done, (uint16_t)(*n - done));
		if (done < *n)
			rte_pause();
	}
	if (done && done < *n)
		memmove(v, v + done, (*n - done) * sizeof(v[0]));
	*n -= done;
	return done;
}

static unsigned flush_tx(struct dport *p)
{
	return flush_q(p, 0, p->txq, &p->ntx);
}

/* Room for a whole data burst in the lane's tx queue? */
static bool tx_room(const struct dport *p, const struct dlane *l)
{
	if (l->local)
		return p->nloop + 2 <= RTE_DIM(p->loopq);
	if (l->q)
		return l->nqtx + 2 <= RTE_DIM(l->qtx);
	return p->ntx + 2 <= RTE_DIM(p->txq);
}

static void out_data(struct dport *p, struct dlane *l, struct rte_mbuf *m);

static void send_ctl(struct dport *p, struct dlane *l, uint8_t type)
{
	uint8_t *h;
	struct rte_mbuf *m = mk_pkt(p, l->mac_known ? &l->peer_mac : NULL, l->peer_ip,
				    l->lport, l->rport, 0, &h);
	uint64_t fill = l->rcv_nxt - l->rcv_rd;
	uint32_t wnd = (uint32_t)(RING_BYTES - fill);

	if (!m)
		return;
	/* SYN: the queue we want the peer to use (memif); SYNACK: the one
	 * granted, 0 for the shared one */
	put_hdr(h, type, l->rid, l->lid, wnd,
		type == PT_SYN || type == PT_SYNACK ? l->qown : l->snd_nxt, l->rcv_nxt, 0);
	l->adv_edge = l->rcv_nxt + wnd;
	l->need_ack = false;
	l->ack_pkts = 0;
	l->tx_pkts++;
	out_data(p, l, m);
}

static void arp_learn(struct dport *p, uint32_t ip, const struct rte_ether_addr *mac)
{
	for (unsigned i = 0; i < p->narp; i++)
		if (p->arp[i].ip == ip) {
			rte_ether_addr_copy(mac, &p->arp[i].mac);
			return;
		}
	unsigned i = p->narp < RTE_DIM(p->arp) ? p->narp++ : 0;
	p->arp[i].ip = ip;
	rte_ether_addr_copy(mac, &p->arp[i].mac);
}

static bool arp_lookup(struct dport *p, uint32_t ip, struct rte_ether_addr *mac)
{
	for (unsigned i = 0; i < p->narp; i++)
		if (p->arp[i].ip == ip) {
			rte_ether_addr_copy(&p->arp[i].mac, mac);
			return true;
		}
	return false;
}

static void arp_send(struct dport *p, uint16_t op, uint32_t tip, const struct rte_ether_addr *tmac)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->pool);

	if (!m)
		return;
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m,
			sizeof(*eh) + sizeof(struct rte_arp_hdr));
	if (!eh) {
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);

	if (tmac)
		rte_ether_addr_copy(tmac, &eh->dst_addr);
	else
		memset(&eh->dst_addr, 0xff, sizeof(eh->dst_addr));
	rte_ether_addr_copy(&p->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	a->arp_hlen = RTE_ETHER_ADDR_LEN;
	a->arp_plen = 4;
	a->arp_opcode = rte_cpu_to_be_16(op);
	rte_ether_addr_copy(&p->mac, &a->arp_data.arp_sha);
	a->arp_data.arp_sip = rte_cpu_to_be_32(p->ip);
	if (tmac)
		rte_ether_addr_copy(tmac, &a->arp_data.arp_tha);
	else
		memset(&a->arp_data.arp_tha, 0, sizeof(a->arp_data.arp_tha));
	a->arp_data.arp_tip = rte_cpu_to_be_32(tip);
	out_pkt(p, NULL, m);
}

/* ---- lanes: allocation ---- */

static void zc_attach(struct dport *p, struct rte_mbuf *m, const uint8_t *a, uint32_t n);

/* Light zero-copy packets. A packet whose page data is one range of a
 * LIVE page after its headers is kept as the header mbuf alone plus the
 * range (txp.za, zl); each time it goes out, a fresh segment is attached
 * to the range and chained (zc_chain). Only the header mbuf carries our
 * reference, so the PMD frees the segment once it has sent it, and the
 * next packet's segment comes back from the mempool cache instead of
 * one freed a window of packets ago. While the PMD still holds the last
 * send (a NIC not done with it), the re-send is a flat copy. */
static struct rte_mbuf *zc_chain(struct dport *p, const struct txp *t)
{
	struct rte_mbuf *h = t->m, *e;

	if (rte_mbuf_refcnt_read(h) == 1 && (e = rte_pktmbuf_alloc(p->zcpool))) {
		zc_attach(p, e, t->za, t->zl);
		h->next = e;
		h->nb_segs = 2;
		rte_mbuf_refcnt_update(h, 1);   /* the header mbuf's only */
		return h;
	}
	struct rte_mbuf *c = rte_pktmbuf_alloc(p->txpool);
	if (!c)
		return NULL;
	uint8_t *d = rte_pktmbuf_mtod(c, uint8_t *);
	memcpy(d, rte_pktmbuf_mtod(h, const uint8_t *), h->data_len);
	memcpy(d + h->data_len, t->za, t->zl);
	c->data_len = (uint16_t)(h->data_len + t->zl);
	c->pkt_len = c->data_len;
	return c;
}

/* Ready to free a kept packet with rte_pktmbuf_free? A light one's header
 * mbuf only once the PMD has let go of it (its next then points at a
 * segment the PMD freed): cut it off; else drop just our reference. */
static bool txp_headonly(struct txp *t)
{
	struct rte_mbuf *h = t->m;

	if (!t->zl)
		return true;
	if (rte_mbuf_refcnt_read(h) == 1) {
		h->next = NULL;
		h->nb_segs = 1;
		return true;
	}
	rte_mbuf_refcnt_update(h, -1);
	return false;
}

static void lane_free(struct dlane *l)
{
	if (!l)
		return;
	if (l->held)
		rte_pktmbuf_free(l->held);
	if (l->efd >= 0)
		close(l->efd);
	for (unsigned i = l->sq_head; l->sq && i != l->sq_tail; i++)
		if (txp_headonly(&l->sq[i % SQ_SLOTS]))
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
static void efd_signal(struct dlane *l)
{
	uint64_t one = 1;

	if (atomic_load(&l->efd_on) && write(l->efd, &one, sizeof(one)) < 0) {
		/* counter saturated: still readable, nothing lost */
	}
}

static void lane_fail(struct dlane *l, int level, int err, const char *why)
{
	if (l->state == LS_DEAD)
		return;
	l->state = LS_DEAD;
	l->err = err;
	snprintf(l->why, sizeof(l->why), "%s", why);
	tlm__log(level, "dpdk: lane %u (%s): %s", l->base.index, l->base.peer, why);
	pthread_cond_broadcast(&l->cv);
	efd_signal(l);
}

/* The peer closed and the reader has taken all that came before: between
 * frames that is the end of the stream, inside one (a frame's bytes still
 * missing) the peer left it cut. */
static void peer_closed_fail(struct dlane *l)
{
	if (l->peer_reset)
		lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
			  "peer refused what we sent and reset the lane (its log says why)");
	else if (l->rcv_nxt == l->rcv_rd && !l->data_left)
		lane_fail(l, TLM_LOG_INFO, -TLM_EPEERCLOSED, "peer closed the lane");
	else
		lane_fail(l, TLM_LOG_WARN, -TLM_EPEERCLOSED, "peer closed the lane mid-stream");
}

/* ---- receive path (poll thread, port->lock held) ---- */

static struct dlane *find_lane(struct dport *p, uint32_t lid)
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

/* A rule steering the lane's packets (its UDP port pair) to queue q. */
static struct rte_flow *flow_steer(struct dport *p, uint16_t lport, uint16_t rport, uint16_t q)
{
	struct rte_flow_attr attr = { .ingress = 1 };
	struct rte_flow_item_udp spec = { 0 }, mask = { 0 };
	struct rte_flow_action_queue qa = { .index = q };
	struct rte_flow_error err;

	spec.hdr.dst_port = rte_cpu_to_be_16(lport);
	spec.hdr.src_port = rte_cpu_to_be_16(rport);
	mask.hdr.dst_port = mask.hdr.src_port = 0xffff;
	struct rte_flow_item pat[] = {
		{ .type = RTE_FLOW_ITEM_TYPE_ETH },
		{ .type = RTE_FLOW_ITEM_TYPE_IPV4 },
		{ .type = RTE_FLOW_ITEM_TYPE_UDP, .spec = &spec, .mask = &mask },
		{ .type = RTE_FLOW_ITEM_TYPE_END },
	};
	struct rte_flow_action act[] = {
		{ .type = RTE_FLOW_ACTION_TYPE_QUEUE, .conf = &qa },
		{ .type = RTE_FLOW_ACTION_TYPE_END },
	};
	if (rte_flow_validate(p->port_id, &attr, pat, act, &err))
		return NULL;
	return rte_flow_create(p->port_id, &attr, pat, act, &err);
}

/* Give l a queue pair of its own if one is free. memif, where the
 * sender picks the queue: the connecting side (want < 0) reserves a free
 * q and asks for it in its SYN, which goes on the shared queue; the
 * accepting side takes q = want if it is free here too and says so in
 * its SYNACK, and only then does the connecting side use q (rx_lane).
 * A queue is only ever polled once its lane owns it: a memif queue the
 * peer did not set up reads ring 0, the shared queue's ring. NICs: any
 * free q, once rte_flow steers the lane there. Otherwise l stays on the
 * shared queue (software demux by the poll thread). port->lock held. */
static void queue_take(struct dport *p, struct dlane *l, int want)
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
		if (q && p->flow && !(l->flow = flow_steer(p, l->lport, l->rport, q)))
			q = 0;
	}
	if (q) {
		p->qowner[q] = l;
		l->qown = q;
		if (!p->memif || want >= 0)
			l->q = q;
	}
}

static void queue_put(struct dport *p, struct dlane *l)
{
	if (!l->qown)
		return;
	if (l->flow)
		rte_flow_destroy(p->port_id, l->flow, NULL);
	p->qowner[l->qown] = NULL;
	l->qown = 0;
}

static void rx_syn(struct dport *p, const struct pkt *k, bool local, uint16_t qid)
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
		send_ctl(p, &tmp, PT_RST);
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
	queue_take(p, l, p->memif ? (int)(k->seq < MAX_QUEUES ? k->seq : 0) : (int)qid);
	l->next = p->lanes;
	p->lanes = l;
	if (x->qtail)
		x->qtail->qnext = l;
	else
		x->qhead = l;
	x->qtail = l;
	pthread_cond_broadcast(&x->cv);
}

/* Out-of-order byte ranges held in the receive ring past rcv_nxt, sorted,
 * disjoint. A range that does not fit is dropped: the sender re-sends. */
static void ooo_add(struct dlane *l, uint64_t a, uint64_t b)
{
	unsigned i, j;

	for (i = 0; i < l->nooo && l->ooo[i].b < a; i++)
		;
	/* merge every range that touches [a, b) */
	for (j = i; j < l->nooo && l->ooo[j].a <= b; j++) {
		if (l->ooo[j].a < a)
			a = l->ooo[j].a;
		if (l->ooo[j].b > b)
			b = l->ooo[j].b;
	}
	if (j == i && l->nooo == RTE_DIM(l->ooo))
		return;
	memmove(&l->ooo[i + 1], &l->ooo[j], (l->nooo - j) * sizeof(l->ooo[0]));
	l->nooo = l->nooo - (j - i) + 1;
	l->ooo[i].a = a;
	l->ooo[i].b = b;
}

static void ooo_drain(struct dlane *l)
{
	unsigned n = 0;

	while (n < l->nooo && l->ooo[n].a <= l->rcv_nxt) {
		if (l->ooo[n].b > l->rcv_nxt)
			l->rcv_nxt = l->ooo[n].b;
		n++;
	}
	if (n) {
		memmove(&l->ooo[0], &l->ooo[n], (l->nooo - n) * sizeof(l->ooo[0]));
		l->nooo -= n;
	}
}

/* A packet for lane l; l->mu held. True if the lane keeps k->m. */

/* Go back N: re-send from the oldest unacked byte. */
static void go_back(struct dlane *l)
{
	l->recover = l->snd_nxt;
	l->snd_nxt = l->snd_una;
	l->sq_next = l->sq_head;
}
static bool rx_lane(struct dlane *l, const struct pkt *k, uint64_t now)
{
	bool kept = false, advanced = false;
	uint8_t type = k->type;
	uint32_t wnd = k->wnd, dlen = k->dlen;
	uint64_t seq = k->seq, ack = k->ack;
	const uint8_t *data = k->data;

	if (l->state == LS_SYN_SENT) {
		if (type == PT_RST) {
			lane_fail(l, TLM_LOG_DEBUG, -ECONNREFUSED, "connection refused");
			goto out;
		}
		l->rid = k->src;
		l->state = LS_EST;
		/* memif: the peer granted our queue (its SYNACK says so, or
		 * its first packet came on it) or not; this packet came the
		 * shared way, under port->lock (an inactive lane is nobody's
		 * to poll) */
		if (l->qown && !l->q) {
			if ((type == PT_SYNACK && seq == l->qown) || k->qid == l->qown)
				l->q = l->qown;
			else
				queue_put(l->port, l);
		}
		pthread_cond_broadcast(&l->cv);
	}
	if (l->rid != k->src || l->state == LS_DEAD) {
		l->rx_ignored++;
		goto out;
	}
	l->rx_pkts++;
	l->last_rx = now;
	if (type == PT_CLOSE || type == PT_RST) {
		l->peer_closed = true;
		l->peer_reset = type == PT_RST;
		if (l->rcv_rd == l->rcv_nxt || l->peer_reset)
			peer_closed_fail(l);
		pthread_cond_broadcast(&l->cv);
		goto out;
	}
	/* acks and credit: only within what we have sent */
	if (ack > l->snd_una && ack <= l->snd_end) {
		struct rte_mbuf *done[64];
		unsigned nd = 0;
		l->snd_una = ack;
		while (l->sq_head != l->sq_tail) {
			struct txp *t = &l->sq[l->sq_head % SQ_SLOTS];
			if (t->seq + t->len > ack)
				break;
			if (txp_headonly(t))
				done[nd++] = t->m;
			l->sq_head++;
			if (nd == RTE_DIM(done)) {
				rte_pktmbuf_free_bulk(done, nd);
				nd = 0;
			}
		}
		if (nd)
			rte_pktmbuf_free_bulk(done, nd);
		if (l->snd_nxt < ack)
			l->snd_nxt = ack;
		/* partial ACK in recovery: the receiver holds what follows the
		 * next hole, probably, so re-send from the hole on */
		if (ack < l->recover)
			l->snd_nxt = ack;
		if (l->snd_nxt == ack || (int)(l->sq_next - l->sq_head) < 0)
			l->sq_next = l->sq_head;
		l->dupacks = 0;
		l->rto_ns = RTO_INIT_NS;
		l->rto_at = l->snd_una < l->snd_nxt ? now + l->rto_ns : 0;
		pthread_cond_broadcast(&l->cv);
	} else if (ack == l->snd_una && !dlen && type == PT_DATA && l->snd_nxt > l->snd_una &&
		   l->snd_una >= l->recover) {
		/* one rewind per loss: the copies a rewind re-sends come back
		 * as duplicate ACKs too, and must not trigger another */
		if (++l->dupacks == 3) {
			go_back(l);
		}
	}
	if (ack >= l->snd_una && ack + wnd > l->peer_edge)
		l->peer_edge = ack + wnd;
	if (type == PT_PING)
		l->need_ack = true;
	if (dlen) {
		uint64_t fill = l->rcv_nxt - l->rcv_rd;
		unsigned ooo_before = l->nooo;
		/* anything inside our window is kept, in order or not: bytes
		 * past rcv_nxt wait in the ring (invisible to the reader) until
		 * the hole before them fills, so the sender's go-back-N rewind
		 * costs one round trip, not the whole window again */
		if (seq + dlen > l->rcv_nxt && seq + dlen <= l->rcv_rd + RING_BYTES &&
		    seq <= l->rcv_nxt + RING_BYTES) {
			uint64_t from = seq < l->rcv_nxt ? l->rcv_nxt : seq;
			const uint8_t *d = data + (from - seq);
			size_t len = (size_t)(seq + dlen - from);
			/* the next bytes, and nothing waits in the ring: keep
			 * the packet, the reader parses it in place */
			kept = k->m && seq == l->rcv_nxt && l->rcv_held == l->rcv_nxt && !l->nooo &&
			       l->hn < HELD_MAX;
			if (kept) {
				unsigned i = (l->hhead + l->hn++) % HELD_MAX;
				l->hq[i].m = k->m;
				l->hq[i].p = d;
				l->hq[i].len = (uint32_t)len;
				l->rcv_held = from + len;
			} else {
				size_t off = (size_t)(from % RING_BYTES);
				size_t k1 = RING_BYTES - off < len ? RING_BYTES - off : len;
				memcpy(l->rbuf + off, d, k1);
				memcpy(l->rbuf, d + k1, len - k1);
			}
			if (from == l->rcv_nxt) {
				advanced = true;
				l->rcv_nxt += len;
				ooo_drain(l);
				if (fill == 0)
					efd_signal(l);
				/* wake the reader once what it waits for is here,
				 * not for every segment of a page */
				if (l->rcv_nxt - l->rcv_rd >= l->rd_want)
					pthread_cond_broadcast(&l->cv);
			} else {
				ooo_add(l, from, from + len);
			}
		}
		/* in order with more behind it (HF_MORE), the ACK waits for
		 * more (ACK_EVERY packets or ACK_DELAY_NS, whichever first);
		 * the last of what the sender had queued (the end of a write,
		 * a request), a hole filled, out of order or old: it goes now
		 * (out of order, the duplicate ACK that triggers the sender's
		 * rewind). An ACK a packet or two was half the frames on
		 * net_af_packet, a syscall a burst there, and the receiver's
		 * per-packet work on memif. */
		if (advanced && !ooo_before && !l->nooo && (k->flags & HF_MORE)) {
			if (!l->ack_pkts++)
				l->ack_first = now;
		} else {
			l->need_ack = true;
		}
	}
out:
	return kept;
}

/* 1: one of our UDP packets, parsed into k; 0: ARP; -1: not for us. */
static int parse_pkt(const struct dport *p, struct rte_mbuf *m, bool local, struct pkt *k)
{
	if (m->nb_segs > 1 && rte_pktmbuf_linearize(m))
		return -1;
	uint32_t len = rte_pktmbuf_data_len(m);
	uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)b;

	if (len < sizeof(*eh))
		return -1;
	if (!local && rte_is_same_ether_addr(&eh->src_addr, &p->mac))
		return -1;   /* our own frame seen again (af_packet taps) */
	k->eh = eh;
	if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return len < sizeof(*eh) + sizeof(struct rte_arp_hdr) || p->p2p ? -1 : 0;
	if (eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		return -1;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	if (len < sizeof(*eh) + sizeof(*ip) || ip->version_ihl != RTE_IPV4_VHL_DEF ||
	    ip->next_proto_id != IPPROTO_UDP)
		return -1;
	uint32_t iplen = rte_be_to_cpu_16(ip->total_length);
	if (iplen > len - sizeof(*eh) || iplen < sizeof(*ip) + sizeof(struct rte_udp_hdr) + HDR_LEN)
		return -1;
	if (!p->p2p && rte_be_to_cpu_32(ip->dst_addr) != p->ip)
		return -1;
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);
	uint32_t ulen = rte_be_to_cpu_16(uh->dgram_len);
	if (ulen != iplen - sizeof(*ip))
		return -1;
	uint8_t *h = (uint8_t *)(uh + 1);
	if (tlm__get16(h) != MAGIC || h[2] != PROTO_VER)
		return -1;
	k->type = h[3];
	k->dst = tlm__get32(h + 4);
	k->src = tlm__get32(h + 8);
	k->wnd = tlm__get32(h + 12);
	k->seq = tlm__get64(h + 16);
	k->ack = tlm__get64(h + 24);
	k->flags = h[32];
	k->sip = rte_be_to_cpu_32(ip->src_addr);
	k->sport = rte_be_to_cpu_16(uh->src_port);
	k->dport = rte_be_to_cpu_16(uh->dst_port);
	k->data = h + HDR_LEN;
	k->dlen = ulen - (uint32_t)sizeof(*uh) - HDR_LEN;
	k->m = m;
	return 1;
}

/* Any packet, any lane: port->lock held. qid: the queue it came in on. */
static void rx_pkt(struct dport *p, struct rte_mbuf *m, bool local, uint16_t qid)
{
	struct pkt k;
	int r = parse_pkt(p, m, local, &k);

	k.qid = qid;
	if (r == 0) {
		const struct rte_arp_hdr *a = (const struct rte_arp_hdr *)(k.eh + 1);
		uint32_t sip = rte_be_to_cpu_32(a->arp_data.arp_sip);
		uint32_t tip = rte_be_to_cpu_32(a->arp_data.arp_tip);
		if (tip == p->ip) {
			arp_learn(p, sip, &a->arp_data.arp_sha);
			if (a->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REQUEST))
				arp_send(p, RTE_ARP_OP_REPLY, sip, &a->arp_data.arp_sha);
		}
	} else if (r > 0) {
		if (!p->p2p)
			arp_learn(p, k.sip, &k.eh->src_addr);
		if (k.type == PT_SYN) {
			rx_syn(p, &k, local, qid);
		} else {
			struct dlane *l = find_lane(p, k.dst);
			if (l && !l->gone) {
				pthread_mutex_lock(&l->mu);
				bool kept = rx_lane(l, &k, tlm__now_ns());
				pthread_mutex_unlock(&l->mu);
				if (kept)
					return;
			}
		}
	}
	rte_pktmbuf_free(m);
}

/* ---- transmit path (poll thread, port->lock held) ---- */

/* Sending side fault injection: drop, duplicate or swap with the next. */
static void out_data(struct dport *p, struct dlane *l, struct rte_mbuf *m)
{
	struct fault *f = &l->fault;

	if (f->drop > 0 || f->dup > 0 || f->reorder > 0) {
		if (f->drop > 0 && rnd01(&l->rng) < f->drop) {
			rte_pktmbuf_free(m);
			return;
		}
		if (f->dup > 0 && rnd01(&l->rng) < f->dup) {
			struct rte_mbuf *c = rte_pktmbuf_copy(m, p->pool, 0, UINT32_MAX);
			if (c)
				out_pkt(p, l, c);
		}
		if (!l->held && f->reorder > 0 && rnd01(&l->rng) < f->reorder) {
			l->held = m;
			return;
		}
	}
	out_pkt(p, l, m);
	if (l->held) {
		out_pkt(p, l, l->held);
		l->held = NULL;
	}
}

static void lane_tx(struct dport *p, struct dlane *l, uint64_t now)
{
	pthread_mutex_lock(&l->mu);
	if (l->closing) {
		if (l->close_sent < 3 && (l->state == LS_EST || l->tell_peer) && l->rid) {
			send_ctl(p, l, l->state == LS_EST ? PT_CLOSE : PT_RST);
			l->close_sent++;
		} else {
			l->gone = true;
			pthread_cond_broadcast(&l->cv);
		}
		goto out;
	}
	if (l->state == LS_DEAD) {
		/* a stream we refused (bad frame): the peer learns it now, not
		 * after dead_ms of silence */
		if (l->tell_peer && l->rid && (l->mac_known || p->p2p))
			send_ctl(p, l, PT_RST);
		l->tell_peer = false;
		goto out;
	}
	if (!l->mac_known && !p->p2p) {
		if (arp_lookup(p, l->peer_ip, &l->peer_mac)) {
			l->mac_known = true;
		} else {
			if (since(now, p->last_arp_req) > SYN_NS) {
				arp_send(p, RTE_ARP_OP_REQUEST, l->peer_ip, NULL);
				p->last_arp_req = now;
			}
			goto timers;
		}
	}
	if (l->state == LS_SYN_SENT) {
		if (since(now, l->last_syn) > SYN_NS) {
			send_ctl(p, l, PT_SYN);
			l->last_syn = now;
		}
		goto out;
	}
	if (l->need_synack)
		send_ctl(p, l, PT_SYNACK), l->need_synack = false;

	/* retransmission timeout: go back to the oldest unacked byte */
	if (l->rto_at && now >= l->rto_at && l->snd_una < l->snd_nxt) {
		go_back(l);
		l->rto_ns = l->rto_ns * 2 > RTO_MAX_NS ? RTO_MAX_NS : l->rto_ns * 2;
		l->rto_at = 0;
		l->dupacks = 0;
	}
	uint32_t wnd = (uint32_t)(RING_BYTES - (l->rcv_nxt - l->rcv_rd));
	for (unsigned n = 0; n < BURST && l->sq_next != l->sq_tail && tx_room(p, l); n++) {
		struct txp *t = &l->sq[l->sq_next % SQ_SLOTS];
		/* in recovery, one segment per hole until the ACKs pass the
		 * point of the rewind (the timer covers a lost re-send) */
		if (l->snd_una < l->recover && l->sq_next != l->sq_head && l->snd_nxt < l->recover)
			break;
		if (t->seq + t->len > l->peer_edge)
			break;
		/* the packet stays ours for a re-send: the PMD gets another
		 * reference, or a copy while it still holds the last one */
		struct rte_mbuf *m = t->m;
		if (t->zl)
			m = zc_chain(p, t);
		else if (rte_mbuf_refcnt_read(m) > 1)
			m = rte_pktmbuf_copy(m, p->txpool, 0, UINT32_MAX);
		else
			rte_pktmbuf_refcnt_update(m, 1);
		if (!m)
			break;
		uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
		if (l->mac_known)
			rte_ether_addr_copy(&l->peer_mac, (struct rte_ether_addr *)b);
		put_hdr(b + L2L4_LEN, PT_DATA, l->rid, l->lid, wnd, t->seq, l->rcv_nxt,
			l->sq_next + 1 != l->sq_tail ? HF_MORE : 0);
		l->adv_edge = l->rcv_nxt + wnd;
		if (t->seq < l->snd_max)
			l->retrans++;
		l->snd_nxt = t->seq + t->len;
		l->sq_next++;
		if (l->snd_nxt > l->snd_max)
			l->snd_max = l->snd_nxt;
		l->need_ack = false;
		l->ack_pkts = 0;
		l->tx_pkts++;
		if (!l->rto_at)
			l->rto_at = now + l->rto_ns;
		out_data(p, l, m);
	}
	if (l->held) {
		/* nothing came after it this round: let it go now */
		out_pkt(p, l, l->held);
		l->held = NULL;
	}
	/* window update once the reader freed a quarter of the ring */
	if (l->rcv_rd + RING_BYTES - l->adv_edge >= RING_BYTES / 4)
		l->need_ack = true;
	if (l->need_ack || l->ack_pkts >= ACK_EVERY ||
	    (l->ack_pkts && since(now, l->ack_first) >= ACK_DELAY_NS))
		send_ctl(p, l, PT_DATA);
timers:
	/* memif: the link goes down when the peer's process is gone (ports
	 * live until their process exits): fail now, not after dead_ms */
	if (p->memif && l->state == LS_EST && atomic_load(&p->torn) != l->torn_seen)
		lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
			  "memif rings unmapped under a burst: the peer process is gone");
	if (p->memif && l->state == LS_EST && since(now, l->last_rx) > LINK_CHECK_NS) {
		struct rte_eth_link lk;
		if (rte_eth_link_get_nowait(p->port_id, &lk) == 0 && !lk.link_status)
			lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED,
				  "memif link down: the peer process is gone");
	}
	if (since(now, l->last_rx) > KA_NS && since(now, l->last_ping) > KA_NS) {
		if (l->mac_known || p->p2p)
			send_ctl(p, l, PT_PING);
		l->last_ping = now;
	}
	if (since(now, l->last_rx) > (uint64_t)l->dead_ms * 1000000ull) {
		char why[160];
		struct rte_eth_link lk = { 0 };
		rte_eth_link_get_nowait(p->port_id, &lk);
		snprintf(why, sizeof(why), "peer silent for %d ms: dead (link %d pool %u lid %x rid %x, rx %llu/%llu tx %llu pkts)",
			 l->dead_ms, lk.link_status, rte_mempool_avail_count(p->pool), l->lid, l->rid, (unsigned long long)l->rx_pkts,
			 (unsigned long long)l->rx_ignored, (unsigned long long)l->tx_pkts);
		lane_fail(l, TLM_LOG_ERR, -TLM_EPEERCLOSED, why);
	}
out:
	pthread_mutex_unlock(&l->mu);
}

/* Take a closed lane off the port; port->lock held. */
static void lane_unlink(struct dport *p, struct dlane *l)
{
	for (struct dlane **pp = &p->lanes; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			queue_put(p, l);
			return;
		}
}

/* Poll a lane's own queue: receive, then send what is due. qmu held;
 * port_locked: the caller (the poll thread) holds port->lock. Packets on
 * the queue that are not the lane's (its SYN, strays from an older lane)
 * take the shared path. Returns the packets moved. */
static unsigned pump(struct dport *p, struct dlane *l, bool port_locked)
{
	struct rte_mbuf *rx[BURST], *slow[BURST];
	unsigned ns = 0;
	uint64_t now = tlm__now_ns(), before = l->tx_pkts;
	uint16_t n = burst(p, false, l->q, rx, BURST);

	if (n)
		pthread_mutex_lock(&l->mu);
	unsigned nd = 0;
	for (uint16_t j = 0; j < n; j++) {
		struct pkt k;
		if (parse_pkt(p, rx[j], false, &k) > 0 && k.type != PT_SYN && k.dst == l->lid &&
		    l->state != LS_SYN_SENT) {
			k.qid = l->q;
			if (!rx_lane(l, &k, now))
				rx[nd++] = rx[j];
		} else {
			slow[ns++] = rx[j];
		}
	}
	if (n) {
		pthread_mutex_unlock(&l->mu);
		if (nd)
			rte_pktmbuf_free_bulk(rx, nd);
	}
	lane_tx(p, l, now);
	unsigned sent = flush_q(p, l->q, l->qtx, &l->nqtx);
	atomic_store(&l->last_pump, now);
	if (ns) {
		if (!port_locked)
			lock_port(p);
		for (unsigned i = 0; i < ns; i++)
			rx_pkt(p, slow[i], false, l->q);
		if (!port_locked) {
			pthread_mutex_unlock(&p->lock);
			kick(p);   /* replies wait in the shared queue */
		}
	}
	return n + sent + (unsigned)(l->tx_pkts != before);
}

/* The lane's own thread polls its queue (run to completion). */
static unsigned own_pump(struct dlane *l)
{
	pthread_mutex_lock(&l->qmu);
	unsigned n = pump(l->port, l, false);
	pthread_mutex_unlock(&l->qmu);
	return n;
}

/* A caller's wait: how long it may spin, and whether it holds one of the
 * port's spin slots (released by wait_done, or when it goes to sleep). */
struct waiter {
	uint64_t spin_end;
	bool slot;
};

static bool slot_take(struct dport *p, struct waiter *w)
{
	unsigned n = atomic_load(&p->spinners);

	while (!w->slot && n < p->spin_max)
		if (atomic_compare_exchange_weak(&p->spinners, &n, n + 1))
			w->slot = true;
	return w->slot;
}

/* Poll the queues of lanes whose callers sleep for want of a slot; their
 * condition variables are signalled as their packets come (rx_lane). */
static void spin_sweep(struct dport *p, const struct dlane *self)
{
	if (pthread_mutex_trylock(&p->swmu))
		return;   /* another spinner is at it */
	for (uint16_t q = 1; q < p->nq; q++) {
		struct dlane *s = atomic_load(&p->qlane[q]);
		if (!s || s == self || s->q != q || !atomic_load(&s->asleep) ||
		    pthread_mutex_trylock(&s->qmu))
			continue;
		pump(p, s, false);
		pthread_mutex_unlock(&s->qmu);
	}
	pthread_mutex_unlock(&p->swmu);
}

/* Give the slot back; a sleeper takes it over (or its timeout does). */
static void slot_put(struct dport *p, struct waiter *w)
{
	if (!w->slot)
		return;
	w->slot = false;
	atomic_fetch_sub(&p->spinners, 1);
	if (!atomic_load(&p->nasleep) || pthread_mutex_trylock(&p->swmu))
		return;
	for (uint16_t q = 1; q < p->nq; q++) {
		struct dlane *s = atomic_load(&p->qlane[q]);
		if (s && atomic_load(&s->asleep)) {
			pthread_cond_broadcast(&s->cv);
			break;
		}
	}
	pthread_mutex_unlock(&p->swmu);
}

static void wait_done(struct dlane *l, struct waiter *w)
{
	slot_put(l->port, w);
}

/* Wait for the lane to change; l->mu held (released meanwhile), the
 * caller re-checks, and calls wait_done when it stops waiting. A lane on
 * its own queue polls it itself while it holds a spin slot, spinning
 * while that moves packets or until spin_end, and polls the queues of
 * lanes whose callers found no slot; those sleep SLOTLESS_NS at most, so
 * they get a slot soon after one is free. Past spin_end, like a lane on
 * the shared queue, it sleeps until the poll thread signals (it polls a
 * queue left alone for STALE_NS) or end. ETIMEDOUT once past end. */
static int lane_wait(struct dlane *l, struct waiter *w, uint64_t end)
{
	struct dport *p = l->port;
	uint64_t now = tlm__now_ns();

	if (now >= end)
		return ETIMEDOUT;
	if (!w->spin_end)
		w->spin_end = now + SPIN_NS;
	if (!l->q || now >= w->spin_end) {
		/* asleep from the caller's check on (no lost wakeup) */
		slot_put(p, w);
		if (!l->q)
			kick(p);
		return cv_wait_until(&l->cv, &l->mu, end);
	}
	if (!slot_take(p, w)) {
		atomic_store(&p->qlane[l->q], l);
		atomic_fetch_add(&l->asleep, 1);
		atomic_fetch_add(&p->nasleep, 1);
		int r = cv_wait_until(&l->cv, &l->mu, now + SLOTLESS_NS < end ? now + SLOTLESS_NS : end);
		atomic_fetch_sub(&p->nasleep, 1);
		atomic_fetch_sub(&l->asleep, 1);
		if (r != ETIMEDOUT) {
			w->spin_end = tlm__now_ns() + SPIN_NS;   /* woken: things move */
			return 0;
		}
		if (tlm__now_ns() >= end)
			return ETIMEDOUT;
		/* nobody woke us: look at our queue once. Busy, we stay in
		 * the spin window (without, a lane short of a slot for
		 * SPIN_NS fell into the long sleep, which only the poll
		 * thread ends, at a millisecond a step: seen as 16 lanes on
		 * 16 queues taking 10 s instead of 0.3) */
		pthread_mutex_unlock(&l->mu);
		unsigned work = own_pump(l);
		pthread_mutex_lock(&l->mu);
		if (work)
			w->spin_end = tlm__now_ns() + SPIN_NS;
		return 0;
	}
	pthread_mutex_unlock(&l->mu);
	unsigned work = own_pump(l);
	if (atomic_load(&p->nasleep))
		spin_sweep(p, l);
	if (!work)
		rte_pause();
	pthread_mutex_lock(&l->mu);
	if (work)
		w->spin_end = now + SPIN_NS;
	return 0;
}

static void *poll_main(void *arg)
{
	struct dport *p = arg;
	struct rte_mbuf *rx[BURST];
	unsigned idle = 0;

	rte_thread_register();   /* an lcore id gives the mempool a cache */
	while (!atomic_load(&p->stop)) {
		unsigned work = 0;
		uint64_t now;

		pthread_mutex_lock(&p->lock);
		for (int i = 0; i < 4; i++) {
			uint16_t n = burst(p, false, 0, rx, BURST);
			for (uint16_t j = 0; j < n; j++)
				rx_pkt(p, rx[j], false, 0);
			work += n;
			if (n < BURST)
				break;
		}
		/* queues reserved by a lane still waiting for its SYNACK: the
		 * grant may come on them (memif) */
		for (uint16_t q = 1; q < p->nq; q++) {
			if (!p->qowner[q] || p->qowner[q]->q)
				continue;
			uint16_t n = burst(p, false, q, rx, BURST);
			for (uint16_t j = 0; j < n; j++)
				rx_pkt(p, rx[j], false, q);
			work += n;
		}
		now = tlm__now_ns();
		for (struct dlane *l = p->lanes, *nx; l; l = nx) {
			nx = l->next;
			if (l->q) {
				/* its callers poll it; we keep its timers going
				 * while they are away, and close it */
				if ((l->closing || since(now, atomic_load(&l->last_pump)) > STALE_NS) &&
				    !pthread_mutex_trylock(&l->qmu)) {
					work += pump(p, l, true);
					pthread_mutex_unlock(&l->qmu);
				}
			} else {
				uint64_t before = l->tx_pkts;
				lane_tx(p, l, now);
				work += l->tx_pkts != before;
			}
			if (l->gone)
				lane_unlink(p, l);   /* close() frees it */
			if (p->ntx >= BURST)
				work += flush_tx(p);
		}
		/* only what left counts as work: a full ring to a stalled
		 * peer must not keep us spinning */
		work += p->nloop + flush_tx(p);
		for (unsigned i = 0; i < p->nloop; i++)
			rx_pkt(p, p->loopq[i], true, 0);
		p->nloop = 0;
		pthread_mutex_unlock(&p->lock);
		while (atomic_load(&p->want_lock) > 0)
			sched_yield();

		if (work) {
			idle = 0;
			continue;
		}
		/* idle: spin briefly, then sleep in growing steps up to 1 ms;
		 * writers kick us awake, timers are coarser than that */
		if (++idle < 64) {
			rte_pause();
			continue;
		}
		uint64_t nap = idle < 200 ? 20000 : idle < 400 ? 200000 : 1000000;
		pthread_mutex_lock(&p->kmu);
		atomic_store(&p->sleeping, true);
		if (!atomic_load(&p->kicked))
			cv_wait_until(&p->kcv, &p->kmu, tlm__now_ns() + nap);
		atomic_store(&p->sleeping, false);
		pthread_mutex_unlock(&p->kmu);
		atomic_store(&p->kicked, false);
	}
	rte_thread_unregister();
	return NULL;
}

/* ---- ports ---- */

static void port_destroy(struct dport *p)
{
	if (p->thr) {
		atomic_store(&p->stop, true);
		kick(p);
		pthread_join(p->thr, NULL);
	}
	if (p->ntx)
		rte_pktmbuf_free_bulk(p->txq, p->ntx);
	if (p->port_id != UINT16_MAX) {
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
 * and a ring-based pool stalls every other thread while one is preempted
 * between moving the ring's head and its tail (seen: 16 lanes on 2 cores
 * taking 10 s instead of 0.35, every sender spinning in a dequeue). So the
 * lock-free stack, unless the EAL was told which ops to use
 * (--mbuf-pool-ops-name) or cannot do it. */
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

/* Find or make the port; under g_lock. Takes a reference. */
static int port_get(const struct cfg *c, const char *name, const char *devargs,
		    bool p2p, struct dport **out)
{
	struct dport *p;
	int r;

	for (p = g_ports; p; p = p->next)
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

	if (rte_eth_dev_get_port_by_name(name, &p->port_id) != 0) {
		p->port_id = UINT16_MAX;
		if (!devargs) {
			tlm__err("dpdk: no port named '%s'", name);
			r = -ENODEV;
			goto fail;
		}
		const char *a = strchr(devargs, ',');
		tlm__dpdk_clear_error();
		r = rte_eal_hotplug_add("vdev", name, a ? a + 1 : "");
		if (r) {
			/* the PMD's own words: its first error line while it probed */
			tlm__err("dpdk: cannot create %s: %s", devargs,
				 *tlm__dpdk_first_error() ? tlm__dpdk_first_error() : "the bus says no more");
			/* -1 is the bus's "could not" (not EPERM) */
			r = r == -1 ? -ENODEV : r < 0 ? r : -r;
			goto fail;
		}
		p->made_vdev = true;
		if (rte_eth_dev_get_port_by_name(name, &p->port_id) != 0) {
			p->port_id = UINT16_MAX;
			r = -ENODEV;
			goto fail;
		}
	}
	uint32_t frame = c->mtu + RTE_ETHER_HDR_LEN;
	uint16_t room = (uint16_t)RTE_MAX(frame + RTE_PKTMBUF_HEADROOM,
					  (uint32_t)RTE_MBUF_DEFAULT_BUF_SIZE);
	struct rte_eth_dev_info info;
	r = rte_eth_dev_info_get(p->port_id, &info);
	if (r)
		goto fail;
	/* memif reports a 1518-byte limit but carries larger frames in
	 * chained ring buffers (bsize): let mtu= go up to 9000 there */
	p->memif = !strncmp(info.driver_name, "net_memif", 9);
	p->spin_max = c->spinners ? c->spinners : spin_budget(p->memif);
	if (p->memif)
		pthread_once(&g_guard_once, guard_install);
	p->dma = strcmp(rte_bus_name(rte_dev_bus(info.device)), "vdev") != 0;
	p->iova_va = rte_eal_iova_mode() == RTE_IOVA_VA;
	if (info.max_rx_pktlen && c->mtu + RTE_ETHER_HDR_LEN > info.max_rx_pktlen && !p->memif) {
		tlm__err("dpdk: %s: mtu %u above the port's %u", name, c->mtu, info.max_rx_pktlen);
		r = -EINVAL;
		goto fail;
	}
	unsigned nq = RTE_MIN(info.max_rx_queues, info.max_tx_queues);
	if (nq > c->queues)
		nq = c->queues;
	p->nq = (uint16_t)(nq ? nq : 1);
	/* rx: NICs (not memif) fill every rx ring up front; tx: data kept
	 * until acked */
	char pname[RTE_MEMPOOL_NAMESIZE];
	snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
	p->pool = pool_new(pname, POOL_MBUFS + (p->memif ? 0 : (p->nq - 1u) * NB_DESC), room);
	snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
	p->txpool = pool_new(pname, TXPOOL_BYTES / (room + 256u) | 1023, room);
	if (!p->pool || !p->txpool) {
		tlm__err("dpdk: mbuf pool: %s", rte_strerror(rte_errno));
		r = -ENOMEM;
		goto fail;
	}
	/* zero copy: a packet is a chain (headers, then segments that point
	 * into LIVE pages), which the port must take whole */
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) {
		p->txoff |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
		p->zc_segs = RTE_MIN((unsigned)info.tx_desc_lim.nb_seg_max, (unsigned)ZC_SEGS);
		snprintf(pname, sizeof(pname), "tlm%u", g_pool_seq++);
		p->zcpool = pool_new(pname, ZC_MBUFS, 0);
		if (!p->zcpool)
			tlm__dbg("dpdk: %s: no zero-copy pool (%s): LIVE pages are copied", name,
				 rte_strerror(rte_errno));
		tlm__extbuf_shinfo_init(&p->zc_shinfo);
	}
	r = port_start(p);
	/* lanes get queues of their own where the sender picks the queue
	 * (memif) or rte_flow can steer them there; elsewhere one queue,
	 * demultiplexed in software */
	if (!r && p->nq > 1 && !p->memif) {
		struct rte_flow *f = flow_steer(p, 9, 9, 1);
		if (f) {
			rte_flow_destroy(p->port_id, f, NULL);
			p->flow = true;
		} else {
			rte_eth_dev_stop(p->port_id);
			p->nq = 1;
			r = port_start(p);
		}
	}
	if (r) {
		tlm__err("dpdk: %s: start failed: %d", name, r);
		goto fail;
	}
	tlm__dbg("dpdk: %s: %u queue pair(s)%s", name, p->nq,
		 p->memif ? " (memif)" : p->flow ? " (rte_flow)" : "");
	rte_eth_macaddr_get(p->port_id, &p->mac);
	p->mss = c->mtu - (uint32_t)(sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr)) - HDR_LEN;
	p->ip = c->ip;
	r = pthread_create(&p->thr, NULL, poll_main, p);
	if (r) {
		p->thr = 0;
		r = -r;
		goto fail;
	}
	p->refs = 1;
	p->next = g_ports;
	g_ports = p;
	*out = p;
	return 0;
fail:
	port_destroy(p);
	return r < 0 ? r : -EIO;
}

/* Drop a reference; under g_lock. A port stays up (its poll thread
 * sleeping) after the last one: like the EAL, ports live as long as the
 * process, because a memif vdev removed and re-added under the same socket
 * in one process does not come back reliably. */
static void port_put(struct dport *p)
{
	p->refs--;
}

/* Wait for the link; a memif client whose server went away (and maybe
 * came back) only reconnects on a restart, so restart it, rarely: the
 * handshake takes long on a busy machine, and a restart in the middle of
 * it can trip the server's EAL interrupt thread (memif closes the socket
 * before the interrupt thread forgets it). Under port->lock, which the
 * poll thread bursts under too. */
static int wait_link(struct dport *p, int timeout_ms)
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
			lock_port(p);
			rte_eth_dev_stop(p->port_id);
			int r = rte_eth_dev_start(p->port_id);
			pthread_mutex_unlock(&p->lock);
			tlm__warn("dpdk: %s: link still down, port restarted: %d", p->name, r);
			kick_at = now + 3000;
		}
		usleep(2000);
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

/* ---- ops: listen / accept / connect / close ---- */

static int d_listen(const char *addr, const char *port, const char *args,
		    struct tlm_xlistener **out)
{
	struct dlistener *x;
	struct dport *p = NULL;
	uint16_t udp;
	int r;

	(void)addr;   /* the port's address is ip= (or none on memif/ring) */
	if (forked())
		return -EOPNOTSUPP;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	r = parse_args(args, &x->cfg);
	if (r)
		goto fail;
	r = parse_port(port, &udp);
	if (r)
		goto fail;
	pthread_mutex_lock(&g_lock);
	r = eal_init(&x->cfg);
	if (r)
		goto unlock;
	if (x->cfg.dev[0]) {
		bool p2p = !x->cfg.ip;
		r = port_get(&x->cfg, x->cfg.dev, x->cfg.vdev[0] ? x->cfg.vdev : NULL, p2p, &p);
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
			r = port_get(&x->cfg, name, dargs, true, &p);
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
	lock_port(p);
	if (find_listener(p, udp)) {
		pthread_mutex_unlock(&p->lock);
		port_put(p);
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
	pthread_mutex_unlock(&g_lock);
	*out = &x->base;
	return 0;
unlock:
	pthread_mutex_unlock(&g_lock);
fail:
	free(x);
	return r;
}

static int d_listener_port(const struct tlm_xlistener *xl)
{
	return ((const struct dlistener *)xl)->udp_port;
}

static int d_accept(struct tlm_xlistener *xl, int timeout_ms, struct tlm_lane **out)
{
	struct dlistener *x = (struct dlistener *)xl;
	struct dport *p = x->port;
	uint64_t end = deadline_ns(timeout_ms);
	struct dlane *l;

	if (forked())
		return -EOPNOTSUPP;
	lock_port(p);
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
	pthread_mutex_lock(&g_lock);
	p->refs++;    /* the lane holds the port */
	pthread_mutex_unlock(&g_lock);
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
	kick(p);
	pthread_mutex_lock(&l->mu);
	while (!l->gone)
		cv_wait_until(&l->cv, &l->mu, tlm__now_ns() + 10000000ull);
	pthread_mutex_unlock(&l->mu);
	/* gone is set by whoever polled it last: make sure no poll of it is
	 * still running (no spinner holds it: see spin_sweep), and that it is
	 * off the port */
	pthread_mutex_lock(&p->swmu);
	for (unsigned q = 0; q < MAX_QUEUES; q++)
		if (atomic_load(&p->qlane[q]) == l)
			atomic_store(&p->qlane[q], NULL);
	pthread_mutex_unlock(&p->swmu);
	pthread_mutex_lock(&l->qmu);
	lock_port(p);
	lane_unlink(p, l);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&l->qmu);
	tlm__dbg("dpdk: lane %u (%s) closed: %llu pkts out, %llu in, %llu segments re-sent",
		 l->base.index, l->base.peer, (unsigned long long)l->tx_pkts,
		 (unsigned long long)l->rx_pkts, (unsigned long long)l->retrans);
	lane_free(l);
}

static void d_listener_close(struct tlm_xlistener *xl)
{
	struct dlistener *x = (struct dlistener *)xl;
	struct dport *p = x->port;
	struct dlane *q;

	if (g_forked) {
		free(x);   /* the rest belongs to the parent's threads */
		return;
	}
	lock_port(p);
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
	pthread_mutex_lock(&g_lock);
	port_put(p);
	pthread_mutex_unlock(&g_lock);
	pthread_cond_destroy(&x->cv);
	free(x);
}

static int d_connect(const char *addr, const char *port, const char *args,
		     unsigned index, int timeout_ms, struct tlm_lane **out)
{
	struct cfg c;
	struct dport *p = NULL;
	struct dlane *l;
	uint16_t udp;
	uint32_t pip = 0xc6120001;   /* default peer: 198.18.0.1 */
	uint64_t end;
	int r;

	if (forked())
		return -EOPNOTSUPP;
	if (timeout_ms <= 0)
		timeout_ms = TLM_DEFAULT_TIMEOUT_MS;
	end = deadline_ns(timeout_ms);
	r = parse_args(args, &c);
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
	pthread_mutex_lock(&g_lock);
	r = eal_init(&c);
	if (r) {
		pthread_mutex_unlock(&g_lock);
		return r;
	}
	bool local = false;
	if (c.dev[0]) {
		r = port_get(&c, c.dev, c.vdev[0] ? c.vdev : NULL, !c.ip, &p);
		/* listening here too on the same port and address: loop */
		if (!r) {
			lock_port(p);
			local = find_listener(p, udp) && (p->p2p || pip == p->ip);
			pthread_mutex_unlock(&p->lock);
		}
	} else {
		char name[64], dargs[256];
		/* the listener may live in this very process: a memif socket
		 * cannot be both ends, so loop through the server port */
		memif_names(udp, true, name, sizeof(name), dargs, sizeof(dargs), c.mtu);
		for (p = g_ports; p; p = p->next)
			if (!strcmp(p->name, name))
				break;
		if (p) {
			p->refs++;
			local = true;
		} else {
			memif_names(udp, false, name, sizeof(name), dargs, sizeof(dargs), c.mtu);
			r = port_get(&c, name, dargs, true, &p);
			if (!r && !p->ip)
				p->ip = 0xc6120002;
		}
	}
	pthread_mutex_unlock(&g_lock);
	if (r) {
		tlm__err("dpdk: connect: no port: %d", r);
		return r;
	}
	if (!local) {
		r = wait_link(p, tlm__left_ms(end / 1000000ull));
		if (r) {
			tlm__err("dpdk: connect: %s: link did not come up", p->name);
			goto put;
		}
	}
	lock_port(p);
	l = lane_new(p, &c);
	if (!l) {
		pthread_mutex_unlock(&p->lock);
		r = -ENOMEM;
		goto put;
	}
	l->state = LS_SYN_SENT;
	l->peer_ip = pip;
	l->rport = udp;
	l->lport = p->next_eph++;
	if (p->next_eph < 49152)
		p->next_eph = 49152;
	l->local = local;
	if (c.peer_mac_set) {
		l->peer_mac = c.peer_mac;
		l->mac_known = true;
	}
	l->base.index = index;
	snprintf(l->base.peer, sizeof(l->base.peer), "%s:%u", addr ? addr : "198.18.0.1", udp);
	queue_take(p, l, -1);   /* memif: reserved, asked for in the SYN */
	l->next = p->lanes;
	p->lanes = l;
	pthread_mutex_unlock(&p->lock);
	kick(p);

	struct waiter w = { 0 };
	pthread_mutex_lock(&l->mu);
	while (l->state == LS_SYN_SENT && lane_wait(l, &w, end) != ETIMEDOUT)
		;
	wait_done(l, &w);
	r = l->state == LS_EST ? 0 : l->state == LS_DEAD ? l->err : -ETIMEDOUT;
	if (!r)
		l->last_rx = tlm__now_ns();
	pthread_mutex_unlock(&l->mu);
	if (!r && !l->qown) {
		/* the peer's MAC is known now: rte_flow can steer us */
		lock_port(p);
		queue_take(p, l, -1);
		pthread_mutex_unlock(&p->lock);
	}
	if (r) {
		tlm__dbg("dpdk: connect to %s: %d", l->base.peer, r);
		lane_release(l);
		goto put;
	}
	*out = &l->base;
	return 0;
put:
	pthread_mutex_lock(&g_lock);
	port_put(p);
	pthread_mutex_unlock(&g_lock);
	return r;
}

static void d_close(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;
	struct dport *p = l->port;
	uint64_t end = deadline_ns(LINGER_MS);

	if (g_forked)
		return;   /* the parent's lane: not ours to touch */
	/* linger: let what was written reach the peer, like a socket close */
	struct waiter w = { 0 };
	pthread_mutex_lock(&l->mu);
	while (l->state == LS_EST && l->snd_una < l->snd_end &&
	       lane_wait(l, &w, end) != ETIMEDOUT)
		;
	wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	lane_release(l);
	pthread_mutex_lock(&g_lock);
	port_put(p);
	pthread_mutex_unlock(&g_lock);
}

/* ---- datapath: send side ---- */

/* The writer builds packets straight from the caller's bytes (one copy;
 * the PMD's own copy or DMA is the other) and queues them for the pump.
 * All of this runs under wmu. */

/* Sealed packets go to the send queue, waiting for room (everything
 * unacked is kept: back-pressure), then out. */
static int wr_commit(struct dlane *l)
{
	struct waiter w = { 0 };
	unsigned i = 0;
	int r = 0;

	if (!l->npend)
		return 0;
	pthread_mutex_lock(&l->mu);
	while (i < l->npend) {
		uint32_t len = rte_pktmbuf_pkt_len(l->pend[i]) - L2L4_LEN - HDR_LEN;
		if (l->state != LS_EST || l->peer_closed) {
			r = l->state != LS_EST && l->err ? l->err : -TLM_EPEERCLOSED;
			break;
		}
		if (l->snd_end + len - l->snd_una > l->window || l->sq_tail - l->sq_head == SQ_SLOTS) {
			lane_wait(l, &w, UINT64_MAX / 2);
			continue;
		}
		struct txp *t = &l->sq[l->sq_tail % SQ_SLOTS];
		t->za = l->pendz[i].a;
		t->zl = l->pendz[i].l;
		t->m = l->pend[i++];
		t->seq = l->snd_end;
		t->len = len;
		l->snd_end += len;
		l->sq_tail++;
	}
	wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	if (i < l->npend)
		rte_pktmbuf_free_bulk(l->pend + i, l->npend - i);
	l->npend = 0;
	if (l->q)
		own_pump(l);
	else
		kick(l->port);
	return r;
}

/* An open packet with room, from the tx pool (waiting while acks are
 * due to give mbufs back). */
static int wr_open(struct dlane *l)
{
	struct waiter w = { 0 };
	int r = 0;

	while (!l->om && !r) {
		if (!l->nstash && !rte_pktmbuf_alloc_bulk(l->port->txpool, l->stash, STASH))
			l->nstash = STASH;
		if (l->nstash) {
			/* buffers come back cold (acked a window ago): fetch
			 * the next one while this one fills */
			l->om = l->stash[--l->nstash];
			l->ot = NULL;
			l->olen = 0;
			l->ohlen = 0;
			l->ozl = 0;
			if (l->nstash) {
				struct rte_mbuf *nx = l->stash[l->nstash - 1];
				uint8_t *d = (uint8_t *)nx->buf_addr + nx->data_off;
				rte_prefetch0(nx);
				rte_prefetch0(d);
				rte_prefetch0(d + 64);
			}
			break;
		}
		pthread_mutex_lock(&l->mu);
		if (l->state != LS_EST)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		else
			lane_wait(l, &w, tlm__now_ns() + 1000000ull);
		pthread_mutex_unlock(&l->mu);
	}
	wait_done(l, &w);
	return r;
}

/* Where copied bytes go next: om after the headers, or the segment of
 * their own that follows a zero-copy one (wr_direct). */
static uint8_t *wr_ptr(const struct dlane *l)
{
	if (!l->ot)
		return rte_pktmbuf_mtod(l->om, uint8_t *) + L2L4_LEN + HDR_LEN + l->ohlen;
	return rte_pktmbuf_mtod(l->ot, uint8_t *) + l->ot->data_len;
}

static void wr_took(struct dlane *l, uint32_t k)
{
	if (l->ot)
		l->ot->data_len = (uint16_t)(l->ot->data_len + k);
	else
		l->ohlen += k;
	l->olen += k;
}

/* The open packet is done: its headers, then it waits in pend. */
static void wr_seal(struct dlane *l)
{
	struct rte_mbuf *m = l->om;

	if (!m)
		return;
	l->om = NULL;
	l->ot = NULL;
	if (!l->olen) {
		rte_pktmbuf_free(m);
		return;
	}
	l->pendz[l->npend].a = l->oza;
	l->pendz[l->npend].l = l->ozl;
	l->ozl = 0;
	/* (not rte_pktmbuf_append: that grows the last segment) */
	uint8_t *b = rte_pktmbuf_mtod(m, uint8_t *);
	m->data_len = (uint16_t)(L2L4_LEN + HDR_LEN + l->ohlen);
	m->pkt_len = L2L4_LEN + HDR_LEN + l->olen;
	put_l2l4(l->port, b, l->mac_known ? &l->peer_mac : NULL, l->peer_ip, l->lport,
		 l->rport, l->olen);
	l->pend[l->npend++] = m;
}

static void wr_chain(struct dlane *l, struct rte_mbuf *m)
{
	(l->ot ? l->ot : l->om)->next = m;
	l->ot = m;
	l->om->nb_segs++;
}

static int wr_bytes(struct dlane *l, const uint8_t *s, size_t n, uint32_t *crc);

static void zc_attach(struct dport *p, struct rte_mbuf *m, const uint8_t *a, uint32_t n)
{
	tlm__extbuf_attach(m, a, (uint16_t)n, &p->zc_shinfo, p->iova_va);
}

/* More than one range in the packet after all: the light range becomes
 * a segment of its own now (copied, if no segment is to be had). */
static int wr_unlight(struct dlane *l)
{
	struct dport *p = l->port;
	const uint8_t *a = l->oza;
	uint32_t n = l->ozl;
	struct rte_mbuf *m = rte_pktmbuf_alloc(p->zcpool);

	l->ozl = 0;
	l->olen -= n;
	if (!m)
		return wr_bytes(l, a, n, NULL);
	zc_attach(p, m, a, n);
	wr_chain(l, m);
	l->olen += n;
	return 0;
}

/* An open packet whose tail takes copied bytes: after a zero-copy
 * segment, a segment of their own (or the next packet). */
static int wr_direct(struct dlane *l)
{
	int r = wr_open(l);

	if (!r && l->ozl)
		r = wr_unlight(l);
	if (r || !l->ot || RTE_MBUF_DIRECT(l->ot))
		return r;
	struct rte_mbuf *m = l->om->nb_segs < l->port->zc_segs ?
			     rte_pktmbuf_alloc(l->port->txpool) : NULL;
	if (!m) {
		wr_seal(l);
		return wr_open(l);
	}
	wr_chain(l, m);
	return 0;
}

/* Append n bytes to the stream. crc: sum them as copied, from the copy
 * (LIVE data may change under us; what is summed is what is sent). */
static int wr_bytes(struct dlane *l, const uint8_t *s, size_t n, uint32_t *crc)
{
	uint32_t mss = l->port->mss;

	while (n) {
		int r = wr_direct(l);
		if (r)
			return r;
		uint8_t *d = wr_ptr(l);
		size_t k = n < mss - l->olen ? n : mss - l->olen;
		if (crc)
			*crc = tlm__crc32c_copy(*crc, d, s, k);
		else
			memcpy(d, s, k);
		wr_took(l, (uint32_t)k);
		s += k;
		n -= k;
		if (l->olen == mss)
			wr_seal(l);
	}
	return 0;
}

/* Append n bytes of a LIVE page by reference: segments that point into
 * the page, which the PMD reads when it sends the packet (and again if it
 * re-sends it). With no segment to spare, the bytes are copied. */
static int wr_ext(struct dlane *l, const uint8_t *s, size_t n)
{
	struct dport *p = l->port;
	uint32_t mss = p->mss;

	while (n) {
		int r = wr_open(l);
		if (r)
			return r;
		size_t k = n < mss - l->olen ? n : mss - l->olen;
		if (k < n && k > ZC_ALIGN)
			k &= ~(size_t)(ZC_ALIGN - 1);
		if (!l->ot && !l->ozl) {
			/* the packet's only range: noted, its segment made
			 * when the packet goes out (zc_chain) */
			l->oza = s;
			l->ozl = (uint32_t)k;
			l->olen += (uint32_t)k;
			if (l->olen == mss)
				wr_seal(l);
			s += k;
			n -= k;
			continue;
		}
		if (l->ozl) {
			r = wr_unlight(l);
			if (r)
				return r;
		}
		struct rte_mbuf *m = l->om->nb_segs < p->zc_segs ? rte_pktmbuf_alloc(p->zcpool) :
				     NULL;
		if (!m) {
			r = wr_bytes(l, s, k, NULL);
			if (r)
				return r;
		} else {
			zc_attach(p, m, s, (uint32_t)k);
			wr_chain(l, m);
			l->olen += (uint32_t)k;
			if (l->olen == mss)
				wr_seal(l);
		}
		s += k;
		n -= k;
	}
	return 0;
}

/* End of a call: the tail goes now, short or not. */
static int wr_push(struct dlane *l)
{
	wr_seal(l);
	return wr_commit(l);
}

static int d_send_pages(struct tlm_lane *tl, const struct tlm_page_rec *recs, unsigned n)
{
	struct dlane *l = (struct dlane *)tl;
	uint8_t h[TLM_FRAME_HDR + TLM_PAGE_HDR];
	int r = 0;

	lcore_join();

	if (tl->mode != TLM_MODE_PAGES)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (recs[i].len > tl->page_size || (recs[i].len && !recs[i].data) ||
		    ((recs[i].flags & TLM_PF_LIVE) &&
		     (recs[i].region >= 32 || !(l->src_regions & (1u << recs[i].region)))))
			return -EINVAL;
	pthread_mutex_lock(&l->wmu);
	if (l->wr_shut) {
		r = -EPIPE;
		goto out;
	}
	for (unsigned i = 0; i < n && !r; i++) {
		struct tlm_page_rec hr = recs[i];
		bool live = hr.flags & TLM_PF_LIVE;
		bool zc = live && hr.len >= ZC_MIN && (l->zc_regions & (1u << hr.region)) &&
			  !l->local;
		uint32_t crc = 0;

		hr.flags &= (uint16_t)~TLM_PF_LIVE;
		if (zc) {
			hr.flags |= TLM__PF_NOSUM;
			hr.crc = 0;
			l->live_zc++;
		} else if (live) {
			l->live_copied++;
		}
		tlm__frame_hdr_encode(h, TLM_PAGE_HDR + hr.len, TLM_FT_PAGE);
		tlm__page_hdr_encode(h + TLM_FRAME_HDR, &hr);
		/* a LIVE record's header stays in one packet, and its packets
		 * stay with us until the crc is written in. A record that
		 * fits a packet of its own is not split either (jumbo frames:
		 * two whole pages each), so the receiver reads it in place
		 * instead of gathering its pieces. */
		uint32_t room = l->om ? l->port->mss - l->olen : 0;
		if (l->om && (room < sizeof(h) ||
			      (room < sizeof(h) + hr.len && sizeof(h) + hr.len <= l->port->mss)))
			wr_seal(l);
		r = wr_direct(l);
		if (r)
			break;
		uint8_t *crcp = wr_ptr(l) + TLM_FRAME_HDR + 20;
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r && zc)
			r = wr_ext(l, recs[i].data, hr.len);
		else if (!r)
			r = wr_bytes(l, recs[i].data, hr.len, live ? &crc : NULL);
		if (r)
			break;
		if (live && !zc)
			tlm__put32(crcp, crc);
		tl->tx_bytes += hr.len;
		if (l->npend >= BURST)
			r = wr_commit(l);
	}
	if (!r)
		r = wr_push(l);
	if (r)
		goto out;   /* the lane is failing: wait_sent reports its error */
	l->wr_records += n;
	pthread_mutex_lock(&l->mu);
	l->sent_at[l->nsent_at % RTE_DIM(l->sent_at)].records = l->wr_records;
	l->sent_at[l->nsent_at % RTE_DIM(l->sent_at)].seq = l->snd_end;
	l->nsent_at++;
	pthread_mutex_unlock(&l->mu);
out:
	pthread_mutex_unlock(&l->wmu);
	return r ? r : (int)n;
}

static ssize_t d_write(struct tlm_lane *tl, const void *buf, size_t n)
{
	struct dlane *l = (struct dlane *)tl;
	const uint8_t *s = buf;
	size_t done = 0;
	int r = 0;

	lcore_join();

	pthread_mutex_lock(&l->wmu);
	if (l->wr_shut)
		r = -EPIPE;
	while (!r && done < n) {
		uint8_t h[TLM_FRAME_HDR];
		size_t k = n - done > WR_CHUNK ? WR_CHUNK : n - done;
		tlm__frame_hdr_encode(h, (uint32_t)k, TLM_FT_DATA);
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r)
			r = wr_bytes(l, s + done, k, NULL);
		if (!r)
			r = wr_commit(l);
		if (!r) {
			done += k;
			tl->tx_bytes += k;
		}
	}
	if (!r)
		r = wr_push(l);
	pthread_mutex_unlock(&l->wmu);
	return r ? r : (ssize_t)n;
}

static int d_shutdown(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;
	uint8_t h[TLM_FRAME_HDR];
	int r = 0;

	pthread_mutex_lock(&l->wmu);
	if (!l->wr_shut) {
		tlm__frame_hdr_encode(h, 0, TLM_FT_FIN);
		r = wr_bytes(l, h, sizeof(h), NULL);
		if (!r)
			r = wr_push(l);
		l->wr_shut = true;
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

static int d_flush(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;

	pthread_mutex_lock(&l->mu);
	/* a peer that closed after taking everything we wrote is no error:
	 * nothing is left to push */
	int r = l->state == LS_EST || (l->snd_una == l->snd_end && !l->bad) ? 0 : l->err;
	pthread_mutex_unlock(&l->mu);
	if (l->q)
		own_pump(l);
	else
		kick(l->port);
	return r;
}

static int d_inject_raw(struct tlm_lane *tl, const void *buf, size_t n)
{
	struct dlane *l = (struct dlane *)tl;

	const uint8_t *b = buf;
	int r = 0;

	/* In pieces, as d_write does: pend[] holds WR_CHUNK's packets. */
	pthread_mutex_lock(&l->wmu);
	for (size_t done = 0; !r && done < n; done += WR_CHUNK) {
		r = wr_bytes(l, b + done, n - done < WR_CHUNK ? n - done : WR_CHUNK, NULL);
		if (!r)
			r = wr_push(l);
	}
	pthread_mutex_unlock(&l->wmu);
	return r;
}

/* ---- datapath: receive side ---- */

/* Wait (l->mu held) until at least want bytes are readable. 0, or
 * -ETIMEDOUT, or the lane's error once buffered bytes are not enough. */
static int wait_bytes(struct dlane *l, size_t want, uint64_t end)
{
	struct waiter w = { 0 };
	int r = 0;

	if (l->bad)
		return l->bad;
	while (l->rcv_nxt - l->rcv_rd < want) {
		if (l->state == LS_DEAD) {
			r = l->err;
			break;
		}
		if (l->peer_closed) {
			peer_closed_fail(l);
			r = l->err;
			break;
		}
		l->rd_want = want;
		int t = lane_wait(l, &w, end);
		l->rd_want = 0;
		if (t == ETIMEDOUT && l->rcv_nxt - l->rcv_rd < want) {
			r = -ETIMEDOUT;
			break;
		}
	}
	wait_done(l, &w);
	return r;
}

/* Copy k bytes; those from byte `from` of the whole on are summed into
 * *sum as they are copied (at is where this piece starts). */
static void peek_piece(uint8_t *d, const uint8_t *s, size_t k, size_t at, size_t from,
		       uint32_t *sum)
{
	size_t plain = !sum ? k : at >= from ? 0 : from - at < k ? from - at : k;

	memcpy(d, s, plain);
	if (sum && k > plain)
		*sum = tlm__crc32c_copy(*sum, d + plain, s + plain, k - plain);
}

/* The next n readable bytes: from the packets kept, then the ring. With
 * sum, the crc32c of the bytes from `from` on, in the same pass. */
static void ring_peek_sum(struct dlane *l, void *dst, size_t n, size_t from, uint32_t *sum)
{
	uint8_t *d = dst;
	size_t h = (size_t)(l->rcv_held - l->rcv_rd), skip = l->hoff, at = 0;

	if (sum)
		*sum = 0;
	for (unsigned i = 0; i < l->hn && h && n; i++) {
		unsigned e = (l->hhead + i) % HELD_MAX;
		size_t k = l->hq[e].len - skip;
		if (k > n)
			k = n;
		peek_piece(d + at, l->hq[e].p + skip, k, at, from, sum);
		at += k;
		n -= k;
		h -= k;
		skip = 0;
	}
	size_t off = (size_t)(l->rcv_held % RING_BYTES);
	size_t k = RING_BYTES - off < n ? RING_BYTES - off : n;
	peek_piece(d + at, l->rbuf + off, k, at, from, sum);
	peek_piece(d + at + k, l->rbuf, n - k, at + k, from, sum);
}

static void ring_peek(struct dlane *l, void *dst, size_t n)
{
	ring_peek_sum(l, dst, n, 0, NULL);
}

/* The next n readable bytes in place, or NULL if they are not in one
 * piece (then ring_peek them). Valid until they are consumed. */
static const uint8_t *ring_ptr(const struct dlane *l, size_t n)
{
	if (l->rcv_held > l->rcv_rd) {
		const struct rxp *e = &l->hq[l->hhead];
		return e->len - l->hoff >= n ? e->p + l->hoff : NULL;
	}
	size_t off = (size_t)(l->rcv_rd % RING_BYTES);
	return off + n <= RING_BYTES ? l->rbuf + off : NULL;
}

static void ring_consume(struct dlane *l, size_t n)
{
	size_t h = (size_t)(l->rcv_held - l->rcv_rd);

	if (h > n)
		h = n;
	while (h) {
		size_t left = l->hq[l->hhead].len - l->hoff;
		if (h < left) {
			l->hoff += (uint32_t)h;
			break;
		}
		h -= left;
		rte_pktmbuf_free(l->hq[l->hhead].m);
		l->hhead = (l->hhead + 1) % HELD_MAX;
		l->hn--;
		l->hoff = 0;
	}
	l->rcv_rd += n;
	if (l->rcv_held < l->rcv_rd)
		l->rcv_held = l->rcv_rd;
	if (l->rcv_rd == l->rcv_nxt && atomic_load(&l->efd_on)) {
		uint64_t v;
		if (read(l->efd, &v, sizeof(v)) < 0) {
			/* already drained */
		}
	}
}

/* Poison the lane: a bad frame leaves the stream unsynchronized. */
static int bad_frame(struct dlane *l, int err, const char *why)
{
	lane_fail(l, TLM_LOG_ERR, err, why);
	l->bad = err;
	l->tell_peer = true;
	return err;
}

static ssize_t d_read(struct tlm_lane *tl, void *buf, size_t n, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms);
	ssize_t r;

	if (!n)
		return 0;
	lcore_join();
	pthread_mutex_lock(&l->rmu);
	pthread_mutex_lock(&l->mu);
	while (!l->data_left) {
		uint8_t h[TLM_FRAME_HDR];
		struct tlm_frame_hdr fh;

		if (l->eof) {
			r = 0;
			goto out;
		}
		r = wait_bytes(l, TLM_FRAME_HDR, end);
		if (r)
			goto out;
		ring_peek(l, h, sizeof(h));
		r = tlm__frame_hdr_decode(h, tl->page_size, &fh);
		if (r) {
			r = bad_frame(l, r, "malformed frame header");
			goto out;
		}
		if (fh.type == TLM_FT_FIN && fh.len == 0) {
			ring_consume(l, TLM_FRAME_HDR);
			l->eof = true;
			r = 0;
			goto out;
		}
		if (fh.type != TLM_FT_DATA) {
			r = bad_frame(l, -TLM_EFRAME, "unexpected frame type in byte mode");
			goto out;
		}
		ring_consume(l, TLM_FRAME_HDR);
		l->data_left = fh.len;
	}
	r = wait_bytes(l, 1, end);
	if (r)
		goto out;
	size_t avail = (size_t)(l->rcv_nxt - l->rcv_rd);
	size_t k = n < avail ? n : avail;
	if (k > l->data_left)
		k = l->data_left;
	ring_peek(l, buf, k);
	ring_consume(l, k);
	l->data_left -= (uint32_t)k;
	tl->rx_bytes += k;
	r = (ssize_t)k;
out:;
	bool upd = r > 0 && l->rcv_rd + RING_BYTES - l->adv_edge >= RING_BYTES / 4;
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&l->rmu);
	if (upd) {
		/* a window update is due */
		if (l->q)
			own_pump(l);
		else
			kick(l->port);
	}
	return r;
}

static int d_recv_pages(struct tlm_lane *tl, const struct tlm_page_sink *sink, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms);
	size_t used = 0;        /* the record just applied, still in the ring */
	uint64_t backlog = 0;
	int delivered = 0, r = 0;

	lcore_join();

	if (tl->mode != TLM_MODE_PAGES)
		return -EINVAL;
	pthread_mutex_lock(&l->rmu);
	if (!l->scratch) {
		l->scratch = malloc(TLM_FRAME_HDR + TLM_PAGE_HDR + TLM_MAX_PAGE_SIZE);
		if (!l->scratch) {
			r = -ENOMEM;
			goto unlock_r;
		}
	}
	for (int i = 0; i < 256; i++) {
		struct tlm_frame_hdr fh;
		struct tlm_page_rec rec;
		uint8_t h[TLM_FRAME_HDR];
		const uint8_t *f = NULL;
		uint32_t sum = 0;
		bool summed = false;

		/* run to completion: keep our queue moving (acks, window), but
		 * take more packets in only while what we hold is little, so
		 * what the PMD just copied in is still in cache when we read
		 * it (taking a burst per 16 records ran a window ahead) */
		if (l->q && i && !(i & 15) && backlog < RX_BACKLOG)
			own_pump(l);
		pthread_mutex_lock(&l->mu);
		ring_consume(l, used);
		backlog = l->rcv_nxt - l->rcv_rd;
		used = 0;
		if (l->eof) {
			r = 0;
			pthread_mutex_unlock(&l->mu);
			break;
		}
		r = wait_bytes(l, TLM_FRAME_HDR, delivered ? 0 : end);
		if (!r) {
			ring_peek(l, h, TLM_FRAME_HDR);
			r = tlm__frame_hdr_decode(h, tl->page_size, &fh);
			if (r)
				r = bad_frame(l, r, "malformed frame header");
			else if (fh.type == TLM_FT_FIN && fh.len == 0) {
				ring_consume(l, TLM_FRAME_HDR);
				l->eof = true;
				pthread_mutex_unlock(&l->mu);
				break;
			} else if (fh.type != TLM_FT_PAGE || fh.len < TLM_PAGE_HDR)
				r = bad_frame(l, -TLM_EFRAME, "unexpected frame in page mode");
		}
		if (!r)
			r = wait_bytes(l, TLM_FRAME_HDR + fh.len, delivered ? 0 : end);
		if (!r) {
			/* the bytes [rcv_rd, rcv_rd + used) are ours until we
			 * consume them: the poll side only writes past rcv_nxt.
			 * Read them in place if they are in one piece. */
			used = TLM_FRAME_HDR + fh.len;
			f = ring_ptr(l, used);
			if (!f) {
				/* gathered, and the data's crc summed on the way
				 * (unless the record has none) */
				uint8_t ph[TLM_FRAME_HDR + TLM_PAGE_HDR];
				ring_peek(l, ph, sizeof(ph));
				bool nosum = tlm__get16(ph + TLM_FRAME_HDR + 12) & TLM__PF_NOSUM;
				ring_peek_sum(l, l->scratch, used,
					      nosum ? used : TLM_FRAME_HDR + TLM_PAGE_HDR, &sum);
				f = l->scratch;
				summed = true;
			}
		}
		pthread_mutex_unlock(&l->mu);
		if (r) {
			if (delivered)
				r = 0;   /* the error (sticky) comes with the next call */
			break;
		}
		/* decode, verify and apply unlocked: the lane keeps receiving
		 * while the sink copies */
		r = tlm__page_hdr_decode(f + TLM_FRAME_HDR, fh.len, tl->page_size, &rec);
		const char *why = "malformed page record";
		if (!r) {
			rec.data = f + TLM_FRAME_HDR + TLM_PAGE_HDR;
			if (!(rec.flags & TLM__PF_NOSUM)) {
				why = "page record failed its crc";
				r = summed ? tlm__page_verify_sum(&rec, sum) : tlm__page_verify(&rec);
			} else if (l->zc_rx) {
				/* sent zero-copy, over a link that guards it */
				rec.flags &= (uint16_t)~TLM__PF_NOSUM;
			} else {
				why = "page record without a crc on a link that does not guard "
				      "its bytes (the sender has zc=on: give it zc=off, or this "
				      "side zc=on)";
				r = -TLM_ECRC;
			}
		}
		if (r) {
			pthread_mutex_lock(&l->mu);
			bad_frame(l, r, why);
			pthread_mutex_unlock(&l->mu);
			used = 0;
			if (delivered)
				r = 0;
			break;
		}
		tl->rx_bytes += rec.len;
		r = sink->apply(sink->arg, &rec);
		if (r < 0)
			break;
		r = 0;
		delivered++;
	}
	pthread_mutex_lock(&l->mu);
	ring_consume(l, used);
	bool upd = l->rcv_rd + RING_BYTES - l->adv_edge >= RING_BYTES / 4;
	pthread_mutex_unlock(&l->mu);
	if (upd) {
		/* a window update is due */
		if (l->q)
			own_pump(l);
		else
			kick(l->port);
	}
unlock_r:
	pthread_mutex_unlock(&l->rmu);
	if (delivered && (r == -ETIMEDOUT || r == 0))
		return delivered;
	if (r == -ETIMEDOUT)
		return 0;
	return r ? r : delivered;
}

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
		efd_signal(l);
	pthread_mutex_unlock(&l->mu);
	return l->efd;
}

/* Regions sent zero-copy, process-wide, for ports whose device reads
 * memory itself (DMA): registered with the EAL as external memory and
 * mapped for the device once, however many lanes send from them. Ports
 * whose PMD copies by virtual address (memif, af_packet) need neither.
 * Under g_lock. */
static struct zc_map {
	void *base;
	size_t len;
	uint16_t port_id;
	unsigned refs;
} g_zc[64];

static int zc_map(const struct dport *p, void *base, size_t len)
{
	struct rte_eth_dev_info info;
	struct zc_map *e = NULL;
	int r;

	for (unsigned i = 0; i < RTE_DIM(g_zc); i++) {
		if (g_zc[i].refs && g_zc[i].base == base && g_zc[i].len == len &&
		    g_zc[i].port_id == p->port_id) {
			g_zc[i].refs++;
			return 0;
		}
		if (!g_zc[i].refs && !e)
			e = &g_zc[i];
	}
	if (!e || !p->iova_va)
		return -ENOSPC;
	r = rte_extmem_register(base, len, NULL, 0, (size_t)sysconf(_SC_PAGESIZE));
	if (r && rte_errno != EEXIST)
		return -rte_errno;
	r = rte_eth_dev_info_get(p->port_id, &info);
	if (!r)
		r = rte_dev_dma_map(info.device, base, (uint64_t)(uintptr_t)base, len);
	if (r) {
		rte_extmem_unregister(base, len);
		return r < 0 ? r : -EIO;
	}
	*e = (struct zc_map){ .base = base, .len = len, .port_id = p->port_id, .refs = 1 };
	return 0;
}

static void zc_unmap(const struct dport *p, void *base, size_t len)
{
	struct rte_eth_dev_info info;

	for (unsigned i = 0; i < RTE_DIM(g_zc); i++) {
		struct zc_map *e = &g_zc[i];
		if (!e->refs || e->base != base || e->len != len || e->port_id != p->port_id)
			continue;
		if (--e->refs)
			return;
		if (rte_eth_dev_info_get(p->port_id, &info) == 0)
			rte_dev_dma_unmap(info.device, base, (uint64_t)(uintptr_t)base, len);
		rte_extmem_unregister(base, len);
		return;
	}
}

/* Zero copy. Sending, a LIVE record of a region registered TLM_REG_SRC
 * goes by reference where the lane's link guards the bytes (zc_tx): its
 * packets point into the region until acked (wr_ext), so the region must
 * outlive them (d_unregister_regions waits). Otherwise it is copied into
 * its packets once, its crc summed from that copy, inside send_pages.
 * Receiving, we copy out of our ring: nothing to offer. */
static int d_register_region(struct tlm_lane *tl, unsigned region, void *base, size_t len,
			     unsigned how, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	struct dport *p = l->port;

	(void)timeout_ms;
	if (how != TLM_REG_SRC)
		return -EOPNOTSUPP;
	if (region >= 32 || !base || !len)
		return -EINVAL;
	pthread_mutex_lock(&l->wmu);
	if (l->src_regions & (1u << region)) {
		pthread_mutex_unlock(&l->wmu);
		return 0;
	}
	l->src_regions |= 1u << region;
	if (l->zc_tx && !l->local) {
		int r = 0;
		if (p->dma) {
			pthread_mutex_lock(&g_lock);
			r = zc_map(p, base, len);
			pthread_mutex_unlock(&g_lock);
			if (r)
				tlm__dbg("dpdk: region %u not mapped for %s (%d): its pages are copied",
					 region, p->name, r);
		}
		if (!r) {
			l->zc_regions |= 1u << region;
			l->zc_base[region] = base;
			l->zc_len[region] = len;
		}
	}
	pthread_mutex_unlock(&l->wmu);
	return 0;
}

/* Packets that point into the regions are gone: acked, or (the lane
 * failing) dropped; re-sends queued for the PMD sent or dropped; the PMD
 * has let go of them too. */
static void zc_drain(struct dlane *l)
{
	struct dport *p = l->port;
	uint64_t end = deadline_ns(l->dead_ms);
	struct waiter w = { 0 };

	pthread_mutex_lock(&l->mu);
	while (l->snd_una < l->snd_end && l->state == LS_EST &&
	       lane_wait(l, &w, end) != ETIMEDOUT) {
	}
	wait_done(l, &w);
	if (l->snd_una < l->snd_end) {
		lane_fail(l, TLM_LOG_ERR, -ETIMEDOUT,
			  "zero-copy pages still unacked when their region was unregistered");
		while (l->sq_head != l->sq_tail) {
			struct txp *t = &l->sq[l->sq_head++ % SQ_SLOTS];
			if (txp_headonly(t))
				rte_pktmbuf_free(t->m);
		}
		l->sq_next = l->sq_head;
	}
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_lock(&l->qmu);
	if (l->nqtx)
		rte_pktmbuf_free_bulk(l->qtx, l->nqtx);
	l->nqtx = 0;
	if (p->dma)
		rte_eth_tx_done_cleanup(p->port_id, l->q, 0);
	pthread_mutex_unlock(&l->qmu);
	if (!l->q) {
		/* ours may wait among the other lanes' on the shared queue */
		lock_port(p);
		for (int tries = 0; p->ntx && tries < 100; tries++)
			flush_tx(p);
		pthread_mutex_unlock(&p->lock);
	}
}

static void d_unregister_regions(struct tlm_lane *tl)
{
	struct dlane *l = (struct dlane *)tl;

	pthread_mutex_lock(&l->wmu);
	if (l->zc_regions) {
		zc_drain(l);
		pthread_mutex_lock(&g_lock);
		for (unsigned i = 0; i < 32; i++)
			if ((l->zc_regions & (1u << i)) && l->port->dma)
				zc_unmap(l->port, l->zc_base[i], l->zc_len[i]);
		pthread_mutex_unlock(&g_lock);
	}
	if (l->src_regions)
		tlm__dbg("dpdk: lane %x: LIVE records sent zero-copy %llu, copied %llu", l->lid,
			 (unsigned long long)l->live_zc, (unsigned long long)l->live_copied);
	l->src_regions = 0;
	l->zc_regions = 0;
	pthread_mutex_unlock(&l->wmu);
}

/* The first `records` records acked: the peer holds them in its ring and
 * applies them in order. (Returning at once would do too: LIVE pages are
 * copied inside send_pages, and the destination keeps the newest epoch of
 * a page whichever lane brings it.) The target is the end of the first
 * send_pages call that covered them, or a later one if that call is no
 * longer remembered. */
static int d_wait_sent(struct tlm_lane *tl, uint64_t records, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms), target = 0;
	struct waiter w = { 0 };
	int r = 0;

	pthread_mutex_lock(&l->mu);
	uint64_t n = l->nsent_at, keep = RTE_DIM(l->sent_at);
	for (uint64_t i = n > keep ? n - keep : 0; i < n && records; i++)
		if (l->sent_at[i % keep].records >= records) {
			target = l->sent_at[i % keep].seq;
			break;
		}
	if (records && !target) {
		/* never all handed over: a send failed, or is still going */
		if (l->state != LS_EST)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		target = l->snd_end;
	}
	while (l->snd_una < target && !r) {
		if (l->state != LS_EST || l->peer_closed)
			r = l->err ? l->err : -TLM_EPEERCLOSED;
		else if (lane_wait(l, &w, end) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	wait_done(l, &w);
	pthread_mutex_unlock(&l->mu);
	return r;
}

static const struct tlm_lane_dp dpdk_dp = {
	.send_pages = d_send_pages,
	.recv_pages = d_recv_pages,
	.write = d_write,
	.read = d_read,
	.shutdown = d_shutdown,
	.flush = d_flush,
};

const struct tlm_lane_ops tlm__dpdk_ops = {
	.name = "dpdk",
	.listen = d_listen,
	.listener_port = d_listener_port,
	.accept = d_accept,
	.listener_close = d_listener_close,
	.connect = d_connect,
	.close = d_close,
	.set_mode = d_set_mode,
	.pollfd = d_pollfd,
	.inject_raw = d_inject_raw,
	.register_region = d_register_region,
	.unregister_regions = d_unregister_regions,
	.wait_sent = d_wait_sent,
	.dp = &dpdk_dp,
};
