/* SPDX-License-Identifier: MIT */
/*
 * tlm bench transport: move page records over N data lanes and measure
 * goodput (page data bytes per second), with every page verified by the
 * receiver.
 *
 * Roles and timeline:
 *
 *   loopback (default)                 --listen / --connect (two hosts)
 *   fork -> child: tlm_listen           receiver: tlm_listen, tlm_accept
 *            (127.0.0.1:0), port to     sender:   tlm_connect
 *            the parent by pipe,
 *            tlm_accept, receive, report
 *   parent: tlm_connect, send
 *
 *   sender: t0; one thread per data lane sends its share of the pages in
 *     bursts, then a TLM_PF_LAST record; then reads the receiver's report
 *     on the control lane (byte mode); t1 = report in. seconds = t1 - t0.
 *   receiver: one thread per data lane takes records until LAST, checks
 *     each one; then writes the report (verified, counts, per-lane
 *     figures, its peak RSS) on the control lane and sends FIN.
 *
 * Page content: page k of lane l (k = 0, 1, ... in send order, global page
 * index k * lanes + l - 1) is a 16-byte stamp {lane, magic, index}
 * followed by the rest of template k % SLOTS of lane l; the 16 templates
 * of a lane are pseudo-random bytes derived from (lane, slot), few enough
 * to stay in the receiver's cache. The receiver checks the order of the
 * indices, the stamp, and (--verify full, the default) every other byte
 * against its own copy of the template, or (--verify crc) the record's
 * crc32c against the crc the expected content has; the transport itself
 * has checked the data against that crc.
 * The sender computes each page's crc32c without reading the page: the
 * crc of the fixed rest is precomputed per slot and combined with the
 * stamp's crc by crc linearity (checked against tlm_crc32c at start), so
 * the benchmark measures the transport, not a checksum loop at the sender.
 *
 * Zero copy (unless --copy; on transports that can, i.e. rdma): the
 * receiver offers a window of up to ZC_WINDOW bytes as region 0 and the
 * sender registers its page pools, two halves of a burst per lane, and
 * sends TLM_PF_LIVE records; global page g lands at window page g % R
 * (R a multiple of the lane count, so one lane owns each window page, in
 * order). Before re-stamping a half the sender waits until the burst that
 * used it two bursts ago is complete (tlm_lane_wait_sent). The receiver
 * checks each PLACED record's header as it comes and, after every lane's
 * LAST, every window page against the last page placed there; that check
 * is reported (verify_seconds) and not counted in the goodput time.
 * Registration time is reported per GiB (register_s_per_GiB: the
 * receiver's window, the bigger and the one a migration pays for).
 * dpdk takes the sender's registration (live_send: no staging copy) but
 * refuses the receiver's window: nothing is placed, each page is copied
 * out of the lane's ring and checked as it comes, and the run counts as
 * verified with 0 placed.
 *
 * dpdk on loopback (the embedded memif pair), in this order:
 *   raw      the raw PMD blast (transport-dpdk/raw.c through bench_raw.c)
 *            at the lanes' mtu= for --raw-seconds, in two fresh processes
 *            forked while this one has no EAL yet; raw_Bps, ratio; then
 *            once more with the page copies any transfer makes (source
 *            memory into the frame, the frame out to destination memory,
 *            still no protocol and no check): raw_copy_Bps, ratio_raw_copy;
 *            and with one pass over each page per side, the least a
 *            zero-copy lane could do (the sender's frames point at the
 *            source pages, the receiver is a zero-copy memif client that
 *            copies out): raw_place_Bps, raw_place_over_raw, ratio_raw_place
 *   tcp      --compare tcp: the same bench over tcp lanes on 127.0.0.1
 *   lanes    the run itself; --fault goes to the sender only
 * --rounds N repeats raw and lanes N times (each round's lanes in a child,
 * so this process never starts an EAL) and reports the median round by
 * lanes / raw, with every round in per_round: on a host whose speed
 * changes from run to run (a VM whose vCPUs the host moves), a ratio is
 * only meaningful within one round. With raw blasts it also reports
 * "best": the fastest of the rounds for each of lanes, raw and raw_place,
 * and their ratios: each path at the host's best, which a slow period
 * that caught only one of them in a round does not skew (seen: a round
 * whose raw blast ran at a tenth of its speed gave lanes / raw 3.2).
 * For dpdk, cycles per page = process CPU (sender: this process, all
 * threads, the poll thread too; receiver: the child's) x TSC rate / pages,
 * pages per second per core = pages / CPU seconds; line_rate_10GbE_one_core
 * says whether both sides reach 1.19 GB/s of page data (290 k pages/s of
 * 4 KiB) on one core each.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "transport-dpdk/raw.h"

/* bench_raw.c: only in a build with dpdk; only called for --transport dpdk. */
#pragma weak tlm_cli_raw_blast
#pragma weak tlm_cli_tsc_hz

#define STAMP_LEN   16
#define STAMP_MAGIC 0x544c4d42u          /* "TLMB" */
#define SLOTS       16                   /* templates per lane */
#define BURST_BYTES (1u << 20)           /* page data per send_pages() call */
#define REPORT_MAX  (16 * 1024)
#define EPOCH       1
#define ZC_WINDOW   (1ull << 30)         /* receiver memory pages are placed into */
#define VM_ADDR     "198.18.0.1"         /* rxe0 in tests/vm/run-in-vm.sh */

struct opts {
	const char *transport;
	const char *transport_args;
	unsigned lanes;
	uint64_t bytes;
	uint32_t page_size;
	bool page_size_set;
	bool verify_crc;           /* --verify crc (else full) */
	bool json;
	const char *listen;
	const char *connect;
	const char *psk_path;
	int timeout_ms;
	bool copy;                 /* --copy: no zero copy */
	const char *local_addr;    /* --local-addr (loopback mode) */
	bool in_vm;
	const char *peer;          /* --peer ib_write_bw */
	bool no_raw;               /* dpdk: no raw PMD blast */
	double raw_seconds;        /* dpdk: how long the raw blast lasts */
	bool compare_tcp;          /* --compare tcp */
	unsigned rounds;           /* --rounds N: raw blasts and lanes, N times */
	struct tlm_cli_targs ta;   /* --transport-args, --rdma-dev, ..., --fault */
	char targs[512];
	char rx_targs[512];        /* loopback receiver's: no --fault */
	const char *rx_args;       /* --rx-transport-args: the receiver's own */
};

/* Templates and crc tables shared by both roles for one (lanes, page size). */
struct pattern {
	uint32_t page_size;
	unsigned slots;            /* templates per lane (SLOTS) */
	unsigned burst;            /* pages per send_pages() call, a multiple of slots */
	unsigned lanes;
	uint8_t *tmpl;             /* [lanes][slots][page_size] */
	uint32_t *rest_crc;        /* [lanes][slots]: crc32c of bytes after the stamp */
	uint32_t shift[4][256];    /* crc of stamp -> its effect after page_size-16 bytes */
};

struct lane_result {
	uint64_t pages;
	uint64_t bytes;
	uint64_t bad;              /* pages that failed the content check */
	uint64_t ns;               /* first record to LAST (receiver) / send time */
	int err;
};

struct lane_job {
	struct tlm_lane *lane;
	const struct pattern *pat;
	unsigned id;               /* 1..lanes */
	unsigned lanes;
	uint64_t pages;            /* sender: pages to send */
	uint8_t *zc_pool;          /* sender: 2 bursts of registered pages, or NULL */
	int timeout_ms;            /* receiver: longest quiet spell */
	uint64_t placed;           /* receiver: PLACED records */
	bool full;                 /* receiver: compare every byte (--verify full) */
	uint64_t next;             /* receiver: next expected k */
	uint64_t t_first;
	bool last;
	struct lane_result res;
};

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of this process (all threads, user + system), ns: unlike
 * seconds, it barely moves when other work shares the machine. */
static uint64_t cpu_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static uint8_t *tmpl_of(const struct pattern *p, unsigned lane, unsigned slot)
{
	return p->tmpl + ((size_t)(lane - 1) * p->slots + slot) * p->page_size;
}

static void stamp(uint8_t *s, unsigned lane, uint64_t index)
{
	uint32_t v[2] = { lane, STAMP_MAGIC };

	memcpy(s, v, 8);
	memcpy(s + 8, &index, 8);
}

/*
 * crc32c(stamp || rest) = crc32c(0, rest) ^ M(crc32c(0, stamp)), with M the
 * linear map "run n = page_size - 16 zero bytes through the register":
 * chaining gives crc(c, rest) and the pre/post inversion cancels in
 * crc(c, zeros) ^ crc(0, zeros). M is tabulated per byte of its input.
 */
static uint32_t page_crc(const struct pattern *p, uint32_t rest_crc, const uint8_t *st)
{
	uint32_t c = tlm_crc32c(0, st, STAMP_LEN);

	return rest_crc ^ p->shift[0][c & 0xff] ^ p->shift[1][(c >> 8) & 0xff] ^
	       p->shift[2][(c >> 16) & 0xff] ^ p->shift[3][c >> 24];
}

static int pattern_init(struct pattern *p, unsigned lanes, uint32_t page_size)
{
	size_t n = page_size - STAMP_LEN;
	uint8_t *zeros;
	uint32_t basis[32], z0;

	memset(p, 0, sizeof(*p));
	p->page_size = page_size;
	p->lanes = lanes;
	p->slots = SLOTS;
	p->burst = BURST_BYTES / page_size;   /* >= 16: page_size <= 64 KiB */
	p->tmpl = malloc((size_t)lanes * p->slots * page_size);
	p->rest_crc = malloc((size_t)lanes * p->slots * sizeof(uint32_t));
	zeros = calloc(1, n);
	if (!p->tmpl || !p->rest_crc || !zeros) {
		free(zeros);
		return -ENOMEM;
	}
	z0 = tlm_crc32c(0, zeros, n);
	for (int b = 0; b < 32; b++)
		basis[b] = tlm_crc32c(1u << b, zeros, n) ^ z0;
	for (int byte = 0; byte < 4; byte++)
		for (unsigned v = 0; v < 256; v++) {
			uint32_t r = 0;

			for (int b = 0; b < 8; b++)
				if (v & (1u << b))
					r ^= basis[byte * 8 + b];
			p->shift[byte][v] = r;
		}
	free(zeros);
	for (unsigned l = 1; l <= lanes; l++)
		for (unsigned s = 0; s < p->slots; s++) {
			uint8_t *t = tmpl_of(p, l, s);
			uint64_t seed = mix64((uint64_t)l << 32 | s);

			for (size_t i = 0; i < page_size; i += 8) {
				uint64_t w = mix64(seed + i);

				memcpy(t + i, &w, 8);
			}
			p->rest_crc[(size_t)(l - 1) * p->slots + s] =
				tlm_crc32c(0, t + STAMP_LEN, n);
		}
	/* The shortcut must agree with the real thing. */
	{
		uint8_t *t = tmpl_of(p, lanes, p->slots - 1);

		stamp(t, lanes, 0x0123456789abcdefull);
		if (page_crc(p, p->rest_crc[(size_t)lanes * p->slots - 1], t) !=
		    tlm_crc32c(0, t, page_size))
			return -EPROTO;
	}
	return 0;
}

static void pattern_free(struct pattern *p)
{
	free(p->tmpl);
	free(p->rest_crc);
}

/* Pages of the whole run: bytes rounded up to whole pages. */
static uint64_t pages_total(const struct opts *o)
{
	return (o->bytes + o->page_size - 1) / o->page_size;
}

/* Lane id gets pages k = 0.. with global index k * lanes + id - 1. */
static uint64_t pages_of_lane(uint64_t total, unsigned lanes, unsigned id)
{
	return total / lanes + ((total % lanes) >= id ? 1 : 0);
}

/* ---- sender ---- */

static void *send_thread(void *arg)
{
	struct lane_job *j = arg;
	const struct pattern *p = j->pat;
	struct tlm_page_rec *recs = calloc(p->burst, sizeof(*recs));
	size_t half = (size_t)p->burst * p->page_size;
	uint8_t *pool = j->zc_pool ? j->zc_pool : malloc(half);
	uint64_t t0 = now_ns(), k = 0, sent = 0, done_at[2] = { 0, 0 };
	unsigned halves = j->zc_pool ? 2 : 1, b = 0;
	int rc = 0;

	if (!recs || !pool) {
		j->res.err = -ENOMEM;
		goto out;
	}
	/* Page n of a pool half holds template n % slots; only stamps change
	 * per burst. Copying: send_pages() returns once the transport has the
	 * bytes, so the pool is ours again for the next burst. Zero copy: the
	 * transport reads the half when it sends it, so bursts alternate
	 * halves and a half is re-stamped only once its last burst completed.
	 * Bursts start at multiples of burst, so page k sits in slot k % burst,
	 * template k % slots. */
	for (size_t off = 0; off < halves * half; off += (size_t)p->slots * p->page_size)
		memcpy(pool + off, tmpl_of(p, j->id, 0), (size_t)p->slots * p->page_size);
	while (k < j->pages) {
		uint8_t *base = pool + (b % halves) * half;
		unsigned n = 0;

		if (j->zc_pool && b >= 2) {
			rc = tlm_lane_wait_sent(j->lane, done_at[b % 2], j->timeout_ms);
			if (rc < 0)
				break;
		}
		for (; n < p->burst && k < j->pages; n++, k++) {
			uint8_t *pg = base + (size_t)n * p->page_size;
			uint64_t index = k * j->lanes + j->id - 1;

			stamp(pg, j->id, index);
			recs[n] = (struct tlm_page_rec){
				.index = index, .epoch = EPOCH, .region = 0,
				.len = p->page_size, .data = pg,
			};
			if (j->zc_pool)
				recs[n].flags = TLM_PF_LIVE;
			else
				recs[n].crc = page_crc(p, p->rest_crc[(size_t)(j->id - 1) * p->slots +
								      n % p->slots], pg);
		}
		rc = tlm_lane_send_pages(j->lane, recs, n);
		if (rc < 0)
			break;
		sent += n;
		done_at[b % 2] = sent;
		b++;
		j->res.pages += n;
		j->res.bytes += (uint64_t)n * p->page_size;
	}
	if (rc >= 0) {
		recs[0] = (struct tlm_page_rec){ .index = UINT64_MAX, .epoch = EPOCH,
						 .flags = TLM_PF_LAST };
		rc = tlm_lane_send_pages(j->lane, recs, 1);
	}
	if (rc >= 0)
		rc = tlm_lane_flush(j->lane);
	j->res.err = rc < 0 ? rc : 0;
out:
	j->res.ns = now_ns() - t0;
	free(recs);
	if (!j->zc_pool)
		free(pool);
	return NULL;
}

/* ---- receiver ---- */

static int check_page(void *arg, const struct tlm_page_rec *r)
{
	struct lane_job *j = arg;
	const struct pattern *p = j->pat;
	uint64_t want = j->next * j->lanes + j->id - 1;
	uint8_t st[STAMP_LEN];
	const uint8_t *t;
	unsigned slot;

	if (!j->t_first)
		j->t_first = now_ns();
	if (r->flags & TLM_PF_LAST) {
		j->last = true;
		return 0;
	}
	if (j->last) {
		j->res.bad++;       /* nothing may follow LAST */
		return 0;
	}
	slot = (unsigned)(j->next % p->slots);
	t = tmpl_of(p, j->id, slot);
	stamp(st, j->id, want);
	/* PLACED: the data is in the window already; checked at the end. */
	if (r->flags == TLM_PF_PLACED) {
		if (r->index != want || r->region != 0 || r->epoch != EPOCH ||
		    r->len != p->page_size || r->data)
			j->res.bad++;
		j->placed++;
		j->next++;
		j->res.pages++;
		j->res.bytes += r->len;
		return 0;
	}
	/* --verify crc: the transport has checked the data against r->crc;
	 * we check r->crc against the crc the expected content has. */
	if (r->index != want || r->region != 0 || r->epoch != EPOCH || r->flags ||
	    r->len != p->page_size || memcmp(r->data, st, STAMP_LEN) ||
	    (j->full ? memcmp((const uint8_t *)r->data + STAMP_LEN, t + STAMP_LEN,
			      p->page_size - STAMP_LEN) != 0
		     : r->crc != page_crc(p, p->rest_crc[(size_t)(j->id - 1) * p->slots + slot],
					  st)))
		j->res.bad++;
	j->next++;
	j->res.pages++;
	j->res.bytes += r->len;
	return 0;
}

static void *recv_thread(void *arg)
{
	struct lane_job *j = arg;
	struct tlm_page_sink sink = { check_page, j };
	int rc = 0;

	while (!j->last) {
		rc = tlm_lane_recv_pages(j->lane, &sink, j->timeout_ms);
		if (rc == 0)
			rc = -ETIMEDOUT;   /* nothing for a whole timeout */
		if (rc < 0)
			break;
	}
	j->res.err = rc < 0 ? rc : 0;
	j->res.ns = j->t_first ? now_ns() - j->t_first : 0;
	return NULL;
}

/* Lanes threads; on a failed pthread_create the lanes already started are
 * still joined. Returns 0 or -errno. */
static int run_lanes(struct lane_job *jobs, unsigned n, void *(*fn)(void *))
{
	pthread_t th[TLM_MAX_LANES];
	unsigned started = 0;
	int err = 0;

	for (; started < n; started++) {
		int rc = pthread_create(&th[started], NULL, fn, &jobs[started]);

		if (rc) {
			err = -rc;
			break;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	return err;
}

/* Reads the control lane until the peer's FIN; returns bytes or error. */
static ssize_t read_report(struct tlm_lane *l, char *buf, size_t cap, int timeout_ms)
{
	size_t got = 0;

	while (got + 1 < cap) {
		ssize_t r = tlm_lane_read(l, buf + got, cap - 1 - got, timeout_ms);

		if (r < 0)
			return r;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

/* The receiver's zero-copy window. */
struct window {
	uint8_t *base;
	uint64_t pages;
	uint64_t reg_ns, reg_bytes;
	uint64_t verify_ns, verified;   /* pages checked in place */
};

/* Offer the window the sender asked for (region 0) on every lane. */
static void window_offer(struct tlm_session *s, uint32_t ps, struct window *w, int timeout_ms)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(s);
	uint64_t t0;
	size_t len;

	memset(w, 0, sizeof(*w));
	if (cfg->n_regions != 1 || cfg->region_len[0] == 0 || cfg->region_len[0] > ZC_WINDOW ||
	    cfg->region_len[0] % ps)
		return;
	len = (size_t)cfg->region_len[0];
	w->base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->base == MAP_FAILED) {
		w->base = NULL;
		return;
	}
	w->pages = len / ps;
	t0 = now_ns();
	for (unsigned i = 1; i <= tlm_session_lanes(s); i++) {
		int rc = tlm_lane_register_region(tlm_session_lane(s, i), 0, w->base, len,
						  TLM_REG_DST, timeout_ms);
		if (rc) {
			if (rc != -EOPNOTSUPP)
				tlm_cli_err("receiver: lane %u: zero copy not offered: %s", i,
					    tlm_strerror(rc));
			return;
		}
	}
	w->reg_ns = now_ns() - t0;
	w->reg_bytes = len;
}

/* After every LAST: each window page must hold the last page placed there
 * (global page g goes to g % pages; that page's lane sends in order). */
static uint64_t window_check(const struct window *w, const struct pattern *p, uint64_t total,
			     unsigned lanes)
{
	uint64_t bad = 0;
	uint8_t st[STAMP_LEN];

	for (uint64_t slot = 0; slot < w->pages && slot < total; slot++) {
		uint64_t g = slot + (total - 1 - slot) / w->pages * w->pages;
		unsigned lane = (unsigned)(g % lanes) + 1;
		const uint8_t *pg = w->base + slot * p->page_size;
		const uint8_t *t = tmpl_of(p, lane, (unsigned)(g / lanes % p->slots));

		stamp(st, lane, g);
		if (memcmp(pg, st, STAMP_LEN) ||
		    memcmp(pg + STAMP_LEN, t + STAMP_LEN, p->page_size - STAMP_LEN))
			bad++;
	}
	return bad;
}

static void window_free(struct tlm_session *s, struct window *w)
{
	if (!w->base)
		return;
	for (unsigned i = 1; i <= tlm_session_lanes(s); i++)
		tlm_lane_unregister_regions(tlm_session_lane(s, i));
	munmap(w->base, w->pages * tlm_session_cfg_get(s)->page_size);
	w->base = NULL;
}

/*
 * Receiver: accept one session, receive and verify, report on the control
 * lane; print its own summary if asked (--listen). Returns 0 if every page
 * verified, else a negative error or 1.
 */
static int receiver(struct tlm_listener *li, const struct opts *o, bool print)
{
	struct tlm_session *s = NULL;
	const struct tlm_session_cfg *cfg;
	struct lane_job *jobs = NULL;
	struct pattern pat = { 0 };
	struct window w = { 0 };
	char *rep = NULL;
	size_t off = 0;
	unsigned n;
	uint64_t pages = 0, bytes = 0, bad = 0, placed = 0, t0, cpu0;
	bool ok = true;
	int rc;

	rc = tlm_accept(li, o->timeout_ms, &s);
	if (rc) {
		tlm_cli_err("receiver: no session: %s", tlm_strerror(rc));
		return rc;
	}
	cfg = tlm_session_cfg_get(s);
	n = tlm_session_lanes(s);
	for (unsigned i = 1; i <= n; i++)
		if (cfg->lane_modes[i] != TLM_MODE_PAGES) {
			tlm_cli_err("receiver: data lane %u is not in page mode", i);
			rc = -TLM_EPARAM;
			goto out;
		}
	rc = pattern_init(&pat, n, cfg->page_size);
	if (rc)
		goto out;
	jobs = calloc(n, sizeof(*jobs));
	rep = malloc(REPORT_MAX);
	if (!jobs || !rep) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < n; i++)
		jobs[i] = (struct lane_job){ .lane = tlm_session_lane(s, i + 1), .pat = &pat,
					     .id = i + 1, .lanes = n,
					     .timeout_ms = o->timeout_ms,
					     .full = !o->verify_crc };
	window_offer(s, cfg->page_size, &w, o->timeout_ms);
	t0 = now_ns();
	cpu0 = cpu_ns();
	rc = run_lanes(jobs, n, recv_thread);
	if (rc)
		goto out;
	for (unsigned i = 0; i < n; i++) {
		pages += jobs[i].res.pages;
		bytes += jobs[i].res.bytes;
		bad += jobs[i].res.bad;
		if (jobs[i].res.err || jobs[i].res.bad || !jobs[i].last)
			ok = false;
		if (jobs[i].res.err)
			tlm_cli_err("receiver: lane %u: %s", i + 1, tlm_strerror(jobs[i].res.err));
		placed += jobs[i].placed;
	}
	if (placed) {
		uint64_t v0 = now_ns(), wbad;

		/* All placed, or the lanes disagree about zero copy. */
		if (placed == pages && w.base) {
			wbad = window_check(&w, &pat, pages, n);
			w.verified = w.pages < pages ? w.pages : pages;
		} else {
			wbad = pages;
		}
		w.verify_ns = now_ns() - v0;
		bad += wbad;
		if (wbad)
			ok = false;
	}
	window_free(s, &w);
	off += (size_t)snprintf(rep + off, REPORT_MAX - off,
				"R ok=%d pages=%" PRIu64 " bytes=%" PRIu64 " bad=%" PRIu64
				" rss=%" PRIu64 " ns=%" PRIu64 " cpu=%" PRIu64 " full=%d"
				" placed=%" PRIu64 " reg_ns=%" PRIu64 " reg_bytes=%" PRIu64
				" vns=%" PRIu64 " vpages=%" PRIu64 "\n", ok,
				pages, bytes, bad, tlm_cli_peak_rss(), now_ns() - t0,
				cpu_ns() - cpu0, !o->verify_crc, placed, w.reg_ns, w.reg_bytes,
				w.verify_ns, w.verified);
	for (unsigned i = 0; i < n && off < REPORT_MAX - 128; i++)
		off += (size_t)snprintf(rep + off, REPORT_MAX - off,
					"L %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %d\n",
					i + 1, jobs[i].res.pages, jobs[i].res.bytes,
					jobs[i].res.bad, jobs[i].res.ns, jobs[i].res.err);
	rc = (int)tlm_lane_write(tlm_session_lane(s, 0), rep, off);
	if (rc >= 0)
		rc = tlm_lane_shutdown(tlm_session_lane(s, 0));
	if (rc < 0) {
		tlm_cli_err("receiver: cannot send the report: %s", tlm_strerror(rc));
		goto out;
	}
	/* Wait for the sender's end so it has the report before we close. */
	{
		char tmp[64];

		while (tlm_lane_read(tlm_session_lane(s, 0), tmp, sizeof(tmp),
				     o->timeout_ms) > 0)
			;
	}
	if (print) {
		double secs = (double)(now_ns() - t0) / 1e9;

		if (o->json) {
			struct tlm_json j;

			tlm_json_begin(&j, stdout);
			tlm_json_str(&j, "role", "receiver");
			tlm_json_str(&j, "transport", o->transport);
			tlm_json_u64(&j, "lanes", n);
			tlm_json_u64(&j, "page_size", cfg->page_size);
			tlm_json_u64(&j, "bytes", bytes);
			tlm_json_u64(&j, "pages", pages);
			tlm_json_dbl(&j, "seconds", secs);
			tlm_json_u64(&j, "goodput_Bps", secs > 0 ? (uint64_t)((double)bytes / secs) : 0);
			tlm_json_bool(&j, "verified", ok);
			tlm_json_u64(&j, "bad_pages", bad);
			tlm_json_u64(&j, "peak_rss_bytes", tlm_cli_peak_rss());
			tlm_json_finish(&j);
		} else {
			printf("receiver: %u lanes, %" PRIu64 " pages, %" PRIu64 " bytes in %.3f s"
			       " (%.1f MB/s), %s\n", n, pages, bytes, secs,
			       secs > 0 ? (double)bytes / secs / 1e6 : 0.0,
			       ok ? "all verified" : "VERIFICATION FAILED");
		}
	}
	rc = ok ? 0 : 1;
out:
	window_free(s, &w);
	free(rep);
	free(jobs);
	pattern_free(&pat);
	tlm_session_close(s);
	return rc;
}

static int receiver_child(struct tlm_listener *li, void *arg)
{
	return receiver(li, arg, false);
}

/* The receiver's report, parsed. */
struct report {
	int ok;
	uint64_t pages, bytes, bad, rss, ns, cpu;
	int full;                  /* the receiver compared every byte */
	uint64_t placed, reg_ns, reg_bytes, vns, vpages;
	struct lane_result lane[TLM_MAX_LANES];
};

static int parse_report(char *text, unsigned lanes, struct report *r)
{
	char *save = NULL, *line;
	unsigned seen = 0;

	memset(r, 0, sizeof(*r));
	line = strtok_r(text, "\n", &save);
	if (!line || sscanf(line, "R ok=%d pages=%" SCNu64 " bytes=%" SCNu64 " bad=%" SCNu64
			    " rss=%" SCNu64 " ns=%" SCNu64 " cpu=%" SCNu64 " full=%d"
			    " placed=%" SCNu64 " reg_ns=%" SCNu64 " reg_bytes=%" SCNu64
			    " vns=%" SCNu64 " vpages=%" SCNu64, &r->ok,
			    &r->pages, &r->bytes, &r->bad, &r->rss, &r->ns, &r->cpu,
			    &r->full, &r->placed, &r->reg_ns, &r->reg_bytes, &r->vns,
			    &r->vpages) != 13)
		return -EPROTO;
	while ((line = strtok_r(NULL, "\n", &save))) {
		struct lane_result lr;
		unsigned id;

		if (sscanf(line, "L %u %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %d", &id,
			   &lr.pages, &lr.bytes, &lr.bad, &lr.ns, &lr.err) != 6 ||
		    id < 1 || id > lanes)
			return -EPROTO;
		r->lane[id - 1] = lr;
		seen++;
	}
	return seen == lanes ? 0 : -EPROTO;
}

/* One run, as the sender saw it. */
struct outcome {
	struct report rep;         /* the receiver's */
	uint64_t bytes;            /* page data sent */
	uint64_t cpu;              /* sender CPU, ns */
	double secs;
	bool verified;
	bool live_send;            /* sent from registered memory (TLM_PF_LIVE) */
	double verify_s;           /* receiver's in-place check, not in secs */
	double peer_Bps;           /* --peer, < 0 = none */
	char peer_dev[64];
};

/* dpdk's raw blasts (raw_phase). */
struct raws {
	bool ran;
	struct tlm__raw_result frames; /* headers only */
	struct tlm__raw_result copy;   /* with the page copies */
	struct tlm__raw_result place;  /* one pass over each page per side */
};

/* One of --rounds: the raw blasts, then the lanes in a child (an EAL in
 * this process would keep the next round's raw blast from starting). */
struct round {
	struct outcome out;
	struct raws raw;
	uint64_t sender_rss;
};

/* What goes around the run: dpdk's raw blast, the tcp comparison. */
struct extra {
	double tsc_hz;             /* > 0: cycle figures */
	const char *raw_skipped;   /* why there is no raw blast, or NULL */
	struct raws raw;
	const struct outcome *tcp; /* --compare tcp */
	const struct round *rounds; /* --rounds N > 1: each; the figures are rounds[median] */
	unsigned nrounds, median;
};

static double round_key(const struct round *d);

/* CPU per page on each side: process CPU (all threads, a transport's poll
 * threads too) x TSC rate / pages, and the pages per second one core at
 * that cost sustains. */
struct cost {
	double cycles_tx, cycles_rx;
	double pps_tx, pps_rx;
};

static struct cost cost_of(const struct outcome *r, double hz)
{
	double pages = (double)r->rep.pages, tx = (double)r->cpu / 1e9,
	       rx = (double)r->rep.cpu / 1e9;

	if (!pages)
		return (struct cost){ 0 };
	return (struct cost){ tx * hz / pages, rx * hz / pages, tx > 0 ? pages / tx : 0,
			      rx > 0 ? pages / rx : 0 };
}

static double goodput(const struct outcome *r)
{
	return r->secs > 0 ? (double)r->bytes / r->secs : 0;
}

/* --rounds: the fastest round of each path, not necessarily one round. */
struct best {
	double goodput, raw, place;
};

static struct best best_of(const struct round *rd, unsigned n)
{
	struct best b = { 0, 0, 0 };

	for (unsigned i = 0; i < n; i++) {
		double g = goodput(&rd[i].out);

		b.goodput = g > b.goodput ? g : b.goodput;
		b.raw = rd[i].raw.frames.Bps > b.raw ? rd[i].raw.frames.Bps : b.raw;
		b.place = rd[i].raw.place.Bps > b.place ? rd[i].raw.place.Bps : b.place;
	}
	return b;
}

/* Pages of this size per second that fill 10GbE (~1.19 GB/s of page data
 * after Ethernet, IP, UDP and lane headers: 290 k pages/s of 4 KiB). */
static double line_rate_pps(uint32_t page_size)
{
	return 1.19e9 / page_size;
}

/* Placed: the receiver offered its window and the transport wrote the
 * pages into it (rdma); not when only the sender registered (dpdk sends
 * from registered memory but the receiver copies out of its ring). */
static bool placed_mode(const struct outcome *r)
{
	return r->live_send && r->rep.reg_bytes;
}

static double reg_s_per_gib(const struct report *rep)
{
	return rep->reg_bytes ? (double)rep->reg_ns / 1e9 /
				((double)rep->reg_bytes / (1024.0 * 1024.0 * 1024.0)) : 0;
}

static void json_cost(struct tlm_json *j, const char *prefix, const struct cost *c,
		      double hz)
{
	char k[64];

	if (hz > 0) {
		snprintf(k, sizeof(k), "%scycles_per_page_tx", prefix);
		tlm_json_dbl(j, k, c->cycles_tx);
		snprintf(k, sizeof(k), "%scycles_per_page_rx", prefix);
		tlm_json_dbl(j, k, c->cycles_rx);
	}
	snprintf(k, sizeof(k), "%spages_per_s_per_core_tx", prefix);
	tlm_json_u64(j, k, (uint64_t)c->pps_tx);
	snprintf(k, sizeof(k), "%spages_per_s_per_core_rx", prefix);
	tlm_json_u64(j, k, (uint64_t)c->pps_rx);
}

static void print_json(const struct opts *o, const struct outcome *r, const struct extra *x)
{
	const struct report *rep = &r->rep;
	struct cost c = cost_of(r, x->tsc_hz);
	double gp = goodput(r);
	struct tlm_json j;

	tlm_json_begin(&j, stdout);
	tlm_json_str(&j, "transport", o->transport);
	tlm_json_u64(&j, "lanes", o->lanes);
	tlm_json_u64(&j, "page_size", o->page_size);
	tlm_json_u64(&j, "bytes", r->bytes);
	tlm_json_u64(&j, "pages", rep->pages);
	tlm_json_dbl(&j, "seconds", r->secs);
	tlm_json_u64(&j, "goodput_Bps", (uint64_t)gp);
	tlm_json_bool(&j, "verified", r->verified);
	tlm_json_str(&j, "verify", rep->placed ? "full, in place after the run"
					       : rep->full ? "full" : "crc");
	tlm_json_u64(&j, "bad_pages", rep->bad);
	tlm_json_bool(&j, "zero_copy", placed_mode(r));
	tlm_json_bool(&j, "live_send", r->live_send);
	tlm_json_u64(&j, "pages_placed", rep->placed);
	tlm_json_u64(&j, "pages_verified_in_place", rep->vpages);
	tlm_json_dbl(&j, "verify_seconds", r->verify_s);
	tlm_json_dbl(&j, "register_s_per_GiB", reg_s_per_gib(rep));
	tlm_json_u64(&j, "registered_bytes", rep->reg_bytes);
	if (r->peer_Bps >= 0) {
		tlm_json_str(&j, "peer", o->peer);
		tlm_json_str(&j, "peer_device", r->peer_dev);
		tlm_json_u64(&j, "peer_Bps", (uint64_t)r->peer_Bps);
		tlm_json_dbl(&j, "ratio", r->peer_Bps > 0 ? gp / r->peer_Bps : 0);
	}
	if (x->raw.ran) {
		tlm_json_str(&j, "raw_pmd", x->raw.frames.pmd);
		tlm_json_u64(&j, "raw_frame_bytes", x->raw.frames.frame_bytes);
		tlm_json_u64(&j, "raw_payload_per_frame", x->raw.frames.payload);
		tlm_json_dbl(&j, "raw_seconds", x->raw.frames.seconds);
		tlm_json_u64(&j, "raw_frames_per_s", (uint64_t)((double)x->raw.frames.frames_rx /
								 x->raw.frames.seconds));
		tlm_json_u64(&j, "raw_Bps", (uint64_t)x->raw.frames.Bps);
		tlm_json_dbl(&j, "ratio", x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0);
		tlm_json_u64(&j, "raw_copy_Bps", (uint64_t)x->raw.copy.Bps);
		tlm_json_dbl(&j, "ratio_raw_copy", x->raw.copy.Bps > 0 ? gp / x->raw.copy.Bps : 0);
		if (x->raw.place.Bps > 0) {   /* memif only */
			tlm_json_u64(&j, "raw_place_Bps", (uint64_t)x->raw.place.Bps);
			tlm_json_dbl(&j, "raw_place_over_raw", x->raw.frames.Bps > 0 ?
				     x->raw.place.Bps / x->raw.frames.Bps : 0);
			tlm_json_dbl(&j, "ratio_raw_place", gp / x->raw.place.Bps);
		}
	} else if (x->raw_skipped) {
		tlm_json_str(&j, "raw_skipped", x->raw_skipped);
	}
	if (x->tsc_hz > 0) {
		tlm_json_u64(&j, "tsc_hz", (uint64_t)x->tsc_hz);
		json_cost(&j, "", &c, x->tsc_hz);
		tlm_json_u64(&j, "line_rate_10GbE_pages_per_s",
			     (uint64_t)line_rate_pps(o->page_size));
		tlm_json_bool(&j, "line_rate_10GbE_one_core",
			      (c.pps_tx < c.pps_rx ? c.pps_tx : c.pps_rx) >=
			      line_rate_pps(o->page_size));
	}
	if (x->tcp) {
		struct cost tc = cost_of(x->tcp, x->tsc_hz);

		tlm_json_u64(&j, "tcp_goodput_Bps", (uint64_t)goodput(x->tcp));
		tlm_json_bool(&j, "tcp_verified", x->tcp->verified);
		tlm_json_obj(&j, "tcp_cpu_seconds");
		tlm_json_dbl(&j, "sender", (double)x->tcp->cpu / 1e9);
		tlm_json_dbl(&j, "receiver", (double)x->tcp->rep.cpu / 1e9);
		tlm_json_end_obj(&j);
		json_cost(&j, "tcp_", &tc, x->tsc_hz);
	}
	if (x->nrounds) {
		tlm_json_u64(&j, "rounds", x->nrounds);
		tlm_json_u64(&j, "median_round", x->median + 1);
		tlm_json_arr(&j, "per_round");
		for (unsigned i = 0; i < x->nrounds; i++) {
			const struct round *d = &x->rounds[i];
			double g = goodput(&d->out);

			tlm_json_obj(&j, NULL);
			tlm_json_u64(&j, "goodput_Bps", (uint64_t)g);
			tlm_json_bool(&j, "verified", d->out.verified);
			if (d->raw.ran) {
				tlm_json_u64(&j, "raw_Bps", (uint64_t)d->raw.frames.Bps);
				tlm_json_u64(&j, "raw_copy_Bps", (uint64_t)d->raw.copy.Bps);
				if (d->raw.place.Bps > 0)
					tlm_json_u64(&j, "raw_place_Bps", (uint64_t)d->raw.place.Bps);
				tlm_json_dbl(&j, "ratio", d->raw.frames.Bps > 0 ? g / d->raw.frames.Bps : 0);
				if (d->raw.place.Bps > 0)
					tlm_json_dbl(&j, "ratio_raw_place", g / d->raw.place.Bps);
			}
			tlm_json_end_obj(&j);
		}
		tlm_json_end_arr(&j);
		if (x->raw.ran) {
			struct best b = best_of(x->rounds, x->nrounds);

			tlm_json_obj(&j, "best");
			tlm_json_u64(&j, "goodput_Bps", (uint64_t)b.goodput);
			tlm_json_u64(&j, "raw_Bps", (uint64_t)b.raw);
			if (b.place > 0)
				tlm_json_u64(&j, "raw_place_Bps", (uint64_t)b.place);
			tlm_json_dbl(&j, "ratio", b.raw > 0 ? b.goodput / b.raw : 0);
			if (b.place > 0) {
				tlm_json_dbl(&j, "ratio_raw_place", b.goodput / b.place);
				tlm_json_dbl(&j, "raw_place_over_raw", b.raw > 0 ? b.place / b.raw : 0);
			}
			tlm_json_end_obj(&j);
		}
	}
	tlm_json_obj(&j, "peak_rss_bytes");
	tlm_json_u64(&j, "sender", x->nrounds ? x->rounds[x->median].sender_rss :
						tlm_cli_peak_rss());
	tlm_json_u64(&j, "receiver", rep->rss);
	tlm_json_end_obj(&j);
	tlm_json_obj(&j, "cpu_seconds");
	tlm_json_dbl(&j, "sender", (double)r->cpu / 1e9);
	tlm_json_dbl(&j, "receiver", (double)rep->cpu / 1e9);
	tlm_json_end_obj(&j);
	tlm_json_arr(&j, "per_lane");
	for (unsigned i = 0; i < o->lanes; i++) {
		const struct lane_result *l = &rep->lane[i];
		double ls = (double)l->ns / 1e9;

		tlm_json_obj(&j, NULL);
		tlm_json_u64(&j, "lane", i + 1);
		tlm_json_u64(&j, "bytes", l->bytes);
		tlm_json_u64(&j, "pages", l->pages);
		tlm_json_dbl(&j, "seconds", ls);
		tlm_json_u64(&j, "goodput_Bps", ls > 0 ? (uint64_t)((double)l->bytes / ls) : 0);
		tlm_json_end_obj(&j);
	}
	tlm_json_end_arr(&j);
	tlm_json_finish(&j);
}

static void print_result(const struct opts *o, const struct outcome *r, const struct extra *x)
{
	const struct report *rep = &r->rep;
	double gp = goodput(r), secs = r->secs;

	if (o->json) {
		print_json(o, r, x);
		return;
	}
	printf("tlm bench transport: %s, %u data lane%s, %u-byte pages\n", o->transport,
	       o->lanes, o->lanes == 1 ? "" : "s", o->page_size);
	for (unsigned i = 0; i < o->lanes; i++) {
		const struct lane_result *l = &rep->lane[i];
		double ls = (double)l->ns / 1e9;

		printf("  lane %2u: %10.1f MiB in %7.3f s  %9.1f MB/s\n", i + 1,
		       (double)l->bytes / 1048576.0, ls,
		       ls > 0 ? (double)l->bytes / ls / 1e6 : 0.0);
	}
	printf("  total:   %10.1f MiB in %7.3f s  %9.1f MB/s (%.2f Gbit/s)\n",
	       (double)r->bytes / 1048576.0, secs, gp / 1e6, gp * 8 / 1e9);
	printf("  %s: %" PRIu64 " pages checked by the receiver, %" PRIu64 " bad\n",
	       r->verified ? "verified" : "NOT VERIFIED", rep->pages, rep->bad);
	if (placed_mode(r))
		printf("  zero copy: %" PRIu64 " pages placed by the transport, %" PRIu64
		       " checked in place afterwards (%.2f s, not timed); registration"
		       " %.3f s per GiB\n", rep->placed, rep->vpages, r->verify_s,
		       reg_s_per_gib(rep));
	else if (r->live_send)
		printf("  sent from registered memory (TLM_PF_LIVE, no staging copy); no window"
		       " registered at the receiver (dpdk takes none), so %" PRIu64 " pages"
		       " placed: each was copied out of the transport's ring and checked as it"
		       " came\n", rep->placed);
	if (r->peer_Bps >= 0)
		printf("  %s on %s: %.1f MB/s; tlm / %s = %.2f\n", o->peer, r->peer_dev,
		       r->peer_Bps / 1e6, o->peer, r->peer_Bps > 0 ? gp / r->peer_Bps : 0.0);
	if (x->raw.ran) {
		printf("  raw PMD blast (%s, %u-byte frames, no protocol, %.1f s):"
		       " %.1f MB/s; lanes / raw = %.2f\n", x->raw.frames.pmd,
		       x->raw.frames.frame_bytes, x->raw.frames.seconds,
		       x->raw.frames.Bps / 1e6, x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0.0);
		printf("  raw PMD blast with the page copies (source -> frame, frame ->"
		       " destination): %.1f MB/s; lanes / that = %.2f\n", x->raw.copy.Bps / 1e6,
		       x->raw.copy.Bps > 0 ? gp / x->raw.copy.Bps : 0.0);
		if (x->raw.place.Bps > 0)
			printf("  raw PMD blast with one pass per side (source attached to the"
			       " frame, zero-copy memif receiver): %.1f MB/s = %.2f x raw; lanes /"
			       " that = %.2f\n", x->raw.place.Bps / 1e6, x->raw.frames.Bps > 0 ?
			       x->raw.place.Bps / x->raw.frames.Bps : 0.0, gp / x->raw.place.Bps);
	} else if (x->raw_skipped) {
		printf("  raw PMD blast: skipped (%s)\n", x->raw_skipped);
	}
	if (x->tsc_hz > 0) {
		struct cost c = cost_of(r, x->tsc_hz);
		double line = line_rate_pps(o->page_size);

		printf("  per page: sender %.0f cycles (%.0f k pages/s on one core), receiver"
		       " %.0f cycles (%.0f k/s); 10GbE line rate (%.0f k pages/s) on one core:"
		       " %s\n", c.cycles_tx, c.pps_tx / 1e3, c.cycles_rx, c.pps_rx / 1e3,
		       line / 1e3, (c.pps_tx < c.pps_rx ? c.pps_tx : c.pps_rx) >= line ? "yes"
											  : "no");
	}
	if (x->tcp) {
		struct cost c = cost_of(x->tcp, x->tsc_hz);

		printf("  tcp lanes on loopback, same run: %.1f MB/s, %s; per page: sender"
		       " %.0f k pages/s on one core, receiver %.0f k/s", goodput(x->tcp) / 1e6,
		       x->tcp->verified ? "verified" : "NOT VERIFIED", c.pps_tx / 1e3,
		       c.pps_rx / 1e3);
		if (x->tsc_hz > 0)
			printf(" (%.0f and %.0f cycles)", c.cycles_tx, c.cycles_rx);
		printf("\n");
	}
	if (x->nrounds) {
		double lo = 1e300, hi = 0;

		for (unsigned i = 0; i < x->nrounds; i++) {
			double k = round_key(&x->rounds[i]);
			lo = k < lo ? k : lo;
			hi = k > hi ? k : hi;
		}
		printf("  rounds: %u, these figures from round %u, the median by %s; "
		       "across rounds %.2f .. %.2f%s\n", x->nrounds, x->median + 1,
		       x->raw.ran ? "lanes / raw" : "goodput", x->raw.ran ? lo : lo / 1e6,
		       x->raw.ran ? hi : hi / 1e6, x->raw.ran ? "" : " MB/s");
		if (x->raw.ran) {
			struct best b = best_of(x->rounds, x->nrounds);

			printf("  best of the rounds: lanes %.1f MB/s, raw %.1f MB/s; lanes / raw"
			       " %.2f", b.goodput / 1e6, b.raw / 1e6,
			       b.raw > 0 ? b.goodput / b.raw : 0);
			if (b.place > 0)
				printf("; raw_place %.1f MB/s, lanes / raw_place %.2f, raw_place /"
				       " raw %.2f", b.place / 1e6, b.goodput / b.place,
				       b.raw > 0 ? b.place / b.raw : 0);
			printf("\n");
		}
	}
	printf("  peak RSS: sender %.1f MiB, receiver %.1f MiB\n",
	       (double)(x->nrounds ? x->rounds[x->median].sender_rss : tlm_cli_peak_rss()) /
	       1048576.0, (double)rep->rss / 1048576.0);
	printf("  CPU: sender %.3f s, receiver %.3f s\n", (double)r->cpu / 1e9,
	       (double)rep->cpu / 1e9);
}

/* Sender: connect, send, collect the report into r. Returns 0 when the
 * run completed (r->verified says how it went), -1 after saying why not. */
static int sender(const struct opts *o, struct tlm_session_cfg *cfg, const char *host,
		  const char *port, struct outcome *r)
{
	struct tlm_session *s = NULL;
	struct lane_job *jobs = NULL;
	struct pattern pat = { 0 };
	char *text = NULL;
	uint8_t *zc = NULL;
	size_t zc_len = 0;
	uint64_t total = pages_total(o), t0, cpu0;
	int rc, status = -1;
	ssize_t got;

	memset(r, 0, sizeof(*r));
	r->peer_Bps = -1;
	rc = pattern_init(&pat, o->lanes, o->page_size);
	if (rc) {
		tlm_cli_err("cannot set up the page pattern: %s", tlm_strerror(rc));
		goto out;
	}
	jobs = calloc(o->lanes, sizeof(*jobs));
	text = malloc(REPORT_MAX);
	if (!jobs || !text) {
		tlm_cli_err("out of memory");
		goto out;
	}
	rc = tlm_connect(cfg, host, port, &s);
	if (rc) {
		tlm_cli_err("cannot connect to %s port %s: %s", host, port, tlm_strerror(rc));
		goto out;
	}
	/* Zero copy where every lane can: the pools, two bursts per lane. */
	if (cfg->n_regions == 1) {
		zc_len = (size_t)o->lanes * 2 * pat.burst * o->page_size;
		zc = mmap(NULL, zc_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		rc = zc == MAP_FAILED ? -ENOMEM : 0;
		for (unsigned i = 1; !rc && i <= o->lanes; i++)
			rc = tlm_lane_register_region(tlm_session_lane(s, i), 0, zc, zc_len,
						      TLM_REG_SRC, o->timeout_ms);
		if (rc) {
			if (rc != -EOPNOTSUPP)
				tlm_cli_err("zero copy is off: %s", tlm_strerror(rc));
			for (unsigned i = 1; i <= o->lanes; i++)
				tlm_lane_unregister_regions(tlm_session_lane(s, i));
			if (zc != MAP_FAILED)
				munmap(zc, zc_len);
			zc = NULL;
		}
		r->live_send = zc != NULL;
	}
	for (unsigned i = 0; i < o->lanes; i++)
		jobs[i] = (struct lane_job){ .lane = tlm_session_lane(s, i + 1), .pat = &pat,
					     .id = i + 1, .lanes = o->lanes,
					     .pages = pages_of_lane(total, o->lanes, i + 1),
					     .timeout_ms = o->timeout_ms,
					     .zc_pool = zc ? zc + (size_t)i * 2 * pat.burst * o->page_size
							   : NULL };
	t0 = now_ns();
	cpu0 = cpu_ns();
	rc = run_lanes(jobs, o->lanes, send_thread);
	if (rc) {
		tlm_cli_err("cannot start sender threads: %s", strerror(-rc));
		goto out;
	}
	for (unsigned i = 0; i < o->lanes; i++)
		if (jobs[i].res.err) {
			tlm_cli_err("lane %u: %s", i + 1, tlm_strerror(jobs[i].res.err));
			goto out;
		}
	/* The receiver answers once it has checked every page. */
	got = read_report(tlm_session_lane(s, 0), text, REPORT_MAX,
			  o->timeout_ms > 60000 ? o->timeout_ms : 60000);
	r->secs = (double)(now_ns() - t0) / 1e9;
	if (got < 0) {
		tlm_cli_err("no report from the receiver: %s", tlm_strerror((int)got));
		goto out;
	}
	tlm_lane_shutdown(tlm_session_lane(s, 0));
	if (parse_report(text, o->lanes, &r->rep) < 0) {
		tlm_cli_err("malformed report from the receiver");
		goto out;
	}
	/* Every page placed where the receiver offered a window, none where it
	 * did not (dpdk takes the sender's registration, not the receiver's). */
	r->verified = r->rep.ok && r->rep.bad == 0 && r->rep.pages == total &&
		      r->rep.placed == (placed_mode(r) ? total : 0);
	for (unsigned i = 0; i < o->lanes; i++) {
		r->bytes += jobs[i].res.bytes;
		if (r->rep.lane[i].pages != jobs[i].res.pages || r->rep.lane[i].err)
			r->verified = false;
	}
	r->verify_s = (double)r->rep.vns / 1e9;
	if (r->secs > r->verify_s)
		r->secs -= r->verify_s;
	r->cpu = cpu_ns() - cpu0;
	if (o->peer) {
		/* Our lanes are closed first: the peer gets the device alone. */
		tlm_session_close(s);
		s = NULL;
		if (tlm_cli_rdma_dev_for(host, o->transport_args, r->peer_dev,
					 sizeof(r->peer_dev))) {
			tlm_cli_err("--peer: no RDMA device holds %s (give transport args dev=NAME)",
				    host);
			goto out;
		}
		if (tlm_cli_ib_write_bw(r->peer_dev, host, o->lanes, o->page_size,
					total * o->page_size, &r->peer_Bps))
			goto out;
	}
	status = 0;
out:
	if (zc && s)
		for (unsigned i = 1; i <= o->lanes; i++)
			tlm_lane_unregister_regions(tlm_session_lane(s, i));
	tlm_session_close(s);
	if (zc)
		munmap(zc, zc_len);
	free(text);
	free(jobs);
	pattern_free(&pat);
	return status;
}

/* Both ends here: the receiver a child (tlm_cli_fork_listener), with its
 * own transport args (--fault only on the sending side). Returns 0 when
 * the run completed and the receiver exited cleanly. */
static int loopback(const struct opts *o, struct tlm_session_cfg *cfg, const char *rx_targs,
		    const char *host, struct outcome *r)
{
	struct tlm_session_cfg rcfg = *cfg;
	char port[32];
	pid_t child;
	int rc, st;

	rcfg.transport_args = rx_targs;
	child = tlm_cli_fork_listener(&rcfg, host, port, sizeof(port), receiver_child,
				      (void *)o);
	if (child < 0)
		return -1;
	rc = sender(o, cfg, host, port, r);
	if (rc != 0)
		kill(child, SIGTERM);
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	if (rc == 0 && r->verified && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		tlm_cli_err("the receiver failed");
		r->verified = false;
	}
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm bench transport [--transport NAME] [--lanes N] [--bytes SIZE]\n"
"                           [--page-size N] [--json] [--psk FILE]\n"
"                           [--listen ADDR:PORT | --connect ADDR:PORT]\n"
"                           [--transport-args ARGS] [--rx-transport-args ARGS]\n"
"                           [--timeout MS]\n"
"                           [--verify full|crc] [--copy] [--local-addr ADDR]\n"
"                           [--peer ib_write_bw] [--in-vm]\n"
"                           [--dpdk-args \"ARGS\"] [--fault SPEC]\n"
"                           [--compare tcp] [--no-raw] [--raw-seconds S]\n"
"                           [--rounds N]\n"
"\n"
"Moves SIZE bytes of page records over N data lanes and reports goodput\n"
"(page data per second) per lane and in total; the receiver checks every\n"
"byte of every page. By default both ends run on this machine (loopback,\n"
"random key). --listen runs the receiving end only, --connect the sending\n"
"end only (both need --psk FILE, the same key on both hosts).\n"
"\n"
"  --transport NAME   tcp (default), or another built-in transport\n"
"  --lanes N          data lanes, 1..%d (default 4)\n"
"  --bytes SIZE       total page data, K/M/G suffixes (default 1G)\n"
"  --page-size N      512..65536, a power of two (default 4096)\n"
"  --json             one JSON object instead of the summary\n"
"  --verify full|crc  receiver compares every byte of every page (full,\n"
"                     default), or its stamp and crc32c against the crc of\n"
"                     the expected content (crc: costs the harness less)\n"
"  --transport-args   transport options (tcp: sndbuf=SIZE,rcvbuf=SIZE,nodelay=0|1,\n"
"                     send_timeout=MS)\n"
"  --rx-transport-args ARGS\n"
"                     loopback: the receiving end's own transport args\n"
"                     (default: the sender's); dpdk: e.g. the other end of a\n"
"                     veth pair, vdev=net_af_packet0,iface=B,ip=ADDR (the\n"
"                     sender connects to its ip= unless --local-addr)\n"
"  --rdma-dev NAME    rdma: the device the address must resolve to\n"
"  --rdma-gid N       rdma: the GID index it must use (RoCE v2)\n"
"  --dpdk-args \"ARGS\" dpdk: EAL arguments (default --no-huge --no-pci -m 512)\n"
"  --fault SPEC       dpdk: drop=P,reorder=P,dup=P: lose, reorder, duplicate\n"
"                     that share of the sender's packets (P in 0..1)\n"
"  --timeout MS       per blocking step (default 10000)\n"
"  --copy             copy pages even where the transport could place them\n"
"                     zero-copy (rdma: RDMA WRITE, the default there)\n"
"  --local-addr ADDR  address both ends use without --listen/--connect\n"
"                     (default 127.0.0.1; an RDMA device's address for rdma)\n"
"  --peer ib_write_bw also run perftest's ib_write_bw on the same device, QPs\n"
"                     and message size, and report peer_Bps and the ratio\n"
"  --in-vm            run all of it inside the Soft-RoCE VM of\n"
"                     tests/vm/run-in-vm.sh (no RDMA device needed here)\n"
"  --compare tcp      also run the same bench over tcp lanes on 127.0.0.1\n"
"                     first (loopback only) and report tcp_goodput_Bps and\n"
"                     its per-page CPU figures\n"
"\n"
"dpdk on loopback with the embedded memif (no device in the transport args)\n"
"first blasts raw frames between two fresh processes over the same PMD\n"
"(net_memif) at the lanes' mtu= (default 9000 there), no protocol, and reports\n"
"raw_Bps and ratio = goodput / raw_Bps; the same blast copying page data in\n"
"at the sender and out at the receiver gives raw_copy_Bps and ratio_raw_copy;\n"
"with one pass over each page per side (the sender attaches source pages to\n"
"its frames, the receiver is a zero-copy memif client and copies out): the\n"
"most any page transfer on this path can do, raw_place_Bps, raw_place_over_raw\n"
"and ratio_raw_place.\n"
"dpdk on loopback from one vdev to another (--transport-args vdev=... and\n"
"--rx-transport-args vdev=..., e.g. net_af_packet on the two ends of a veth\n"
"pair) blasts raw frames from the one to the other in the same way, mtu=\n"
"default 1500: raw_Bps, raw_copy_Bps and their ratios (raw_place is the\n"
"zero-copy memif client's, so not there).\n"
"For dpdk also: cycles per page on each side (process CPU x TSC rate /\n"
"pages), pages per second one core sustains, and whether both reach 10GbE\n"
"line rate (290 k pages/s of 4 KiB) on one core.\n"
"  --no-raw           skip the raw blast\n"
"  --raw-seconds S    how long it blasts, 0.1..60 (default 2)\n"
"  --rounds N         loopback: raw blasts then lanes, N times over (1..50,\n"
"                     default 1); the figures are those of the median round\n"
"                     (by lanes / raw, else goodput) and per_round lists all:\n"
"                     on a shared or virtual host whose speed changes from\n"
"                     run to run, a ratio taken within one round holds;\n"
"                     with raw blasts also best: the fastest round of lanes,\n"
"                     raw and raw_place each, and their ratios\n",
		TLM_MAX_LANES - 1);
}

static bool takes_value(const char *a)
{
	static const char *const with_value[] = {
		"--transport", "--transport-args", "--rx-transport-args", "--lanes", "--bytes", "--page-size",
		"--listen", "--connect", "--psk", "--timeout", "--verify", "--local-addr",
		"--peer", "--rdma-dev", "--rdma-gid", "--dpdk-args", "--fault", "--compare",
		"--raw-seconds", "--rounds",
	};

	for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++)
		if (!strcmp(a, with_value[i]))
			return true;
	return false;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .transport = "tcp", .lanes = 4, .bytes = 1ull << 30,
			    .page_size = 4096, .timeout_ms = 10000, .raw_seconds = 2 };
	bool raw_seconds_set = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (!strcmp(a, "--copy")) {
			o->copy = true;
			continue;
		}
		if (!strcmp(a, "--in-vm")) {
			o->in_vm = true;
			continue;
		}
		if (!strcmp(a, "--no-raw")) {
			o->no_raw = true;
			continue;
		}
		if (!takes_value(a)) {
			tlm_cli_err("unknown argument '%s' (see --help)", a);
			return -1;
		}
		if (!v) {
			tlm_cli_err("%s needs a value", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--transport")) {
			o->transport = v;
		} else if (!strcmp(a, "--transport-args")) {
			o->ta.args = v;
		} else if (!strcmp(a, "--rx-transport-args")) {
			o->rx_args = v;
		} else if (!strcmp(a, "--rdma-dev")) {
			o->ta.rdma_dev = v;
		} else if (!strcmp(a, "--rdma-gid")) {
			o->ta.rdma_gid = v;
		} else if (!strcmp(a, "--dpdk-args")) {
			o->ta.dpdk_args = v;
		} else if (!strcmp(a, "--fault")) {
			o->ta.fault = v;
		} else if (!strcmp(a, "--compare")) {
			if (strcmp(v, "tcp")) {
				tlm_cli_err("--compare %s: only tcp is known", v);
				return -1;
			}
			o->compare_tcp = true;
		} else if (!strcmp(a, "--rounds")) {
			if (tlm_cli_parse_size(v, &n) || n < 1 || n > 50) {
				tlm_cli_err("--rounds %s: want 1..50", v);
				return -1;
			}
			o->rounds = (unsigned)n;
		} else if (!strcmp(a, "--raw-seconds")) {
			char *end;

			o->raw_seconds = strtod(v, &end);
			if (end == v || *end || !(o->raw_seconds >= 0.1 && o->raw_seconds <= 60)) {
				tlm_cli_err("--raw-seconds %s: want 0.1..60", v);
				return -1;
			}
			raw_seconds_set = true;
		} else if (!strcmp(a, "--lanes")) {
			if (tlm_cli_parse_size(v, &n) || n < 1 || n >= TLM_MAX_LANES) {
				tlm_cli_err("--lanes %s: want 1..%d", v, TLM_MAX_LANES - 1);
				return -1;
			}
			o->lanes = (unsigned)n;
		} else if (!strcmp(a, "--bytes")) {
			if (tlm_cli_parse_size(v, &n) || n == 0) {
				tlm_cli_err("--bytes %s: want a size such as 4G, 512M, 1048576", v);
				return -1;
			}
			o->bytes = n;
		} else if (!strcmp(a, "--page-size")) {
			if (tlm_cli_parse_size(v, &n) || n < 512 || n > 65536 || (n & (n - 1))) {
				tlm_cli_err("--page-size %s: want a power of two, 512..65536", v);
				return -1;
			}
			o->page_size = (uint32_t)n;
			o->page_size_set = true;
		} else if (!strcmp(a, "--listen")) {
			o->listen = v;
		} else if (!strcmp(a, "--connect")) {
			o->connect = v;
		} else if (!strcmp(a, "--psk")) {
			o->psk_path = v;
		} else if (!strcmp(a, "--local-addr")) {
			o->local_addr = v;
		} else if (!strcmp(a, "--peer")) {
			if (strcmp(v, "ib_write_bw")) {
				tlm_cli_err("--peer %s: only ib_write_bw is known", v);
				return -1;
			}
			o->peer = v;
		} else if (!strcmp(a, "--verify")) {
			if (strcmp(v, "full") && strcmp(v, "crc")) {
				tlm_cli_err("--verify %s: want full or crc", v);
				return -1;
			}
			o->verify_crc = !strcmp(v, "crc");
		} else if (!strcmp(a, "--timeout")) {
			if (tlm_cli_parse_size(v, &n) || n == 0 || n > 3600000) {
				tlm_cli_err("--timeout %s: want milliseconds, 1..3600000", v);
				return -1;
			}
			o->timeout_ms = (int)n;
		} else {
			tlm_cli_err("unknown argument '%s' (see --help)", a);
			return -1;
		}
	}
	if (o->listen && o->connect) {
		tlm_cli_err("--listen and --connect exclude each other (one side each)");
		return -1;
	}
	if (o->peer && (o->listen || o->connect || strcmp(o->transport, "rdma"))) {
		tlm_cli_err("--peer ib_write_bw needs --transport rdma and runs both of its ends "
			    "here: no --listen/--connect");
		return -1;
	}
	if (o->in_vm && (o->listen || o->connect)) {
		tlm_cli_err("--in-vm runs both ends in the VM: no --listen/--connect");
		return -1;
	}
	if (o->compare_tcp && (o->listen || o->connect || !strcmp(o->transport, "tcp"))) {
		tlm_cli_err("--compare tcp runs both ends here, next to another transport: "
			    "no --listen/--connect, no --transport tcp");
		return -1;
	}
	if (o->rounds > 1 && (o->listen || o->connect || o->in_vm || o->peer)) {
		tlm_cli_err("--rounds runs both ends here: no --listen/--connect/--in-vm/--peer");
		return -1;
	}
	if (o->rx_args && (o->listen || o->connect || o->in_vm)) {
		tlm_cli_err("--rx-transport-args is the loopback receiver's: no "
			    "--listen/--connect/--in-vm (each end takes --transport-args)");
		return -1;
	}
	if ((o->no_raw || raw_seconds_set) && strcmp(o->transport, "dpdk")) {
		tlm_cli_err("--no-raw and --raw-seconds need --transport dpdk");
		return -1;
	}
	if (o->in_vm)
		return 0;   /* the copy inside the VM checks the rest */
	if (!tlm_transport_available(o->transport)) {
		char list[256] = "";

		for (unsigned i = 0; tlm_transport_name(i); i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", tlm_transport_name(i));
		tlm_cli_err("transport '%s' is not built in (available: %s)", o->transport, list);
		return -1;
	}
	if (tlm_cli_targs_build(&o->ta, o->transport, o->targs, sizeof(o->targs)))
		return -1;
	o->transport_args = o->targs;
	{
		struct tlm_cli_targs rx = o->ta;

		rx.fault = NULL;
		if (o->rx_args)
			rx.args = o->rx_args;
		if (tlm_cli_targs_build(&rx, o->transport, o->rx_targs, sizeof(o->rx_targs)))
			return -1;
	}
	return 0;
}

/* dpdk on loopback: the raw PMD blast into x (or why not). Returns 0, or
 * -1 after saying why it failed. */
static int raw_phase(const struct opts *o, struct extra *x)
{
	static const enum tlm_raw_mode mode[] = { TLM_RAW_FRAMES, TLM_RAW_COPY, TLM_RAW_PLACE };
	struct tlm__raw_result *res[] = { &x->raw.frames, &x->raw.copy, &x->raw.place };
	int rc = 0;

	if (o->no_raw) {
		x->raw_skipped = "--no-raw";
		return 0;
	}
	for (size_t i = 0; i < 3 && !rc; i++) {
		rc = tlm_cli_raw_blast(o->transport_args, o->rx_targs, o->raw_seconds, mode[i],
				       res[i]);
		if (rc == -EINVAL && mode[i] == TLM_RAW_PLACE)
			rc = 0;   /* a vdev pair: place is the memif client's trick */
	}
	if (rc == -ENODEV) {
		x->raw_skipped = "the transport args name a device both ends share (or a "
				 "port=); the blast runs on the embedded memif, or from one vdev "
				 "to another (--rx-transport-args)";
		return 0;
	}
	if (rc) {
		tlm_cli_err("the raw PMD blast failed: %s (--no-raw skips it)", tlm_strerror(rc));
		return -1;
	}
	x->raw.ran = true;
	return 0;
}

static double round_key(const struct round *d)
{
	double g = goodput(&d->out);

	return d->raw.ran && d->raw.frames.Bps > 0 ? g / d->raw.frames.Bps : g;
}

/* --rounds: each round's raw blasts here, its lanes in a child; the
 * median round (by lanes / raw, else goodput) gives the figures. */
static int run_rounds(const struct opts *o, struct tlm_session_cfg *cfg, const char *host,
		      struct outcome *r, struct extra *x)
{
	size_t sz = o->rounds * sizeof(struct round);
	struct round *rd = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				-1, 0);
	unsigned order[50];

	if (rd == MAP_FAILED) {
		tlm_cli_err("--rounds: %s", strerror(errno));
		return -1;
	}
	memset(rd, 0, sz);
	x->rounds = rd;
	for (unsigned i = 0; i < o->rounds; i++) {
		struct extra xi = { 0 };
		pid_t pid;
		int st;

		if (!strcmp(o->transport, "dpdk")) {
			if (raw_phase(o, &xi))
				return -1;
			x->raw_skipped = xi.raw_skipped;
			rd[i].raw = xi.raw;
		}
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		if (pid < 0) {
			tlm_cli_err("--rounds: fork: %s", strerror(errno));
			return -1;
		}
		if (pid == 0) {
			int rc = loopback(o, cfg, o->rx_targs, host, &rd[i].out);

			rd[i].sender_rss = tlm_cli_peak_rss();
			exit(rc || !rd[i].out.verified ? 1 : 0);
		}
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			tlm_cli_err("round %u of %u failed", i + 1, o->rounds);
			return -1;
		}
		if (!o->json)
			fprintf(stderr, "tlm: round %u/%u: lanes %.1f MB/s%s", i + 1, o->rounds,
				goodput(&rd[i].out) / 1e6, rd[i].raw.ran ? "" : "\n");
		if (!o->json && rd[i].raw.ran)
			fprintf(stderr, ", raw %.1f MB/s, lanes / raw %.2f\n",
				rd[i].raw.frames.Bps / 1e6, round_key(&rd[i]));
	}
	/* the median round, by insertion sort of at most 50 */
	for (unsigned i = 0; i < o->rounds; i++) {
		unsigned k = i;
		while (k && round_key(&rd[order[k - 1]]) > round_key(&rd[i])) {
			order[k] = order[k - 1];
			k--;
		}
		order[k] = i;
	}
	x->nrounds = o->rounds;
	x->median = order[o->rounds / 2];
	*r = rd[x->median].out;
	x->raw = rd[x->median].raw;
	return 0;
}

int tlm_cli_bench_transport(int argc, char **argv)
{
	struct tlm_session_cfg cfg;
	struct tlm_listener *li = NULL;
	struct outcome *r = NULL, *tcp = NULL;
	struct extra x = { 0 };
	struct tlm_psk psk;
	struct opts o;
	char host[256], port[32];
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc > 0 ? 0 : 2;
	if (o.in_vm) {
		tlm_cli_reexec_in_vm("bench", argc, argv, "--in-vm", VM_ADDR, !o.local_addr);
		return 1;
	}
	if (tlm_cli_get_psk(o.psk_path, !o.listen && !o.connect, &psk))
		return 2;

	memset(&cfg, 0, sizeof(cfg));
	cfg.transport = o.transport;
	cfg.transport_args = o.transport_args;
	cfg.psk = &psk;
	cfg.timeout_ms = o.timeout_ms;
	cfg.page_size = o.page_size;

	if (o.listen) {
		if (tlm_cli_parse_hostport(o.listen, host, sizeof(host), port, sizeof(port))) {
			tlm_cli_err("--listen %s: want ADDR:PORT or [V6ADDR]:PORT", o.listen);
			return 2;
		}
		/* Page size is the sender's choice unless given here too. */
		cfg.page_size = o.page_size_set ? o.page_size : 0;
		rc = tlm_listen(&cfg, host, port, &li);
		if (rc) {
			tlm_cli_err("cannot listen on %s: %s", o.listen, tlm_strerror(rc));
			return 1;
		}
		if (!o.json)
			fprintf(stderr, "tlm: receiver listening on %s port %d\n", host,
				tlm_listener_port(li));
		rc = receiver(li, &o, true);
		tlm_listener_close(li);
		return rc == 0 ? 0 : 1;
	}

	cfg.n_lanes = o.lanes;
	for (unsigned i = 1; i <= o.lanes; i++)
		cfg.lane_modes[i] = TLM_MODE_PAGES;
	/* Region 0: the receiver's zero-copy window (none with --copy). */
	if (!o.copy) {
		uint64_t w = pages_total(&o) < ZC_WINDOW / o.page_size ? pages_total(&o)
								 : ZC_WINDOW / o.page_size;
		cfg.n_regions = 1;
		cfg.region_len[0] = (w < o.lanes ? o.lanes : w / o.lanes * o.lanes) * o.page_size;
	}

	rc = 1;
	r = calloc(1, sizeof(*r));
	tcp = o.compare_tcp ? calloc(1, sizeof(*tcp)) : NULL;
	if (!r || (o.compare_tcp && !tcp)) {
		tlm_cli_err("out of memory");
		goto out;
	}
	if (o.connect) {
		if (tlm_cli_parse_hostport(o.connect, host, sizeof(host), port, sizeof(port))) {
			tlm_cli_err("--connect %s: want ADDR:PORT or [V6ADDR]:PORT", o.connect);
			rc = 2;
			goto out;
		}
		if (!strcmp(o.transport, "dpdk"))
			x.raw_skipped = "--connect: the blast runs both of its ends here";
		if (sender(&o, &cfg, host, port, r))
			goto out;
	} else {
		/* Loopback: the raw blast first, while this process has no
		 * EAL; the receivers are children (tlm_cli_fork_listener). */
		snprintf(host, sizeof(host), "%s", o.local_addr ? o.local_addr : "127.0.0.1");
		/* dpdk to a receiver with an address of its own: connect there */
		const char *rip = o.rx_args ? strstr(o.rx_args, "ip=") : NULL;
		if (!o.local_addr && rip && (rip == o.rx_args || rip[-1] == ','))
			snprintf(host, sizeof(host), "%.*s", (int)strcspn(rip + 3, ","), rip + 3);
		if (o.rounds <= 1 && !strcmp(o.transport, "dpdk") && raw_phase(&o, &x))
			goto out;
		if (tcp) {
			struct tlm_session_cfg tcfg = cfg;

			tcfg.transport = "tcp";
			tcfg.transport_args = "";
			if (loopback(&o, &tcfg, "", "127.0.0.1", tcp))
				goto out;
			x.tcp = tcp;
		}
		if (o.rounds > 1 ? run_rounds(&o, &cfg, host, r, &x) :
				   loopback(&o, &cfg, o.rx_targs, host, r))
			goto out;
	}
	if (!strcmp(o.transport, "dpdk") && tlm_cli_tsc_hz)
		x.tsc_hz = x.raw.ran ? x.raw.frames.tsc_hz : tlm_cli_tsc_hz();
	print_result(&o, r, &x);
	if (!r->verified || (tcp && !tcp->verified)) {
		tlm_cli_err("the receiver did not verify every page%s",
			    r->verified ? " of the tcp comparison" : "");
		goto out;
	}
	rc = 0;
out:
	if (x.rounds)
		munmap((void *)x.rounds, o.rounds * sizeof(*x.rounds));
	free(tcp);
	free(r);
	return rc;
}
