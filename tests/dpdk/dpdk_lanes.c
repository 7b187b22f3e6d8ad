/* SPDX-License-Identifier: MIT */
/*
 * DPDK lane tests, two processes (each with its own EAL):
 *
 *   dpdk_lanes --case NAME [--args ARGS]
 *
 *   bytes    byte streams both ways, content checked, orderly end (FIN)
 *   pages    page records (full, short, zero, LAST), content and order checked
 *   faults   bytes + pages with drop/reorder/dup 0.01 on both senders:
 *            every byte exactly once, in order
 *   dead     the connecting process is killed with SIGKILL mid-stream: the
 *            accepting side gets -TLM_EPEERCLOSED, not a hang, and learns
 *            it from the memif link going down (not from dead_ms silence)
 *   afpacket bytes + pages + faults over net_af_packet on a veth pair
 *            between two network namespaces the test creates (198.18.x.x),
 *            peers found by our ARP
 *   session, session-afpacket
 *            bytes and pages through tlm_listen/tlm_accept/tlm_connect (PSK
 *            handshake, two data lanes) over memif / af_packet
 *   live     zero copy rules: pages of a buffer registered TLM_REG_SRC go
 *            as TLM_PF_LIVE records (crc 0, the lane sums it), mixed with
 *            plain records; every page arrives byte-equal; DST registration
 *            and LIVE records of an unregistered region are refused
 *            On memif (zc=auto) every LIVE record goes zero-copy: its
 *            packets point into the buffer, the record has no crc (NOSUM)
 *            and the lane's log counts them all as such
 *   live-mutate
 *            the same while a thread rewrites pages word by word under the
 *            lane: every word received is one the page held, and a last
 *            pass after the writer stops is exact
 *   live-copy
 *            live-mutate with zc=off on both sides: LIVE records are copied,
 *            their crc summed from the copy, and none may fail it
 *   live-faults
 *            live-mutate, zero-copy, with drop/reorder/dup 0.01 on both
 *            senders (re-sends read the pages again)
 *   live-1500, live-faults-1500, faults-1500
 *            live-mutate, live-faults and faults at mtu 1500 (the embedded
 *            memif's default is 9000): every page in chains of light
 *            packets, one range of it each
 *   live-afpacket
 *            live-faults over net_af_packet on the veth pair, zc=on on
 *            both ends: zero-copy (chained) frames through a second PMD
 *   live-refused
 *            a zc=on sender and a zc=off receiver: the receiver refuses the
 *            first record without a crc (-TLM_ECRC, with a message that
 *            says which setting to change) and applies nothing of it;
 *            the sender learns it from the receiver's RST
 *   torn     memif's rings vanish under the receiving process while it
 *            polls them (as when memif unmaps them because the peer
 *            exited): the acceptor makes every memif mapping inaccessible
 *            mid-stream; its bursts fault, are cut short, and the lane
 *            fails with a clear error instead of the process dying
 *   queues1, queues2, queues-mismatch
 *            pages + bytes with queues=1 (every lane on the shared queue,
 *            the software demux that af_packet and NICs without rte_flow
 *            use), queues=2 (one lane on its own queue, one shared), and
 *            queues=8 connecting to a listener given queues=2
 *   tap, tap-flow
 *            bytes + pages + faults between net_tap (queues=4, accepting)
 *            and net_af_packet (connecting), in a network namespace the
 *            test creates (tap: af_packet on a macvlan on the tap;
 *            tap-flow: on a veth whose peer is net_tap's remote=). tap: on a kernel without TC flower (this host's) the port
 *            refuses rte_flow; that is logged once per process and every
 *            lane runs on the shared queue 0. tap-flow: on a kernel with
 *            cls_flower, sch_multiq and act_skbedit (the VM harness's;
 *            skips elsewhere) each lane gets a queue of its own, a
 *            different one per lane, steered by rte_flow, and every
 *            packet it receives but its SYN comes in on that queue
 *   slow-start
 *            bytes, the connecting side's port starting 3 s late
 *            (start_delay_ms=3000, as an EAL under TCG on a loaded host)
 *            and its connects given 1.5 s: the timeout is the wait for
 *            the peer, its own start does not count against it
 *   tap-flow-refused
 *            tap-flow with the second lane's rule refused after the port
 *            accepted steering (flow_refuse=2 on net_tap): logged once,
 *            that lane on the shared queue 0, the other on its own, every
 *            byte and page of both checked
 *
 * The parent forks the accepting and the connecting child and only passes
 * the port along; children exit 0 on success, print why otherwise.
 */

#include <errno.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tlm-internal.h"
#include "tests/check.h"

extern const struct tlm_lane_ops tlm__dpdk_ops;

static const struct tlm_lane_ops *ops = &tlm__dpdk_ops;
static char srv_args[512], cli_args[512];
static const char *srv_addr, *cli_addr = "198.18.0.1";
static char netns_a[64], netns_b[64];

#define STREAM_BYTES (6u << 20)
#define N_PAGES 3000
#define FAULTS "fault=drop=0.01,reorder=0.01,dup=0.01"

static bool saw_link_down;   /* dead: which path noticed */
static bool saw_nosum_refused, saw_reset, saw_torn;
static long long live_zc = -1, live_copied = -1;  /* from the lane's log */
static bool zc_expected = true, refused_case;
/* waits for the peer to come: a VM under TCG takes its time to start an EAL */
static int tmo_ms = 20000, child_s = 100;
static int conn_tmo_ms = 20000;   /* the connector's connects */
/* tap cases: what the lanes' close lines and the port said */
static int tap_case;          /* 0, 1 tap, 2 tap-flow, 3 tap-flow-refused */
static int flow_refusals;
static struct { unsigned q; unsigned long long rx, own; } closed[8];
static unsigned nclosed;

static void log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (strstr(msg, "memif link down"))
		saw_link_down = true;
	if (strstr(msg, "page record without a crc") && strstr(msg, "zc=off"))
		saw_nosum_refused = true;
	if (strstr(msg, "peer refused what we sent"))
		saw_reset = true;
	if (strstr(msg, "memif rings unmapped under a burst"))
		saw_torn = true;
	const char *z = strstr(msg, "LIVE records sent zero-copy ");
	if (z && sscanf(z, "LIVE records sent zero-copy %lld, copied %lld", &live_zc,
			&live_copied) != 2)
		live_zc = live_copied = -1;
	if (strstr(msg, "rte_flow refused"))
		flow_refusals++;
	const char *cl = strstr(msg, ") closed: ");
	if (cl && nclosed < 8) {
		unsigned long long out, rs;
		if (sscanf(cl, ") closed: %llu pkts out, %llu in, %llu segments re-sent; queue %u, "
			   "%llu pkts in on it", &out, &closed[nclosed].rx, &rs, &closed[nclosed].q,
			   &closed[nclosed].own) == 5)
			nclosed++;
	}
	if (level <= TLM_LOG_WARN || getenv("TLM_TEST_DEBUG"))
		fprintf(stderr, "    [%d] %s\n", (int)getpid(), msg);
}

static uint8_t pat(unsigned dir, uint64_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + dir * 7919;
	return (uint8_t)(x >> 29 ^ x >> 7 ^ i);
}

/* ---- byte streams ---- */

static void write_stream(struct tlm_lane *l, unsigned dir, uint64_t total)
{
	static uint8_t buf[70000];
	uint64_t off = 0, seed = dir + 1;

	while (off < total) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t n = 1 + (size_t)(seed >> 33) % sizeof(buf);
		if (n > total - off)
			n = (size_t)(total - off);
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(dir, off + i);
		ssize_t w = ops->dp->write(l, buf, n);
		if (w != (ssize_t)n)
			FAIL("write: %s", tlm_strerror((int)w));
		off += n;
	}
	CHECK_OK(ops->dp->shutdown(l));
}

static void read_stream(struct tlm_lane *l, unsigned dir, uint64_t total)
{
	static uint8_t buf[50000];
	uint64_t off = 0;

	for (;;) {
		ssize_t r = ops->dp->read(l, buf, sizeof(buf), 20000);
		if (r == 0)
			break;
		if (r < 0)
			FAIL("read at %llu: %s", (unsigned long long)off, tlm_strerror((int)r));
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != pat(dir, off + (uint64_t)i))
				FAIL("byte %llu differs", (unsigned long long)(off + (uint64_t)i));
		off += (uint64_t)r;
		if (off > total)
			FAIL("too many bytes: %llu", (unsigned long long)off);
	}
	if (off != total)
		FAIL("stream ended at %llu of %llu", (unsigned long long)off,
		     (unsigned long long)total);
}

/* ---- page records ---- */

static uint32_t page_len(uint64_t i)
{
	return i % 97 == 5 ? 0 : i % 13 == 3 ? (uint32_t)(1 + i % 4095) : 4096;
}

static void fill_page(uint8_t *p, uint32_t len, uint64_t i)
{
	for (uint32_t k = 0; k < len; k++)
		p[k] = pat(3, i * 4099 + k);
}

/* Record i as apply() expects it, its data in buf. */
static struct tlm_page_rec page_rec(uint64_t i, uint8_t *buf)
{
	uint32_t len = page_len(i);

	fill_page(buf, len, i);
	return (struct tlm_page_rec){ .index = i, .epoch = (uint32_t)(i / 100),
		.flags = len ? 0 : TLM_PF_ZERO, .region = (uint16_t)(i % 3), .len = len,
		.crc = tlm_crc32c(0, buf, len), .data = buf };
}

static void send_pages(struct tlm_lane *l)
{
	static uint8_t data[16][4096];
	struct tlm_page_rec recs[16];

	for (uint64_t i = 0; i < N_PAGES; ) {
		unsigned n = 0;
		for (; n < 16 && i < N_PAGES; n++, i++)
			recs[n] = page_rec(i, data[n]);
		int r = ops->dp->send_pages(l, recs, n);
		if (r != (int)n)
			FAIL("send_pages: %s", tlm_strerror(r));
	}
	struct tlm_page_rec last = { .index = 0, .flags = TLM_PF_LAST };
	CHECK(ops->dp->send_pages(l, &last, 1) == 1);
	CHECK_OK(ops->dp->flush(l));
}

struct pstate {
	uint64_t next;
	bool last;
};

static int apply(void *arg, const struct tlm_page_rec *r)
{
	struct pstate *s = arg;
	uint8_t want[4096];

	if (r->flags & TLM_PF_LAST) {
		if (s->next != N_PAGES)
			FAIL("LAST after %llu records", (unsigned long long)s->next);
		s->last = true;
		return 0;
	}
	if (r->index != s->next)
		FAIL("record %llu arrived, expected %llu", (unsigned long long)r->index,
		     (unsigned long long)s->next);
	uint32_t len = page_len(r->index);
	if (r->len != len || r->epoch != r->index / 100 || r->region != r->index % 3 ||
	    (!len) != !!(r->flags & TLM_PF_ZERO))
		FAIL("record %llu: bad header", (unsigned long long)r->index);
	fill_page(want, len, r->index);
	if (len && memcmp(want, r->data, len))
		FAIL("record %llu: content differs", (unsigned long long)r->index);
	s->next++;
	return 0;
}

static void recv_pages(struct tlm_lane *l)
{
	struct pstate s = { 0 };
	struct tlm_page_sink sink = { apply, &s };

	while (!s.last) {
		int n = ops->dp->recv_pages(l, &sink, 20000);
		if (n == 0)
			FAIL("recv_pages: timeout after %llu", (unsigned long long)s.next);
		if (n < 0)
			FAIL("recv_pages: %s", tlm_strerror(n));
	}
}

/* ---- torn: memif's rings vanish while we poll ---- */

/* Every memif mapping of this process made inaccessible: what memif's
 * disconnect does to a burst running on another thread when it unmaps
 * them. Returns how many mappings. */
static unsigned protect_memif(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned n = 0;

	CHECK(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		if (!strstr(line, "memif") || sscanf(line, "%lx-%lx", &a, &b) != 2)
			continue;
		CHECK(mprotect((void *)a, b - a, PROT_NONE) == 0);
		n++;
	}
	fclose(f);
	return n;
}

static void torn_recv(struct tlm_lane *l)
{
	struct pstate s = { 0 };
	struct tlm_page_sink sink = { apply, &s };
	int n;

	while (s.next < 200) {
		n = ops->dp->recv_pages(l, &sink, 20000);
		if (n <= 0)
			FAIL("recv_pages before: %s", n ? tlm_strerror(n) : "timeout");
	}
	unsigned maps = protect_memif();
	if (!maps)
		FAIL("no memif mapping found in /proc/self/maps");
	do
		n = ops->dp->recv_pages(l, &sink, 20000);
	while (n > 0);
	if (n != -TLM_EPEERCLOSED || !saw_torn)
		FAIL("after the rings went: %s, %slogged as torn", n ? tlm_strerror(n) : "timeout",
		     saw_torn ? "" : "not ");
	printf("  %u memif mappings made inaccessible after %llu records: the lane failed, "
	       "the process lives\n", maps, (unsigned long long)s.next);
	/* the rings are still inaccessible: leave without tearing the port
	 * down (the EAL's runtime directory goes by hand, as for 'dead') */
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf /var/run/dpdk/tlm-%d", (int)getpid());
	if (system(cmd)) {
		/* nothing there */
	}
	printf("  acceptor ok\n");
	_exit(0);
}

/* Pages until the lane fails (the acceptor's rings went). */
static void torn_send(struct tlm_lane *l)
{
	static uint8_t data[16][4096];
	struct tlm_page_rec recs[16];
	int r;

	for (uint64_t i = 0;; i += 16) {
		for (unsigned n = 0; n < 16; n++)
			recs[n] = page_rec(i + n, data[n]);
		r = ops->dp->send_pages(l, recs, 16);
		if (r < 0)
			break;
	}
	printf("  sender stopped: %s\n", tlm_strerror(r));
}

/* ---- LIVE records ---- */

#define LIVE_PAGES  256
#define LIVE_ROUNDS 30
#define LIVE_WORDS  (4096 / 8)
#define FINAL_VER   0xffffu

/* Word w of page i at version v: each word received tells its page, its
 * place and the version it was read at. */
static uint64_t live_word(uint64_t i, unsigned w, uint64_t v)
{
	return v << 32 | i << 12 | w;
}

static void live_fill(uint64_t *mem, uint64_t i, uint64_t v)
{
	for (unsigned w = 0; w < LIVE_WORDS; w++)
		__atomic_store_n(&mem[i * LIVE_WORDS + w], live_word(i, w, v), __ATOMIC_RELAXED);
}

struct mutator {
	uint64_t *mem;
	atomic_bool stop;
	uint64_t writes;
};

/* Rewrites random pages at ever newer versions, one word at a time: a
 * copy taken meanwhile holds some words old, some new. */
static void *mutate(void *arg)
{
	struct mutator *m = arg;
	uint64_t seed = 7, v = 0;

	while (!atomic_load(&m->stop)) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		if (++v == FINAL_VER)
			v = 1;
		live_fill(m->mem, (seed >> 33) % LIVE_PAGES, v);
		m->writes++;
	}
	return NULL;
}

static void send_live(struct tlm_lane *l, bool mutating)
{
	size_t size = (size_t)LIVE_PAGES * 4096;
	uint64_t *mem = aligned_alloc(4096, size);
	static uint8_t snap[32][4096];
	struct tlm_page_rec recs[32];
	struct mutator m = { .mem = mem };
	pthread_t thr;
	uint64_t sent = 0, live = 0;
	int r = 0;

	CHECK(mem);
	for (uint64_t i = 0; i < LIVE_PAGES; i++)
		live_fill(mem, i, 0);
	CHECK(tlm_lane_register_region(l, 1, mem, size, TLM_REG_DST, 0) == -EOPNOTSUPP);
	CHECK_OK(tlm_lane_register_region(l, 1, mem, size, TLM_REG_SRC, 1000));
	recs[0] = (struct tlm_page_rec){ .region = 2, .flags = TLM_PF_LIVE, .len = 4096,
					 .data = mem };
	CHECK(ops->dp->send_pages(l, recs, 1) == -EINVAL);
	if (mutating)
		CHECK(pthread_create(&thr, NULL, mutate, &m) == 0);
	for (unsigned round = 0; round <= LIVE_ROUNDS; round++) {
		if (round == LIVE_ROUNDS) {
			/* the guest paused: the last pass must arrive exact */
			if (mutating) {
				atomic_store(&m.stop, true);
				pthread_join(thr, NULL);
			}
			for (uint64_t i = 0; i < LIVE_PAGES; i++)
				live_fill(mem, i, FINAL_VER);
		}
		for (uint64_t i = 0; i < LIVE_PAGES; i += 32) {
			for (unsigned k = 0; k < 32; k++) {
				uint64_t pg = i + k;
				const uint8_t *src = (const uint8_t *)(mem + pg * LIVE_WORDS);
				recs[k] = (struct tlm_page_rec){ .index = pg, .epoch = round,
					.region = 1, .len = 4096, .flags = TLM_PF_LIVE, .data = src };
				if (pg % 5 == 2) {
					/* a staging copy, as the engine makes without LIVE */
					memcpy(snap[k], src, 4096);
					recs[k].flags = 0;
					recs[k].data = snap[k];
					recs[k].crc = tlm_crc32c(0, snap[k], 4096);
				} else {
					live++;
				}
			}
			r = ops->dp->send_pages(l, recs, 32);
			if (r != 32)
				break;
			sent += 32;
		}
		if (r == 32)
			r = tlm_lane_wait_sent(l, sent, 20000);
		if (r < 0)
			break;
	}
	if (refused_case) {
		/* the receiver gave up on the first record and said so at once
		 * (RST), not by going silent */
		CHECK(r < 0);
		CHECK(saw_reset);
		if (mutating) {
			atomic_store(&m.stop, true);
			pthread_join(thr, NULL);
		}
		tlm_lane_unregister_regions(l);
		free(mem);
		return;
	}
	if (r < 0)
		FAIL("send_pages/wait_sent: %s", tlm_strerror(r));
	struct tlm_page_rec last = { .flags = TLM_PF_LAST };
	CHECK(ops->dp->send_pages(l, &last, 1) == 1);
	CHECK_OK(ops->dp->flush(l));
	tlm_lane_unregister_regions(l);
	if (mutating)
		printf("  %llu page rewrites while sending\n", (unsigned long long)m.writes);
	printf("  LIVE records: %lld zero-copy, %lld copied (of %llu)\n", live_zc, live_copied,
	       (unsigned long long)live);
	if (zc_expected ? live_zc != (long long)live || live_copied != 0 :
			  live_zc != 0 || live_copied != (long long)live)
		FAIL("LIVE records should all go %s", zc_expected ? "zero-copy" : "copied");
	free(mem);
}

struct lstate {
	bool mutating, last;
	uint64_t records, finals, mixed;
};

static int apply_live(void *arg, const struct tlm_page_rec *r)
{
	struct lstate *s = arg;
	uint64_t v0 = 0;
	bool mixed = false;

	if (r->flags & TLM_PF_LAST) {
		if (s->records != (uint64_t)LIVE_PAGES * (LIVE_ROUNDS + 1) || s->finals != LIVE_PAGES)
			FAIL("LAST after %llu records, %llu final", (unsigned long long)s->records,
			     (unsigned long long)s->finals);
		s->last = true;
		return 0;
	}
	if (r->len != 4096 || r->region != 1 || r->index >= LIVE_PAGES || r->epoch > LIVE_ROUNDS ||
	    r->flags)
		FAIL("record %llu: bad header", (unsigned long long)r->index);
	for (unsigned w = 0; w < LIVE_WORDS; w++) {
		uint64_t x;
		memcpy(&x, (const uint8_t *)r->data + w * 8, 8);
		uint64_t v = x >> 32;
		if ((x & 0xffffffffu) != (r->index << 12 | w))
			FAIL("page %llu word %u: %llx is no word of this page",
			     (unsigned long long)r->index, w, (unsigned long long)x);
		if (r->epoch == LIVE_ROUNDS ? v != FINAL_VER : v >= FINAL_VER || (!s->mutating && v))
			FAIL("page %llu round %u word %u: version %llu", (unsigned long long)r->index,
			     r->epoch, w, (unsigned long long)v);
		if (!w)
			v0 = v;
		mixed |= v != v0;
	}
	s->finals += r->epoch == LIVE_ROUNDS;
	s->mixed += mixed;
	s->records++;
	return 0;
}

static void recv_live(struct tlm_lane *l, bool mutating)
{
	struct lstate s = { .mutating = mutating };
	struct tlm_page_sink sink = { apply_live, &s };

	while (!s.last) {
		int n = ops->dp->recv_pages(l, &sink, 20000);
		if (n == 0)
			FAIL("recv_pages: timeout after %llu", (unsigned long long)s.records);
		if (n < 0 && refused_case) {
			if (n != -TLM_ECRC || !saw_nosum_refused || s.records)
				FAIL("recv_pages: %s after %llu records, refusal %slogged",
				     tlm_strerror(n), (unsigned long long)s.records,
				     saw_nosum_refused ? "" : "not ");
			printf("  the first record without a crc was refused\n");
			return;
		}
		if (n < 0)
			FAIL("recv_pages: %s", tlm_strerror(n));
		if (refused_case)
			FAIL("records without a crc accepted over zc=off");
	}
	printf("  %llu LIVE/plain records verified, %llu read mid-rewrite\n",
	       (unsigned long long)s.records, (unsigned long long)s.mixed);
}

/* ---- tap: which queue each lane received on ---- */

/* The net_tap side, after both its lanes closed: tap, rte_flow refused
 * once and every lane on queue 0; tap-flow, never refused, each lane on a
 * queue of its own and all it received there but the SYN that made it. */
static void check_queues(void)
{
	if (!tap_case)
		return;
	CHECK(nclosed == 2);
	for (unsigned i = 0; i < nclosed; i++)
		printf("  tap lane %u: queue %u, %llu of %llu packets in on it\n", i,
		       closed[i].q, closed[i].own, closed[i].rx);
	if (tap_case == 1) {
		CHECK(flow_refusals == 1);
		for (unsigned i = 0; i < nclosed; i++)
			CHECK(closed[i].q == 0 && closed[i].own == 0);
		return;
	}
	if (tap_case == 3) {
		/* one lane refused its rule: on queue 0, counted nothing on a
		 * queue of its own; the other steered as in tap-flow */
		CHECK(flow_refusals == 1);
		unsigned shared = closed[0].q == 0 ? 0 : 1, own = 1 - shared;
		CHECK(closed[shared].q == 0 && closed[shared].own == 0);
		CHECK(closed[shared].rx > 100);
		CHECK(closed[own].q > 0 && closed[own].q < 4);
		CHECK(closed[own].rx > 100 && closed[own].own + 2 >= closed[own].rx);
		return;
	}
	CHECK(flow_refusals == 0);
	CHECK(closed[0].q != closed[1].q);
	for (unsigned i = 0; i < nclosed; i++) {
		CHECK(closed[i].q > 0 && closed[i].q < 4);
		CHECK(closed[i].rx > 100);
		CHECK(closed[i].own + 2 >= closed[i].rx);
	}
}

/* ---- sides ---- */

static void enter_netns(const char *ns)
{
	char path[128];
	int fd;

	if (!ns[0])
		return;
	snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		FAIL("setns %s: %s", ns, strerror(errno));
	close(fd);
}

static struct tlm_lane *set_pages(struct tlm_lane *l)
{
	if (ops->set_mode)
		CHECK_OK(ops->set_mode(l, TLM_MODE_PAGES));
	else
		l->mode = TLM_MODE_PAGES;
	return l;
}

/* Accepting side: lane 1 byte stream both ways, lane 2 pages in. */
static void acceptor(const char *cas, int pfd)
{
	struct tlm_xlistener *xl;
	struct tlm_lane *b, *pg;

	enter_netns(netns_a);
	CHECK_OK(ops->listen(srv_addr, "0", srv_args, &xl));
	dprintf(pfd, "%d\n", ops->listener_port(xl));
	close(pfd);
	CHECK_OK(ops->accept(xl, tmo_ms, &b));
	if (!strcmp(cas, "dead")) {
		char c;
		CHECK(ops->dp->read(b, &c, 1, tmo_ms) == 1);
		/* the parent kills the connector now; we must learn it */
		uint64_t t0 = tlm__now_ms();
		for (;;) {
			uint8_t buf[4096];
			ssize_t r = ops->dp->read(b, buf, sizeof(buf), 30000);
			if (r > 0)
				continue;
			if (r != -TLM_EPEERCLOSED)
				FAIL("dead peer: read gave %s", r ? tlm_strerror((int)r) : "EOF");
			break;
		}
		ssize_t w = 0;
		for (int i = 0; i < 10 && w >= 0; i++)
			w = ops->dp->write(b, "x", 1);
		CHECK(w == -TLM_EPEERCLOSED);
		/* memif: by the link going down, not by dead_ms of silence */
		CHECK(saw_link_down);
		printf("  dead peer detected after %llu ms\n",
		       (unsigned long long)(tlm__now_ms() - t0));
		ops->close(b);
		ops->listener_close(xl);
		return;
	}
	CHECK_OK(ops->accept(xl, tmo_ms, &pg));
	set_pages(pg);
	bool live = !strncmp(cas, "live", 4);
	if (!strcmp(cas, "torn"))
		torn_recv(pg);
	if (live) {
		recv_live(pg, strcmp(cas, "live") != 0);
	} else if (strcmp(cas, "pages")) {
		/* the lane's pollfd turns readable once bytes are in (net_tap
		 * signals SIGIO to the process as packets come: EINTR) */
		struct pollfd pf = { .fd = ops->pollfd(b), .events = POLLIN };
		CHECK(pf.fd >= 0);
		int pr;
		while ((pr = poll(&pf, 1, tmo_ms)) < 0 && errno == EINTR)
			;
		if (pr != 1 || !(pf.revents & POLLIN))
			FAIL("pollfd %d: poll gave %d (%s), revents %#x", pf.fd, pr,
			     pr < 0 ? strerror(errno) : "-", (unsigned)pf.revents);
		read_stream(b, 0, STREAM_BYTES);
		write_stream(b, 1, STREAM_BYTES / 2);
	}
	if (strcmp(cas, "bytes") && !live)
		recv_pages(pg);
	/* orderly end: wait for the peer's close so our data was all taken */
	char c;
	ssize_t r = ops->dp->read(b, &c, 1, tmo_ms);
	if (r != 0 && r != -TLM_EPEERCLOSED)
		FAIL("final read: %s", tlm_strerror((int)r));
	uint64_t tx, rx;
	tx = b->tx_bytes + pg->tx_bytes;
	rx = b->rx_bytes + pg->rx_bytes;
	printf("  acceptor ok: rx %llu tx %llu payload bytes\n",
	       (unsigned long long)rx, (unsigned long long)tx);
	ops->close(pg);
	ops->close(b);
	ops->listener_close(xl);
	check_queues();
}

static void connector(const char *cas, const char *port)
{
	struct tlm_lane *b, *pg;

	enter_netns(netns_b);
	uint64_t t0 = tlm__now_ms();
	CHECK_OK(ops->connect(cli_addr, port, cli_args, 1, conn_tmo_ms, &b));
	if (conn_tmo_ms < 3000)
		printf("  first connect (%d ms timeout) took %llu ms\n", conn_tmo_ms,
		       (unsigned long long)(tlm__now_ms() - t0));
	if (!strcmp(cas, "dead")) {
		CHECK(ops->dp->write(b, "go", 2) == 2);
		/* keep the lane busy until the parent kills us */
		static uint8_t buf[65536];
		for (;;)
			if (ops->dp->write(b, buf, sizeof(buf)) < 0)
				FAIL("connector write failed before being killed");
	}
	CHECK_OK(ops->connect(cli_addr, port, cli_args, 2, conn_tmo_ms, &pg));
	set_pages(pg);
	bool live = !strncmp(cas, "live", 4);
	if (!strcmp(cas, "torn")) {
		torn_send(pg);
		ops->close(pg);
		ops->close(b);
		printf("  connector ok\n");
		return;
	}
	if (live) {
		send_live(pg, strcmp(cas, "live") != 0);
	} else if (strcmp(cas, "pages")) {
		write_stream(b, 0, STREAM_BYTES);
		read_stream(b, 1, STREAM_BYTES / 2);
	}
	if (strcmp(cas, "bytes") && !live)
		send_pages(pg);
	ops->close(pg);
	ops->close(b);
	printf("  connector ok\n");
}

/* ---- the same through the public session API (handshake, PSK) ---- */

static struct tlm_psk psk;

/* The helpers drive the transport's own datapath (ops->dp), so the lanes
 * stay clear; the conformance suite runs dpdk lanes sealed (dpdk-*). */
static struct tlm_session_cfg sess_cfg(const char *targs)
{
	struct tlm_session_cfg c = { .transport = "dpdk", .transport_args = targs,
		.n_lanes = 2, .page_size = 4096, .psk = &psk, .timeout_ms = 20000,
		.protect = TLM_PROTECT_NONE };
	c.lane_modes[1] = TLM_MODE_BYTES;
	c.lane_modes[2] = TLM_MODE_PAGES;
	return c;
}

static void sess_acceptor(int pfd)
{
	struct tlm_session_cfg cfg = sess_cfg(srv_args);
	struct tlm_listener *xl;
	struct tlm_session *s;

	enter_netns(netns_a);
	CHECK_OK(tlm_listen(&cfg, srv_addr, "0", &xl));
	dprintf(pfd, "%d\n", tlm_listener_port(xl));
	close(pfd);
	CHECK_OK(tlm_accept(xl, 20000, &s));
	CHECK(tlm_session_lanes(s) == 2);
	read_stream(tlm_session_lane(s, 1), 0, STREAM_BYTES);
	write_stream(tlm_session_lane(s, 1), 1, STREAM_BYTES / 2);
	recv_pages(tlm_session_lane(s, 2));
	char c;
	CHECK(tlm_lane_read(tlm_session_lane(s, 0), &c, 1, 20000) == 1 && c == 'k');
	printf("  session acceptor ok\n");
	tlm_session_close(s);
	tlm_listener_close(xl);
}

static void sess_connector(const char *port)
{
	struct tlm_session_cfg cfg = sess_cfg(cli_args);
	struct tlm_session *s;

	enter_netns(netns_b);
	CHECK_OK(tlm_connect(&cfg, cli_addr, port, &s));
	write_stream(tlm_session_lane(s, 1), 0, STREAM_BYTES);
	read_stream(tlm_session_lane(s, 1), 1, STREAM_BYTES / 2);
	send_pages(tlm_session_lane(s, 2));
	CHECK(tlm_lane_write(tlm_session_lane(s, 0), "k", 1) == 1);
	/* the acceptor closes first: our close must not lose the 'k' */
	char c;
	ssize_t r = tlm_lane_read(tlm_session_lane(s, 0), &c, 1, 20000);
	CHECK(r == 0 || r == -TLM_EPEERCLOSED);
	printf("  session connector ok\n");
	tlm_session_close(s);
}

/* ---- network namespaces for af_packet ---- */

static int sh(const char *cmd)
{
	int r = system(cmd);
	return r == 0 ? 0 : -1;
}

static void netns_down(void)
{
	char cmd[256];

	if (netns_a[0]) {
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null",
			 netns_a, netns_b);
		if (sh(cmd)) {
			/* already gone */
		}
	}
}

static int netns_up(void)
{
	char cmd[1024];
	int id = (int)getpid() % 10000;

	snprintf(netns_a, sizeof(netns_a), "tlmdpdkA%d", id);
	snprintf(netns_b, sizeof(netns_b), "tlmdpdkB%d", id);
	/* the kernel side of each veth carries no address: only the DPDK
	 * processes answer ARP for 198.18.7.1/2 */
	snprintf(cmd, sizeof(cmd),
		 "set -e; ip netns add %s; ip netns add %s; "
		 "ip link add tdv%da netns %s type veth peer name tdv%db netns %s; "
		 "ip -n %s link set tdv%da up; ip -n %s link set tdv%db up; "
		 "ip netns exec %s sysctl -qw net.ipv6.conf.all.disable_ipv6=1; "
		 "ip netns exec %s sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
		 netns_a, netns_b, id, netns_a, id, netns_b,
		 netns_a, id, netns_b, id, netns_a, netns_b);
	if (sh(cmd)) {
		netns_down();
		return -1;
	}
	snprintf(srv_args, sizeof(srv_args),
		 "vdev=net_af_packet0,iface=tdv%da,ip=198.18.7.1," FAULTS,
		 id);
	snprintf(cli_args, sizeof(cli_args),
		 "vdev=net_af_packet0,iface=tdv%db,ip=198.18.7.2," FAULTS,
		 id);
	cli_addr = "198.18.7.1";
	srv_addr = "198.18.7.1";
	return 0;
}

/* tap: one namespace; the accepting side is net_tap, queues=4, the
 * connecting side net_af_packet. net_tap gives the tap its port's MAC
 * (a port ignores frames from its own MAC, so af_packet cannot sit on
 * the tap itself), and its rules match only frames whose protocol the
 * kernel has parsed, as a frame that came in on an Ethernet device has.
 * tap (no TC flower): a persistent multi-queue tap (net_tap opens its
 * queues on it) with a macvlan on it for af_packet. tap-flow: a veth
 * pair, af_packet on one end and net_tap's remote= on the other: what
 * comes in there net_tap's TC rules redirect to the tap, through its
 * queue rules, and what it sends goes out there. */
static int netns_up_tap(bool flow)
{
	char cmd[1024];
	int id = (int)getpid() % 10000;

	snprintf(netns_a, sizeof(netns_a), "tlmdpdkT%d", id);
	snprintf(netns_b, sizeof(netns_b), "%s", netns_a);
	if (flow)
		snprintf(cmd, sizeof(cmd),
			 "set -e; ip netns add %s; "
			 "ip -n %s link add tdv%da type veth peer name tdv%db; "
			 "ip -n %s link set tdv%da up; ip -n %s link set tdv%db up; "
			 "ip netns exec %s sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
			 netns_a, netns_a, id, id, netns_a, id, netns_a, id, netns_a);
	else
		snprintf(cmd, sizeof(cmd),
			 "set -e; ip netns add %s; "
			 "ip -n %s tuntap add dev tdt%d mode tap multi_queue; "
			 "ip -n %s link add tdm%d link tdt%d type macvlan mode bridge; "
			 "ip -n %s link set tdm%d up; "
			 "ip netns exec %s sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
			 netns_a, netns_a, id, netns_a, id, id, netns_a, id, netns_a);
	if (sh(cmd)) {
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", netns_a);
		if (sh(cmd)) {
			/* never made */
		}
		netns_a[0] = 0;
		return -1;
	}
	if (flow) {
		snprintf(srv_args, sizeof(srv_args),
			 "vdev=net_tap0,iface=tdt%d,remote=tdv%db,ip=198.18.7.1,queues=4," FAULTS,
			 id, id);
		snprintf(cli_args, sizeof(cli_args),
			 "vdev=net_af_packet0,iface=tdv%da,ip=198.18.7.2," FAULTS, id);
	} else {
		snprintf(srv_args, sizeof(srv_args),
			 "vdev=net_tap0,iface=tdt%d,ip=198.18.7.1,queues=4," FAULTS, id);
		snprintf(cli_args, sizeof(cli_args),
			 "vdev=net_af_packet0,iface=tdm%d,ip=198.18.7.2," FAULTS, id);
	}
	cli_addr = "198.18.7.1";
	srv_addr = "198.18.7.1";
	return 0;
}

/* Does this kernel have what net_tap's rte_flow needs? */
static bool kernel_has_flower(void)
{
	static const char *const mods[] = { "cls_flower", "sch_multiq", "act_skbedit" };
	char path[96];

	for (size_t i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
		snprintf(path, sizeof(path), "/sys/module/%s", mods[i]);
		if (access(path, F_OK))
			return false;
	}
	return true;
}

static int wait_child(pid_t p, int secs, const char *who)
{
	int st;

	for (int i = 0; i < secs * 10; i++) {
		pid_t r = waitpid(p, &st, WNOHANG);
		if (r == p) {
			if (WIFEXITED(st))
				return WEXITSTATUS(st);
			fprintf(stderr, "  %s died by signal %d\n", who, WTERMSIG(st));
			return 1;
		}
		usleep(100000);
	}
	fprintf(stderr, "  %s hung: killed\n", who);
	kill(p, SIGKILL);
	waitpid(p, &st, 0);
	return 1;
}

/* Each case's transport args on the accepting and the connecting side
 * (the af_packet cases add theirs to what netns_up sets). */
static const struct {
	const char *cas, *srv, *cli;
} cases[] = {
	{ "bytes", "", "" },
	{ "pages", "", "" },
	{ "session", "", "" },
	{ "live", "", "" },
	{ "live-mutate", "", "" },
	{ "afpacket", "", "" },
	{ "session-afpacket", "", "" },
	/* zero copy told on (auto is memif only): chained frames through
	 * the kernel's packet socket */
	{ "live-afpacket", "zc=on", "zc=on" },
	{ "faults", FAULTS, FAULTS },
	{ "live-faults", FAULTS, FAULTS },
	{ "dead", "dead_ms=1500", "dead_ms=1500" },
	{ "torn", "dead_ms=1500", "dead_ms=1500" },
	{ "queues1", "queues=1", "queues=1" },
	{ "queues2", "queues=2", "queues=2" },
	{ "queues-mismatch", "queues=2", "queues=8" },
	{ "live-copy", "zc=off", "zc=off" },
	/* the embedded memif's default is mtu 9000: light packets (one
	 * range of a page each) are what Ethernet's 1500 makes */
	{ "live-1500", "mtu=1500", "mtu=1500" },
	{ "live-faults-1500", "mtu=1500," FAULTS, "mtu=1500," FAULTS },
	{ "faults-1500", "mtu=1500," FAULTS, "mtu=1500," FAULTS },
	{ "live-refused", "zc=off", "zc=on" },
	{ "tap", "", "" },
	{ "tap-flow", "", "" },
	{ "tap-flow-refused", "flow_refuse=2", "" },
	{ "slow-start", "", "start_delay_ms=3000" },
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static void add_args(char *dst, size_t cap, const char *a)
{
	size_t n = strlen(dst);

	if (a && *a)
		snprintf(dst + n, cap - n, "%s%s", n ? "," : "", a);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "case", required_argument, NULL, 'c' },
		{ "args", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cas = "bytes", *extra = NULL;
	int opt, pfd[2], rc;
	char port[16];

	while ((opt = getopt_long(argc, argv, "c:a:", lo, NULL)) != -1) {
		if (opt == 'c')
			cas = optarg;
		else if (opt == 'a')
			extra = optarg;
		else
			return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	tlm_set_log_fn(log_cb, NULL);
	bool session = !strncmp(cas, "session", 7);
	CHECK_OK(tlm_psk_random(&psk));
	size_t ci = 0;
	while (ci < N_CASES && strcmp(cases[ci].cas, cas))
		ci++;
	if (ci == N_CASES) {
		fprintf(stderr, "unknown case %s\n", cas);
		return 2;
	}
	if (strstr(cas, "afpacket")) {
		if (geteuid() != 0) {
			printf("SKIP: needs root for network namespaces\n");
			return 77;
		}
		if (netns_up()) {
			printf("SKIP: cannot create network namespaces / veth\n");
			return 77;
		}
	}
	if (!strncmp(cas, "tap", 3)) {
		tap_case = !strcmp(cas, "tap") ? 1 : !strcmp(cas, "tap-flow") ? 2 : 3;
		if (geteuid() != 0) {
			printf("SKIP: needs root for a network namespace\n");
			return 77;
		}
		if (tap_case >= 2)
			tmo_ms = 150000, child_s = 280;
		if (tap_case >= 2 && !kernel_has_flower()) {
			printf("SKIP: this kernel has no cls_flower/sch_multiq/act_skbedit "
			       "(tests/vm runs it on one that has)\n");
			return 77;
		}
		if (netns_up_tap(tap_case >= 2)) {
			printf("SKIP: cannot create a network namespace with %s\n",
			       tap_case >= 2 ? "a veth pair" : "a tap and a macvlan");
			return 77;
		}
	}
	add_args(srv_args, sizeof(srv_args), cases[ci].srv);
	add_args(cli_args, sizeof(cli_args), cases[ci].cli);
	add_args(srv_args, sizeof(srv_args), extra);
	add_args(cli_args, sizeof(cli_args), extra);
	if (!strcmp(cas, "slow-start"))
		conn_tmo_ms = 1500;
	zc_expected = strcmp(cas, "live-copy") != 0;
	refused_case = !strcmp(cas, "live-refused");
	const char *sub = !strcmp(cas, "afpacket") || !strncmp(cas, "faults", 6) ||
			  !strncmp(cas, "queues", 6) || tap_case ? "all" : cas;
	if (!strcmp(cas, "slow-start"))
		sub = "bytes";

	CHECK(pipe(pfd) == 0);
	pid_t a = fork();
	if (a == 0) {
		close(pfd[0]);
		alarm((unsigned)child_s);
		if (session)
			sess_acceptor(pfd[1]);
		else
			acceptor(sub, pfd[1]);
		exit(0);
	}
	close(pfd[1]);
	ssize_t r = read(pfd[0], port, sizeof(port) - 1);
	close(pfd[0]);
	if (r <= 0) {
		rc = wait_child(a, 5, "acceptor");
		fprintf(stderr, "  acceptor died before listening\n");
		netns_down();
		return 1;
	}
	port[r] = 0;
	port[strcspn(port, "\n")] = 0;

	pid_t c = fork();
	if (c == 0) {
		alarm((unsigned)child_s);
		if (session)
			sess_connector(port);
		else
			connector(sub, port);
		exit(0);
	}
	if (!strcmp(cas, "dead")) {
		/* let the stream run, then kill -9 the connecting side */
		usleep(1500000);
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
		/* a killed EAL cannot remove its runtime directory: do it */
		char cmd[96];
		snprintf(cmd, sizeof(cmd), "rm -rf /var/run/dpdk/tlm-%d", (int)c);
		if (sh(cmd)) {
			/* nothing there */
		}
		rc = wait_child(a, 40, "acceptor");
	} else {
		int rc_c = wait_child(c, child_s - 10, "connector");
		rc = wait_child(a, 30, "acceptor");
		if (rc_c)
			rc = rc_c;
	}
	netns_down();
	printf("%s: %s\n", cas, rc ? "FAIL" : "ok");
	return rc ? 1 : 0;
}
