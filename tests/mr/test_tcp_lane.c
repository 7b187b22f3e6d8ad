/* SPDX-License-Identifier: MIT */
/*
 * TCP lanes below the session layer (transport-tcp/tcp.c through its ops
 * table): what the shared conformance suite does not reach — IPv6 and
 * dual-stack listeners, accept/connect errors and timeouts, transport
 * arguments, pollfd with input already buffered, partial reads of a frame,
 * FIN vs abrupt close, frames of the wrong kind, truncated records.
 */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlm-internal.h"
#define CHECK_COUNTS
#include "tests/check.h"

static const struct tlm_lane_ops *ops;

static uint8_t pat(uint64_t off) { return (uint8_t)(off * 131 + (off >> 9)); }

/* A connected pair: c (connecting side, index idx) and a (accepted). */
static int pair(const char *laddr, const char *caddr, const char *args, unsigned idx,
		struct tlm_lane **c, struct tlm_lane **a)
{
	struct tlm_xlistener *xl;
	char port[16];
	int rc = ops->listen(laddr, "0", args, &xl);

	if (rc)
		return rc;
	snprintf(port, sizeof(port), "%d", ops->listener_port(xl));
	rc = ops->connect(caddr, port, args, idx, 5000, c);
	if (rc == 0) {
		rc = ops->accept(xl, 5000, a);
		if (rc)
			ops->close(*c);
	}
	ops->listener_close(xl);
	return rc;
}

static int readable(struct tlm_lane *l, int ms)
{
	struct pollfd p = { .fd = ops->pollfd(l), .events = POLLIN };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

struct writer { struct tlm_lane *l; size_t n; ssize_t rc; };

static void *write_thread(void *arg)
{
	struct writer *w = arg;
	uint8_t *buf = malloc(w->n);

	for (size_t i = 0; i < w->n; i++)
		buf[i] = pat(i);
	w->rc = ops->dp->write(w->l, buf, w->n);
	if (w->rc == (ssize_t)w->n)
		w->rc = ops->dp->shutdown(w->l) == 0 ? w->rc : -1;
	free(buf);
	return NULL;
}

/* One big write (several DATA frames) read back in odd small pieces while
 * the writer is still going (so the socket buffers fill up). */
static void test_stream(struct tlm_lane *c, struct tlm_lane *a)
{
	struct writer w = { c, 3 * TLM_MAX_DATA_FRAME + 12345, 0 };
	pthread_t th;
	uint8_t buf[1000];
	uint64_t off = 0;
	size_t step = 1;
	int bad = 0;
	uint64_t tx, rx;

	CHECK(pthread_create(&th, NULL, write_thread, &w) == 0);
	for (;;) {
		ssize_t r = ops->dp->read(a, buf, step, 5000);

		if (r <= 0) {
			CHECK(r == 0);
			break;
		}
		for (ssize_t i = 0; i < r; i++)
			bad += buf[i] != pat(off + (uint64_t)i);
		off += (uint64_t)r;
		step = step % 983 + 13;   /* 13..995 */
	}
	pthread_join(th, NULL);
	CHECK(w.rc == (ssize_t)w.n);
	CHECK(off == w.n);
	CHECK(bad == 0);
	/* After FIN: 0 again, not an error. */
	CHECK(ops->dp->read(a, buf, 10, 100) == 0);
	tlm_lane_stats(c, &tx, NULL);
	tlm_lane_stats(a, NULL, &rx);
	CHECK(tx == w.n && rx == w.n);
	CHECK(ops->dp->write(c, buf, 1) < 0);   /* no writes after our FIN */
}

static void test_basics(void)
{
	struct tlm_lane *c, *a;
	uint8_t buf[64];

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 0, &c, &a) == 0);
	if (test_failures)
		return;
	CHECK(c->ops == ops && a->ops == ops);
	CHECK(c->mode == TLM_MODE_BYTES && a->mode == TLM_MODE_BYTES);
	CHECK(c->page_size == 4096 && a->page_size == 4096);
	CHECK(!strncmp(c->peer, "127.0.0.1:", 10) && !strncmp(a->peer, "127.0.0.1:", 10));
	CHECK(ops->dp->read(a, buf, sizeof(buf), 50) == -ETIMEDOUT);
	CHECK(ops->dp->read(a, buf, sizeof(buf), 0) == -ETIMEDOUT);
	test_stream(c, a);
	ops->close(c);
	ops->close(a);
}

/* pollfd must report input that already sits in the lane's buffer. */
static void test_pollfd(void)
{
	struct tlm_lane *c, *a;
	uint8_t msg[100], buf[100];

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 1, &c, &a) == 0);
	if (test_failures)
		return;
	for (int i = 0; i < 100; i++)
		msg[i] = (uint8_t)i;
	CHECK(!readable(a, 0));
	CHECK(ops->dp->write(c, msg, 60) == 60);
	CHECK(ops->dp->write(c, msg + 60, 40) == 40);
	CHECK(readable(a, 5000));
	usleep(50000);   /* let both frames arrive: one read takes them all in */
	CHECK(ops->dp->read(a, buf, 10, 1000) == 10);
	/* 90 bytes left in the lane's buffer, the socket is drained. */
	CHECK(readable(a, 0));
	CHECK(ops->dp->read(a, buf + 10, 90, 1000) == 90);
	CHECK(!memcmp(buf, msg, 100));
	CHECK(!readable(a, 0));
	CHECK(ops->dp->write(c, msg, 5) == 5);
	CHECK(readable(a, 5000));
	CHECK(ops->dp->read(a, buf, 100, 1000) == 5);
	CHECK(!readable(a, 0));
	/* Abrupt close: the reader learns the peer vanished, for good. */
	ops->close(c);
	CHECK(readable(a, 5000));
	CHECK(ops->dp->read(a, buf, 100, 1000) == -TLM_EPEERCLOSED);
	CHECK(ops->dp->read(a, buf, 100, 1000) == -TLM_EPEERCLOSED);
	ops->close(a);
}

/* Bytes that are not a DATA/FIN frame in byte mode, and not a PAGE frame
 * in page mode, kill the lane with -TLM_EFRAME. */
static void test_wrong_kind(void)
{
	struct tlm_lane *c, *a;
	uint8_t hdr[TLM_FRAME_HDR + TLM_PAGE_HDR + 8], buf[16];
	struct tlm_page_rec r = { .index = 7, .len = 8, .data = "abcdefgh" };
	struct tlm_page_sink sink = { NULL, NULL };

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 1, &c, &a) == 0);
	if (test_failures)
		return;
	r.crc = tlm_crc32c(0, r.data, 8);
	tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR + 8, TLM_FT_PAGE);
	tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, &r);
	memcpy(hdr + TLM_FRAME_HDR + TLM_PAGE_HDR, "abcdefgh", 8);
	CHECK(ops->dp->write(c, "ok", 2) == 2);
	CHECK(ops->inject_raw(c, hdr, sizeof(hdr)) == 0);
	usleep(50000);
	/* The good bytes first, then the error, and it stays. */
	CHECK(ops->dp->read(a, buf, sizeof(buf), 1000) == 2);
	CHECK(ops->dp->read(a, buf, sizeof(buf), 1000) == -TLM_EFRAME);
	CHECK(ops->dp->read(a, buf, sizeof(buf), 1000) == -TLM_EFRAME);
	CHECK(readable(a, 0));
	ops->close(c);
	ops->close(a);

	/* A DATA frame on a page-mode lane. */
	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 1, &c, &a) == 0);
	if (test_failures)
		return;
	CHECK(ops->set_mode(a, TLM_MODE_PAGES) == 0);
	CHECK(ops->dp->write(c, "xyz", 3) == 3);
	sink.apply = NULL;
	CHECK(ops->dp->recv_pages(a, &sink, 2000) == -TLM_EFRAME);
	CHECK(ops->dp->recv_pages(a, &sink, 10) == -TLM_EFRAME);
	/* Wrong-mode calls are refused locally. */
	CHECK(ops->dp->read(a, buf, 1, 0) < 0);
	ops->close(c);
	ops->close(a);
}

/* The peer says goodbye (data, FIN) and closes; our writes fail, but what
 * it sent before leaving can still be read: a send error stays on the tx
 * side. */
static void test_goodbye(void)
{
	struct tlm_lane *c, *a;
	static uint8_t big[1 << 20];
	uint8_t buf[16];
	ssize_t w = 0;

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 1, &c, &a) == 0);
	if (test_failures)
		return;
	CHECK(ops->dp->write(c, "bye", 3) == 3);
	CHECK(ops->dp->shutdown(c) == 0);
	ops->close(c);
	for (int i = 0; i < 100 && w >= 0; i++)
		w = ops->dp->write(a, big, sizeof(big));
	CHECK(w == -TLM_EPEERCLOSED);
	CHECK(ops->dp->flush(a) == -TLM_EPEERCLOSED);
	CHECK(ops->dp->read(a, buf, sizeof(buf), 1000) == 3 && !memcmp(buf, "bye", 3));
	CHECK(ops->dp->read(a, buf, sizeof(buf), 1000) == 0);
	ops->close(a);
}

struct rx_count { unsigned n; uint64_t last_index; };

static int count_apply(void *arg, const struct tlm_page_rec *r)
{
	struct rx_count *rc = arg;

	rc->n++;
	rc->last_index = r->index;
	return 0;
}

/* Records sent in one burst, then a truncated one and an abrupt close:
 * the whole records arrive, the torn one is not applied. */
struct tr_send { struct tlm_lane *c; int rc; };

static void *truncated_sender(void *arg)
{
	struct tr_send *t = arg;
	static uint8_t page[4096];
	static struct tlm_page_rec recs[1500];
	uint8_t frame[TLM_FRAME_HDR + TLM_PAGE_HDR + 4096];

	memset(page, 0xa5, sizeof(page));
	/* More records than one sendmsg() takes (IOV_MAX), every tenth a
	 * zero page without data. */
	for (unsigned i = 0; i < 1500; i++)
		recs[i] = i % 10 == 9
			? (struct tlm_page_rec){ .index = i, .flags = TLM_PF_ZERO }
			: (struct tlm_page_rec){ .index = i, .len = 4096, .data = page,
						 .crc = tlm_crc32c(0, page, 4096) };
	t->rc = ops->dp->send_pages(t->c, recs, 1500);
	tlm__frame_hdr_encode(frame, TLM_PAGE_HDR + 4096, TLM_FT_PAGE);
	recs[0].index = 99999;
	tlm__page_hdr_encode(frame + TLM_FRAME_HDR, &recs[0]);
	memcpy(frame + TLM_FRAME_HDR + TLM_PAGE_HDR, page, 4096);
	if (ops->inject_raw(t->c, frame, sizeof(frame) - 100) != 0)
		t->rc = -1;
	ops->close(t->c);
	return NULL;
}

static void test_truncated(void)
{
	struct tlm_lane *c, *a;
	struct rx_count cnt = { 0, 0 };
	struct tlm_page_sink sink = { count_apply, &cnt };
	struct tr_send ts;
	pthread_t th;
	int rc;

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 2, &c, &a) == 0);
	if (test_failures)
		return;
	CHECK(ops->set_mode(c, TLM_MODE_PAGES) == 0);
	CHECK(ops->set_mode(a, TLM_MODE_PAGES) == 0);
	ts = (struct tr_send){ c, 0 };
	CHECK(pthread_create(&th, NULL, truncated_sender, &ts) == 0);
	do {
		rc = ops->dp->recv_pages(a, &sink, 5000);
	} while (rc > 0);
	pthread_join(th, NULL);
	CHECK(ts.rc == 1500);
	CHECK(rc == -TLM_EPEERCLOSED);
	CHECK(cnt.n == 1500 && cnt.last_index == 1499);
	CHECK(ops->dp->recv_pages(a, &sink, 10) == -TLM_EPEERCLOSED);
	ops->close(a);
}

static void test_errors(void)
{
	struct tlm_xlistener *xl;
	struct tlm_lane *l;
	char port[16];

	/* Nobody connects: accept times out. */
	CHECK(ops->listen("127.0.0.1", "0", NULL, &xl) == 0);
	if (test_failures)
		return;
	snprintf(port, sizeof(port), "%d", ops->listener_port(xl));
	CHECK(ops->accept(xl, 200, &l) == -ETIMEDOUT);
	/* The same port twice: the second listen fails cleanly. */
	{
		struct tlm_xlistener *xl2 = NULL;

		CHECK(ops->listen("127.0.0.1", port, NULL, &xl2) < 0);
	}
	ops->listener_close(xl);
	/* Nobody listens any more: refused, not a hang. */
	CHECK(ops->connect("127.0.0.1", port, NULL, 1, 2000, &l) == -ECONNREFUSED);
	/* Transport arguments. */
	CHECK(ops->listen("127.0.0.1", "0", "frobnicate=1", &xl) == -EINVAL);
	CHECK(ops->listen("127.0.0.1", "0", "sndbuf", &xl) == -EINVAL);
	CHECK(ops->listen("127.0.0.1", "0", "nodelay=2", &xl) == -EINVAL);
	CHECK(ops->listen("127.0.0.1", "0", "sndbuf=1x", &xl) == -EINVAL);
	CHECK(ops->listen("127.0.0.1", "0", "sndbuf=1M,rcvbuf=0,nodelay=0", &xl) == 0);
	ops->listener_close(xl);
	CHECK(ops->listen("127.0.0.1", "no-such-service", NULL, &xl) < 0);
}

/* Whether this machine has IPv6 loopback, asked of the kernel, not of
 * tlm's own listen: a broken IPv6 listen in tlm must fail the checks
 * below, not skip them. */
static int have_ipv6(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM, 0), ok;

	if (fd < 0)
		return 0;
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0;
	close(fd);
	return ok;
}

static void test_families(void)
{
	struct tlm_lane *c, *a;

	/* Any address: IPv4 clients are welcome (dual stack or IPv4 only). */
	CHECK(pair(NULL, "127.0.0.1", "sndbuf=256K,rcvbuf=256K", 0, &c, &a) == 0);
	if (!test_failures) {
		test_stream(c, a);
		ops->close(c);
		ops->close(a);
	}
	if (!have_ipv6()) {
		printf("note: no IPv6 loopback here, IPv6 checks skipped\n");
		return;
	}
	CHECK(pair("::1", "::1", NULL, 3, &c, &a) == 0);
	if (test_failures)
		return;
	CHECK(!strncmp(c->peer, "[::1]:", 6) && !strncmp(a->peer, "[::1]:", 6));
	test_stream(c, a);
	ops->close(c);
	ops->close(a);
	CHECK(pair("::", "::1", NULL, 3, &c, &a) == 0);
	if (test_failures)
		return;
	test_stream(c, a);
	ops->close(c);
	ops->close(a);
}

/* A control message longer than the caller's buffer is refused before a
 * byte of it is copied (tlm__msg_recv's max): the bytes past max stay as
 * they were. */
static void test_msg_max(void)
{
	struct tlm_lane *c, *a;
	uint8_t msg[100], buf[128], type;
	uint32_t len;

	CHECK(pair("127.0.0.1", "127.0.0.1", NULL, 0, &c, &a) == 0);
	if (test_failures)
		return;
	memset(msg, 0x5a, sizeof(msg));
	CHECK_OK(tlm__msg_send(c, TLM_FT_CTRL, msg, 50));
	CHECK_OK(tlm__msg_send(c, TLM_FT_CTRL, msg, sizeof(msg)));
	CHECK_OK(tlm_lane_flush(c));
	memset(buf, 0xee, sizeof(buf));
	CHECK(tlm__msg_recv(a, &type, buf, 50, &len, 5000) == 0 && len == 50 && type == TLM_FT_CTRL);
	memset(buf, 0xee, sizeof(buf));
	CHECK(tlm__msg_recv(a, &type, buf, 50, &len, 5000) == -TLM_EFRAME,
	      "a 100-byte message into a 50-byte buffer");
	for (size_t i = 50; i < sizeof(buf); i++)
		if (buf[i] != 0xee) {
			CHECK(buf[i] == 0xee, "byte %zu past the buffer written", i);
			break;
		}
	ops->close(c);
	ops->close(a);
}

/* A session to an acceptor that cannot prove the key (an impostor that
 * takes the connector's proof and answers with a made-up one in WELCOME):
 * the connector refuses it with EAUTH and sends nothing more (no PARAMS,
 * nothing of value). The connector proves the key first by design (wire
 * version 3): that way a listener answers strangers with nothing to test
 * guesses against; a client that dials an impostor gives it one MAC, which
 * a random key of 128 bits or more makes worthless (docs/security.md). */
struct imp { struct tlm_session_cfg cfg; char port[16]; struct tlm_session *s; int rc; };

static void *impostor_client(void *arg)
{
	struct imp *c = arg;

	c->rc = tlm_connect(&c->cfg, "127.0.0.1", c->port, &c->s);
	return NULL;
}

static void test_impostor(void)
{
	struct tlm_psk psk;
	struct imp c = { .cfg = { .transport = "tcp", .n_lanes = 1, .timeout_ms = 3000 } };
	struct tlm_challenge ch = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION };
	struct tlm_xlistener *xl;
	struct tlm_lane *l;
	uint8_t buf[512], type;
	uint32_t len;
	pthread_t t;
	int n, err;

	CHECK_OK(tlm_psk_random(&psk));
	c.cfg.psk = &psk;
	c.cfg.lane_modes[1] = TLM_MODE_PAGES;
	CHECK(ops->listen("127.0.0.1", "0", NULL, &xl) == 0);
	snprintf(c.port, sizeof(c.port), "%d", ops->listener_port(xl));
	pthread_create(&t, NULL, impostor_client, &c);
	CHECK_OK(ops->accept(xl, 5000, &l));
	CHECK_OK(tlm__msg_recv(l, &type, buf, sizeof(buf), &len, 5000));
	CHECK(type == TLM_FT_HELLO);
	CHECK_OK(tlm__random(ch.nonce, sizeof(ch.nonce)));
	n = tlm__challenge_encode(buf, sizeof(buf), &ch);
	CHECK(n > 0);
	CHECK_OK(tlm__msg_send(l, TLM_FT_CHALLENGE, buf, (uint32_t)n));
	CHECK_OK(tlm_lane_flush(l));
	CHECK_OK(tlm__msg_recv(l, &type, buf, sizeof(buf), &len, 5000));
	CHECK(type == TLM_FT_AUTH && len == TLM_MAC_LEN);
	CHECK_OK(tlm__random(buf, TLM_MAC_LEN));     /* a proof nobody computed */
	CHECK_OK(tlm__msg_send(l, TLM_FT_WELCOME, buf, TLM_MAC_LEN));
	CHECK_OK(tlm_lane_flush(l));
	err = tlm__msg_recv(l, &type, buf, sizeof(buf), &len, 5000);
	CHECK(err < 0, "the connector went on talking to an impostor (frame type %u)", type);
	pthread_join(t, NULL);
	CHECK(c.rc == -TLM_EAUTH, "connect to an impostor: %s", tlm_strerror(c.rc));
	if (c.rc == 0)
		tlm_session_close(c.s);
	ops->close(l);
	ops->listener_close(xl);
}

/* A peer that stops reading: the send fails once it has acknowledged
 * nothing for send_timeout, at that time (not restarted by the partial
 * writes that fill the buffers first). */
static void test_stall(void)
{
	const size_t n = 256u << 20;
	struct tlm_lane *c, *a;
	uint8_t *buf = calloc(1, n);
	uint64_t t0, ms;
	ssize_t r;

	CHECK(buf != NULL);
	CHECK(pair("127.0.0.1", "127.0.0.1", "send_timeout=2000", 1, &c, &a) == 0);
	if (test_failures)
		return;
	t0 = tlm__now_ms();
	r = ops->dp->write(c, buf, n);
	ms = tlm__now_ms() - t0;
	CHECK(r == -ETIMEDOUT, "a send to a peer that reads nothing: %zd", r);
	CHECK(ms >= 2000 && ms <= 3500, "send_timeout=2000 fired after %llu ms",
	      (unsigned long long)ms);
	printf("stall: send_timeout=2000 fired after %llu ms\n", (unsigned long long)ms);
	ops->close(c);
	ops->close(a);
	free(buf);
}

int main(void)
{
	ops = tlm__transport_find("tcp");
	if (!ops) {
		fprintf(stderr, "tcp transport not built in\n");
		return 1;
	}
	test_basics();
	test_pollfd();
	test_wrong_kind();
	test_goodbye();
	test_truncated();
	test_errors();
	test_families();
	test_impostor();
	test_msg_max();
	test_stall();
	if (test_failures) {
		fprintf(stderr, "test_tcp_lane: %d failure(s)\n", test_failures);
		return 1;
	}
	printf("test_tcp_lane: all checks passed\n");
	return 0;
}
