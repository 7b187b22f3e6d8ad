/* SPDX-License-Identifier: MIT */
/*
 * The engine's control messages (core/wire.c, TLM_CM_*): every message
 * encodes to the bytes docs/wire.md gives and decodes back to what was
 * encoded; every truncation, extension, wrong type, count beyond
 * TLM_MAX_LANES or count that disagrees with the length is refused with
 * -TLM_EFRAME; an encoder given too little room says -ENOSPC.
 */
#include <errno.h>
#include <string.h>

#define CHECK_COUNTS
#include "tlm-internal.h"
#include "tests/check.h"

/* Every proper prefix and one byte more must be refused. */
#define CHECK_LENGTHS(dec, buf, len, out)                                              \
	do {                                                                           \
		for (size_t k_ = 0; k_ < (size_t)(len); k_++)                          \
			CHECK(dec(buf, k_, out) == -TLM_EFRAME, #dec " took %zu of %d bytes", \
			      k_, (int)(len));                                         \
		CHECK(dec(buf, (size_t)(len) + 1, out) == -TLM_EFRAME, #dec " took one more"); \
	} while (0)

static void test_start(void)
{
	struct tlm_cm_start s = { .chk = 2, .ps = 3, .policy = 4, .epoch_ms = 0x01020304,
				  .flags = TLM_START_ZC }, o;
	static const uint8_t want[] = { 1, 0, 2, 0, 3, 4, 1, 2, 3, 4, 1 };
	uint8_t b[64];

	CHECK(tlm__cm_start_encode(b, sizeof(b), &s) == TLM_CM_START_LEN);
	CHECK(!memcmp(b, want, sizeof(want)));
	CHECK(tlm__cm_type(b, TLM_CM_START_LEN) == TLM_CM_START);
	CHECK(tlm__cm_start_decode(b, TLM_CM_START_LEN, &o) == 0);
	CHECK(o.chk == 2 && o.ps == 3 && o.policy == 4 && o.epoch_ms == 0x01020304 &&
	      o.flags == TLM_START_ZC);
	CHECK_LENGTHS(tlm__cm_start_decode, b, TLM_CM_START_LEN, &o);
	b[10] = 2;                               /* unknown flag */
	CHECK(tlm__cm_start_decode(b, TLM_CM_START_LEN, &o) == -TLM_EFRAME);
	b[10] = 0;
	tlm__put16(b + 1, TLM_MAX_LANES);        /* more lanes than a session has */
	CHECK(tlm__cm_start_decode(b, TLM_CM_START_LEN, &o) == -TLM_EFRAME);
	b[0] = TLM_CM_STAGE3;                    /* wrong type */
	CHECK(tlm__cm_start_decode(b, TLM_CM_START_LEN, &o) == -TLM_EFRAME);
	CHECK(tlm__cm_start_encode(b, TLM_CM_START_LEN - 1, &s) == -ENOSPC);
}

static void test_lanes(void)
{
	struct tlm_cm_lanes m = { .n = 3, .devstate_len = 77 }, o;
	uint8_t b[TLM_CM_MAX_LEN + 8];
	int len;

	for (unsigned i = 1; i <= 3; i++) {
		m.records[i] = 1000ull * i + (1ull << 40);
		m.bytes[i] = 4096ull * i;
	}
	/* STAGE3: u16 n, u64 records[n], u64 devstate_len */
	len = tlm__cm_stage3_encode(b, sizeof(b), &m);
	CHECK(len == 3 + 8 * 3 + 8 && b[0] == TLM_CM_STAGE3 && tlm__get16(b + 1) == 3);
	CHECK(tlm__get64(b + 3 + 16) == m.records[3] && tlm__get64(b + 27) == 77);
	CHECK(tlm__cm_stage3_decode(b, (size_t)len, &o) == 0 && o.n == 3 &&
	      o.records[1] == m.records[1] && o.records[3] == m.records[3] && o.devstate_len == 77);
	CHECK_LENGTHS(tlm__cm_stage3_decode, b, len, &o);
	CHECK(tlm__cm_sync_decode(b, (size_t)len, &o) == -TLM_EFRAME);
	tlm__put16(b + 1, 4);                    /* count against length */
	CHECK(tlm__cm_stage3_decode(b, (size_t)len, &o) == -TLM_EFRAME);
	CHECK(tlm__cm_stage3_encode(b, (size_t)len - 1, &m) == -ENOSPC);

	/* SYNC: u16 n, u64 records[n] */
	len = tlm__cm_sync_encode(b, sizeof(b), &m);
	CHECK(len == 3 + 8 * 3 && b[0] == TLM_CM_SYNC);
	CHECK(tlm__cm_sync_decode(b, (size_t)len, &o) == 0 && o.n == 3 &&
	      o.records[2] == m.records[2] && o.devstate_len == 0);
	CHECK_LENGTHS(tlm__cm_sync_decode, b, len, &o);

	/* PAUSED: u16 n, n x { u64 records, u64 bytes } */
	len = tlm__cm_paused_encode(b, sizeof(b), &m);
	CHECK(len == 3 + 16 * 3 && b[0] == TLM_CM_PAUSED);
	CHECK(tlm__get64(b + 3 + 16) == m.records[2] && tlm__get64(b + 3 + 24) == m.bytes[2]);
	CHECK(tlm__cm_paused_decode(b, (size_t)len, &o) == 0 && o.n == 3 &&
	      o.records[3] == m.records[3] && o.bytes[3] == m.bytes[3]);
	CHECK_LENGTHS(tlm__cm_paused_decode, b, len, &o);

	/* the largest n a session can have, and one more */
	m.n = TLM_MAX_LANES - 1;
	len = tlm__cm_paused_encode(b, sizeof(b), &m);
	CHECK(len > 0 && (size_t)len <= TLM_CM_MAX_LEN);
	CHECK(tlm__cm_paused_decode(b, (size_t)len, &o) == 0 && o.n == TLM_MAX_LANES - 1);
	m.n = TLM_MAX_LANES;
	CHECK(tlm__cm_paused_encode(b, sizeof(b), &m) == -EINVAL);
	b[0] = TLM_CM_SYNC;
	tlm__put16(b + 1, TLM_MAX_LANES);
	CHECK(tlm__cm_sync_decode(b, 3 + 8 * TLM_MAX_LANES, &o) == -TLM_EFRAME);
}

static void test_commit_synced(void)
{
	struct tlm_cm_commit c = { .stats = true, .n = 2, .backlog_bytes = 1ull << 33,
				   .commit_us = 900 }, o;
	uint8_t b[TLM_CM_MAX_LEN];
	uint32_t us;
	int len;

	c.backlog[1] = 5;
	c.drain_us[1] = 100;
	c.backlog[2] = 0;
	c.drain_us[2] = 7;
	len = tlm__cm_commit_encode(b, sizeof(b), &c);
	CHECK(len == 3 + 8 * 2 + 12 && b[0] == TLM_CM_COMMIT);
	CHECK(tlm__cm_commit_decode(b, (size_t)len, &o) == 0 && o.stats && o.n == 2 &&
	      o.backlog[1] == 5 && o.drain_us[1] == 100 && o.drain_us[2] == 7 &&
	      o.backlog_bytes == 1ull << 33 && o.commit_us == 900);
	for (int k = 2; k < len; k++)            /* len 1 is a bare COMMIT */
		CHECK(tlm__cm_commit_decode(b, (size_t)k, &o) == -TLM_EFRAME, "took %d", k);
	CHECK(tlm__cm_commit_decode(b, (size_t)len + 1, &o) == -TLM_EFRAME);
	CHECK(tlm__cm_commit_decode(b, 1, &o) == 0 && !o.stats);
	CHECK(tlm__cm_commit_decode(b, 0, &o) == -TLM_EFRAME);
	c.stats = false;
	CHECK(tlm__cm_commit_encode(b, sizeof(b), &c) == 1 && b[0] == TLM_CM_COMMIT);

	CHECK(tlm__cm_synced_encode(b, sizeof(b), 0xdeadbeef) == TLM_CM_SYNCED_LEN);
	CHECK(b[0] == TLM_CM_SYNCED && tlm__get32(b + 1) == 0xdeadbeef);
	CHECK(tlm__cm_synced_decode(b, TLM_CM_SYNCED_LEN, &us) == 0 && us == 0xdeadbeef);
	CHECK_LENGTHS(tlm__cm_synced_decode, b, TLM_CM_SYNCED_LEN, &us);
	CHECK(tlm__cm_synced_encode(b, 4, 1) == -ENOSPC);
}

static void test_devstate_fail_abort(void)
{
	static uint8_t b[TLM_MAX_DATA_FRAME + 8];
	struct tlm_cm_fail f;
	const uint8_t *d;
	char text[300];
	size_t n;
	int len;

	len = tlm__cm_devstate_encode(b, sizeof(b), "QEVM", 4);
	CHECK(len == 5 && b[0] == TLM_CM_DEVSTATE && !memcmp(b + 1, "QEVM", 4));
	CHECK(tlm__cm_devstate_decode(b, 5, &d, &n) == 0 && d == b + 1 && n == 4);
	CHECK(tlm__cm_devstate_decode(b, 1, &d, &n) == -TLM_EFRAME);   /* empty chunk */
	CHECK(tlm__cm_devstate_encode(b, sizeof(b), "x", 0) == -EINVAL);
	CHECK(tlm__cm_devstate_encode(b, sizeof(b), b, TLM_MAX_DATA_FRAME) == -EINVAL);
	CHECK(tlm__cm_devstate_encode(b, 4, "QEVM", 4) == -ENOSPC);

	len = tlm__cm_fail_encode(b, sizeof(b), -TLM_ECRC, "lane 2: crc");
	CHECK(len == 5 + 11 && b[0] == TLM_CM_FAIL && (int32_t)tlm__get32(b + 1) == -TLM_ECRC);
	CHECK(tlm__cm_fail_decode(b, (size_t)len, &f) == 0 && f.code == -TLM_ECRC &&
	      !strcmp(f.text, "lane 2: crc"));
	CHECK(tlm__cm_fail_decode(b, 4, &f) == -TLM_EFRAME);
	tlm__put32(b + 1, 0);                    /* a failure is never success */
	b[5] = '\n';                             /* nor unprintable in our log */
	CHECK(tlm__cm_fail_decode(b, (size_t)len, &f) == 0 && f.code == -EIO && f.text[0] == '?');
	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = 0;
	len = tlm__cm_fail_encode(b, sizeof(b), -EIO, text);
	CHECK(len == 5 + TLM_CM_FAIL_TEXT);
	memset(b + len, 'b', 100);               /* a longer text is cut */
	CHECK(tlm__cm_fail_decode(b, (size_t)len + 100, &f) == 0 &&
	      strlen(f.text) == TLM_CM_FAIL_TEXT);

	CHECK(tlm__cm_abort_encode(b, sizeof(b)) == 1 && b[0] == TLM_CM_ABORT);
	CHECK(tlm__cm_abort_decode(b, 1) == 0);
	CHECK(tlm__cm_abort_decode(b, 2) == -TLM_EFRAME && tlm__cm_abort_decode(b, 0) == -TLM_EFRAME);
	CHECK(tlm__cm_abort_encode(b, 0) == -ENOSPC);

	CHECK(tlm__cm_keepalive_encode(b, sizeof(b)) == 1 && b[0] == TLM_CM_KEEPALIVE);
	CHECK(tlm__cm_type(b, 1) == TLM_CM_KEEPALIVE);
	CHECK(tlm__cm_keepalive_decode(b, 1) == 0);
	CHECK(tlm__cm_keepalive_decode(b, 2) == -TLM_EFRAME &&
	      tlm__cm_keepalive_decode(b, 0) == -TLM_EFRAME);
	CHECK(tlm__cm_keepalive_encode(b, 0) == -ENOSPC);
	b[0] = TLM_CM_ABORT;                     /* not a keepalive */
	CHECK(tlm__cm_keepalive_decode(b, 1) == -TLM_EFRAME);

	b[0] = 0;
	CHECK(tlm__cm_type(b, 1) == -TLM_EFRAME);
	b[0] = TLM_CM_KEEPALIVE + 1;
	CHECK(tlm__cm_type(b, 1) == -TLM_EFRAME);
	CHECK(tlm__cm_type(b, 0) == -TLM_EFRAME);
}

int main(void)
{
	test_start();
	test_lanes();
	test_commit_synced();
	test_devstate_fail_abort();
	if (test_failures) {
		fprintf(stderr, "%d check(s) failed\n", test_failures);
		return 1;
	}
	printf("all control message checks passed\n");
	return 0;
}
