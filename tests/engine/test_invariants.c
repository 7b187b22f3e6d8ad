/* SPDX-License-Identifier: MIT */
/*
 * The engine's invariants driven directly, not through a migration whose
 * outcome depends on timing (core/engine.h states them):
 *
 *   apply   the destination (tlm_migrate_dest) fed crafted records over
 *           real tcp lanes, in an order we force with SYNC between steps:
 *           the record with the higher key (2 * epoch + 1 if page saver)
 *           wins whatever the arrival order, a page-saver record beats a
 *           checkpoint record of the same epoch, equal keys apply in lane
 *           order, zero and XBZRLE records apply, and a stale XBZRLE
 *           delta fails the migration. Final bytes and the stale count
 *           are exact.
 *   pagesaver  one page-saver round (tlm__ps_thread, tlm__ps_round) over
 *           real lanes whose far end records what arrives, with the CHK
 *           cursor and the in-flight marks set by hand: exactly the pages
 *           below min(cursor, in-flight) are sent (on the lane owning
 *           their bitmap word, stamped with the current epoch), those in
 *           [done, cursor) stay pending, the rest are dropped; a second
 *           round sends what was kept.
 *
 *   test_invariants apply|pagesaver
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/engine.h" /* the internal one, not include/tlm/engine.h */
#define CHECK_COUNTS
#include "tests/check.h"

#define PS 4096
#define NPAGES 1000 /* not a multiple of 64: the last bitmap word is partial */

static struct tlm_psk psk;

struct acc { struct tlm_listener *l; struct tlm_session *s; int rc; };

static void *accept_thread(void *arg)
{
	struct acc *a = arg;

	a->rc = tlm_accept(a->l, 5000, &a->s);
	return NULL;
}

/* A tcp session on loopback with n page-mode data lanes and one region. */
static int open_pair(unsigned n, struct tlm_session **src, struct tlm_session **dst)
{
	struct tlm_session_cfg cfg = { .transport = "tcp", .n_lanes = n, .page_size = PS,
				       .n_regions = 1, .region_len = { NPAGES * PS },
				       .psk = &psk, .timeout_ms = 5000 };
	struct acc a = { 0 };
	pthread_t t;
	char port[16];
	int rc;

	for (unsigned i = 1; i <= n; i++)
		cfg.lane_modes[i] = TLM_MODE_PAGES;
	rc = tlm_listen(&cfg, "127.0.0.1", "0", &a.l);
	if (rc)
		return rc;
	snprintf(port, sizeof(port), "%d", tlm_listener_port(a.l));
	pthread_create(&t, NULL, accept_thread, &a);
	rc = tlm_connect(&cfg, "127.0.0.1", port, src);
	pthread_join(t, NULL);
	tlm_listener_close(a.l);
	if (rc || a.rc) {
		if (!rc)
			tlm_session_close(*src);
		if (!a.rc)
			tlm_session_close(a.s);
		return rc ? rc : a.rc;
	}
	*dst = a.s;
	return 0;
}

/* ---- apply ---- */

struct dst_run {
	struct tlm_session *s;
	struct tlm_region reg;
	struct tlm_dest_stats st;
	pthread_t t;
	int rc;
};

static void *dst_thread(void *arg)
{
	struct dst_run *d = arg;

	d->rc = tlm_migrate_dest(d->s, &d->reg, 1, NULL, NULL, &d->st);
	return NULL;
}

static int ctrl(struct tlm_session *s, const uint8_t *m, uint32_t len)
{
	struct tlm_lane *c = tlm_session_lane(s, 0);
	int err = tlm__msg_send(c, TLM_FT_CTRL, m, len);

	return err ? err : tlm_lane_flush(c);
}

/* Waits for a control message from the destination; its type, or < 0. */
static int answer(struct tlm_session *s)
{
	uint8_t buf[256], type;
	uint32_t len;
	int err = tlm__msg_recv(tlm_session_lane(s, 0), &type, buf, sizeof(buf), &len, 10000);

	if (err)
		return err;
	return type == TLM_FT_CTRL && len >= 1 ? buf[0] : -TLM_EFRAME;
}

static uint64_t sent[3];  /* records sent per data lane */

static void fill(uint8_t *page, uint8_t c)
{
	memset(page, c, PS);
	page[0] = (uint8_t)(c ^ 0x5a); /* never a zero page, never one byte */
}

static void rec(struct tlm_session *s, unsigned lane, uint64_t index, uint32_t epoch,
		uint16_t flags, const uint8_t *data, uint32_t len)
{
	struct tlm_page_rec r = { .index = index, .epoch = epoch, .flags = flags,
				  .len = len, .data = data };

	r.crc = len ? tlm_crc32c(0, data, len) : 0;
	CHECK(tlm_lane_send_pages(tlm_session_lane(s, lane), &r, 1) == 1);
	CHECK_OK(tlm_lane_flush(tlm_session_lane(s, lane)));
	sent[lane]++;
}

static void page_rec(struct tlm_session *s, unsigned lane, uint64_t index, uint32_t epoch,
		     uint16_t flags, uint8_t c)
{
	static uint8_t page[PS];

	fill(page, c);
	rec(s, lane, index, epoch, flags, page, PS);
}

/* Returns once the destination has applied (or dropped) everything sent:
 * the next step's records cannot overtake this step's. */
static void sync_lanes(struct tlm_session *s)
{
	uint8_t m[3 + 16];

	m[0] = TLM_CM_SYNC;
	tlm__put16(m + 1, 2);
	tlm__put64(m + 3, sent[1]);
	tlm__put64(m + 11, sent[2]);
	CHECK_OK(ctrl(s, m, sizeof(m)));
	CHECK(answer(s) == TLM_CM_SYNCED);
}

static void start(struct tlm_session *s, struct dst_run *d)
{
	uint8_t m[11] = { TLM_CM_START };

	tlm__put16(m + 1, 1);   /* lane 1: checkpoint */
	tlm__put16(m + 3, 1);   /* lane 2: page saver */
	tlm__put32(m + 6, 100);
	d->reg.len = NPAGES * PS;
	d->reg.name = "ram";
	d->reg.base = mmap(NULL, d->reg.len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(d->reg.base != MAP_FAILED);
	CHECK(pthread_create(&d->t, NULL, dst_thread, d) == 0);
	CHECK_OK(ctrl(s, m, sizeof(m)));
	sent[1] = sent[2] = 0;
}

static int page_is(const struct dst_run *d, uint64_t index, uint8_t c)
{
	static uint8_t want[PS];

	fill(want, c);
	return !memcmp((uint8_t *)d->reg.base + index * PS, want, PS);
}

static int page_zero(const struct dst_run *d, uint64_t index)
{
	return tlm__page_zero((uint8_t *)d->reg.base + index * PS, PS);
}

enum { A = 0xa1, B = 0xb2, C = 0xc3, D = 0xd4 };

static void test_apply(void)
{
	struct tlm_session *s, *ds;
	struct dst_run d = { 0 };
	struct tlm_xbz_cache *xc = tlm__xbz_create(64 * PS, PS);
	static uint8_t base[PS], cur[PS], enc[PS];
	uint8_t m[3 + 16 + 8];
	struct tlm_page_rec lr = { .flags = TLM_PF_LAST };
	uint32_t n;

	CHECK_OK(open_pair(2, &s, &ds));
	if (test_failures)
		return;
	d.s = ds;
	start(s, &d);

	/* Step 1, the checkpoint lane. */
	page_rec(s, 1, 0, 3, 0, A);            /* p0: CHK e3, then PS e3 */
	page_rec(s, 1, 2, 5, 0, A);            /* p2: CHK e5, then PS e3 */
	page_rec(s, 1, 4, 2, 0, A);            /* p4: CHK e2, then CHK e1 */
	page_rec(s, 1, 4, 1, 0, C);            /*     stale (1) */
	page_rec(s, 1, 6, 1, 0, A);            /* p6: CHK e1, then PS zero e2 */
	page_rec(s, 1, 7, 1, 0, A);            /* p7: CHK e1, then PS delta e2 */
	page_rec(s, 1, 9, 4, 0, A);            /* p9: CHK e4, then PS e3 */
	sync_lanes(s);
	/* Step 2, the page saver's lane. */
	page_rec(s, 2, 0, 3, TLM_PF_PS, B);    /* p0: PS wins the tie */
	page_rec(s, 2, 1, 3, TLM_PF_PS, B);    /* p1: PS e3, then CHK e3 */
	page_rec(s, 2, 2, 3, TLM_PF_PS, B);    /* p2: stale (2) */
	page_rec(s, 2, 3, 3, TLM_PF_PS, B);    /* p3: PS e3, then CHK e5 */
	page_rec(s, 2, 5, 4, TLM_PF_PS, B);    /* p5: equal keys apply in order */
	page_rec(s, 2, 5, 4, TLM_PF_PS, D);
	rec(s, 2, 6, 2, TLM_PF_PS | TLM_PF_ZERO, NULL, 0);
	fill(base, A);
	memcpy(cur, base, PS);
	memset(cur + 100, 0x77, 50);
	CHECK(tlm__xbz_encode(xc, 7, base, enc) == 0);
	n = tlm__xbz_encode(xc, 7, cur, enc);
	CHECK(n > 0 && n < PS);
	rec(s, 2, 7, 2, TLM_PF_PS | TLM_PF_XBZRLE, enc, n);
	page_rec(s, 2, 9, 3, TLM_PF_PS, B);    /* p9: stale (3): 2*3+1 < 2*4 */
	sync_lanes(s);
	/* Step 3, the checkpoint lane again. */
	page_rec(s, 1, 1, 3, 0, A);            /* p1: stale (4) */
	page_rec(s, 1, 3, 5, 0, A);            /* p3: CHK e5 wins */
	sync_lanes(s);

	/* Stage 3: LAST on both lanes, the counts, no device state. */
	CHECK(tlm_lane_send_pages(tlm_session_lane(s, 1), &lr, 1) == 1);
	CHECK(tlm_lane_send_pages(tlm_session_lane(s, 2), &lr, 1) == 1);
	CHECK_OK(tlm_lane_flush(tlm_session_lane(s, 1)));
	CHECK_OK(tlm_lane_flush(tlm_session_lane(s, 2)));
	m[0] = TLM_CM_STAGE3;
	tlm__put16(m + 1, 2);
	tlm__put64(m + 3, sent[1]);
	tlm__put64(m + 11, sent[2]);
	tlm__put64(m + 19, 0);
	CHECK_OK(ctrl(s, m, sizeof(m)));
	CHECK(answer(s) == TLM_CM_COMMIT);
	pthread_join(d.t, NULL);
	CHECK(d.rc == 0, "destination: %s (%s)", tlm_strerror(d.rc), d.st.why);
	CHECK(d.st.completed);

	CHECK(page_is(&d, 0, B), "p0: a page-saver record beats a checkpoint one of its epoch");
	CHECK(page_is(&d, 1, B), "p1: ... whichever arrives first");
	CHECK(page_is(&d, 2, A), "p2: a newer checkpoint record beats an older page-saver one");
	CHECK(page_is(&d, 3, A), "p3: ... whichever arrives first");
	CHECK(page_is(&d, 4, A), "p4: an older checkpoint record arriving later is dropped");
	CHECK(page_is(&d, 5, D), "p5: equal keys: the later record wins");
	CHECK(page_zero(&d, 6), "p6: a zero record zeroes the page");
	CHECK(!memcmp((uint8_t *)d.reg.base + 7 * PS, cur, PS), "p7: the delta applied");
	CHECK(page_zero(&d, 8), "p8: never sent, still zero");
	CHECK(page_is(&d, 9, A), "p9: epoch 4 (CHK) beats epoch 3 (PS)");
	CHECK(d.st.pages_stale == 4, "%llu stale records, 4 expected",
	      (unsigned long long)d.st.pages_stale);
	CHECK(d.st.pages_applied == sent[1] + sent[2] - 4, "%llu applied of %llu",
	      (unsigned long long)d.st.pages_applied, (unsigned long long)(sent[1] + sent[2]));
	munmap(d.reg.base, d.reg.len);
	tlm_session_close(s);
	tlm_session_close(ds);

	/* A delta that arrives stale was encoded against a copy the
	 * destination never kept: the migration fails, it is not dropped. */
	memset(&d, 0, sizeof(d));
	CHECK_OK(open_pair(2, &s, &ds));
	if (test_failures)
		return;
	d.s = ds;
	start(s, &d);
	fill(base, B);
	memcpy(cur, base, PS);
	cur[9] ^= 0xff;
	CHECK(tlm__xbz_encode(xc, 11, base, enc) == 0);
	n = tlm__xbz_encode(xc, 11, cur, enc);
	CHECK(n > 0);
	page_rec(s, 2, 11, 5, TLM_PF_PS, B);
	sync_lanes(s);
	page_rec(s, 1, 11, 6, 0, A);
	sync_lanes(s);
	rec(s, 2, 11, 5, TLM_PF_PS | TLM_PF_XBZRLE, enc, n);
	pthread_join(d.t, NULL);
	CHECK(d.rc == -TLM_EFRAME, "stale delta: destination returned %s", tlm_strerror(d.rc));
	CHECK(!d.st.completed);
	CHECK(answer(s) == TLM_CM_FAIL, "the source is told");
	munmap(d.reg.base, d.reg.len);
	tlm_session_close(s);
	tlm_session_close(ds);
	tlm__xbz_destroy(xc);
}

/* ---- pagesaver ---- */

struct got { uint64_t index; uint32_t epoch; uint16_t flags; unsigned lane; int data_ok; };

struct recorder {
	struct tlm_session *s;
	unsigned lane;
	pthread_t t;
	volatile int stop;
	int err;
};

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static struct got got[4 * NPAGES];
static unsigned n_got;

static void stamp(uint8_t *page, uint64_t p)
{
	memset(page, (int)(p % 251 + 1), PS);
	memcpy(page, &p, sizeof(p));
}

static int record(void *arg, const struct tlm_page_rec *r)
{
	struct recorder *rc = arg;
	static __thread uint8_t want[PS];

	pthread_mutex_lock(&got_lock);
	if (n_got < sizeof(got) / sizeof(got[0])) {
		stamp(want, r->index);
		got[n_got] = (struct got){ r->index, r->epoch, r->flags, rc->lane,
					   r->len == PS && !memcmp(r->data, want, PS) };
		n_got++;
	}
	pthread_mutex_unlock(&got_lock);
	return 0;
}

static void *recorder_thread(void *arg)
{
	struct recorder *rc = arg;
	struct tlm_page_sink sink = { record, rc };

	while (!rc->stop) {
		int n = tlm_lane_recv_pages(tlm_session_lane(rc->s, rc->lane), &sink, 100);
		if (n < 0 && n != -ETIMEDOUT) {
			rc->err = n;
			break;
		}
	}
	return NULL;
}

static unsigned wait_got(unsigned want)
{
	for (int i = 0; i < 1000; i++) {
		unsigned n;

		pthread_mutex_lock(&got_lock);
		n = n_got;
		pthread_mutex_unlock(&got_lock);
		if (n >= want)
			return n;
		usleep(10000);
	}
	return n_got;
}

static bool bit(const uint64_t *bm, uint64_t p) { return bm[p / 64] >> (p % 64) & 1; }
static void set_bit(uint64_t *bm, uint64_t p) { bm[p / 64] |= 1ull << (p % 64); }

static const struct got *find(uint64_t p)
{
	for (unsigned i = 0; i < n_got; i++)
		if (got[i].index == p)
			return &got[i];
	return NULL;
}

static void test_pagesaver(void)
{
	/* Pages marked dirty, and what one round must do with each, with the
	 * cursor at 512 and a CHK thread still writing its chunk from 384. */
	static const uint64_t dirty[] = { 0, 1, 63, 64, 200, 383, 384, 400, 511, 512, 513, 700, 999 };
	static const uint64_t send1[] = { 0, 1, 63, 64, 200, 383 };
	static const uint64_t keep1[] = { 384, 400, 511 };
	struct tlm_session *s, *ds;
	struct tlm_migrate_stats st = { 0 };
	struct recorder rc[3];
	struct ps_arg pa[2];
	struct chk_arg ca[2] = { { .inflight = UINT64_MAX }, { .inflight = UINT64_MAX } };
	pthread_condattr_t attr;
	uint64_t words = (NPAGES + 63) / 64, sum = 0;
	struct src *e = calloc(1, sizeof(*e));
	uint8_t *mem;

	CHECK(e != NULL);
	CHECK_OK(open_pair(2, &s, &ds));
	if (test_failures)
		return;
	mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(mem != MAP_FAILED);
	for (uint64_t p = 0; p < NPAGES; p++)
		stamp(mem + p * PS, p);

	e->s = s;
	e->st = &st;
	e->page_size = PS;
	e->n_regions = 1;
	e->r[0] = (struct src_region){ .base = mem, .pages = NPAGES, .words = words,
				       .pending = calloc(words, 8), .fresh = calloc(words, 8) };
	e->total_pages = NPAGES;
	e->o.chk_lanes = 2;
	e->o.ps_lanes = 2;
	e->epoch = 4;
	e->chk = ca;
	e->ps = pa;
	e->chk_next = src_pos(0, 512);
	ca[1].inflight = src_pos(0, 384);
	pthread_mutex_init(&e->lock, NULL);
	pthread_mutex_init(&e->ctrl, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cond, &attr);
	for (unsigned i = 1; i <= 2; i++) {
		rc[i] = (struct recorder){ .s = ds, .lane = i };
		pthread_create(&rc[i].t, NULL, recorder_thread, &rc[i]);
	}
	for (unsigned k = 0; k < 2; k++) {
		pa[k] = (struct ps_arg){ .e = e, .lane = 1 + k, .k = k };
		pthread_create(&pa[k].t, NULL, tlm__ps_thread, &pa[k]);
	}
	for (size_t i = 0; i < sizeof(dirty) / sizeof(dirty[0]); i++)
		set_bit(e->r[0].pending, dirty[i]);
	/* A bit past the region's end, in its last word: ignored. */
	set_bit(e->r[0].pending, NPAGES + 3);

	CHECK_OK(tlm__ps_round(e));
	CHECK(st.pages_ps == sizeof(send1) / sizeof(send1[0]), "round 1 sent %llu pages",
	      (unsigned long long)st.pages_ps);
	CHECK(wait_got((unsigned)st.pages_ps) == st.pages_ps);
	for (size_t i = 0; i < sizeof(send1) / sizeof(send1[0]); i++) {
		const struct got *g = find(send1[i]);

		CHECK(g != NULL, "page %llu not sent", (unsigned long long)send1[i]);
		if (!g)
			continue;
		CHECK(g->epoch == 4 && (g->flags & TLM_PF_PS) && g->data_ok,
		      "page %llu: epoch %u flags 0x%x", (unsigned long long)g->index, g->epoch,
		      g->flags);
		/* The lane that owns the page's bitmap word: all of a page's
		 * page-saver records are ordered. */
		CHECK(g->lane == 1 + (send1[i] / 64) % 2, "page %llu on lane %u",
		      (unsigned long long)g->index, g->lane);
	}
	for (uint64_t p = 0; p < words * 64; p++) {
		bool kept = false;

		for (size_t i = 0; i < sizeof(keep1) / sizeof(keep1[0]); i++)
			kept |= keep1[i] == p;
		CHECK(bit(e->r[0].pending, p) == kept, "page %llu %s pending after round 1",
		      (unsigned long long)p, kept ? "not" : "still");
	}
	for (unsigned i = 0; i < st.n_epochs; i++)
		sum += st.epochs[i].sent_ps;
	CHECK(sum == st.pages_ps, "epochs account for %llu of %llu pages",
	      (unsigned long long)sum, (unsigned long long)st.pages_ps);

	/* CHK's writes completed and it moved on: what was kept goes now,
	 * stamped with the epoch of the round. */
	n_got = 0;
	e->epoch = 5;
	ca[1].inflight = UINT64_MAX;
	e->chk_next = src_pos(0, 768);
	CHECK_OK(tlm__ps_round(e));
	CHECK(st.pages_ps == 6 + 3, "round 2: %llu pages in all", (unsigned long long)st.pages_ps);
	CHECK(wait_got(3) == 3);
	for (size_t i = 0; i < sizeof(keep1) / sizeof(keep1[0]); i++) {
		const struct got *g = find(keep1[i]);

		CHECK(g && g->epoch == 5 && g->data_ok, "kept page %llu", (unsigned long long)keep1[i]);
	}
	for (uint64_t w = 0; w < words; w++)
		CHECK(e->r[0].pending[w] == 0, "word %llu still pending", (unsigned long long)w);

	pthread_mutex_lock(&e->lock);
	e->stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	for (unsigned k = 0; k < 2; k++)
		pthread_join(pa[k].t, NULL);
	for (unsigned i = 1; i <= 2; i++) {
		rc[i].stop = 1;
		pthread_join(rc[i].t, NULL);
		CHECK(rc[i].err == 0, "lane %u: %s", i, tlm_strerror(rc[i].err));
	}
	CHECK(e->err == 0, "engine error %s", tlm_strerror(e->err));
	tlm_session_close(s);
	tlm_session_close(ds);
	tlm_migrate_stats_free(&st);
	free(e->r[0].pending);
	free(e->r[0].fresh);
	pthread_cond_destroy(&e->cond);
	pthread_mutex_destroy(&e->lock);
	pthread_mutex_destroy(&e->ctrl);
	free(e);
	munmap(mem, NPAGES * PS);
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "apply") && strcmp(argv[1], "pagesaver"))) {
		fprintf(stderr, "usage: %s apply|pagesaver\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	CHECK_OK(tlm_psk_random(&psk));
	if (!strcmp(argv[1], "apply"))
		test_apply();
	else
		test_pagesaver();
	if (test_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", argv[1], test_failures);
		return 1;
	}
	printf("%s: all checks passed\n", argv[1]);
	return 0;
}
