/* SPDX-License-Identifier: MIT */
/*
 * The lane conformance suite: every transport runs it unchanged.
 *
 *   lane_conformance --transport NAME [--args ARGS] [--case NAME] [--list]
 *
 * Each case forks two children, the accepting side and the connecting side,
 * so a transport with per-process state (DPDK's EAL) starts clean in each;
 * the parent only passes the listening port along and collects exit codes.
 * A child reports failure by exiting non-zero after printing why.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tlm-internal.h"
#include "tests/check.h"

/* How long a lane may see nothing before a case fails: generous, since the
 * rdma cases run sealed over Soft-RoCE in a TCG VM on a loaded CI machine,
 * where 16 lanes of sealed pages took over 20 s before one lane's turn
 * came. A stuck lane still fails, only later; tests never fail on speed. */
#define WAIT_MS 120000

static const char *transport = "tcp";
static int run_protect = TLM_PROTECT_ENCRYPT; /* --protect */
static int protect;                           /* this case's: the run's, or its own */
static const char *targs;
static const char *addr = "127.0.0.1"; /* --addr: rdma_cm needs an rxe address */
static struct tlm_psk psk, wrong_psk;

static void log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_WARN || getenv("TLM_TEST_DEBUG"))
		fprintf(stderr, "    [%d] %s: %s\n", (int)getpid(),
			level == TLM_LOG_ERR ? "error" : level == TLM_LOG_WARN ? "warn" : "info", msg);
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

/* Deterministic content: byte i of stream (lane, dir) */
static uint8_t pat(unsigned lane, unsigned dir, uint64_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + lane * 131 + dir * 7919;
	return (uint8_t)(x >> 29 ^ x >> 7 ^ i);
}

static void fill_page(uint8_t *p, uint32_t len, unsigned lane, uint64_t idx)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = pat(lane, 2, idx * 8191 + i);
}

static struct tlm_session_cfg base_cfg(unsigned lanes, enum tlm_lane_mode mode)
{
	struct tlm_session_cfg c = {
		.transport = transport, .transport_args = targs, .n_lanes = lanes,
		.page_size = 4096, .psk = &psk, .timeout_ms = WAIT_MS, .protect = protect,
	};
	for (unsigned i = 1; i <= lanes; i++)
		c.lane_modes[i] = (uint8_t)mode;
	return c;
}

/* ---- the case harness ---- */

typedef void (*side_fn)(struct tlm_listener *l, const char *port, void *arg);

struct tcase {
	const char *name;
	side_fn acceptor;   /* gets the listener */
	side_fn connector;  /* gets the port */
	unsigned lanes;
	enum tlm_lane_mode mode;
	int acceptor_exit;  /* expected exit code of the accepting side */
	unsigned acc_lanes; /* data lanes the acceptor insists on (0 = any) */
	int protect;        /* -1: the run's --protect; else this one */
};

static int run_case(const struct tcase *tc)
{
	int pfd[2], st_a = 0, st_c = 0;
	pid_t a, c;
	char port[16] = "";

	protect = tc->protect >= 0 ? tc->protect : run_protect;
	CHECK(pipe(pfd) == 0);
	a = fork();
	if (a == 0) {
		struct tlm_session_cfg cfg = base_cfg(tc->lanes, tc->mode);
		struct tlm_listener *l;
		int err;

		close(pfd[0]);
		alarm(120);
		tlm_set_log_fn(log_cb, NULL);
		cfg.n_lanes = tc->acc_lanes;
		err = tlm_listen(&cfg, addr, "0", &l);
		if (err)
			FAIL("listen: %s", tlm_strerror(err));
		dprintf(pfd[1], "%d\n", tlm_listener_port(l));
		close(pfd[1]);
		tc->acceptor(l, NULL, NULL);
		tlm_listener_close(l);
		exit(0);
	}
	close(pfd[1]);
	{
		ssize_t r = read(pfd[0], port, sizeof(port) - 1);
		close(pfd[0]);
		if (r <= 0) {
			waitpid(a, &st_a, 0);
			fprintf(stderr, "  acceptor died before listening\n");
			return 1;
		}
		port[r] = 0;
		port[strcspn(port, "\n")] = 0;
	}
	c = fork();
	if (c == 0) {
		alarm(120);
		tlm_set_log_fn(log_cb, NULL);
		tc->connector(NULL, port, NULL);
		exit(0);
	}
	waitpid(c, &st_c, 0);
	waitpid(a, &st_a, 0);
	if (!WIFEXITED(st_c) || WEXITSTATUS(st_c) != 0) {
		fprintf(stderr, "  connector failed (status 0x%x)\n", st_c);
		return 1;
	}
	if (!WIFEXITED(st_a) || WEXITSTATUS(st_a) != tc->acceptor_exit) {
		fprintf(stderr, "  acceptor failed (status 0x%x)\n", st_a);
		return 1;
	}
	return 0;
}

/* The acceptor's last word: tell the connector everything arrived. The
 * connector checks the byte and closes at once, so a transport whose flush
 * waits for delivery confirmation may see that close first; what matters
 * (and what the connector asserts) is that the byte arrived. */
static void final_ack(struct tlm_session *s)
{
	uint8_t ack = 1;
	int err;

	CHECK(tlm_lane_write(tlm_session_lane(s, 0), &ack, 1) == 1);
	err = tlm_lane_flush(tlm_session_lane(s, 0));
	if (err < 0 && err != -TLM_EPEERCLOSED)
		FAIL("final ack: %s", tlm_strerror(err));
}

static struct tlm_session *do_accept(struct tlm_listener *l)
{
	struct tlm_session *s;
	int err = tlm_accept(l, 30000, &s);

	if (err)
		FAIL("accept: %s", tlm_strerror(err));
	return s;
}

static struct tlm_session *do_connect(const char *port, unsigned lanes, enum tlm_lane_mode mode)
{
	struct tlm_session_cfg cfg = base_cfg(lanes, mode);
	struct tlm_session *s;
	int err = tlm_connect(&cfg, addr, port, &s);

	if (err)
		FAIL("connect: %s", tlm_strerror(err));
	CHECK(tlm_session_lanes(s) == lanes);
	return s;
}

/* ---- byte-stream mode: ordered, both directions, orderly end ---- */

#define STREAM_BYTES (3u << 20)

struct bs_arg { struct tlm_lane *l; unsigned lane; unsigned dir; int ok; };

static void *bs_writer(void *p)
{
	struct bs_arg *a = p;
	static __thread uint8_t buf[70000];
	uint64_t off = 0, seed = a->lane * 17 + 1;

	while (off < STREAM_BYTES) {
		/* Odd sizes, from 1 byte to more than one frame. */
		size_t n = (size_t)((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33) % sizeof(buf) + 1;
		if (n > STREAM_BYTES - off)
			n = STREAM_BYTES - off;
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(a->lane, a->dir, off + i);
		if (tlm_lane_write(a->l, buf, n) != (ssize_t)n)
			return NULL;
		off += n;
	}
	a->ok = tlm_lane_shutdown(a->l) == 0;
	return NULL;
}

static void *bs_reader(void *p)
{
	struct bs_arg *a = p;
	static __thread uint8_t buf[50000];
	uint64_t off = 0;

	for (;;) {
		ssize_t r = tlm_lane_read(a->l, buf, sizeof(buf), WAIT_MS);
		if (r == 0)
			break;
		if (r < 0) {
			fprintf(stderr, "  lane %u read: %s\n", a->lane, tlm_strerror((int)r));
			return NULL;
		}
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != pat(a->lane, a->dir, off + (uint64_t)i)) {
				fprintf(stderr, "  lane %u byte %llu differs\n", a->lane,
					(unsigned long long)(off + (uint64_t)i));
				return NULL;
			}
		off += (uint64_t)r;
	}
	a->ok = off == STREAM_BYTES;
	if (!a->ok)
		fprintf(stderr, "  lane %u: %llu bytes, expected %u\n", a->lane,
			(unsigned long long)off, STREAM_BYTES);
	return NULL;
}

/* Both ends write their stream and read the other's, on every lane at once. */
static void bytes_both_ways(struct tlm_session *s, unsigned my_dir)
{
	unsigned n = tlm_session_lanes(s);
	struct bs_arg w[TLM_MAX_LANES], r[TLM_MAX_LANES];
	pthread_t tw[TLM_MAX_LANES], tr[TLM_MAX_LANES];

	for (unsigned i = 1; i <= n; i++) {
		w[i] = (struct bs_arg){ tlm_session_lane(s, i), i, my_dir, 0 };
		r[i] = (struct bs_arg){ tlm_session_lane(s, i), i, !my_dir, 0 };
		CHECK(pthread_create(&tw[i], NULL, bs_writer, &w[i]) == 0);
		CHECK(pthread_create(&tr[i], NULL, bs_reader, &r[i]) == 0);
	}
	for (unsigned i = 1; i <= n; i++) {
		pthread_join(tw[i], NULL);
		pthread_join(tr[i], NULL);
		if (!w[i].ok || !r[i].ok)
			FAIL("lane %u: write ok %d, read ok %d", i, w[i].ok, r[i].ok);
	}
}

static void bytes_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_accept(l);
	(void)port; (void)arg;
	bytes_both_ways(s, 1);
	tlm_session_close(s);
}

#define BYTES_CONN(N) \
static void bytes_conn_##N(struct tlm_listener *l, const char *port, void *arg) \
{ \
	struct tlm_session *s = do_connect(port, N, TLM_MODE_BYTES); \
	(void)l; (void)arg; \
	bytes_both_ways(s, 0); \
	tlm_session_close(s); \
}
BYTES_CONN(1)
BYTES_CONN(4)
BYTES_CONN(16)

/* ---- page mode: bursts of 1..4096, zero-length and max-size records ---- */

static const unsigned bursts[] = { 1, 2, 7, 64, 1000, 4096, 3 };
#define BURST_TOTAL (1 + 2 + 7 + 64 + 1000 + 4096 + 3)

struct pg_rx { unsigned lane; uint64_t next; uint64_t applied; int bad; bool last; };

static int pg_apply(void *arg, const struct tlm_page_rec *r)
{
	struct pg_rx *rx = arg;
	static __thread uint8_t want[65536];

	if (rx->last) {
		rx->bad = 1;
		return -EPROTO;
	}
	if (r->flags & TLM_PF_LAST) {
		rx->last = true;
		return 0;
	}
	if (r->index != rx->next || r->region != rx->lane % 4 || r->epoch != (uint32_t)(r->index / 100)) {
		fprintf(stderr, "  lane %u: got page %llu, expected %llu\n", rx->lane,
			(unsigned long long)r->index, (unsigned long long)rx->next);
		rx->bad = 1;
		return -EPROTO;
	}
	if (r->index % 5 == 0) {
		if (!(r->flags & TLM_PF_ZERO) || r->len != 0)
			rx->bad = 1;
	} else {
		uint32_t len = r->index % 5 == 1 ? 4096 : (uint32_t)(r->index * 37 % 4096) + 1;
		fill_page(want, len, rx->lane, r->index);
		if (r->len != len || memcmp(want, r->data, len) != 0) {
			fprintf(stderr, "  lane %u page %llu: content differs\n", rx->lane,
				(unsigned long long)r->index);
			rx->bad = 1;
			return -EPROTO;
		}
	}
	rx->next++;
	rx->applied++;
	return 0;
}

static void *pg_recv_thread(void *p)
{
	struct pg_rx *rx = p;
	struct tlm_page_sink sink = { pg_apply, rx };
	struct tlm_session *s = *(struct tlm_session **)((char *)p + sizeof(*rx));
	struct tlm_lane *l = tlm_session_lane(s, rx->lane);

	while (!rx->last && !rx->bad) {
		int n = tlm_lane_recv_pages(l, &sink, WAIT_MS);
		if (n < 0) {
			fprintf(stderr, "  lane %u recv: %s\n", rx->lane, tlm_strerror(n));
			rx->bad = 1;
		} else if (n == 0) {
			fprintf(stderr, "  lane %u recv: timed out\n", rx->lane);
			rx->bad = 1;
		}
	}
	return NULL;
}

struct pg_rx_slot { struct pg_rx rx; struct tlm_session *s; };

static void pages_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_accept(l);
	unsigned n = tlm_session_lanes(s);
	struct pg_rx_slot slot[TLM_MAX_LANES];
	pthread_t t[TLM_MAX_LANES];

	(void)port; (void)arg;
	for (unsigned i = 1; i <= n; i++) {
		slot[i] = (struct pg_rx_slot){ { i, 0, 0, 0, false }, s };
		CHECK(pthread_create(&t[i], NULL, pg_recv_thread, &slot[i]) == 0);
	}
	for (unsigned i = 1; i <= n; i++) {
		pthread_join(t[i], NULL);
		if (slot[i].rx.bad || slot[i].rx.applied != BURST_TOTAL || !slot[i].rx.last)
			FAIL("lane %u: applied %llu of %u", i,
			     (unsigned long long)slot[i].rx.applied, BURST_TOTAL);
	}
	/* Tell the sender everything arrived, so it does not close early. */
	final_ack(s);
	tlm_session_close(s);
}

struct pg_tx { struct tlm_session *s; unsigned lane; int ok; };

static void *pg_send_thread(void *p)
{
	struct pg_tx *a = p;
	struct tlm_lane *l = tlm_session_lane(a->s, a->lane);
	struct tlm_page_rec *recs = calloc(4096, sizeof(*recs));
	uint8_t *bufs = malloc(4096u * 4096u);
	uint64_t idx = 0;

	for (size_t b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
		for (unsigned k = 0; k < bursts[b]; k++, idx++) {
			struct tlm_page_rec *r = &recs[k];
			uint8_t *d = bufs + (size_t)k * 4096;
			r->index = idx;
			r->epoch = (uint32_t)(idx / 100);
			r->region = (uint16_t)(a->lane % 4);
			if (idx % 5 == 0) {
				r->flags = TLM_PF_ZERO;
				r->len = 0;
				r->data = NULL;
				r->crc = 0;
			} else {
				r->flags = 0;
				r->len = idx % 5 == 1 ? 4096 : (uint32_t)(idx * 37 % 4096) + 1;
				fill_page(d, r->len, a->lane, idx);
				r->data = d;
				r->crc = tlm_crc32c(0, d, r->len);
			}
		}
		if (tlm_lane_send_pages(l, recs, bursts[b]) != (int)bursts[b])
			goto out;
	}
	recs[0] = (struct tlm_page_rec){ .flags = TLM_PF_LAST };
	if (tlm_lane_send_pages(l, recs, 1) != 1 || tlm_lane_flush(l) != 0)
		goto out;
	a->ok = 1;
out:
	free(recs);
	free(bufs);
	return NULL;
}

static void pages_send_all(struct tlm_session *s)
{
	unsigned n = tlm_session_lanes(s);
	struct pg_tx a[TLM_MAX_LANES];
	pthread_t t[TLM_MAX_LANES];
	uint8_t ack = 0;

	for (unsigned i = 1; i <= n; i++) {
		a[i] = (struct pg_tx){ s, i, 0 };
		CHECK(pthread_create(&t[i], NULL, pg_send_thread, &a[i]) == 0);
	}
	for (unsigned i = 1; i <= n; i++) {
		pthread_join(t[i], NULL);
		if (!a[i].ok)
			FAIL("lane %u: send failed", i);
	}
	CHECK(tlm_lane_read(tlm_session_lane(s, 0), &ack, 1, 60000) == 1 && ack == 1);
}

#define PAGES_CONN(N) \
static void pages_conn_##N(struct tlm_listener *l, const char *port, void *arg) \
{ \
	struct tlm_session *s = do_connect(port, N, TLM_MODE_PAGES); \
	(void)l; (void)arg; \
	pages_send_all(s); \
	tlm_session_close(s); \
}
PAGES_CONN(1)
PAGES_CONN(4)
PAGES_CONN(16)

/* ---- the peer vanishes mid-stream: an error, not a hang ---- */

static void close_pages_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_accept(l);
	struct pg_rx rx = { 1, 0, 0, 0, false };
	struct tlm_page_sink sink = { pg_apply, &rx };
	int n;

	(void)port; (void)arg;
	do
		n = tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, WAIT_MS);
	while (n > 0);
	if (n != -TLM_EPEERCLOSED && n != -ECONNRESET)
		FAIL("expected the lane to fail with peer closed, got %d (%s)", n, tlm_strerror(n));
	CHECK(rx.applied == 64 && !rx.bad);
	/* The byte-stream control lane reports the same, not an orderly 0. */
	{
		uint8_t b;
		ssize_t r = tlm_lane_read(tlm_session_lane(s, 0), &b, 1, WAIT_MS);
		if (r != -TLM_EPEERCLOSED && r != -ECONNRESET)
			FAIL("control lane read after peer vanished: %zd", r);
	}
	tlm_session_close(s);
}

static void close_pages_conn(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_connect(port, 1, TLM_MODE_PAGES);
	struct tlm_page_rec recs[64];
	static uint8_t d[64][4096];

	(void)l; (void)arg;
	for (unsigned k = 0; k < 64; k++) {
		recs[k] = (struct tlm_page_rec){ .index = k, .epoch = 0, .region = 1 };
		if (k % 5 == 0) {
			recs[k].flags = TLM_PF_ZERO;
		} else {
			recs[k].len = k % 5 == 1 ? 4096 : (uint32_t)(k * 37 % 4096) + 1;
			fill_page(d[k], recs[k].len, 1, k);
			recs[k].data = d[k];
			recs[k].crc = tlm_crc32c(0, d[k], recs[k].len);
		}
	}
	CHECK(tlm_lane_send_pages(tlm_session_lane(s, 1), recs, 64) == 64);
	CHECK_OK(tlm_lane_flush(tlm_session_lane(s, 1)));
	usleep(300000);
	/* Abrupt: no shutdown, no LAST record. */
	tlm_session_close(s);
}

/* ---- malformed and truncated frames: an error, nothing applied ---- */

static int count_apply(void *arg, const struct tlm_page_rec *r)
{
	(void)r;
	(*(unsigned *)arg)++;
	return 0;
}

/* BAD_PLACED: a header-only record claiming its data was placed by RDMA
 * WRITE, to a receiver that offered no region; BAD_REGION: a region offer
 * sent the wrong way (only a receiver offers); BAD_DATA: a byte-mode frame
 * carrying a well-formed page record. */
enum bad_kind { BAD_CHECK, BAD_TOO_BIG, BAD_CRC, BAD_TRUNC, BAD_TYPE, BAD_FLAGS, BAD_PLACED,
		BAD_REGION, BAD_DATA, BAD_KINDS };

static void malformed_acc(struct tlm_listener *l, const char *port, void *arg)
{
	(void)port; (void)arg;
	for (int k = 0; k < BAD_KINDS; k++) {
		struct tlm_session *s = do_accept(l);
		unsigned applied = 0;
		struct tlm_page_sink sink = { count_apply, &applied };
		int n, total = 0;

		do {
			n = tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, WAIT_MS);
			if (n > 0)
				total += n;
		} while (n > 0);
		/* One good record went first; the bad one must not be applied. */
		if (applied != 1 || total != 1)
			FAIL("kind %d: %u records applied, expected only the good one", k, applied);
		if (k == BAD_CRC && n != -TLM_ECRC)
			FAIL("kind %d: expected crc error, got %s", k, tlm_strerror(n));
		if (k == BAD_TRUNC && n != -TLM_EPEERCLOSED && n != -TLM_EFRAME)
			FAIL("kind %d: expected peer-closed/frame error, got %s", k, tlm_strerror(n));
		if (k != BAD_CRC && k != BAD_TRUNC && n != -TLM_EFRAME)
			FAIL("kind %d: expected frame error, got %s", k, tlm_strerror(n));
		/* The lane stays failed. */
		CHECK(tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, 100) < 0);
		CHECK(applied == 1);
		tlm_session_close(s);
	}
}

static void malformed_conn(struct tlm_listener *l, const char *port, void *arg)
{
	(void)l; (void)arg;
	for (int k = 0; k < BAD_KINDS; k++) {
		struct tlm_session *s = do_connect(port, 1, TLM_MODE_PAGES);
		struct tlm_lane *ln = tlm_session_lane(s, 1);
		static uint8_t page[4096];
		uint8_t frame[TLM_FRAME_HDR + TLM_PAGE_HDR + 4096 + 16];
		struct tlm_page_rec r = { .index = 0, .len = 4096, .data = page };
		size_t flen;
		uint8_t ack;

		memset(page, 0x5a, sizeof(page));
		r.crc = tlm_crc32c(0, page, 4096);
		CHECK(tlm_lane_send_pages(ln, &r, 1) == 1);
		CHECK_OK(tlm_lane_flush(ln));
		r.index = 1;
		tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + 4096, TLM_FT_PAGE);
		tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &r);
		memcpy(frame + TLM_FRAME_HDR + TLM_PAGE_HDR, page, 4096);
		flen = TLM_FRAME_HDR + TLM_PAGE_HDR + 4096;
		switch (k) {
		case BAD_CHECK: frame[7] ^= 0x40; break;
		case BAD_TOO_BIG:
			r.len = 4096 + 8;
			tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + r.len, TLM_FT_PAGE);
			tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &r);
			flen += 8;
			break;
		case BAD_CRC: frame[TLM_FRAME_HDR + TLM_PAGE_HDR + 100] ^= 1; break;
		case BAD_TRUNC: flen -= 1000; break;
		case BAD_TYPE: tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + 4096, 99); break;
		case BAD_FLAGS:
			r.flags = 0x4000;
			tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &r);
			break;
		case BAD_PLACED:
			r.flags = TLM_PF_PLACED;
			r.crc = 0;
			tlm__frame_hdr_encode(frame, TLM_PAGE_HDR, TLM_FT_PAGE);
			tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &r);
			flen = TLM_FRAME_HDR + TLM_PAGE_HDR;
			break;
		case BAD_DATA:
			tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + 4096, TLM_FT_DATA);
			break;
		case BAD_REGION: {
			struct tlm_region_offer o = { .region = 0, .offered = true, .rkey = 7,
						      .addr = 1 << 20, .len = 1 << 20 };
			tlm__frame_hdr_encode(frame, TLM_REGION_LEN, TLM_FT_REGION);
			tlm__region_encode(frame + TLM_FRAME_HDR, &o);
			flen = TLM_FRAME_HDR + TLM_REGION_LEN;
			break;
		}
		}
		CHECK_OK(tlm__lane_inject_raw(ln, frame, flen));
		/* Wait until the receiver has judged it, then close abruptly. */
		(void)tlm_lane_read(tlm_session_lane(s, 0), &ack, 1, k == BAD_TRUNC ? 500 : 3000);
		tlm_session_close(s);
	}
}

/* ---- slow receiver: back-pressure, bounded memory on both sides ---- */

#define SLOW_PAGES 16384  /* 64 MiB */

static int slow_apply(void *arg, const struct tlm_page_rec *r)
{
	struct pg_rx *rx = arg;
	if (r->flags & TLM_PF_LAST) {
		rx->last = true;
		return 0;
	}
	if (r->index != rx->next || r->len != 4096 ||
	    ((const uint8_t *)r->data)[0] != (uint8_t)r->index ||
	    ((const uint8_t *)r->data)[4095] != (uint8_t)(r->index >> 8))
		rx->bad = 1;
	rx->next++;
	rx->applied++;
	return 0;
}

static void slow_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_accept(l);
	struct pg_rx rx = { 1, 0, 0, 0, false };
	struct tlm_page_sink sink = { slow_apply, &rx };
	uint64_t rss0 = rss_bytes(), peak = rss0;

	(void)port; (void)arg;
	usleep(500000); /* let the sender fill every buffer there is */
	while (!rx.last && !rx.bad) {
		int n = tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, WAIT_MS);
		if (n <= 0)
			FAIL("recv: %s", n ? tlm_strerror(n) : "timeout");
		if (rx.applied % 2048 < (unsigned)n)
			usleep(20000);
		if (rss_bytes() > peak)
			peak = rss_bytes();
	}
	CHECK(!rx.bad && rx.applied == SLOW_PAGES);
	fprintf(stderr, "    receiver rss growth %llu KiB\n", (unsigned long long)((peak - rss0) >> 10));
	CHECK(peak - rss0 < 48ull << 20);
	final_ack(s);
	tlm_session_close(s);
}

static void slow_conn(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s = do_connect(port, 1, TLM_MODE_PAGES);
	uint8_t *mem = malloc((size_t)SLOW_PAGES * 4096);
	struct tlm_page_rec recs[256];
	uint64_t rss0, peak;
	uint8_t ack = 0;

	(void)l; (void)arg;
	CHECK(mem);
	for (uint64_t i = 0; i < SLOW_PAGES; i++) {
		memset(mem + i * 4096, 0x11, 4096);
		mem[i * 4096] = (uint8_t)i;
		mem[i * 4096 + 4095] = (uint8_t)(i >> 8);
	}
	rss0 = rss_bytes();
	peak = rss0;
	for (uint64_t i = 0; i < SLOW_PAGES; i += 256) {
		for (unsigned k = 0; k < 256; k++) {
			uint8_t *d = mem + (i + k) * 4096;
			recs[k] = (struct tlm_page_rec){ .index = i + k, .len = 4096, .data = d,
				.crc = tlm_crc32c(0, d, 4096) };
		}
		CHECK(tlm_lane_send_pages(tlm_session_lane(s, 1), recs, 256) == 256);
		if (rss_bytes() > peak)
			peak = rss_bytes();
	}
	recs[0] = (struct tlm_page_rec){ .flags = TLM_PF_LAST };
	CHECK(tlm_lane_send_pages(tlm_session_lane(s, 1), recs, 1) == 1);
	CHECK_OK(tlm_lane_flush(tlm_session_lane(s, 1)));
	fprintf(stderr, "    sender rss growth %llu KiB\n", (unsigned long long)((peak - rss0) >> 10));
	CHECK(peak - rss0 < 48ull << 20);
	CHECK(tlm_lane_read(tlm_session_lane(s, 0), &ack, 1, 60000) == 1);
	tlm_session_close(s);
	free(mem);
}

/* ---- authentication: wrong key, raw unauthenticated peer, bad version ---- */

static void auth_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s;
	uint8_t b = 0;

	(void)port; (void)arg;
	/* The connector first tries a wrong key, then raw garbage, then an
	 * unauthenticated page, then another version, then does it right.
	 * Only the last one may produce a session. */
	s = do_accept(l);
	CHECK(tlm_lane_read(tlm_session_lane(s, 0), &b, 1, WAIT_MS) == 1 && b == 42);
	tlm_session_close(s);
}

static void auth_conn(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session_cfg cfg = base_cfg(2, TLM_MODE_PAGES);
	const struct tlm_lane_ops *ops = tlm__transport_find(transport);
	struct tlm_session *s = NULL;
	struct tlm_lane *raw;
	uint8_t buf[256];
	int err;

	(void)l; (void)arg;
	/* 1. wrong key: refused, and we learn so (the acceptor proves its key). */
	cfg.psk = &wrong_psk;
	err = tlm_connect(&cfg, addr, port, &s);
	if (err != -TLM_EAUTH)
		FAIL("wrong key: expected authentication failure, got %s", tlm_strerror(err));
	/* 2. garbage instead of a hello. */
	CHECK_OK(ops->connect(addr, port, targs, 0, 5000, &raw));
	memset(buf, 0xee, sizeof(buf));
	CHECK_OK(tlm__lane_inject_raw(raw, buf, sizeof(buf)));
	usleep(100000);
	ops->close(raw);
	/* 3. a page record straight away, no handshake. */
	CHECK_OK(ops->connect(addr, port, targs, 1, 5000, &raw));
	{
		static uint8_t page[4096];
		struct tlm_page_rec r = { .index = 0, .len = 4096, .data = page,
					  .crc = tlm_crc32c(0, page, 4096) };
		uint8_t f[TLM_FRAME_HDR + TLM_PAGE_HDR];
		tlm__frame_hdr_encode(f, TLM_PAGE_HDR + 4096, TLM_FT_PAGE);
		tlm__page_hdr_encode(f + TLM_FRAME_HDR, &r);
		CHECK_OK(tlm__lane_inject_raw(raw, f, sizeof(f)));
		CHECK_OK(tlm__lane_inject_raw(raw, page, sizeof(page)));
	}
	usleep(100000);
	ops->close(raw);
	/* 4. a hello of wire version 9: the answer names the acceptor's version. */
	CHECK_OK(ops->connect(addr, port, targs, 0, 5000, &raw));
	{
		struct tlm_hello h = { .magic = TLM_WIRE_MAGIC, .version = 9 };
		struct tlm_errmsg e;
		uint32_t len;
		uint8_t type;
		int n = tlm__hello_encode(buf, sizeof(buf), &h);
		tlm__put16(buf + 4, 9);
		CHECK_OK(tlm__msg_send(raw, TLM_FT_HELLO, buf, (uint32_t)n));
		CHECK_OK(tlm_lane_flush(raw));
		CHECK_OK(tlm__msg_recv(raw, &type, buf, sizeof(buf), &len, 5000));
		CHECK(type == TLM_FT_ERROR);
		CHECK_OK(tlm__errmsg_decode(buf, len, &e));
		CHECK(e.code == -TLM_EVERSION && e.version == TLM_WIRE_VERSION);
		char mine[32];

		snprintf(mine, sizeof(mine), "version %d", TLM_WIRE_VERSION);
		if (!strstr(e.text, mine) || !strstr(e.text, "9"))
			FAIL("version error does not name both versions: '%s'", e.text);
	}
	ops->close(raw);
	/* 4b. a proof that is wrong: the acceptor must refuse it itself (not
	 * rely on the connector noticing the acceptor's proof is wrong). */
	CHECK_OK(ops->connect(addr, port, targs, 0, 5000, &raw));
	{
		struct tlm_hello h = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION };
		struct tlm_errmsg e;
		uint8_t mac[TLM_MAC_LEN];
		uint32_t len;
		uint8_t type;
		int n;

		h.protect = (uint8_t)protect;
		h.cipher = protect == TLM_PROTECT_NONE ? TLM_CIPHER_NONE : TLM_CIPHER_AES256GCM;
		CHECK_OK(tlm__random(h.sid, sizeof(h.sid)));
		CHECK_OK(tlm__random(h.nonce, sizeof(h.nonce)));
		CHECK_OK(tlm__random(mac, sizeof(mac)));
		n = tlm__hello_encode(buf, sizeof(buf), &h);
		CHECK(n > 0);
		CHECK_OK(tlm__msg_send(raw, TLM_FT_HELLO, buf, (uint32_t)n));
		CHECK_OK(tlm_lane_flush(raw));
		CHECK_OK(tlm__msg_recv(raw, &type, buf, sizeof(buf), &len, 5000));
		CHECK(type == TLM_FT_CHALLENGE, "frame type %u for the challenge", type);
		/* The acceptor's nonce and nothing else: a stranger gets nothing a
		 * key could be tested against. */
		CHECK(len == TLM_CHALLENGE_LEN, "a challenge of %u bytes", len);
		CHECK_OK(tlm__msg_send(raw, TLM_FT_AUTH, mac, sizeof(mac)));
		CHECK_OK(tlm_lane_flush(raw));
		err = tlm__msg_recv(raw, &type, buf, sizeof(buf), &len, 5000);
		CHECK(err == 0 && type == TLM_FT_ERROR,
		      "a wrong proof got %s, frame type %u, not an error", tlm_strerror(err), type);
		CHECK(err == 0 && tlm__errmsg_decode(buf, len, &e) == 0 && e.code == -TLM_EAUTH);
	}
	ops->close(raw);
	/* 5. the right key. */
	cfg.psk = &psk;
	CHECK_OK(tlm_connect(&cfg, addr, port, &s));
	{
		uint8_t b = 42;
		CHECK(tlm_lane_write(tlm_session_lane(s, 0), &b, 1) == 1);
		CHECK_OK(tlm_lane_flush(tlm_session_lane(s, 0)));
	}
	usleep(200000);
	tlm_session_close(s);
}

/* Parameters the acceptor cannot take are refused on both sides, clearly:
 * a page size that is not a power of two, or a lane count other than the
 * one the acceptor was configured for (the "lanes" case's acceptor expects
 * 3 data lanes). */
static void params_acc(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session *s;
	int err;

	(void)port; (void)arg;
	err = tlm_accept(l, WAIT_MS, &s);
	if (err == 0)
		FAIL("accepted a session with parameters it should refuse");
	if (err != -TLM_EPARAM)
		FAIL("expected a parameter refusal, got %s", tlm_strerror(err));
}

static void pagesize_conn(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session_cfg cfg = base_cfg(2, TLM_MODE_PAGES);
	struct tlm_session *s;
	int err;

	(void)l; (void)arg;
	cfg.page_size = 3000;
	err = tlm_connect(&cfg, addr, port, &s);
	if (err != -TLM_EPARAM)
		FAIL("expected the peer to refuse our page size, got %s", tlm_strerror(err));
}

static void lanes_conn(struct tlm_listener *l, const char *port, void *arg)
{
	struct tlm_session_cfg cfg = base_cfg(2, TLM_MODE_PAGES);
	struct tlm_session *s;
	int err;

	(void)l; (void)arg;
	err = tlm_connect(&cfg, addr, port, &s);
	if (err != -TLM_EPARAM)
		FAIL("expected the peer to refuse 2 lanes (it wants 3), got %s", tlm_strerror(err));
}

/* ---- a protected lane: bytes that are not a sealed frame, or a sealed
 * frame changed on the way, fail the lane; nothing of them is applied ---- */

enum tamper_kind { TAMPER_CLEAR, TAMPER_BITFLIP, TAMPER_KINDS };

static void tamper_acc(struct tlm_listener *l, const char *port, void *arg)
{
	(void)port; (void)arg;
	if (protect == TLM_PROTECT_NONE)
		return;
	for (int k = 0; k < TAMPER_KINDS; k++) {
		struct tlm_session *s = do_accept(l);
		unsigned applied = 0;
		struct tlm_page_sink sink = { count_apply, &applied };
		int n, total = 0;

		do {
			n = tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, WAIT_MS);
			if (n > 0)
				total += n;
		} while (n > 0);
		if (applied != 1 || total != 1)
			FAIL("tamper %d: %u records applied, expected only the good one", k, applied);
		if (n != -TLM_ESEAL)
			FAIL("tamper %d: expected a sealed-frame failure, got %s", k, tlm_strerror(n));
		CHECK(tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, 100) == -TLM_ESEAL);
		tlm_session_close(s);
	}
}

static void tamper_conn(struct tlm_listener *l, const char *port, void *arg)
{
	(void)l; (void)arg;
	if (protect == TLM_PROTECT_NONE)
		return;
	for (int k = 0; k < TAMPER_KINDS; k++) {
		struct tlm_session *s = do_connect(port, 1, TLM_MODE_PAGES);
		struct tlm_lane *ln = tlm_session_lane(s, 1);
		static uint8_t page[4096];
		uint8_t frame[TLM_FRAME_HDR + TLM_FRAME_HDR + TLM_PAGE_HDR + 4096 + TLM_SEAL_TAG];
		struct tlm_page_rec r = { .index = 0, .len = 4096, .data = page };
		size_t flen = sizeof(frame);
		uint8_t ack;

		memset(page, 0x5a, sizeof(page));
		r.crc = tlm_crc32c(0, page, 4096);
		CHECK(tlm_lane_send_pages(ln, &r, 1) == 1);
		r.index = 1;
		if (k == TAMPER_CLEAR) {
			/* a well-formed clear PAGE frame, as on an unprotected lane */
			tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + 4096, TLM_FT_PAGE);
			tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &r);
			memcpy(frame + TLM_FRAME_HDR + TLM_PAGE_HDR, page, 4096);
			flen = TLM_FRAME_HDR + TLM_PAGE_HDR + 4096;
		} else {
			/* a sealed frame's shape, with a tag nobody computed */
			memset(frame, 0xa5, sizeof(frame));
			tlm__frame_hdr_encode(frame, (uint32_t)(sizeof(frame) - TLM_FRAME_HDR),
					      TLM_FT_SEALED);
		}
		/* In a DATA frame, as the transport carries sealed frames. */
		{
			uint8_t d[TLM_FRAME_HDR];

			tlm__frame_hdr_encode(d, (uint32_t)flen, TLM_FT_DATA);
			CHECK_OK(tlm__lane_inject_raw(ln, d, sizeof(d)));
		}
		CHECK_OK(tlm__lane_inject_raw(ln, frame, flen));
		(void)tlm_lane_read(tlm_session_lane(s, 0), &ack, 1, 3000);
		tlm_session_close(s);
	}
}

static const struct tcase cases[] = {
	{ "bytes-1", bytes_acc, bytes_conn_1, 1, TLM_MODE_BYTES, 0, 0, -1 },
	{ "bytes-4", bytes_acc, bytes_conn_4, 4, TLM_MODE_BYTES, 0, 0, -1 },
	{ "bytes-16", bytes_acc, bytes_conn_16, 16, TLM_MODE_BYTES, 0, 0, -1 },
	{ "pages-1", pages_acc, pages_conn_1, 1, TLM_MODE_PAGES, 0, 0, -1 },
	{ "pages-4", pages_acc, pages_conn_4, 4, TLM_MODE_PAGES, 0, 0, -1 },
	{ "pages-16", pages_acc, pages_conn_16, 16, TLM_MODE_PAGES, 0, 0, -1 },
	{ "peer-close", close_pages_acc, close_pages_conn, 1, TLM_MODE_PAGES, 0, 0, -1 },
	{ "malformed", malformed_acc, malformed_conn, 1, TLM_MODE_PAGES, 0, 0, TLM_PROTECT_NONE },
	{ "slow-receiver", slow_acc, slow_conn, 1, TLM_MODE_PAGES, 0, 0, -1 },
	{ "auth", auth_acc, auth_conn, 2, TLM_MODE_PAGES, 0, 0, -1 },
	{ "bad-page-size", params_acc, pagesize_conn, 2, TLM_MODE_PAGES, 0, 0, -1 },
	{ "lane-mismatch", params_acc, lanes_conn, 2, TLM_MODE_PAGES, 0, 3, -1 },
	{ "sealed-tamper", tamper_acc, tamper_conn, 1, TLM_MODE_PAGES, 0, 0, -1 },
};

int main(int argc, char **argv)
{
	const char *only = NULL;
	int failed = 0, ran = 0, opt;
	static const struct option lo[] = {
		{ "transport", required_argument, NULL, 't' },
		{ "protect", required_argument, NULL, 'P' },
		{ "args", required_argument, NULL, 'a' },
		{ "addr", required_argument, NULL, 'A' },
		{ "case", required_argument, NULL, 'c' },
		{ "list", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};

	while ((opt = getopt_long(argc, argv, "t:a:A:c:lP:", lo, NULL)) != -1) {
		switch (opt) {
		case 't': transport = optarg; break;
		case 'a': targs = optarg; break;
		case 'A': addr = optarg; break;
		case 'c': only = optarg; break;
		case 'P':
			run_protect = tlm_protect_parse(optarg);
			if (run_protect < 0) {
				fprintf(stderr, "--protect: encrypt, integrity or none\n");
				return 2;
			}
			break;
		case 'l':
			for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
				printf("%s\n", cases[i].name);
			return 0;
		default:
			fprintf(stderr, "usage: %s --transport NAME [--args ARGS] [--addr ADDR] [--protect MODE] [--case NAME]\n", argv[0]);
			return 2;
		}
	}
	if (!tlm_transport_available(transport)) {
		printf("SKIP: transport %s is not built into this libtlm\n", transport);
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	CHECK_OK(tlm_psk_random(&psk));
	CHECK_OK(tlm_psk_random(&wrong_psk));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (only && strcmp(only, cases[i].name))
			continue;
		ran++;
		fprintf(stderr, "case %s (%s)\n", cases[i].name, transport);
		if (run_case(&cases[i])) {
			fprintf(stderr, "case %s: FAILED\n", cases[i].name);
			failed++;
		} else {
			fprintf(stderr, "case %s: ok\n", cases[i].name);
		}
	}
	if (!ran) {
		fprintf(stderr, "no case named %s\n", only);
		return 2;
	}
	return failed ? 1 : 0;
}
