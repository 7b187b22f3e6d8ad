/* SPDX-License-Identifier: MIT */
/*
 * XBZRLE-style delta encoding of re-sent pages, as QEMU does it: compare
 * the page with the copy last sent, then send runs: uleb128 length of
 * unchanged bytes, uleb128 length of changed bytes, the changed bytes
 * (new content). Our encoding starts with the crc32c of the base page so
 * the destination refuses to apply a delta to anything but that base.
 *
 * The cache is direct-mapped (one slot per key hash) and bounded by the
 * size given: a miss just means a plain page. Only the PS thread that owns
 * the lane touches its cache.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct tlm_xbz_cache {
	uint32_t page_size;
	uint64_t slots;
	uint64_t *keys;     /* key + 1; 0 = empty */
	uint8_t *pages;
};

struct tlm_xbz_cache *tlm__xbz_create(uint64_t bytes, uint32_t page_size)
{
	struct tlm_xbz_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->page_size = page_size;
	c->slots = bytes / page_size;
	if (c->slots < 16)
		c->slots = 16;
	c->keys = calloc(c->slots, sizeof(*c->keys));
	c->pages = malloc(c->slots * page_size);
	if (!c->keys || !c->pages) {
		tlm__xbz_destroy(c);
		return NULL;
	}
	return c;
}

void tlm__xbz_destroy(struct tlm_xbz_cache *c)
{
	if (!c)
		return;
	free(c->keys);
	free(c->pages);
	free(c);
}

size_t tlm__xbz_bytes(const struct tlm_xbz_cache *c)
{
	return c ? c->slots * (c->page_size + sizeof(uint64_t)) : 0;
}

static uint8_t *put_uleb(uint8_t *p, uint32_t v)
{
	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		*p++ = v ? b | 0x80 : b;
	} while (v);
	return p;
}

static int get_uleb(const uint8_t **p, const uint8_t *end, uint32_t *v)
{
	uint32_t r = 0;

	for (int shift = 0; shift < 35; shift += 7) {
		uint8_t b;
		if (*p >= end)
			return -1;
		b = *(*p)++;
		r |= (uint32_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

uint32_t tlm__xbz_encode(struct tlm_xbz_cache *c, uint64_t key, const uint8_t *cur,
			 uint8_t *out)
{
	uint64_t slot = (key * 0x9e3779b97f4a7c15ull) % c->slots;
	uint8_t *old = c->pages + slot * c->page_size;
	uint32_t ps = c->page_size, limit = ps - ps / 4, i = 0;
	uint8_t *o = out, *end = out + limit;
	bool hit = c->keys[slot] == key + 1;

	if (hit) {
		tlm__put32(o, tlm_crc32c(0, old, ps));
		o += 4;
		while (i < ps) {
			uint32_t z = i, n;
			while (i < ps && cur[i] == old[i])
				i++;
			if (i == ps)
				break; /* trailing unchanged bytes need no run */
			n = i;
			/* A changed run ends at the first 4 equal bytes. */
			while (i < ps && (cur[i] != old[i] || (i + 4 <= ps && memcmp(cur + i, old + i, 4))))
				i++;
			if (end - o < 10 + (long)(i - n)) {
				o = NULL;
				break;
			}
			o = put_uleb(o, n - z);
			o = put_uleb(o, i - n);
			memcpy(o, cur + n, i - n);
			o += i - n;
		}
		if (o && o == out + 4) {
			/* Unchanged page: one empty run keeps the record non-empty. */
			o = put_uleb(o, 0);
			o = put_uleb(o, 0);
		}
	}
	memcpy(old, cur, ps);
	c->keys[slot] = key + 1;
	return hit && o ? (uint32_t)(o - out) : 0;
}

int tlm__xbz_decode(const uint8_t *enc, uint32_t len, uint8_t *page, uint32_t page_size)
{
	const uint8_t *p = enc, *end = enc + len;
	uint32_t i = 0;

	if (len < 6 || tlm__get32(enc) != tlm_crc32c(0, page, page_size))
		return -TLM_EFRAME;
	p += 4;
	while (p < end) {
		uint32_t z, n;
		if (get_uleb(&p, end, &z) || get_uleb(&p, end, &n))
			return -TLM_EFRAME;
		if (z > page_size - i || n > page_size - i - z || n > (uint32_t)(end - p))
			return -TLM_EFRAME;
		i += z;
		memcpy(page + i, p, n);
		i += n;
		p += n;
	}
	return 0;
}
