/* SPDX-License-Identifier: MIT */
/*
 * CRC-32C (Castagnoli), as iSCSI/ext4 use it: reflected polynomial
 * 0x82f63b78, initial ~0, final xor ~0. tlm_crc32c(0, buf, n) gives the
 * standard value; chaining tlm_crc32c(tlm_crc32c(0, a, n), b, m) equals the
 * crc of a||b. The SSE4.2 instruction is used when the CPU has it (chosen
 * once at first use); the table version is the fallback and the reference.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tlm-internal.h"

static uint32_t table[8][256];
static int table_ready;

static void make_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
	__atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
	if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
		make_table();
	while (n && ((uintptr_t)p & 7)) {
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
		n--;
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		w ^= crc;
		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		      table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		      table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		      table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if defined(__x86_64__)
/*
 * crc32q has a latency of 3 cycles but a throughput of 1 per cycle, so one
 * dependency chain runs at a third of the unit's speed. Input is cut into
 * rounds of three blocks of BLK bytes run as three chains at once and
 * joined: for the raw register, crc(s, A||B) = Z_|B|(crc(s, A)) ^ crc(0, B),
 * where Z_n (feeding n zero bytes) is linear, tabulated per input byte.
 * Block sizes step down so that little is left for one chain: a 4 KiB page
 * is one round of 1360, a 1440-byte packet piece one of 440 and one of 40.
 *
 * The copying variant (tlm__crc32c_copy) copies a chunk with memcpy and
 * then sums the chunk it stored, still in L1: cheaper than one pass that
 * moves every word through a general register to sum and store it (on an
 * AVX-512 Xeon, 1434-byte pieces into a 4 MiB spread of buffers: 0.24
 * against 0.38 cycles per byte), and what is summed is what was stored
 * even if the source changes meanwhile (LIVE pages).
 */
static const size_t blk_len[] = { 1360, 440, 168, 40 };   /* 3 * 1360 + 16 = 4096 */
#define N_BLK (sizeof(blk_len) / sizeof(blk_len[0]))
static uint32_t zeros[N_BLK][4][256];
static int zeros_ready;

static uint32_t zeros_raw(uint32_t s, size_t n)
{
	while (n--)
		for (int k = 0; k < 8; k++)
			s = s & 1 ? (s >> 1) ^ 0x82f63b78u : s >> 1;
	return s;
}

static void make_zeros(uint32_t z[4][256], size_t n)
{
	uint32_t bit[32];

	for (int b = 0; b < 32; b++)
		bit[b] = zeros_raw(1u << b, n);
	for (int k = 0; k < 4; k++)
		for (uint32_t v = 0; v < 256; v++) {
			uint32_t r = 0;
			for (int b = 0; b < 8; b++)
				if (v & (1u << b))
					r ^= bit[8 * k + b];
			z[k][v] = r;
		}
}

static inline uint32_t zshift(uint32_t z[4][256], uint32_t s)
{
	return z[0][s & 0xff] ^ z[1][(s >> 8) & 0xff] ^ z[2][(s >> 16) & 0xff] ^ z[3][s >> 24];
}

/* One round: 3 * blk bytes from p. */
__attribute__((target("sse4.2")))
static inline uint64_t crc_hw3(uint64_t c0, const uint8_t *p, size_t blk, uint32_t z[4][256])
{
	uint64_t c1 = 0, c2 = 0;

	for (size_t i = 0; i < blk; i += 8) {
		uint64_t a, b, c;
		memcpy(&a, p + i, 8);
		memcpy(&b, p + blk + i, 8);
		memcpy(&c, p + 2 * blk + i, 8);
		c0 = __builtin_ia32_crc32di(c0, a);
		c1 = __builtin_ia32_crc32di(c1, b);
		c2 = __builtin_ia32_crc32di(c2, c);
	}
	return zshift(z, zshift(z, (uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
}

/* The raw register over n bytes of p. */
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t c = crc;

	if (n >= 3 * blk_len[N_BLK - 1] && !__atomic_load_n(&zeros_ready, __ATOMIC_ACQUIRE)) {
		/* Racing first callers compute the same tables. */
		for (size_t b = 0; b < N_BLK; b++)
			make_zeros(zeros[b], blk_len[b]);
		__atomic_store_n(&zeros_ready, 1, __ATOMIC_RELEASE);
	}
	for (size_t b = 0; b < N_BLK; b++)
		for (; n >= 3 * blk_len[b]; p += 3 * blk_len[b], n -= 3 * blk_len[b]) {
			c = crc_hw3(c, p, blk_len[b], zeros[b]);
		}
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
	}
	for (; n; p++, n--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p);
	return (uint32_t)c;
}

static int have_hw(void)
{
	static int cached = -1;
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);

	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
		__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	}
	return v;
}
#else
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
	return crc_sw(crc, p, n);
}
static int have_hw(void) { return 0; }
#endif

uint32_t tlm_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
	crc = have_hw() ? crc_hw(crc, buf, len) : crc_sw(crc, buf, len);
	return ~crc;
}

/* A chunk stays in L1 between its copy and its sum. */
#define COPY_CHUNK 4096

uint32_t tlm__crc32c_copy(uint32_t crc, void *dst, const void *src, size_t len)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	while (len) {
		size_t k = len < COPY_CHUNK ? len : COPY_CHUNK;

		memcpy(d, s, k);
		crc = tlm_crc32c(crc, d, k);
		d += k;
		s += k;
		len -= k;
	}
	return crc;
}

/* The table version, exported for the unit test to check the two agree. */
uint32_t tlm__crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t tlm__crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	return ~crc_sw(~crc, buf, len);
}
