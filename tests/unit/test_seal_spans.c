/* SPDX-License-Identifier: MIT */
/*
 * Self-tests of core/seal.c's in-place datapath (tlm_lane_dp wopen, wspan,
 * wput, rspan, rtake: a sealed lane seals straight into the transport's
 * packets and opens straight out of them), on a lane whose transport is
 * an in-memory pipe that hands out spans of odd sizes (a few bytes, a
 * packet's worth, anything between), so frames, records and tags are cut
 * at every kind of place:
 *
 *   - pages and bytes go through intact whichever way each side goes
 *     (spans or write/read): the bytes on the wire are the same;
 *   - a flipped byte, a dropped frame, a replayed frame, a cut stream
 *     fail the lane with -TLM_ESEAL (or -TLM_EPEERCLOSED for the cut)
 *     and nothing of the bad frame reaches the sink.
 */
#include <stdlib.h>
#include <string.h>

#include "tlm-internal.h"
#define CHECK_COUNTS
#include "tests/check.h"

#define PAGE  4096u
#define PAGES 300u       /* more than four sealed frames' worth */
#define PIPE  (4u << 20)

struct pipe_lane {
	struct tlm_lane base;
	uint8_t *buf;           /* the wire: [rd, wr) not read yet */
	size_t rd, wr;
	size_t wleft;           /* of the write being filled in place */
	unsigned rng;
	size_t frames[64];      /* where each write began (drop, replay) */
	unsigned nframes;
};

/* A piece size: anything from 1 byte to a jumbo packet's payload. */
static size_t piece(struct pipe_lane *p)
{
	static const size_t sizes[] = { 1, 3, 7, 16, 33, 1458, 4095, 8934 };

	p->rng = p->rng * 1103515245u + 12345u;
	return sizes[(p->rng >> 16) % (sizeof(sizes) / sizeof(sizes[0]))];
}

static ssize_t p_write(struct tlm_lane *l, const void *b, size_t n)
{
	struct pipe_lane *p = (struct pipe_lane *)l;

	if (p->wr + n > PIPE)
		return -ENOSPC;
	if (p->nframes < 64)
		p->frames[p->nframes++] = p->wr;
	memcpy(p->buf + p->wr, b, n);
	p->wr += n;
	return (ssize_t)n;
}

static ssize_t p_read(struct tlm_lane *l, void *b, size_t n, int timeout_ms)
{
	struct pipe_lane *p = (struct pipe_lane *)l;
	size_t k = piece(p);

	(void)timeout_ms;
	if (p->rd == p->wr)
		return 0;
	if (k > n)
		k = n;
	if (k > p->wr - p->rd)
		k = p->wr - p->rd;
	memcpy(b, p->buf + p->rd, k);
	p->rd += k;
	return (ssize_t)k;
}

static int p_wopen(struct tlm_lane *l, size_t n)
{
	struct pipe_lane *p = (struct pipe_lane *)l;

	if (p->wleft || !n || p->wr + n > PIPE)
		return -EINVAL;
	if (p->nframes < 64)
		p->frames[p->nframes++] = p->wr;
	p->wleft = n;
	return 0;
}

static ssize_t p_wspan(struct tlm_lane *l, uint8_t **out)
{
	struct pipe_lane *p = (struct pipe_lane *)l;
	size_t k = piece(p);

	if (!p->wleft)
		return -EINVAL;
	*out = p->buf + p->wr;
	return (ssize_t)(k < p->wleft ? k : p->wleft);
}

static int p_wput(struct tlm_lane *l, size_t k)
{
	struct pipe_lane *p = (struct pipe_lane *)l;

	if (k > p->wleft)
		return -EINVAL;
	p->wr += k;
	p->wleft -= k;
	return 0;
}

static ssize_t p_rspan(struct tlm_lane *l, const uint8_t **out, int timeout_ms)
{
	struct pipe_lane *p = (struct pipe_lane *)l;
	size_t k = piece(p);

	(void)timeout_ms;
	if (p->rd == p->wr)
		return 0;
	*out = p->buf + p->rd;
	return (ssize_t)(k < p->wr - p->rd ? k : p->wr - p->rd);
}

static void p_rtake(struct tlm_lane *l, size_t k)
{
	((struct pipe_lane *)l)->rd += k;
}

static int p_shutdown(struct tlm_lane *l) { (void)l; return 0; }

static const struct tlm_lane_dp copy_dp = { .write = p_write, .read = p_read,
					    .shutdown = p_shutdown };
static const struct tlm_lane_dp span_dp = { .write = p_write, .read = p_read,
					    .shutdown = p_shutdown, .wopen = p_wopen,
					    .wspan = p_wspan, .wput = p_wput,
					    .rspan = p_rspan, .rtake = p_rtake };
static const struct tlm_lane_ops copy_ops = { .name = "pipe", .dp = &copy_dp };
static const struct tlm_lane_ops span_ops = { .name = "pipe-spans", .dp = &span_dp };

/* The sender's lane and the receiver's over one wire (the receiver reads
 * the sender's buffer), each going through spans or not. */
struct pair {
	struct pipe_lane tx, rx;
};

static void pair_start(struct pair *pr, bool tx_spans, bool rx_spans, uint8_t protect,
		       uint8_t cipher, enum tlm_lane_mode mode)
{
	struct tlm__seal_params sp = { .protect = protect, .cipher = cipher };
	static uint8_t wire[PIPE];

	memset(pr, 0, sizeof(*pr));
	pr->tx.base = (struct tlm_lane){ .ops = tx_spans ? &span_ops : &copy_ops,
					 .mode = TLM_MODE_BYTES, .page_size = PAGE,
					 .peer = "tx", .index = 1 };
	pr->rx.base = (struct tlm_lane){ .ops = rx_spans ? &span_ops : &copy_ops,
					 .mode = TLM_MODE_BYTES, .page_size = PAGE,
					 .peer = "rx", .index = 1 };
	pr->tx.buf = pr->rx.buf = wire;
	pr->tx.rng = 1;
	pr->rx.rng = 7;
	memset(sp.tx_key, 0x11, sizeof(sp.tx_key));
	memset(sp.rx_key, 0x22, sizeof(sp.rx_key));
	CHECK(tlm__seal_start(&pr->tx.base, &sp) == 0);
	memset(sp.rx_key, 0x11, sizeof(sp.rx_key));
	memset(sp.tx_key, 0x22, sizeof(sp.tx_key));
	CHECK(tlm__seal_start(&pr->rx.base, &sp) == 0);
	tlm__seal_set_mode(&pr->tx.base, mode);
	tlm__seal_set_mode(&pr->rx.base, mode);
}

/* The receiver's wire is the sender's, up to what was written. */
static void pair_sync(struct pair *pr)
{
	pr->rx.wr = pr->tx.wr;
}

static void pair_end(struct pair *pr)
{
	tlm__seal_free(&pr->tx.base);
	tlm__seal_free(&pr->rx.base);
}

static uint8_t pages[PAGES][PAGE];

struct seen {
	unsigned n, bad;
};

static int check_apply(void *arg, const struct tlm_page_rec *r)
{
	struct seen *s = arg;

	if (r->index != s->n || r->len != PAGE || !r->data ||
	    memcmp(r->data, pages[r->index % PAGES], PAGE))
		s->bad++;
	s->n++;
	return 0;
}

static void send_all(struct pair *pr)
{
	struct tlm_page_rec recs[PAGES];

	for (unsigned i = 0; i < PAGES; i++) {
		recs[i] = (struct tlm_page_rec){ .index = i, .len = PAGE, .data = pages[i] };
		recs[i].crc = tlm_crc32c(0, pages[i], PAGE);
		if (i % 3 == 0)
			recs[i].flags = TLM_PF_LIVE;   /* NOSUM under a tag */
	}
	/* in bursts of odd sizes, so frames end at different records */
	for (unsigned i = 0; i < PAGES;) {
		unsigned n = 1 + (i * 7) % 61;

		if (n > PAGES - i)
			n = PAGES - i;
		CHECK(tlm__seal_send_pages(&pr->tx.base, recs + i, n) == (int)n);
		i += n;
	}
	pair_sync(pr);
}

static int recv_all(struct pair *pr, struct seen *s)
{
	struct tlm_page_sink sink = { check_apply, s };
	int r;

	do
		r = tlm__seal_recv_pages(&pr->rx.base, &sink, 0);
	while (r > 0);
	return r;
}

static void test_pages(void)
{
	for (unsigned way = 0; way < 4; way++)
		for (uint8_t prot = TLM_PROTECT_ENCRYPT; prot <= TLM_PROTECT_INTEGRITY; prot++)
			for (uint8_t c = TLM_CIPHER_AES256GCM; c <= TLM_CIPHER_CHACHA20POLY1305;
			     c++) {
				struct pair pr;
				struct seen s = { 0 };
				int r;

				pair_start(&pr, way & 1, way & 2, prot, c, TLM_MODE_PAGES);
				send_all(&pr);
				r = recv_all(&pr, &s);
				CHECK(s.n == PAGES && s.bad == 0, "way %u protect %u cipher %u: %u "
				      "pages, %u bad", way, prot, c, s.n, s.bad);
				/* the wire ran out: a bare end is a cut, not an end */
				CHECK(r == -TLM_EPEERCLOSED, "way %u: %s", way, tlm_strerror(r));
				pair_end(&pr);
			}
}

static void test_bytes(void)
{
	static uint8_t in[300000], out[300001];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 31 + i / 977);
	for (unsigned way = 0; way < 4; way++) {
		struct pair pr;
		size_t got = 0;
		ssize_t r;

		pair_start(&pr, way & 1, way & 2, TLM_PROTECT_ENCRYPT, TLM_CIPHER_AES256GCM,
			   TLM_MODE_BYTES);
		CHECK(tlm__seal_write(&pr.tx.base, in, 5) == 5);
		CHECK(tlm__seal_write(&pr.tx.base, in + 5, sizeof(in) - 5) ==
		      (ssize_t)(sizeof(in) - 5));
		CHECK(tlm__seal_shutdown(&pr.tx.base) == 0);
		pair_sync(&pr);
		while ((r = tlm__seal_read(&pr.rx.base, out + got, sizeof(out) - got, 0)) > 0)
			got += (size_t)r;
		CHECK(r == 0 && got == sizeof(in) && !memcmp(in, out, sizeof(in)),
		      "way %u: %zd, %zu bytes", way, r, got);
		pair_end(&pr);
	}
}

enum { T_FLIP, T_DROP, T_REPLAY, T_KINDS };

/* Tamper with the wire between the sender's first frame and the rest:
 * the first frame's records are applied, nothing after. */
static void test_tamper(void)
{
	static uint8_t saved[PIPE];

	for (unsigned way = 0; way < 2; way++)
		for (int k = 0; k < T_KINDS; k++) {
			struct pair pr;
			struct seen s = { 0 };
			size_t f1, f2;
			int r;

			pair_start(&pr, true, way, way ? TLM_PROTECT_INTEGRITY : TLM_PROTECT_ENCRYPT,
				   TLM_CIPHER_AES256GCM, TLM_MODE_PAGES);
			send_all(&pr);
			CHECK(pr.tx.nframes >= 4);
			f1 = pr.tx.frames[1];
			f2 = pr.tx.frames[2];
			memcpy(saved, pr.tx.buf, pr.tx.wr);
			if (k == T_FLIP) {
				pr.tx.buf[f1 + (f2 - f1) / 2] ^= 0x01;
			} else if (k == T_DROP) {
				/* frame 1 gone: frame 2 comes where it should */
				memmove(pr.tx.buf + f1, saved + f2, pr.tx.wr - f2);
				pr.rx.wr = pr.tx.wr - (f2 - f1);
			} else {
				/* frame 0 again in place of frame 1 */
				memcpy(pr.tx.buf + f1, saved, pr.tx.frames[1]);
				memcpy(pr.tx.buf + f1 + pr.tx.frames[1], saved + f1, pr.tx.wr - f1);
				pr.rx.wr = pr.tx.wr + pr.tx.frames[1];
			}
			r = recv_all(&pr, &s);
			CHECK(r == -TLM_ESEAL, "way %u kind %d: %s", way, k, tlm_strerror(r));
			CHECK(s.bad == 0 && s.n > 0 && s.n < PAGES,
			      "way %u kind %d: %u applied, %u bad", way, k, s.n, s.bad);
			CHECK(tlm__seal_recv_pages(&pr.rx.base, &(struct tlm_page_sink){ check_apply,
				&s }, 0) == -TLM_ESEAL);
			pair_end(&pr);
		}
}

int main(void)
{
	for (unsigned i = 0; i < PAGES; i++)
		for (unsigned j = 0; j < PAGE; j++)
			pages[i][j] = (uint8_t)(i * 131 + j * 7 + (j >> 8));
	test_pages();
	test_bytes();
	test_tamper();
	if (test_failures)
		fprintf(stderr, "test_seal_spans: %d checks failed\n", test_failures);
	return test_failures ? 1 : 0;
}
