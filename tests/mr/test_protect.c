/* SPDX-License-Identifier: MIT */
/*
 * Protected lanes over tcp, with someone on the path (a proxy in this
 * process between the two ends, 127.0.0.1 only):
 *
 *   flip, drop, replay, reorder   the proxy changes one byte of a sealed
 *                                 frame on a data lane, drops one, sends
 *                                 one again, swaps two: the lane fails with
 *                                 TLM_ESEAL and exactly the records of the
 *                                 frames before it are applied
 *   capture                       what the proxy saw of a data lane holds
 *                                 no page's clear text under encrypt (and
 *                                 does under none and integrity: the check
 *                                 can fail)
 *   silent                        a source that connects and then sends
 *                                 nothing (no FIN, no RST): the destination
 *                                 (tlm_migrate_dest) gives up on it after
 *                                 the session's timeout, 2 s here
 *   oversized                     a peer announcing an 8 TiB region to the
 *                                 bench's destination, which maps what it
 *                                 is told: refused before it maps anything
 *   listener                      200 idle connections and 20 that send a
 *                                 HELLO a byte at a time are held open
 *                                 while a real session starts and completes
 *
 *   test_protect CASE [encrypt|integrity|none]
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../check.h"
#include "tlm-internal.h"
#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "tlm-bench.h"

#define PAGES        630                  /* 10 sealed frames of 63 records */
#define PER_FRAME    63                   /* records of 4 KiB in one sealed frame */
#define HS_FRAMES    2                    /* HELLO, AUTH before the sealed frames */
#define TAMPER_AT    3                    /* the sealed frame tampered with */

static struct tlm_psk psk;
static int protect = TLM_PROTECT_ENCRYPT;
static const char *tamper = "";
static const char PATTERN[] = "TLM-CLEAR-PAGE-PATTERN-0123456789";

/* ---- the proxy ---- */

struct pipe_arg {
	int from, to;
	bool watch;          /* client to server on the first data lane */
};

static uint8_t *capture;
static size_t capture_len, capture_cap;
static int proxy_lfd, server_port;

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void keep(const uint8_t *p, size_t n)
{
	if (capture_len + n > capture_cap) {
		capture_cap = (capture_len + n) * 2;
		capture = realloc(capture, capture_cap);
		CHECK(capture != NULL);
	}
	memcpy(capture + capture_len, p, n);
	capture_len += n;
}

/* One direction, frame by frame (tcp carries each sealed frame in one DATA
 * frame): the watched one is tampered with as the case says. */
static void *pump(void *arg)
{
	struct pipe_arg *a = arg;
	static uint8_t held[TLM_FRAME_HDR + TLM_MAX_DATA_FRAME];
	size_t held_len = 0;
	uint8_t *f = malloc(TLM_FRAME_HDR + TLM_MAX_DATA_FRAME);
	unsigned k = 0;

	CHECK(f != NULL);
	for (;; k++) {
		uint32_t len;
		int sealed = (int)k - HS_FRAMES;

		if (read_full(a->from, f, TLM_FRAME_HDR))
			break;
		len = tlm__get32(f);
		if (len > TLM_MAX_DATA_FRAME || read_full(a->from, f + TLM_FRAME_HDR, len))
			break;
		if (!a->watch) {
			if (write_full(a->to, f, TLM_FRAME_HDR + len))
				break;
			continue;
		}
		keep(f, TLM_FRAME_HDR + len);
		if (sealed == TAMPER_AT && !strcmp(tamper, "flip"))
			f[TLM_FRAME_HDR + len / 2] ^= 0x01;
		if (sealed == TAMPER_AT && !strcmp(tamper, "drop"))
			continue;
		if (sealed == TAMPER_AT && !strcmp(tamper, "replay")) {
			if (write_full(a->to, held, held_len))
				break;
			continue;
		}
		if (sealed == TAMPER_AT && !strcmp(tamper, "reorder")) {
			memcpy(held, f, TLM_FRAME_HDR + len);
			held_len = TLM_FRAME_HDR + len;
			continue;
		}
		if (write_full(a->to, f, TLM_FRAME_HDR + len))
			break;
		if (sealed == TAMPER_AT + 1 && !strcmp(tamper, "reorder") &&
		    write_full(a->to, held, held_len))
			break;
		if (sealed == TAMPER_AT - 1) {
			memcpy(held, f, TLM_FRAME_HDR + len);
			held_len = TLM_FRAME_HDR + len;
		}
	}
	shutdown(a->to, SHUT_WR);
	/* Whatever comes after goes nowhere, but is taken: a sender is never
	 * held up by the proxy, only by its peer. */
	while (read(a->from, f, TLM_FRAME_HDR + TLM_MAX_DATA_FRAME) > 0)
		;
	free(f);
	return NULL;
}

static int tcp_connect_port(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

static void *proxy(void *arg)
{
	static struct pipe_arg pipes[2][2];

	(void)arg;
	for (unsigned conn = 0; conn < 2; conn++) {
		int c = accept4(proxy_lfd, NULL, NULL, SOCK_CLOEXEC), s;
		struct pipe_arg *up = &pipes[conn][0], *down = &pipes[conn][1];
		pthread_t t;

		CHECK(c >= 0);
		s = tcp_connect_port(server_port);
		*up = (struct pipe_arg){ .from = c, .to = s, .watch = conn == 1 };
		*down = (struct pipe_arg){ .from = s, .to = c };
		CHECK(pthread_create(&t, NULL, pump, up) == 0);
		pthread_detach(t);
		CHECK(pthread_create(&t, NULL, pump, down) == 0);
		pthread_detach(t);
	}
	return NULL;
}

static int listen_any(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 8) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	proxy_lfd = fd;
	return ntohs(sa.sin_port);
}

/* ---- the two ends ---- */

static struct tlm_session_cfg cfg_of(void)
{
	struct tlm_session_cfg c = { .transport = "tcp", .n_lanes = 1, .page_size = 4096,
				     .psk = &psk, .timeout_ms = 20000, .protect = protect };
	c.lane_modes[1] = TLM_MODE_PAGES;
	return c;
}

struct rx {
	struct tlm_listener *li;
	unsigned applied;
	bool in_order;
	int err;
};

static int apply(void *arg, const struct tlm_page_rec *r)
{
	struct rx *x = arg;

	if (r->index != x->applied || r->len != 4096 || memcmp(r->data, PATTERN, 16))
		x->in_order = false;
	x->applied++;
	return 0;
}

static void *receiver(void *arg)
{
	struct rx *x = arg;
	struct tlm_session *s;
	struct tlm_page_sink sink = { apply, x };
	int n;

	x->in_order = true;
	CHECK_OK(tlm_accept(x->li, 30000, &s));
	do
		n = tlm_lane_recv_pages(tlm_session_lane(s, 1), &sink, 20000);
	while (n > 0 && x->applied < PAGES);
	x->err = n < 0 ? n : 0;
	tlm_session_close(s);
	return NULL;
}

static void send_all(int port)
{
	struct tlm_session_cfg cfg = cfg_of();
	static uint8_t pages[PAGES][4096];
	static struct tlm_page_rec recs[PAGES];
	struct tlm_session *s;
	char ps[16];
	int rc;

	for (unsigned i = 0; i < PAGES; i++) {
		for (size_t o = 0; o + sizeof(PATTERN) <= 4096; o += sizeof(PATTERN))
			memcpy(pages[i] + o, PATTERN, sizeof(PATTERN));
		recs[i] = (struct tlm_page_rec){ .index = i, .len = 4096, .data = pages[i],
						 .crc = tlm_crc32c(0, pages[i], 4096) };
	}
	snprintf(ps, sizeof(ps), "%d", port);
	CHECK_OK(tlm_connect(&cfg, "127.0.0.1", ps, &s));
	/* The source keeps running: a send either goes through or fails,
	 * it never hangs. */
	rc = tlm_lane_send_pages(tlm_session_lane(s, 1), recs, PAGES);
	if (*tamper)
		fprintf(stderr, "  sender: %s\n", rc < 0 ? tlm_strerror(rc) : "all handed over");
	else
		CHECK(rc == PAGES);
	if (rc > 0)
		(void)tlm_lane_flush(tlm_session_lane(s, 1));
	/* Wait for the receiver to be done before closing. */
	{
		uint8_t b;
		(void)tlm_lane_read(tlm_session_lane(s, 0), &b, 1, 10000);
	}
	tlm_session_close(s);
}

static void log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_ERR)
		fprintf(stderr, "  %s\n", msg);
}

static int run_proxied(void)
{
	struct tlm_session_cfg cfg = cfg_of();
	struct rx x = { 0 };
	pthread_t rt, pt;
	int pport;

	CHECK_OK(tlm_listen(&cfg, "127.0.0.1", "0", &x.li));
	server_port = tlm_listener_port(x.li);
	pport = listen_any();
	CHECK(pthread_create(&rt, NULL, receiver, &x) == 0);
	CHECK(pthread_create(&pt, NULL, proxy, NULL) == 0);
	send_all(pport);
	pthread_join(rt, NULL);
	pthread_join(pt, NULL);
	tlm_listener_close(x.li);

	if (!strcmp(tamper, "capture")) {
		bool seen = memmem(capture, capture_len, PATTERN, 16) != NULL;

		CHECK(x.err == 0 && x.applied == PAGES && x.in_order);
		CHECK(capture_len > (size_t)PAGES * 4096, "captured %zu bytes", capture_len);
		if (protect == TLM_PROTECT_ENCRYPT)
			CHECK(!seen, "the page's clear text is in the capture");
		else
			CHECK(seen, "no clear text under --protect %s: the check is blind",
			      tlm_protect_name(protect));
		printf("capture (%s): %zu bytes, clear text %s\n", tlm_protect_name(protect),
		       capture_len, seen ? "present" : "absent");
		return 0;
	}
	if (protect == TLM_PROTECT_NONE) {
		/* Without a seal, a dropped or replayed frame goes unnoticed by
		 * the frames themselves; only flip is caught (crc32c). */
		printf("%s (none): %u applied, %s\n", tamper, x.applied, tlm_strerror(x.err));
		return 0;
	}
	CHECK(x.err == -TLM_ESEAL, "%s: the lane ended with %s", tamper, tlm_strerror(x.err));
	CHECK(x.applied == TAMPER_AT * PER_FRAME && x.in_order,
	      "%s: %u records applied, want exactly the %d before the bad frame", tamper,
	      x.applied, TAMPER_AT * PER_FRAME);
	printf("%s (%s): lane failed (%s), %u records applied, all before the bad frame\n",
	       tamper, tlm_protect_name(protect), tlm_strerror(x.err), x.applied);
	return 0;
}

/* ---- listener under a crowd ---- */

#define IDLE 200
#define SLOW 20

static void *slow_hello(void *arg)
{
	int fd = *(int *)arg;
	uint8_t b[TLM_FRAME_HDR + TLM_FRAME_HDR + TLM_HELLO_LEN];

	memset(b, 0x11, sizeof(b));
	tlm__frame_hdr_encode(b, TLM_FRAME_HDR + TLM_HELLO_LEN, TLM_FT_DATA);
	tlm__frame_hdr_encode(b + TLM_FRAME_HDR, TLM_HELLO_LEN, TLM_FT_HELLO);
	/* a byte every 200 ms: 15 s for the whole HELLO, or until dropped */
	for (size_t i = 0; i < sizeof(b); i++) {
		if (write(fd, b + i, 1) != 1)
			break;
		usleep(200000);
	}
	return NULL;
}

static int run_listener(void)
{
	struct tlm_session_cfg cfg = cfg_of();
	static int fds[IDLE + SLOW];
	pthread_t slow[SLOW], rt;
	struct rlimit rl;
	struct rx x = { 0 };
	struct timespec t0, t1;
	double secs;

	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	if (rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
		rl.rlim_cur = 1024;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	CHECK_OK(tlm_listen(&cfg, "127.0.0.1", "0", &x.li));
	server_port = tlm_listener_port(x.li);
	/* The listener is at work while the crowd connects (its backlog
	 * holds 128), as it would be. */
	CHECK(pthread_create(&rt, NULL, receiver, &x) == 0);
	for (unsigned i = 0; i < IDLE + SLOW; i++)
		fds[i] = tcp_connect_port(server_port);
	for (unsigned i = 0; i < SLOW; i++)
		CHECK(pthread_create(&slow[i], NULL, slow_hello, &fds[IDLE + i]) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	send_all(server_port);
	pthread_join(rt, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	CHECK(x.err == 0 && x.applied == PAGES && x.in_order,
	      "the real session: %u pages, %s", x.applied, tlm_strerror(x.err));
	printf("listener: %d idle and %d slow-HELLO connections open; a real session "
	       "started and moved %d pages in %.2f s after them\n", IDLE, SLOW, PAGES, secs);
	for (unsigned i = 0; i < IDLE + SLOW; i++)
		shutdown(fds[i], SHUT_RDWR);
	for (unsigned i = 0; i < SLOW; i++)
		pthread_join(slow[i], NULL);
	for (unsigned i = 0; i < IDLE + SLOW; i++)
		close(fds[i]);
	tlm_listener_close(x.li);
	return 0;
}

/* ---- a silent source ---- */

struct silent { struct tlm_listener *li; int rc; uint64_t ms; char why[160]; };

static void *silent_dest(void *arg)
{
	struct silent *z = arg;
	static uint8_t mem[1 << 20] __attribute__((aligned(4096)));
	struct tlm_region reg = { .base = mem, .len = sizeof(mem), .name = "ram" };
	struct tlm_dest_stats st = { 0 };
	struct tlm_session *s;
	uint64_t t0;

	CHECK_OK(tlm_accept(z->li, 30000, &s));
	t0 = tlm__now_ms();
	z->rc = tlm_migrate_dest(s, &reg, 1, NULL, NULL, &st);
	z->ms = tlm__now_ms() - t0;
	snprintf(z->why, sizeof(z->why), "%s", st.why);
	tlm_session_close(s);
	return NULL;
}

static int run_silent(void)
{
	struct tlm_session_cfg cfg = cfg_of();
	struct silent z = { 0 };
	struct tlm_session *s;
	pthread_t t;
	char ps[16];

	cfg.timeout_ms = 2000;
	cfg.n_regions = 1;
	cfg.region_len[0] = 1 << 20;
	cfg.region_name[0] = "ram";
	CHECK_OK(tlm_listen(&cfg, "127.0.0.1", "0", &z.li));
	snprintf(ps, sizeof(ps), "%d", tlm_listener_port(z.li));
	CHECK(pthread_create(&t, NULL, silent_dest, &z) == 0);
	CHECK_OK(tlm_connect(&cfg, "127.0.0.1", ps, &s));
	/* ... and not a word more, until the destination has given up. */
	pthread_join(t, NULL);
	tlm_session_close(s);
	tlm_listener_close(z.li);
	CHECK(z.rc < 0, "the destination waited on a silent source: %s", tlm_strerror(z.rc));
	CHECK(strstr(z.why, "sent nothing"), "why: %s", z.why);
	CHECK(z.ms >= 2000 && z.ms <= 3500, "a 2000 ms timeout took %llu ms",
	      (unsigned long long)z.ms);
	printf("silent: the destination gave up after %llu ms (timeout 2000): %s\n",
	       (unsigned long long)z.ms, z.why);
	return 0;
}

/* ---- a region larger than this host ---- */

static struct tlm_listener *over_li;
static int over_rc;
static char over_msg[256];

static void over_err(const char *msg)
{
	snprintf(over_msg, sizeof(over_msg), "%s", msg);
}

static void *over_accept(void *arg)
{
	(void)arg;
	tlm_bench_set_err_fn(over_err);
	over_rc = tlm_bench_migrate_dest(over_li, false, false);
	return NULL;
}

static int run_oversized(void)
{
	struct tlm_session_cfg cfg = cfg_of();
	struct tlm_session *s;
	pthread_t t;
	char ps[16];
	int rc;

	CHECK_OK(tlm_listen(&cfg, "127.0.0.1", "0", &over_li));   /* takes any regions */
	snprintf(ps, sizeof(ps), "%d", tlm_listener_port(over_li));
	CHECK(pthread_create(&t, NULL, over_accept, NULL) == 0);
	cfg.n_regions = 1;
	cfg.region_len[0] = 8ull << 40;
	rc = tlm_connect(&cfg, "127.0.0.1", ps, &s);
	CHECK_OK(rc);
	pthread_join(t, NULL);
	tlm_session_close(s);
	tlm_listener_close(over_li);
	CHECK(over_rc == 1 && strstr(over_msg, "refused"),
	      "an 8 TiB region: destination %d, '%s'", over_rc, over_msg);
	printf("oversized: %s\n", over_msg);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s flip|drop|replay|reorder|capture|listener|silent|oversized "
			"[encrypt|integrity|none]\n", argv[0]);
		return 2;
	}
	if (argc > 2 && (protect = tlm_protect_parse(argv[2])) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	tlm_set_log_fn(log_cb, NULL);
	CHECK_OK(tlm_psk_random(&psk));
	if (!strcmp(argv[1], "listener"))
		return run_listener();
	if (!strcmp(argv[1], "silent"))
		return run_silent();
	if (!strcmp(argv[1], "oversized"))
		return run_oversized();
	tamper = argv[1];
	return run_proxied();
}
