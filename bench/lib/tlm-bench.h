/* SPDX-License-Identifier: MIT */
/*
 * The benchmark library (libtlm-bench, a static library under bench/lib):
 * what `tlm bench ...` and bench/dpdk/dpdk_bench run, kept out of libtlm
 * (whose public headers carry only what a program migrating memory needs)
 * and out of cli/ (which parses options and prints results).
 *
 *   pattern.c     the page content of a transport run and its crc shortcut
 *   xfer-send.c   the sending end: lanes threads, zero-copy pools
 *   xfer-recv.c   the receiving end: checks, the zero-copy window, the report
 *   report.c      the report's text form on the control lane; derived figures
 *   rounds.c      both ends on this machine (loopback), --rounds, raw phase
 *   raw-dpdk.c    the raw PMD blast (raw-none.c in a build without dpdk)
 *   workload.c    synthetic workloads writing into a local memory source
 *   migrate-check.c  tlm bench migrate's destination end and its digests
 *   util.c        errors, clocks, peak RSS, a forked listener
 *
 * Functions return 0 / a count or a negative errno, or -1 "after saying
 * why" through tlm_bench_err (the hook, stderr by default).
 */
#ifndef TLM_BENCH_H
#define TLM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tlm/tlm.h"
#include "tlm/memsrc.h"

struct tlm_bench_round;

/* ---- util.c APIs ---- */

/* Where the library says why a run failed: fn gets one line without
 * "tlm: " or a newline. NULL: "tlm: <msg>" on stderr (the default). */
void tlm_bench_set_err_fn(void (*fn)(const char *msg));
void tlm_bench_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t tlm_bench_now_ns(void);
/* CPU time of this process (all threads, user + system), ns. */
uint64_t tlm_bench_cpu_ns(void);
/* Peak resident set size of this process (VmHWM), bytes. */
uint64_t tlm_bench_peak_rss(void);
/* Both ends on this machine: forks a child that listens on addr, port 0,
 * with cfg, tells the parent its port through a pipe, runs fn(listener,
 * arg) and exits with fn's result (0 = success). The child makes its own
 * listener so a transport with per-process state (DPDK's EAL, which does
 * not survive fork) starts clean on both sides. Returns the child's pid
 * with port filled in, or -1 after saying why. */
pid_t tlm_bench_fork_listener(const struct tlm_session_cfg *cfg, const char *addr,
			      char *port, size_t plen,
			      int (*fn)(struct tlm_listener *l, void *arg), void *arg);

/* ---- a transport run: page records over N data lanes, every page
 * verified by the receiver (xfer-send.c, xfer-recv.c, report.c) ---- */

#define TLM_BENCH_ZC_WINDOW (1ull << 30)   /* receiver memory pages are placed into */

struct tlm_bench_xfer {
	const char *transport;
	const char *transport_args;  /* the sender's (and a listener's) */
	const char *rx_targs;        /* loopback: the receiver's own (no fault=) */
	unsigned lanes;
	uint64_t bytes;              /* rounded up to whole pages */
	uint32_t page_size;
	bool verify_crc;             /* the receiver checks crcs, not every byte */
	int timeout_ms;
	bool no_raw;                 /* dpdk: no raw PMD blast */
	double raw_seconds;          /* dpdk: how long each raw blast lasts */
	unsigned rounds;             /* tlm_bench_rounds: how many */
	/* tlm_bench_rounds: called after each round (NULL: nothing) */
	void (*on_round)(void *arg, unsigned i, unsigned n, const struct tlm_bench_round *rd);
	void *on_round_arg;
};

struct tlm_bench_lane {
	uint64_t pages;
	uint64_t bytes;
	uint64_t bad;                /* pages that failed the content check */
	uint64_t ns;                 /* first record to LAST (receiver) / send time */
	int err;
};

/* The receiver's report, as the sender reads it off the control lane. */
struct tlm_bench_report {
	int ok;
	uint64_t pages, bytes, bad, rss, ns, cpu;
	int full;                    /* the receiver compared every byte */
	uint64_t placed, reg_ns, reg_bytes, vns, vpages;
	uint64_t staged;             /* placed pages that crossed sealed (encrypt) */
	struct tlm_bench_lane lane[TLM_MAX_LANES];
};

/* One run, as the sender saw it. */
struct tlm_bench_outcome {
	struct tlm_bench_report rep; /* the receiver's */
	uint64_t bytes;              /* page data sent */
	uint64_t cpu;                /* sender CPU, ns */
	double secs;
	bool verified;
	bool live_send;              /* sent from registered memory (TLM_PF_LIVE) */
	double verify_s;             /* receiver's in-place check, not in secs */
	double peer_Bps;             /* a peer program's figure, < 0 = none */
	char peer_dev[64];
};

/* What a receiver saw of its run (tlm_bench_receive). */
struct tlm_bench_rx_summary {
	unsigned lanes;
	uint32_t page_size;
	uint64_t pages, bytes, bad;
	double secs;
	bool ok;
};

/* Pages of the whole run: bytes rounded up to whole pages. */
uint64_t tlm_bench_pages_total(const struct tlm_bench_xfer *x);
/* The session configuration a sender asks for: x's lanes in page mode
 * and, unless copy, region 0 as the receiver's zero-copy window. */
void tlm_bench_session_cfg(const struct tlm_bench_xfer *x, bool copy,
			   struct tlm_session_cfg *cfg);
/* Accept one session on li, receive and verify, send the report on the
 * control lane. Returns 0 if every page verified, 1 if not, or a
 * negative errno (said why); sum (may be NULL) gets the figures. */
int tlm_bench_receive(struct tlm_listener *li, const struct tlm_bench_xfer *x,
		      struct tlm_bench_rx_summary *sum);
/* Connect to host:port with cfg, send, collect the report into r.
 * Returns 0 when the run completed (r->verified says how it went), -1
 * after saying why not. */
int tlm_bench_send(const struct tlm_bench_xfer *x, struct tlm_session_cfg *cfg,
		   const char *host, const char *port, struct tlm_bench_outcome *r);
/* Both ends here: the receiver a forked child (tlm_bench_fork_listener)
 * with rx_targs, the sender this process. Returns 0 when the run
 * completed and the receiver exited cleanly. */
int tlm_bench_loopback(const struct tlm_bench_xfer *x, struct tlm_session_cfg *cfg,
		       const char *rx_targs, const char *host, struct tlm_bench_outcome *r);

/* ---- report.c APIs: figures derived from an outcome ---- */

/* CPU per page on each side: process CPU (all threads, a transport's poll
 * threads too) x TSC rate / pages, and the pages per second one core at
 * that cost sustains. */
struct tlm_bench_cost {
	double cycles_tx, cycles_rx;
	double pps_tx, pps_rx;
};
struct tlm_bench_cost tlm_bench_cost_of(const struct tlm_bench_outcome *r, double hz);
double tlm_bench_goodput(const struct tlm_bench_outcome *r);
/* Pages of this size per second that fill 10GbE (~1.19 GB/s of page data
 * after Ethernet, IP, UDP and lane headers: 290 k pages/s of 4 KiB). */
double tlm_bench_line_rate_pps(uint32_t page_size);
/* Placed: the receiver offered its window and the transport wrote the
 * pages into it (rdma); not when only the sender registered (dpdk sends
 * from registered memory but the receiver copies out of its ring). */
bool tlm_bench_placed_mode(const struct tlm_bench_outcome *r);
double tlm_bench_reg_s_per_gib(const struct tlm_bench_report *rep);

/* ---- the raw PMD blast (raw-dpdk.c; raw-none.c without dpdk) ---- */

struct tlm_bench_raw_cfg {
	unsigned mtu;           /* the lanes' mtu=: frames of mtu + 14 bytes */
	double seconds;         /* how long the sender blasts */
	const char *eal_args;   /* NULL: --no-huge --no-pci -m 512, as the lanes */
	const char *vdev_tx;    /* NULL: the memif pair; else "NAME,k=v..." for */
	const char *vdev_rx;    /* each end's own vdev (e.g. net_af_packet on
				 * the two ends of a veth pair); not with place */
	bool copies;            /* move page bytes: the sender copies them from
				 * source memory into each frame, the receiver
				 * out of it into destination memory */
	bool place;             /* with copies: one pass over the page per side,
				 * the least a zero-copy lane could do: the
				 * sender attaches source pages to its frames
				 * (rte_pktmbuf_attach_extbuf; the PMD's copy
				 * is the only one), the receiver is the memif
				 * client in zero-copy mode (no PMD copy) and
				 * copies the payload out to destination */
	uint32_t ip_tx, ip_rx;  /* both set (host order): the frames carry the
				 * lanes' headers, Ethernet to the receiver's
				 * port, IPv4 and UDP between these addresses,
				 * so a kernel-visible port's kernel treats
				 * them as the lanes' (else: 0xff headers) */
};

struct tlm_bench_raw_result {
	uint32_t frame_bytes;   /* Ethernet frame, mtu + 14 */
	uint32_t payload;       /* lane stream bytes such a frame would carry */
	uint64_t frames_tx, frames_rx;
	double seconds;         /* receiver: first frame to last */
	double cpu_tx, cpu_rx;  /* process CPU seconds, each side, while blasting */
	double Bps;             /* frames_rx * payload / seconds */
	double tsc_hz;
	char pmd[32];           /* the driver: net_memif, net_af_packet, ... */
};

/*
 * Over net_memif (or vdev_tx to vdev_rx) between two fresh processes, one
 * tx_bursts frames of frame_bytes (headers written, no payload copy), the
 * other rx_bursts and counts them. With copies, the payload is page data:
 * copied in from a 64-page source, copied out to a 64-page destination, as
 * the least any page transfer does (no protocol; the destination is
 * checked against the source once, after the timed part: a mismatch fails
 * the blast); with place, one pass over it per side instead of two. Each
 * child starts its own EAL: call this before the calling process starts
 * one (a child of an EAL process cannot start another). Blocks for about
 * seconds + 1 s; removes the children's EAL runtime directories. Returns
 * 0, a negative errno, or -EOPNOTSUPP in a build without dpdk.
 */
int tlm_bench_raw_blast(const struct tlm_bench_raw_cfg *c, struct tlm_bench_raw_result *r);

/* The three blasts a lane run is held against, in this order. */
struct tlm_bench_raws {
	bool ran;
	struct tlm_bench_raw_result frames; /* headers only */
	struct tlm_bench_raw_result copy;   /* with the page copies */
	struct tlm_bench_raw_result place;  /* one pass over each page per side
					     * (memif only: else Bps 0) */
};

/* The three blasts at the mtu= and with the dpdk-args= of dpdk transport
 * args: on the embedded memif pair, or where the sender's and the
 * receiver's args (rx_targs, NULL: the same) each name a vdev=, from one
 * to the other. -ENODEV when they name a port= or a single device both
 * ends would share; -EINVAL for args the lanes refuse. */
int tlm_bench_raw_blasts(const char *targs, const char *rx_targs, double seconds,
			 struct tlm_bench_raws *out);
/* TSC ticks per second: the EAL's figure once one started in this
 * process, else measured over 50 ms; 0 without dpdk. */
double tlm_bench_tsc_hz(void);

/* ---- rounds.c APIs ---- */

/* One of --rounds: the raw blasts, then the lanes in a child (an EAL in
 * this process would keep the next round's raw blast from starting). */
struct tlm_bench_round {
	struct tlm_bench_outcome out;
	struct tlm_bench_raws raw;
	uint64_t sender_rss;
};

/* dpdk on loopback: the raw blasts into raw, or *skipped says why there
 * are none (x->no_raw, a device both ends share). Returns 0, or -1 after
 * saying why they failed. */
int tlm_bench_raw_phase(const struct tlm_bench_xfer *x, struct tlm_bench_raws *raw,
			const char **skipped);
/* The key rounds are ranked by, the headline ratio: lanes / raw_place
 * where there was a one-pass blast (memif), lanes / raw where there was a
 * raw blast, else goodput. */
double tlm_bench_round_key(const struct tlm_bench_round *d);
/* --rounds: each round's raw blasts (dpdk) here, its lanes in a child;
 * *rounds gets the x->rounds rounds (shared memory: free with
 * tlm_bench_rounds_free), *median the index of the median round by
 * tlm_bench_round_key. Returns 0, or -1 after saying why. */
int tlm_bench_rounds(const struct tlm_bench_xfer *x, struct tlm_session_cfg *cfg,
		     const char *host, struct tlm_bench_round **rounds, unsigned *median,
		     const char **raw_skipped);
void tlm_bench_rounds_free(struct tlm_bench_round *rounds, unsigned n);
/* The fastest round of each path, not necessarily one round. */
struct tlm_bench_best {
	double goodput, raw, place;
};
struct tlm_bench_best tlm_bench_best_of(const struct tlm_bench_round *rd, unsigned n);

/* ---- migrate-check.c APIs: tlm bench migrate's check ---- */

/* A SHA-256 per region and a crc32c per page. */
struct tlm_bench_digest {
	uint8_t sha[TLM_MAX_REGIONS][32];
	uint64_t pages[TLM_MAX_REGIONS];
	uint32_t *crc[TLM_MAX_REGIONS];
	unsigned n;
};
int tlm_bench_digest(const struct tlm_region *r, unsigned n, uint32_t ps,
		     struct tlm_bench_digest *d);
void tlm_bench_digest_free(struct tlm_bench_digest *d);
/* The destination's digest of the same layout as mine, after its ok byte. */
int tlm_bench_digest_recv(struct tlm_lane *l, const struct tlm_bench_digest *mine, uint8_t *ok,
			  struct tlm_bench_digest *theirs);
/* n bytes from a byte-mode lane (60 s at most between reads). */
int tlm_bench_read_all(struct tlm_lane *l, void *p, size_t n);
/* The destination's end: accept one session on li, migrate into fresh
 * memory (filled with 0xa5 first if dest_nonzero), send the digest and 8
 * u64 figures (pages applied, stale, peak RSS, placed, register ms, zero
 * pages kept, backlog records, placed encrypted) on the control lane. 0 if all of it
 * worked, else 1 (said why unless quiet). */
int tlm_bench_migrate_dest(struct tlm_listener *li, bool dest_nonzero, bool quiet);

/* ---- workload.c APIs: workloads that write into a local memory source ----
 * mg: sweeps over a hierarchy of grids of decreasing size, writing heavily;
 * sp: line sweeps along each dimension of a 3-D array;
 * random: uniform random page writes; hotset: a small hot working set;
 * idle: no writes.
 * rate: page writes per second over all threads (0 = unlimited).
 * pause()/resume() of the memory source park and release the threads. */
struct tlm_workload;
int tlm_workload_start(struct tlm_local *m, const char *kind, unsigned threads,
		       uint64_t rate, uint64_t seed, struct tlm_workload **out);
/* Before tlm_workload_start: write percent% of the pages (spread evenly
 * over the regions) once, with the same stamps the workloads write, as an
 * application that allocated and initialised its arrays. threads: how
 * many threads share the work (0 = 1). Returns pages written, or a
 * negative errno. */
int64_t tlm_workload_fill(struct tlm_local *m, unsigned percent, unsigned threads);
/* Page writes done so far. */
uint64_t tlm_workload_writes(const struct tlm_workload *w);
void tlm_workload_stop(struct tlm_workload *w);
/* Names of the workloads, NULL-terminated. */
extern const char *const tlm_workload_names[];
/* 1 if a 4 KiB-or-larger page holds a consistent workload stamp for global
 * page gidx (or was never written: all zero), else 0. Meaningful only while
 * no writer is touching the page (e.g. after pause, or at the destination
 * after the final dirty set was applied). */
int tlm_workload_page_ok(const void *page, uint32_t page_size, uint64_t gidx);

#endif /* TLM_BENCH_H */
