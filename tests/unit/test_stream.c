/* SPDX-License-Identifier: MIT */
/*
 * Self-tests of core/stream.c, the frame stream TCP and RDMA lanes both
 * parse with, fed by hand: the malformed frames of the lane conformance
 * suite (one good record, then a bad one: only the good one applied, the
 * error the suite expects), PLACED records with and without the hook,
 * byte mode across frames, the buffer's compaction; and core/kv.c, the
 * transport_args splitter every transport uses.
 */
#include <string.h>

#include "tlm-internal.h"
#include "stream.h"
#define CHECK_COUNTS
#include "tests/check.h"

#define PAGE 4096u

static struct tlm_lane lane = { .mode = TLM_MODE_PAGES, .page_size = PAGE, .peer = "test" };
static uint8_t page[PAGE];

static int count_apply(void *arg, const struct tlm_page_rec *r)
{
	(void)r;
	(*(unsigned *)arg)++;
	return 0;
}

static void put(struct tlm__stream *s, const void *b, size_t n)
{
	CHECK(tlm__stream_room(s, n) >= n);
	memcpy(tlm__stream_tail(s), b, n);
	tlm__stream_put(s, n);
}

/* A PAGE frame for record r with data d (len bytes of it) into f. */
static size_t page_frame(uint8_t *f, const struct tlm_page_rec *r, const void *d, size_t len)
{
	tlm__frame_hdr_encode(f, (uint32_t)(TLM_PAGE_HDR + len), TLM_FT_PAGE);
	tlm__page_hdr_encode(f + TLM_FRAME_HDR, r);
	memcpy(f + TLM_FRAME_HDR + TLM_PAGE_HDR, d, len);
	return TLM_FRAME_HDR + TLM_PAGE_HDR + len;
}

enum bad { BAD_CHECK, BAD_CRC, BAD_TYPE, BAD_FLAGS, BAD_PLACED, BAD_REGION, BAD_DATA, BAD_KINDS };

/* The good record, then a bad one of kind k: what the parse makes of it. */
static void malformed(enum bad k)
{
	static uint8_t f[TLM_FRAME_HDR + TLM_PAGE_HDR + PAGE];
	struct tlm_page_rec r = { .index = 0, .len = PAGE, .data = page };
	struct tlm__stream s;
	unsigned applied = 0;
	struct tlm_page_sink sink = { count_apply, &applied };
	size_t n;
	int err, got, want = -TLM_EFRAME;

	CHECK_OK(tlm__stream_init(&s, &lane, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	r.crc = tlm_crc32c(0, page, PAGE);
	put(&s, f, page_frame(f, &r, page, PAGE));
	r.index = 1;
	n = page_frame(f, &r, page, PAGE);
	switch (k) {
	case BAD_CHECK: f[7] ^= 0x40; break;
	case BAD_CRC: f[TLM_FRAME_HDR + TLM_PAGE_HDR + 100] ^= 1; want = -TLM_ECRC; break;
	case BAD_TYPE: tlm__frame_hdr_encode(f, TLM_PAGE_HDR + PAGE, 99); break;
	case BAD_FLAGS:
		r.flags = 0x4000;
		tlm__page_hdr_encode(f + TLM_FRAME_HDR, &r);
		break;
	case BAD_PLACED:
		r.flags = TLM_PF_PLACED;
		r.crc = 0;
		n = page_frame(f, &r, page, 0);
		break;
	case BAD_REGION: {
		struct tlm_region_offer o = { .region = 0, .offered = true, .rkey = 7,
					      .addr = 1 << 20, .len = 1 << 20 };
		tlm__frame_hdr_encode(f, TLM_REGION_LEN, TLM_FT_REGION);
		tlm__region_encode(f + TLM_FRAME_HDR, &o);
		n = TLM_FRAME_HDR + TLM_REGION_LEN;
		break;
	}
	case BAD_DATA:
		/* a byte-mode frame carrying a well-formed page record */
		tlm__frame_hdr_encode(f, TLM_PAGE_HDR + PAGE, TLM_FT_DATA);
		break;
	case BAD_KINDS: break;
	}
	put(&s, f, n);
	got = tlm__stream_parse_pages(&s, &sink, NULL, NULL, &err);
	CHECK(got == 1 && applied == 1, "kind %d: %d delivered, %u applied", k, got, applied);
	CHECK(err == want, "kind %d: %s, want %s", k, tlm_strerror(err), tlm_strerror(want));
	tlm__stream_free(&s);
}

/* A record cut short waits for its bytes; its end completes it. */
static void truncated(void)
{
	static uint8_t f[TLM_FRAME_HDR + TLM_PAGE_HDR + PAGE];
	struct tlm_page_rec r = { .index = 3, .len = PAGE, .data = page,
				  .crc = tlm_crc32c(0, page, PAGE) };
	struct tlm__stream s;
	unsigned applied = 0;
	struct tlm_page_sink sink = { count_apply, &applied };
	size_t n = page_frame(f, &r, page, PAGE);
	int err;

	CHECK_OK(tlm__stream_init(&s, &lane, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	put(&s, f, n - 1000);
	CHECK(tlm__stream_parse_pages(&s, &sink, NULL, NULL, &err) == 0 && !err);
	put(&s, f + n - 1000, 1000);
	CHECK(tlm__stream_parse_pages(&s, &sink, NULL, NULL, &err) == 1 && !err);
	CHECK(applied == 1 && tlm__stream_avail(&s) == 0);
	tlm__stream_free(&s);
}

static int placed_region0(void *arg, struct tlm_page_rec *r, const uint8_t *hdr,
			  const uint8_t *mac)
{
	(void)arg;
	(void)hdr;
	(void)mac;
	return r->region == 0 ? 0 : -TLM_EFRAME;
}

/* PLACED records pass only the transport's hook; a refused one is not
 * applied, the next call does not parse it again. */
static void placed(void)
{
	uint8_t f[TLM_FRAME_HDR + TLM_PAGE_HDR];
	struct tlm_page_rec r = { .index = 5, .len = PAGE, .flags = TLM_PF_PLACED };
	struct tlm__stream s;
	unsigned applied = 0;
	struct tlm_page_sink sink = { count_apply, &applied };
	int err;

	CHECK_OK(tlm__stream_init(&s, &lane, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	put(&s, f, page_frame(f, &r, page, 0));
	r.region = 1;
	put(&s, f, page_frame(f, &r, page, 0));
	CHECK(tlm__stream_parse_pages(&s, &sink, placed_region0, NULL, &err) == 1);
	CHECK(err == -TLM_EFRAME && applied == 1);
	tlm__stream_free(&s);

	/* Out of sealed frames too: without a hook, nothing is taken as placed. */
	applied = 0;
	CHECK_OK(tlm__stream_init(&s, &lane, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	s.sealed = true;
	s.mode = TLM_MODE_PAGES;
	r.region = 0;
	put(&s, f, page_frame(f, &r, page, 0));
	CHECK(tlm__stream_parse_pages(&s, &sink, NULL, NULL, &err) == 0);
	CHECK(err == -TLM_EFRAME && applied == 0);
	tlm__stream_free(&s);
}

/* Byte mode: payload across DATA frames, the bytes before a bad frame
 * first, then the error; FIN ends it. */
static void bytes(void)
{
	struct tlm_lane bl = { .mode = TLM_MODE_BYTES, .page_size = PAGE };
	uint8_t f[TLM_FRAME_HDR + 10], out[32];
	struct tlm__stream s;
	ssize_t n;

	CHECK_OK(tlm__stream_init(&s, &bl, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	for (int i = 0; i < 2; i++) {
		tlm__frame_hdr_encode(f, 10, TLM_FT_DATA);
		memset(f + TLM_FRAME_HDR, 'a' + i, 10);
		put(&s, f, sizeof(f));
	}
	tlm__frame_hdr_encode(f, 10, 99);
	put(&s, f, TLM_FRAME_HDR);
	CHECK(tlm__stream_ready(&s));
	n = tlm__stream_read(&s, out, 15, 0);
	CHECK(n == 15 && out[9] == 'a' && out[10] == 'b');
	n = tlm__stream_read(&s, out, sizeof(out), 15);
	CHECK(n == 20 && out[19] == 'b');
	CHECK(!tlm__stream_need(&s));   /* a bad header waits */
	CHECK(tlm__stream_read(&s, out, sizeof(out), 0) == -TLM_EFRAME);
	tlm__stream_free(&s);

	CHECK_OK(tlm__stream_init(&s, &bl, "test", TLM_FRAME_HDR + TLM_MAX_FRAME));
	tlm__frame_hdr_encode(f, 0, TLM_FT_FIN);
	put(&s, f, TLM_FRAME_HDR);
	CHECK(tlm__stream_read(&s, out, sizeof(out), 0) == 0 && s.fin);
	tlm__stream_free(&s);
}

/* The unparsed bytes move to the front only when the tail is short. */
static void room(void)
{
	struct tlm__stream s;
	size_t cap = TLM_FRAME_HDR + TLM_MAX_FRAME;

	CHECK(tlm__stream_init(&s, &lane, "test", 100) == -EINVAL);
	CHECK_OK(tlm__stream_init(&s, &lane, "test", cap));
	tlm__stream_put(&s, cap - 10);
	s.start = cap - 20;
	CHECK(tlm__stream_room(&s, 5) == 10 && s.start == cap - 20);
	CHECK(tlm__stream_room(&s, 100) == cap - 10 && s.start == 0 && s.end == 10);
	tlm__stream_free(&s);
}

static void kv(void)
{
	const char *p = " a=1,,--dpdk-args \"-l 0,1\",b='x,y', c";
	char item[32], *v;

	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 1 && !strcmp(item, "a=1"));
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 1 && !strcmp(item, "dpdk-args -l 0,1"));
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 1);
	v = tlm__kv_split(item);
	CHECK(v && !strcmp(item, "b") && !strcmp(v, "x,y"));
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 1 && !tlm__kv_split(item));
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 0);
	p = "key=a-value-much-longer-than-the-buffer";
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == -EINVAL);
	p = NULL;
	CHECK(tlm__kv_next(&p, item, sizeof(item)) == 0);
}

int main(void)
{
	memset(page, 0x5a, sizeof(page));
	for (int k = 0; k < BAD_KINDS; k++)
		malformed((enum bad)k);
	truncated();
	placed();
	bytes();
	room();
	kv();
	if (test_failures) {
		fprintf(stderr, "%d check(s) failed\n", test_failures);
		return 1;
	}
	printf("stream: ok\n");
	return 0;
}
