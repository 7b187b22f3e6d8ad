/* SPDX-License-Identifier: MIT */
/*
 * The page content of a transport run (tlm-bench.h).
 *
 * Page k of lane l (k = 0, 1, ... in send order, global page index
 * k * lanes + l - 1) is a 16-byte stamp {lane, magic, index} followed by
 * the rest of template k % SLOTS of lane l; the 16 templates of a lane are
 * pseudo-random bytes derived from (lane, slot), few enough to stay in the
 * receiver's cache. The sender computes each page's crc32c without reading
 * the page: the crc of the fixed rest is precomputed per slot and combined
 * with the stamp's crc by crc linearity (checked against tlm_crc32c at
 * start), so the benchmark measures the transport, not a checksum loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench-internal.h"

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

int tlm__bench_pattern_init(struct pattern *p, unsigned lanes, uint32_t page_size)
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
			uint8_t *t = tlm__bench_tmpl_of(p, l, s);
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
		uint8_t *t = tlm__bench_tmpl_of(p, lanes, p->slots - 1);

		tlm__bench_stamp(t, lanes, 0x0123456789abcdefull);
		if (tlm__bench_page_crc(p, p->rest_crc[(size_t)lanes * p->slots - 1], t) !=
		    tlm_crc32c(0, t, page_size))
			return -EPROTO;
	}
	return 0;
}

void tlm__bench_pattern_free(struct pattern *p)
{
	free(p->tmpl);
	free(p->rest_crc);
}
