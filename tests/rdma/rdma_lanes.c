/* SPDX-License-Identifier: MIT */
/*
 * RDMA lanes end to end, two processes, over Soft-RoCE: run inside the VM
 * harness (tests/vm/run-in-vm.sh), where rxe0 carries 198.18.0.1. The
 * accepting side is the parent, the connecting side a forked child; each
 * scenario is one lane, in this order:
 *   stream    8 MiB in writes of random sizes, content checked, FIN -> 0,
 *             then a reply the other way
 *   pages     page mode: 3000 records of varied length (zero pages, LAST),
 *             every byte checked by the sink
 *   badcrc    a record whose crc is wrong: -TLM_ECRC, nothing applied
 *   zerocopy  the server offers a 4 MiB region, the client sends 1024 LIVE
 *             records from its own registered memory: 1024 PLACED records
 *             arrive, the region equals the client's memory; then the
 *             server withdraws the offer and one more WRITE fails the
 *             client's lane and changes nothing in the server's memory
 *   abort     the server never reads; the client's writer, blocked once
 *             the server's receives ran out (no credits), and a reader
 *             blocked with no timeout both return the error given to the
 *             lane's abort op from a third thread, and so does every
 *             later call; a second abort keeps the first error; close
 *             returns
 *   stall     the server never reads; the client's lane has
 *             send_timeout=2000: its writer, blocked once the receives ran
 *             out, fails with -ETIMEDOUT no sooner than 2 s after it began
 *             to wait (and long before the default 30 s), with a message
 *             that names the time; later writes give the same error
 *   vanish    the peer closes mid-stream without FIN: -TLM_EPEERCLOSED
 * and, in the child before any lane, a memlock limit too low to register
 * the buffers: -ENOMEM with a message naming RLIMIT_MEMLOCK.
 * Exits 77 when there is no RDMA device (not inside the VM).
 *
 *   rdma_lanes [ADDR]                  both ends, forked (one VM)
 *   rdma_lanes --server ADDR PORT      accepting end only (two VMs:
 *   rdma_lanes --client ADDR PORT      tests/vm/run-two-vms.sh)
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "tlm-internal.h"
#define CHECK_WHO who
#include "tests/check.h"

extern const struct tlm_lane_ops tlm__rdma_ops;
static const struct tlm_lane_ops *ops = &tlm__rdma_ops;

#define TMO 20000
#define STREAM_BYTES (8u << 20)
#define N_PAGES 3000
#define ZC_PAGES 1024

static const char *who = "server";
static char last_log[1024];

static void log_fn(int level, const char *msg, void *arg)
{
	(void)arg;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	if (level <= TLM_LOG_INFO)
		fprintf(stderr, "[%s] log: %s\n", who, msg);
}

static uint8_t pat(uint64_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull;

	return (uint8_t)(x >> 56 ^ x >> 17);
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* ---- page records ---- */

static uint32_t page_len(unsigned i)
{
	static const uint32_t lens[] = { 4096, 4096, 1, 100, 4095, 0, 4096, 2048 };

	return lens[i % 8];
}

static void page_fill(uint8_t *buf, unsigned i, uint32_t len)
{
	for (uint32_t k = 0; k < len; k++)
		buf[k] = pat((uint64_t)i << 13 | k);
}

struct sink_state {
	unsigned n;
	bool last;
	uint8_t buf[4096];
};

static int sink_apply(void *arg, const struct tlm_page_rec *r)
{
	struct sink_state *s = arg;

	if (r->flags & TLM_PF_LAST) {
		s->last = true;
		return 0;
	}
	CHECK(r->index == s->n, "record %u out of order (index %llu)", s->n,
	      (unsigned long long)r->index);
	CHECK(r->region == s->n % 3 && r->epoch == s->n / 100, "record %u: bad region/epoch", s->n);
	if (page_len(s->n) == 0) {
		CHECK(r->flags & TLM_PF_ZERO && r->len == 0, "record %u: not a zero page", s->n);
	} else {
		CHECK(r->len == page_len(s->n), "record %u: len %u", s->n, r->len);
		page_fill(s->buf, s->n, r->len);
		CHECK(memcmp(s->buf, r->data, r->len) == 0, "record %u: content differs", s->n);
	}
	s->n++;
	return 0;
}

static int count_apply(void *arg, const struct tlm_page_rec *r)
{
	(void)r;
	(*(unsigned *)arg)++;
	return 0;
}

static void make_rec(struct tlm_page_rec *r, uint8_t *buf, unsigned i)
{
	memset(r, 0, sizeof(*r));
	r->index = i;
	r->region = (uint16_t)(i % 3);
	r->epoch = i / 100;
	r->len = page_len(i);
	if (r->len == 0) {
		r->flags = TLM_PF_ZERO;
	} else {
		page_fill(buf, i, r->len);
		r->data = buf;
		r->crc = tlm_crc32c(0, buf, r->len);
	}
}

struct zc_state {
	unsigned placed;
	bool last;
};

static int zc_apply(void *arg, const struct tlm_page_rec *r)
{
	struct zc_state *z = arg;

	if (r->flags & TLM_PF_LAST) {
		z->last = true;
		return 0;
	}
	CHECK(r->flags == TLM_PF_PLACED && !r->data && r->len == 4096 && r->index == z->placed,
	      "record %u: flags %#x index %llu: not the next PLACED record", z->placed,
	      r->flags, (unsigned long long)r->index);
	z->placed++;
	return 0;
}

static void *zc_map(void)
{
	void *p = mmap(NULL, ZC_PAGES * 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED, "mmap");
	return p;
}

/* ---- accepting side ---- */

static struct tlm_lane *accept_one(struct tlm_xlistener *xl)
{
	struct tlm_lane *l = NULL;
	int rc = ops->accept(xl, TMO, &l);

	CHECK(rc == 0, "accept: %s", tlm_strerror(rc));
	return l;
}

static void server(struct tlm_xlistener *xl)
{
	static uint8_t buf[300000];
	struct tlm_lane *l, *held, *stalled;
	uint64_t got = 0;
	ssize_t n;
	int rc;

	/* stream */
	l = accept_one(xl);
	for (;;) {
		n = ops->dp->read(l, buf, sizeof(buf), TMO);
		CHECK(n >= 0, "stream read: %s", tlm_strerror((int)n));
		if (n == 0)
			break;
		for (ssize_t k = 0; k < n; k++)
			CHECK(buf[k] == pat(got + (uint64_t)k), "stream byte %llu differs",
			      (unsigned long long)(got + (uint64_t)k));
		got += (uint64_t)n;
	}
	CHECK(got == STREAM_BYTES, "stream: %llu bytes, want %u", (unsigned long long)got,
	      STREAM_BYTES);
	n = snprintf((char *)buf, sizeof(buf), "got %llu", (unsigned long long)got);
	CHECK(ops->dp->write(l, buf, (size_t)n) == n, "reply write");
	CHECK(ops->dp->shutdown(l) == 0, "reply shutdown");
	/* Wait for the child's close so our close does not race its reads. */
	n = ops->dp->read(l, buf, 1, TMO);
	CHECK(n == -TLM_EPEERCLOSED || n == 0, "after reply: %zd", n);
	ops->close(l);
	printf("PASS stream: %u bytes checked, FIN seen, reply sent\n", STREAM_BYTES);

	/* pages */
	{
		struct sink_state *st = calloc(1, sizeof(*st));
		struct tlm_page_sink sink = { sink_apply, st };

		l = accept_one(xl);
		CHECK(ops->set_mode(l, TLM_MODE_PAGES) == 0, "set_mode");
		l->mode = TLM_MODE_PAGES;
		while (!st->last) {
			rc = ops->dp->recv_pages(l, &sink, TMO);
			CHECK(rc > 0, "recv_pages after %u: %s", st->n, tlm_strerror(rc));
		}
		CHECK(st->n == N_PAGES, "pages: %u records, want %u", st->n, N_PAGES);
		printf("PASS pages: %u records checked (rx %llu bytes)\n", st->n,
		       (unsigned long long)l->rx_bytes);
		ops->close(l);
		free(st);
	}

	/* badcrc: two good records, then one whose crc is off */
	{
		unsigned cnt = 0;
		struct tlm_page_sink sink = { count_apply, &cnt };

		l = accept_one(xl);
		ops->set_mode(l, TLM_MODE_PAGES);
		l->mode = TLM_MODE_PAGES;
		do {
			rc = ops->dp->recv_pages(l, &sink, TMO);
		} while (rc > 0);
		CHECK(rc == -TLM_ECRC, "bad crc gave %s", tlm_strerror(rc));
		CHECK(cnt == 2, "bad crc: %u records applied, want 2", cnt);
		CHECK(ops->dp->recv_pages(l, &sink, 100) == -TLM_ECRC, "lane not dead after ECRC");
		ops->close(l);
		printf("PASS badcrc: -TLM_ECRC after the 2 good records\n");
	}

	/* zerocopy */
	{
		uint8_t *win = zc_map(), *copy = malloc(ZC_PAGES * 4096), *want = malloc(4096);
		struct zc_state z = { 0 };
		struct tlm_page_sink sink = { zc_apply, &z };
		struct tlm_page_rec last = { .flags = TLM_PF_LAST };

		CHECK(copy && want, "malloc");
		l = accept_one(xl);
		CHECK(ops->set_mode(l, TLM_MODE_PAGES) == 0, "set_mode");
		l->mode = TLM_MODE_PAGES;
		rc = ops->register_region(l, 0, win, ZC_PAGES * 4096, TLM_REG_DST, TMO);
		CHECK(rc == 0, "register DST: %s", tlm_strerror(rc));
		while (!z.last) {
			rc = ops->dp->recv_pages(l, &sink, TMO);
			CHECK(rc > 0, "zerocopy recv after %u: %s", z.placed, tlm_strerror(rc));
		}
		CHECK(z.placed == ZC_PAGES, "zerocopy: %u placed, want %u", z.placed, ZC_PAGES);
		for (unsigned i = 0; i < ZC_PAGES; i++) {
			page_fill(want, i, 4096);
			CHECK(memcmp(win + (size_t)i * 4096, want, 4096) == 0,
			      "zerocopy: page %u differs from the client's", i);
		}
		/* Withdraw, then tell the client to try once more. */
		ops->unregister_regions(l);
		memcpy(copy, win, ZC_PAGES * 4096);
		CHECK(ops->dp->send_pages(l, &last, 1) == 1, "zerocopy: LAST back");
		rc = ops->dp->recv_pages(l, &sink, TMO);
		CHECK(rc < 0, "zerocopy: after the withdrawal %d records came", rc);
		CHECK(memcmp(copy, win, ZC_PAGES * 4096) == 0,
		      "zerocopy: memory changed after the offer was withdrawn");
		ops->close(l);
		munmap(win, ZC_PAGES * 4096);
		free(copy);
		free(want);
		printf("PASS zerocopy: %u pages placed by RDMA WRITE, byte-equal; nothing lands "
		       "after the withdrawal (%s)\n", ZC_PAGES, tlm_strerror(rc));
	}

	/* abort: the client's lane, never read, held until its next one
	 * comes (so the client's writes find no credits, and no close) */
	held = accept_one(xl);
	/* stall: the same, for the lane whose send times out */
	stalled = accept_one(xl);

	/* vanish */
	l = accept_one(xl);
	ops->close(held);
	ops->close(stalled);
	got = 0;
	for (;;) {
		n = ops->dp->read(l, buf, sizeof(buf), TMO);
		if (n <= 0)
			break;
		got += (uint64_t)n;
	}
	CHECK(got == 1000 && n == -TLM_EPEERCLOSED, "vanish: %llu bytes then %s",
	      (unsigned long long)got, tlm_strerror((int)n));
	CHECK(ops->dp->write(l, "x", 1) == -TLM_EPEERCLOSED, "write after vanish");
	ops->close(l);
	printf("PASS vanish: 1000 bytes then -TLM_EPEERCLOSED\n");
}

/* ---- connecting side ---- */

static struct tlm_lane *connect_one(const char *addr, const char *port)
{
	struct tlm_lane *l = NULL;
	/* rxe0 carries 198.18.0.1; its GID 1 is the address's RoCE v2 GID. */
	uint64_t until = tlm__now_ms() + 60000;
	int rc;

	/* In two-VM runs the server may not listen yet. */
	while ((rc = ops->connect(addr, port, "dev=rxe0,gid=1", 1, TMO, &l)) == -ECONNREFUSED &&
	       tlm__now_ms() < until)
		usleep(200 * 1000);
	CHECK(rc == 0, "connect: %s", tlm_strerror(rc));
	return l;
}

/* Root passes any memlock limit (CAP_IPC_LOCK); drop it to feel one. */
static void drop_ipc_lock(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) == 0) {
		d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
		syscall(SYS_capset, &h, d);
	}
}

static void memlock_check(const char *addr, const char *port)
{
	pid_t pid = fork();
	int st;

	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct rlimit rl = { 64 << 10, 64 << 10 };
		struct tlm_lane *l = NULL;
		int rc;

		who = "memlock";
		drop_ipc_lock();
		CHECK(setrlimit(RLIMIT_MEMLOCK, &rl) == 0, "setrlimit");
		rc = ops->connect(addr, port, NULL, 1, TMO, &l);
		CHECK(rc == -ENOMEM, "connect under 64 KiB memlock gave %s", tlm_strerror(rc));
		CHECK(strstr(last_log, "RLIMIT_MEMLOCK") && strstr(last_log, "raise it by"),
		      "message does not say which limit to raise: %s", last_log);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "memlock child failed");
	printf("PASS memlock: -ENOMEM, message names RLIMIT_MEMLOCK\n");
}

/* transport_args that do not fit the route fail before any connection. */
static void args_check(const char *addr, const char *port)
{
	static const struct { const char *args; int want; } c[] = {
		{ "dev=rxe1", -ENODEV },
		{ "dev=rxe0,gid=0", -EADDRNOTAVAIL },
		{ "gid=999", -ENODEV },
		{ "slots=1", -EINVAL },
		{ "mtu=9000", -EINVAL },
		{ "ack_timeout=0", -EINVAL },
		{ "send_timeout=-1", -EINVAL },
		{ "send_timeout=2s", -EINVAL },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct tlm_lane *l = NULL;
		int rc = ops->connect(addr, port, c[i].args, 1, TMO, &l);

		CHECK(rc == c[i].want, "transport_args '%s' gave %s, want %s", c[i].args,
		      tlm_strerror(rc), tlm_strerror(c[i].want));
	}
	printf("PASS args: dev=/gid=/slots=/ack_timeout=/send_timeout= misfits refused\n");
}

struct abort_arg {
	struct tlm_lane *l;
	ssize_t got;           /* the blocked read's result */
	uint64_t aborted_ms;   /* when the abort was called */
};

static void *abort_reader(void *arg)
{
	struct abort_arg *a = arg;
	uint8_t b[16];

	a->got = ops->dp->read(a->l, b, sizeof(b), -1);
	return NULL;
}

static void *abort_later(void *arg)
{
	struct abort_arg *a = arg;

	/* Long enough for the writer to use up the credits; earlier would
	 * pass too (the next write would return the error). */
	usleep(500 * 1000);
	__atomic_store_n(&a->aborted_ms, tlm__now_ms(), __ATOMIC_RELEASE);
	ops->abort(a->l, -ETIMEDOUT);
	return NULL;
}

/* Write 64 KiB at a time into a lane the server never reads, until a
 * write fails with -ETIMEDOUT; *sent what was taken, *began when the write
 * that failed began. Nothing but the failure ends it (the server holds
 * the lane), and the lane takes far less than 64 MiB before it blocks. */
static void write_until_fail(const char *what, struct tlm_lane *l, uint64_t *sent,
				uint64_t *began)
{
	static uint8_t buf[65536];
	ssize_t n;

	memset(buf, 5, sizeof(buf));
	*sent = 0;
	for (;;) {
		*began = tlm__now_ms();
		n = ops->dp->write(l, buf, sizeof(buf));
		if (n <= 0)
			break;
		*sent += (uint64_t)n;
	}
	CHECK(n == -ETIMEDOUT, "%s: the blocked write gave %s after %llu bytes", what,
	      tlm_strerror((int)n), (unsigned long long)*sent);
	CHECK(*sent < 64u << 20, "%s: %llu bytes written into a lane nobody reads", what,
	      (unsigned long long)*sent);
}

/* The lane's abort op from a third thread, while the server reads nothing. */
static void abort_check(const char *addr, const char *port)
{
	uint8_t buf[16] = { 0 };
	struct abort_arg a = { .got = 1 };
	pthread_t rt, at;
	uint64_t sent, began, now;

	CHECK(ops->abort != NULL, "abort: the rdma lanes have no abort op");
	a.l = connect_one(addr, port);
	CHECK(pthread_create(&rt, NULL, abort_reader, &a) == 0, "reader thread");
	CHECK(pthread_create(&at, NULL, abort_later, &a) == 0, "abort thread");
	/* Without the abort the write would return at the lane's send
	 * timeout, 30 s. */
	write_until_fail("abort", a.l, &sent, &began);
	now = tlm__now_ms();
	pthread_join(at, NULL);
	pthread_join(rt, NULL);
	CHECK(a.got == -ETIMEDOUT, "abort: the blocked read gave %s", tlm_strerror((int)a.got));
	ops->abort(a.l, -EIO);
	CHECK(ops->dp->write(a.l, buf, 1) == -ETIMEDOUT, "abort: a later write");
	CHECK(ops->dp->read(a.l, buf, 1, 100) == -ETIMEDOUT, "abort: a later read");
	CHECK(ops->dp->flush(a.l) == -ETIMEDOUT, "abort: a later flush");
	CHECK(ops->dp->shutdown(a.l) == -ETIMEDOUT, "abort: a later shutdown");
	ops->close(a.l);
	printf("[client] PASS abort: a write blocked after %llu bytes and a read returned the "
	       "abort's error %llu ms after it, later calls too\n", (unsigned long long)sent,
	       (unsigned long long)(now - __atomic_load_n(&a.aborted_ms, __ATOMIC_ACQUIRE)));
}

/* send_timeout: a writer the server never reads from gives up on its own. */
static void stall_check(const char *addr, const char *port)
{
	struct tlm_lane *l = NULL;
	uint64_t sent, t0, t1;

	CHECK(ops->connect(addr, port, "dev=rxe0,gid=1,send_timeout=2000", 1, TMO, &l) == 0,
	      "stall: connect");
	write_until_fail("stall", l, &sent, &t0);
	t1 = tlm__now_ms();
	/* Not before its time: the write that failed waited 2 s at least. An
	 * upper bound only tells it from the 30 s default (a loaded machine
	 * may be late; this is no benchmark). */
	CHECK(t1 - t0 >= 2000 && t1 - t0 < 20000, "stall: the write failed after %llu ms",
	      (unsigned long long)(t1 - t0));
	CHECK(strstr(last_log, "has taken nothing for 2000 ms"),
	      "stall: the message does not name the time: %s", last_log);
	CHECK(ops->dp->write(l, "x", 1) == -ETIMEDOUT, "stall: a later write");
	ops->close(l);
	printf("[client] PASS stall: send_timeout=2000 failed a write blocked after %llu bytes "
	       "%llu ms after it began\n", (unsigned long long)sent,
	       (unsigned long long)(t1 - t0));
}

static void client(const char *addr, const char *port)
{
	static uint8_t buf[300000];
	struct tlm_lane *l;
	uint32_t seed = 12345;
	uint64_t sent = 0;
	ssize_t n;

	memlock_check(addr, port);
	args_check(addr, port);

	/* stream */
	l = connect_one(addr, port);
	while (sent < STREAM_BYTES) {
		size_t len = 1 + rnd(&seed) % sizeof(buf);

		if (len > STREAM_BYTES - sent)
			len = STREAM_BYTES - sent;
		for (size_t k = 0; k < len; k++)
			buf[k] = pat(sent + k);
		n = ops->dp->write(l, buf, len);
		CHECK(n == (ssize_t)len, "stream write: %s", tlm_strerror((int)n));
		sent += len;
	}
	CHECK(ops->dp->shutdown(l) == 0, "shutdown");
	{
		char reply[64] = { 0 };
		size_t got = 0;

		while ((n = ops->dp->read(l, reply + got, sizeof(reply) - 1 - got, TMO)) > 0)
			got += (size_t)n;
		CHECK(n == 0, "reply read: %s", tlm_strerror((int)n));
		CHECK(strcmp(reply, "got 8388608") == 0, "reply '%s'", reply);
	}
	ops->close(l);

	/* pages, in bursts of 100 */
	{
		static uint8_t data[100][4096];
		struct tlm_page_rec recs[100];

		l = connect_one(addr, port);
		CHECK(ops->set_mode(l, TLM_MODE_PAGES) == 0, "set_mode");
		l->mode = TLM_MODE_PAGES;
		for (unsigned i = 0; i < N_PAGES; i += 100) {
			for (unsigned k = 0; k < 100; k++)
				make_rec(&recs[k], data[k], i + k);
			CHECK(ops->dp->send_pages(l, recs, 100) == 100, "send_pages");
		}
		memset(recs, 0, sizeof(recs[0]));
		recs[0].flags = TLM_PF_LAST;
		CHECK(ops->dp->send_pages(l, recs, 1) == 1, "send LAST");
		ops->close(l);
	}

	/* badcrc */
	{
		static uint8_t data[3][4096];
		struct tlm_page_rec recs[3];

		l = connect_one(addr, port);
		ops->set_mode(l, TLM_MODE_PAGES);
		l->mode = TLM_MODE_PAGES;
		for (unsigned k = 0; k < 3; k++)
			make_rec(&recs[k], data[k], k);
		recs[2].crc ^= 1;
		CHECK(ops->dp->send_pages(l, recs, 3) == 3, "send_pages");
		/* Stay until the server read it and closed. */
		{
			unsigned cnt = 0;
			struct tlm_page_sink sink = { count_apply, &cnt };
			int rc = ops->dp->recv_pages(l, &sink, TMO);

			CHECK(rc == -TLM_EPEERCLOSED, "badcrc: waiting for close gave %s",
			      tlm_strerror(rc));
		}
		ops->close(l);
	}

	/* zerocopy */
	{
		uint8_t *src = zc_map();
		struct tlm_page_rec recs[128];
		struct zc_state z = { 0 };
		struct tlm_page_sink sink = { zc_apply, &z };
		int rc;

		for (unsigned i = 0; i < ZC_PAGES; i++)
			page_fill(src + (size_t)i * 4096, i, 4096);
		l = connect_one(addr, port);
		CHECK(ops->set_mode(l, TLM_MODE_PAGES) == 0, "set_mode");
		l->mode = TLM_MODE_PAGES;
		rc = ops->register_region(l, 0, src, ZC_PAGES * 4096, TLM_REG_SRC, TMO);
		CHECK(rc == 0, "register SRC: %s", tlm_strerror(rc));
		for (unsigned i = 0; i < ZC_PAGES; i += 128) {
			for (unsigned k = 0; k < 128; k++)
				recs[k] = (struct tlm_page_rec){ .index = i + k, .epoch = 1,
								 .flags = TLM_PF_LIVE, .len = 4096,
								 .data = src + (size_t)(i + k) * 4096 };
			CHECK(ops->dp->send_pages(l, recs, 128) == 128, "zerocopy send_pages");
		}
		recs[0] = (struct tlm_page_rec){ .flags = TLM_PF_LAST };
		CHECK(ops->dp->send_pages(l, recs, 1) == 1, "zerocopy LAST");
		rc = ops->wait_sent(l, ZC_PAGES + 1, TMO);
		CHECK(rc == 0, "zerocopy wait_sent: %s", tlm_strerror(rc));
		/* The server withdrew its offer once it sends LAST back. */
		while (!z.last) {
			rc = ops->dp->recv_pages(l, &sink, TMO);
			CHECK(rc > 0, "zerocopy: waiting for the server: %s", tlm_strerror(rc));
		}
		recs[0] = (struct tlm_page_rec){ .index = 5, .epoch = 2, .flags = TLM_PF_LIVE,
						 .len = 4096, .data = src };
		memset(src, 0xee, 4096);
		rc = ops->dp->send_pages(l, recs, 1);
		if (rc == 1)
			rc = ops->wait_sent(l, ZC_PAGES + 2, TMO);
		CHECK(rc < 0, "zerocopy: a WRITE after the withdrawal succeeded");
		ops->unregister_regions(l);
		ops->close(l);
		munmap(src, ZC_PAGES * 4096);
	}

	abort_check(addr, port);
	stall_check(addr, port);

	/* vanish: 1000 bytes, no FIN, close */
	l = connect_one(addr, port);
	memset(buf, 7, 1000);
	CHECK(ops->dp->write(l, buf, 1000) == 1000, "vanish write");
	ops->close(l);
}

static int skip_or_fail(int rc, const char *addr)
{
	if (rc == -ENODEV || rc == -EADDRNOTAVAIL || rc == -ENOENT) {
		printf("SKIP: no RDMA device with %s (%s); run via tests/vm/run-in-vm.sh\n",
		       addr, tlm_strerror(rc));
		return 77;
	}
	CHECK(rc == 0, "listen: %s", tlm_strerror(rc));
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = "198.18.0.1";
	struct tlm_xlistener *xl = NULL;
	char port[16];
	pid_t pid;
	int rc, st;
	int pfd[2];

	setvbuf(stdout, NULL, _IONBF, 0);
	tlm_set_log_fn(log_fn, NULL);
	if (argc == 4 && strcmp(argv[1], "--server") == 0) {
		rc = skip_or_fail(ops->listen(argv[2], argv[3], NULL, &xl), argv[2]);
		if (rc)
			return rc;
		server(xl);
		ops->listener_close(xl);
		printf("1 passed, 0 failed\n");
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "--client") == 0) {
		who = "client";
		client(argv[2], argv[3]);
		printf("1 passed, 0 failed\n");
		return 0;
	}
	if (argc == 2)
		addr = argv[1];
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [ADDR] | --server ADDR PORT | --client ADDR PORT\n", argv[0]);
		return 2;
	}
	/* Fork before any verbs or rdma_cm resource exists: the child must not
	 * share the parent's rdma_cm file (destroying an id there would
	 * destroy the parent's). The port comes through a pipe. */
	CHECK(pipe(pfd) == 0, "pipe");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		ssize_t n;

		who = "client";
		close(pfd[1]);
		n = read(pfd[0], port, sizeof(port) - 1);
		if (n <= 0)
			_exit(77);   /* the parent skipped or failed */
		port[n] = 0;
		client(addr, port);
		_exit(0);
	}
	close(pfd[0]);
	rc = ops->listen(addr, "0", NULL, &xl);
	if (rc) {
		close(pfd[1]);
		waitpid(pid, &st, 0);
		return skip_or_fail(rc, addr);
	}
	snprintf(port, sizeof(port), "%d", ops->listener_port(xl));
	CHECK(atoi(port) > 0, "listener port");
	CHECK(write(pfd[1], port, strlen(port)) == (ssize_t)strlen(port), "pipe write");
	close(pfd[1]);

	server(xl);
	ops->listener_close(xl);
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client failed (status %d)", st);
	printf("1 passed, 0 failed\n");
	return 0;
}
