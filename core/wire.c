/* SPDX-License-Identifier: MIT */
/*
 * Encoders and decoders of wire version 3 (core/wire.h, docs/wire.md).
 * Decoders see untrusted bytes: they check every length against what they
 * were given before reading, and refuse anything unknown rather than guess.
 */
#include <string.h>

#include "tlm-internal.h"
#include "wire.h"

#define PF_KNOWN (TLM_PF_ZERO | TLM_PF_XBZRLE | TLM_PF_PS | TLM_PF_PLACED | TLM__PF_NOSUM | \
		  TLM__PF_MAC | TLM_PF_STAGED | TLM_PF_LAST)

static uint16_t hdr_check(uint32_t len, uint8_t type)
{
	return (uint16_t)~((len & 0xffff) ^ (len >> 16) ^ type);
}

void tlm__frame_hdr_encode(uint8_t out[TLM_FRAME_HDR], uint32_t len, uint8_t type)
{
	tlm__put32(out, len);
	out[4] = type;
	out[5] = 0;
	tlm__put16(out + 6, hdr_check(len, type));
}

int tlm__frame_hdr_decode(const uint8_t in[TLM_FRAME_HDR], uint32_t page_size,
			  struct tlm_frame_hdr *out)
{
	uint32_t len = tlm__get32(in);
	uint8_t type = in[4];
	uint32_t max;

	if (in[5] != 0 || tlm__get16(in + 6) != hdr_check(len, type))
		return -TLM_EFRAME;
	if (page_size == 0 || page_size > TLM_MAX_PAGE_SIZE)
		page_size = TLM_MAX_PAGE_SIZE;
	switch (type) {
	case TLM_FT_DATA:
		if (len == 0)
			return -TLM_EFRAME;
		max = TLM_MAX_DATA_FRAME;
		break;
	case TLM_FT_FIN:
		max = 0;
		break;
	case TLM_FT_PAGE:
		if (len < TLM_PAGE_HDR)
			return -TLM_EFRAME;
		max = TLM_PAGE_HDR + page_size;
		break;
	case TLM_FT_REGION:
		if (len != TLM_REGION_LEN)
			return -TLM_EFRAME;
		max = TLM_REGION_LEN;
		break;
	case TLM_FT_CREDIT:
		if (len != TLM_CREDIT_LEN)
			return -TLM_EFRAME;
		max = TLM_CREDIT_LEN;
		break;
	case TLM_FT_SEALED:
		if (len < TLM_SEAL_TAG + TLM_FRAME_HDR)
			return -TLM_EFRAME;
		max = TLM_SEAL_MAX;
		break;
	case TLM_FT_HELLO: case TLM_FT_CHALLENGE: case TLM_FT_AUTH:
	case TLM_FT_WELCOME: case TLM_FT_PARAMS: case TLM_FT_PARAMS_ACK:
	case TLM_FT_ERROR:
		max = TLM_MAX_MSG;
		break;
	case TLM_FT_CTRL:
		max = TLM_MAX_DATA_FRAME;
		break;
	default:
		return -TLM_EFRAME;
	}
	if (len > max)
		return -TLM_EFRAME;
	out->len = len;
	out->type = type;
	return 0;
}

void tlm__page_hdr_encode(uint8_t out[TLM_PAGE_HDR], const struct tlm_page_rec *r)
{
	tlm__put64(out, r->index);
	tlm__put32(out + 8, r->epoch);
	tlm__put16(out + 12, r->flags);
	tlm__put16(out + 14, r->region);
	tlm__put32(out + 16, r->len);
	tlm__put32(out + 20, r->crc);
}

int tlm__page_hdr_decode(const uint8_t in[TLM_PAGE_HDR], uint32_t frame_len,
			 uint32_t page_size, struct tlm_page_rec *out)
{
	struct tlm_page_rec r;

	r.index = tlm__get64(in);
	r.epoch = tlm__get32(in + 8);
	r.flags = tlm__get16(in + 12);
	r.region = tlm__get16(in + 14);
	r.len = tlm__get32(in + 16);
	r.crc = tlm__get32(in + 20);
	r.data = NULL;
	if (r.flags & ~PF_KNOWN)
		return -TLM_EFRAME;
	/* A PLACED record's data came another way (RDMA WRITE): header only,
	 * or header and the page's MAC, or header, staging slot and tag. */
	if ((r.flags & (TLM__PF_MAC | TLM_PF_STAGED)) && !(r.flags & TLM_PF_PLACED))
		return -TLM_EFRAME;
	if ((r.flags & TLM__PF_MAC) && (r.flags & TLM_PF_STAGED))
		return -TLM_EFRAME;
	if (frame_len < TLM_PAGE_HDR ||
	    (uint64_t)((r.flags & TLM_PF_PLACED) ? ((r.flags & TLM__PF_MAC) ? TLM_PAGE_MAC :
						    (r.flags & TLM_PF_STAGED) ? TLM_STAGED_TAIL : 0)
						 : r.len) + TLM_PAGE_HDR != frame_len)
		return -TLM_EFRAME;
	if ((r.flags & TLM_PF_PLACED) &&
	    (r.len == 0 || r.crc || (r.flags & (TLM_PF_ZERO | TLM_PF_XBZRLE | TLM_PF_LAST))))
		return -TLM_EFRAME;
	if (r.len > page_size || r.region >= TLM_MAX_REGIONS)
		return -TLM_EFRAME;
	if ((r.flags & (TLM_PF_ZERO | TLM_PF_LAST)) && r.len != 0)
		return -TLM_EFRAME;
	if ((r.flags & TLM_PF_XBZRLE) && (r.len == 0 || (r.flags & TLM_PF_ZERO)))
		return -TLM_EFRAME;
	if ((r.flags & TLM__PF_NOSUM) &&
	    (r.len == 0 || r.crc || (r.flags & (TLM_PF_PLACED | TLM_PF_XBZRLE))))
		return -TLM_EFRAME;
	*out = r;
	return 0;
}

int tlm__page_verify_sum(const struct tlm_page_rec *r, uint32_t sum)
{
	/* Only a transport that placed the data itself may accept these
	 * (it checks them against what it registered, instead of this). */
	if (r->flags & TLM_PF_PLACED)
		return -TLM_EFRAME;
	/* Nor an unsummed one: only a transport whose link guards the bytes
	 * accepts it, and clears the flag before it gets here. */
	if (r->flags & TLM__PF_NOSUM)
		return -TLM_ECRC;
	return (r->len ? sum : 0) == r->crc ? 0 : -TLM_ECRC;
}

int tlm__page_verify(const struct tlm_page_rec *r)
{
	return tlm__page_verify_sum(r, r->len && !(r->flags & (TLM_PF_PLACED | TLM__PF_NOSUM)) ?
					  tlm_crc32c(0, r->data, r->len) : 0);
}

void tlm__region_encode(uint8_t out[TLM_REGION_LEN], const struct tlm_region_offer *o)
{
	tlm__put16(out, o->region);
	tlm__put16(out + 2, o->offered ? (o->staged ? 2 : 1) : 0);
	tlm__put32(out + 4, o->offered ? o->rkey : 0);
	tlm__put64(out + 8, o->offered ? o->addr : 0);
	tlm__put64(out + 16, o->offered ? o->len : 0);
}

int tlm__region_decode(const uint8_t *in, size_t len, struct tlm_region_offer *o)
{
	uint16_t offered;

	if (len != TLM_REGION_LEN)
		return -TLM_EFRAME;
	o->region = tlm__get16(in);
	offered = tlm__get16(in + 2);
	o->rkey = tlm__get32(in + 4);
	o->addr = tlm__get64(in + 8);
	o->len = tlm__get64(in + 16);
	if (o->region >= TLM_MAX_REGIONS || offered > 2 ||
	    (offered ? o->len == 0 || o->addr + o->len < o->addr
		     : o->rkey || o->addr || o->len))
		return -TLM_EFRAME;
	o->offered = offered != 0;
	o->staged = offered == 2;
	return 0;
}

int tlm__hello_encode(uint8_t *out, size_t cap, const struct tlm_hello *h)
{
	if (cap < TLM_HELLO_LEN)
		return -ENOSPC;
	tlm__put32(out, h->magic);
	tlm__put16(out + 4, h->version);
	tlm__put16(out + 6, h->lane);
	memcpy(out + 8, h->sid, TLM_SID_LEN);
	memcpy(out + 8 + TLM_SID_LEN, h->nonce, TLM_NONCE_LEN);
	out[8 + TLM_SID_LEN + TLM_NONCE_LEN] = h->protect;
	out[9 + TLM_SID_LEN + TLM_NONCE_LEN] = h->cipher;
	return TLM_HELLO_LEN;
}

/* A HELLO from another version may be longer or shorter; magic and version
 * are always its first 6 bytes so we can name the version we were sent. */
int tlm__hello_decode(const uint8_t *in, size_t len, struct tlm_hello *h)
{
	if (len < 6)
		return -TLM_EFRAME;
	h->magic = tlm__get32(in);
	h->version = tlm__get16(in + 4);
	if (h->magic != TLM_WIRE_MAGIC)
		return -TLM_EFRAME;
	if (h->version != TLM_WIRE_VERSION)
		return -TLM_EVERSION;
	if (len != TLM_HELLO_LEN)
		return -TLM_EFRAME;
	h->lane = tlm__get16(in + 6);
	memcpy(h->sid, in + 8, TLM_SID_LEN);
	memcpy(h->nonce, in + 8 + TLM_SID_LEN, TLM_NONCE_LEN);
	h->protect = in[8 + TLM_SID_LEN + TLM_NONCE_LEN];
	h->cipher = in[9 + TLM_SID_LEN + TLM_NONCE_LEN];
	if (h->protect > TLM_PROTECT_NONE || h->cipher > TLM_CIPHER_CHACHA20POLY1305 ||
	    (h->protect == TLM_PROTECT_NONE) != (h->cipher == TLM_CIPHER_NONE))
		return -TLM_EFRAME;
	return 0;
}

int tlm__challenge_encode(uint8_t *out, size_t cap, const struct tlm_challenge *c)
{
	if (cap < TLM_CHALLENGE_LEN)
		return -ENOSPC;
	tlm__put32(out, c->magic);
	tlm__put16(out + 4, c->version);
	tlm__put16(out + 6, 0);
	memcpy(out + 8, c->nonce, TLM_NONCE_LEN);
	return TLM_CHALLENGE_LEN;
}

int tlm__challenge_decode(const uint8_t *in, size_t len, struct tlm_challenge *c)
{
	if (len < 6)
		return -TLM_EFRAME;
	c->magic = tlm__get32(in);
	c->version = tlm__get16(in + 4);
	if (c->magic != TLM_WIRE_MAGIC)
		return -TLM_EFRAME;
	if (c->version != TLM_WIRE_VERSION)
		return -TLM_EVERSION;
	if (len != TLM_CHALLENGE_LEN || tlm__get16(in + 6) != 0)
		return -TLM_EFRAME;
	memcpy(c->nonce, in + 8, TLM_NONCE_LEN);
	return 0;
}

int tlm__params_encode(uint8_t *out, size_t cap, const struct tlm_params *p)
{
	size_t need = TLM_PARAMS_FIXED + 8 * (size_t)p->n_regions, off;

	if (p->n_regions > TLM_MAX_REGIONS)
		return -EINVAL;
	for (unsigned i = 0; i < p->n_regions; i++)
		need += 1 + strnlen(p->region_name[i], TLM_REGION_NAME_MAX + 1);
	if (cap < need)
		return -ENOSPC;
	tlm__put32(out, p->page_size);
	tlm__put16(out + 4, p->n_lanes);
	tlm__put16(out + 6, p->n_regions);
	tlm__put32(out + 8, p->caps);
	tlm__put64(out + 12, p->page_lanes);
	for (unsigned i = 0; i < p->n_regions; i++)
		tlm__put64(out + TLM_PARAMS_FIXED + 8 * i, p->region_len[i]);
	off = TLM_PARAMS_FIXED + 8 * (size_t)p->n_regions;
	for (unsigned i = 0; i < p->n_regions; i++) {
		size_t nl = strnlen(p->region_name[i], TLM_REGION_NAME_MAX + 1);

		if (nl > TLM_REGION_NAME_MAX)
			return -ENAMETOOLONG;
		out[off] = (uint8_t)nl;
		memcpy(out + off + 1, p->region_name[i], nl);
		off += 1 + nl;
	}
	return (int)need;
}

int tlm__params_decode(const uint8_t *in, size_t len, struct tlm_params *p)
{
	size_t off;

	if (len < TLM_PARAMS_FIXED)
		return -TLM_EFRAME;
	memset(p, 0, sizeof(*p));
	p->page_size = tlm__get32(in);
	p->n_lanes = tlm__get16(in + 4);
	p->n_regions = tlm__get16(in + 6);
	p->caps = tlm__get32(in + 8);
	p->page_lanes = tlm__get64(in + 12);
	if (p->n_regions > TLM_MAX_REGIONS ||
	    len < TLM_PARAMS_FIXED + 9 * (size_t)p->n_regions)
		return -TLM_EFRAME;
	for (unsigned i = 0; i < p->n_regions; i++)
		p->region_len[i] = tlm__get64(in + TLM_PARAMS_FIXED + 8 * i);
	off = TLM_PARAMS_FIXED + 8 * (size_t)p->n_regions;
	for (unsigned i = 0; i < p->n_regions; i++) {
		size_t nl;

		if (off >= len)
			return -TLM_EFRAME;
		nl = in[off];
		if (nl > TLM_REGION_NAME_MAX || off + 1 + nl > len ||
		    memchr(in + off + 1, 0, nl))
			return -TLM_EFRAME;
		memcpy(p->region_name[i], in + off + 1, nl);
		off += 1 + nl;
	}
	return off == len ? 0 : -TLM_EFRAME;
}

int tlm__errmsg_encode(uint8_t *out, size_t cap, const struct tlm_errmsg *e)
{
	size_t tl = strnlen(e->text, sizeof(e->text) - 1);

	if (cap < 8 + tl)
		return -ENOSPC;
	tlm__put32(out, (uint32_t)e->code);
	tlm__put16(out + 4, e->version);
	tlm__put16(out + 6, (uint16_t)tl);
	memcpy(out + 8, e->text, tl);
	return (int)(8 + tl);
}

int tlm__errmsg_decode(const uint8_t *in, size_t len, struct tlm_errmsg *e)
{
	size_t tl;

	if (len < 8)
		return -TLM_EFRAME;
	e->code = (int32_t)tlm__get32(in);
	e->version = tlm__get16(in + 4);
	tl = tlm__get16(in + 6);
	if (tl != len - 8 || tl >= sizeof(e->text))
		return -TLM_EFRAME;
	memcpy(e->text, in + 8, tl);
	e->text[tl] = 0;
	/* The text ends up in our log: keep it printable. */
	for (size_t i = 0; i < tl; i++)
		if ((unsigned char)e->text[i] < 0x20 || (unsigned char)e->text[i] > 0x7e)
			e->text[i] = '?';
	/* Only error codes, never success or garbage, may come from a peer. */
	if (e->code >= 0 || e->code < -TLM_ELAST)
		e->code = -TLM_EPARAM;
	return 0;
}

/* ---- engine control messages ---- */

int tlm__cm_type(const uint8_t *in, size_t len)
{
	if (len < 1 || in[0] < TLM_CM_START || in[0] > TLM_CM_KEEPALIVE)
		return -TLM_EFRAME;
	return in[0];
}

int tlm__cm_start_encode(uint8_t *out, size_t cap, const struct tlm_cm_start *m)
{
	if (cap < TLM_CM_START_LEN)
		return -ENOSPC;
	out[0] = TLM_CM_START;
	tlm__put16(out + 1, m->chk);
	tlm__put16(out + 3, m->ps);
	out[5] = m->policy;
	tlm__put32(out + 6, m->epoch_ms);
	out[10] = m->flags;
	return TLM_CM_START_LEN;
}

int tlm__cm_start_decode(const uint8_t *in, size_t len, struct tlm_cm_start *m)
{
	if (len != TLM_CM_START_LEN || in[0] != TLM_CM_START)
		return -TLM_EFRAME;
	m->chk = tlm__get16(in + 1);
	m->ps = tlm__get16(in + 3);
	m->policy = in[5];
	m->epoch_ms = tlm__get32(in + 6);
	m->flags = in[10];
	if ((m->flags & ~TLM_START_ZC) || m->chk + m->ps >= TLM_MAX_LANES)
		return -TLM_EFRAME;
	return 0;
}

/* The three messages of per-lane u64 counts: type, u16 n, then n entries
 * of `per` u64s (records, and bytes when per is 2), then `tail` u64s
 * (STAGE3's device-state length). */
static int lanes_encode(uint8_t *out, size_t cap, uint8_t type, const struct tlm_cm_lanes *m,
			unsigned per, unsigned tail)
{
	size_t len = 3 + (size_t)8 * (per * m->n + tail), off = 3;

	if (m->n >= TLM_MAX_LANES)
		return -EINVAL;
	if (cap < len)
		return -ENOSPC;
	out[0] = type;
	tlm__put16(out + 1, m->n);
	for (unsigned i = 1; i <= m->n; i++) {
		tlm__put64(out + off, m->records[i]);
		off += 8;
		if (per == 2) {
			tlm__put64(out + off, m->bytes[i]);
			off += 8;
		}
	}
	if (tail)
		tlm__put64(out + off, m->devstate_len);
	return (int)len;
}

static int lanes_decode(const uint8_t *in, size_t len, uint8_t type, struct tlm_cm_lanes *m,
			unsigned per, unsigned tail)
{
	size_t off = 3;

	memset(m, 0, sizeof(*m));
	if (len < 3 || in[0] != type)
		return -TLM_EFRAME;
	m->n = tlm__get16(in + 1);
	if (m->n >= TLM_MAX_LANES || len != 3 + (size_t)8 * (per * m->n + tail))
		return -TLM_EFRAME;
	for (unsigned i = 1; i <= m->n; i++) {
		m->records[i] = tlm__get64(in + off);
		off += 8;
		if (per == 2) {
			m->bytes[i] = tlm__get64(in + off);
			off += 8;
		}
	}
	if (tail)
		m->devstate_len = tlm__get64(in + off);
	return 0;
}

int tlm__cm_stage3_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m)
{
	return lanes_encode(out, cap, TLM_CM_STAGE3, m, 1, 1);
}

int tlm__cm_stage3_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m)
{
	return lanes_decode(in, len, TLM_CM_STAGE3, m, 1, 1);
}

int tlm__cm_sync_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m)
{
	return lanes_encode(out, cap, TLM_CM_SYNC, m, 1, 0);
}

int tlm__cm_sync_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m)
{
	return lanes_decode(in, len, TLM_CM_SYNC, m, 1, 0);
}

int tlm__cm_paused_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m)
{
	return lanes_encode(out, cap, TLM_CM_PAUSED, m, 2, 0);
}

int tlm__cm_paused_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m)
{
	return lanes_decode(in, len, TLM_CM_PAUSED, m, 2, 0);
}

int tlm__cm_synced_encode(uint8_t *out, size_t cap, uint32_t waited_us)
{
	if (cap < TLM_CM_SYNCED_LEN)
		return -ENOSPC;
	out[0] = TLM_CM_SYNCED;
	tlm__put32(out + 1, waited_us);
	return TLM_CM_SYNCED_LEN;
}

int tlm__cm_synced_decode(const uint8_t *in, size_t len, uint32_t *waited_us)
{
	if (len != TLM_CM_SYNCED_LEN || in[0] != TLM_CM_SYNCED)
		return -TLM_EFRAME;
	*waited_us = tlm__get32(in + 1);
	return 0;
}

int tlm__cm_commit_encode(uint8_t *out, size_t cap, const struct tlm_cm_commit *m)
{
	size_t len = m->stats ? 3 + (size_t)8 * m->n + 12 : 1, off = 3;

	if (m->stats && m->n >= TLM_MAX_LANES)
		return -EINVAL;
	if (cap < len)
		return -ENOSPC;
	out[0] = TLM_CM_COMMIT;
	if (!m->stats)
		return 1;
	tlm__put16(out + 1, m->n);
	for (unsigned i = 1; i <= m->n; i++, off += 8) {
		tlm__put32(out + off, m->backlog[i]);
		tlm__put32(out + off + 4, m->drain_us[i]);
	}
	tlm__put64(out + off, m->backlog_bytes);
	tlm__put32(out + off + 8, m->commit_us);
	return (int)len;
}

int tlm__cm_commit_decode(const uint8_t *in, size_t len, struct tlm_cm_commit *m)
{
	size_t off = 3;

	memset(m, 0, sizeof(*m));
	if (len < 1 || in[0] != TLM_CM_COMMIT)
		return -TLM_EFRAME;
	if (len == 1)
		return 0;
	if (len < 3)
		return -TLM_EFRAME;
	m->n = tlm__get16(in + 1);
	if (m->n >= TLM_MAX_LANES || len != 3 + (size_t)8 * m->n + 12)
		return -TLM_EFRAME;
	m->stats = true;
	for (unsigned i = 1; i <= m->n; i++, off += 8) {
		m->backlog[i] = tlm__get32(in + off);
		m->drain_us[i] = tlm__get32(in + off + 4);
	}
	m->backlog_bytes = tlm__get64(in + off);
	m->commit_us = tlm__get32(in + off + 8);
	return 0;
}

int tlm__cm_devstate_encode(uint8_t *out, size_t cap, const void *data, size_t n)
{
	if (n == 0 || n > TLM_MAX_DATA_FRAME - 1)
		return -EINVAL;
	if (cap < n + 1)
		return -ENOSPC;
	out[0] = TLM_CM_DEVSTATE;
	memcpy(out + 1, data, n);
	return (int)(n + 1);
}

int tlm__cm_devstate_decode(const uint8_t *in, size_t len, const uint8_t **data, size_t *n)
{
	if (len < 2 || in[0] != TLM_CM_DEVSTATE)
		return -TLM_EFRAME;
	*data = in + 1;
	*n = len - 1;
	return 0;
}

int tlm__cm_fail_encode(uint8_t *out, size_t cap, int32_t code, const char *text)
{
	size_t tl = strnlen(text, TLM_CM_FAIL_TEXT);

	if (cap < 5 + tl)
		return -ENOSPC;
	out[0] = TLM_CM_FAIL;
	tlm__put32(out + 1, (uint32_t)code);
	memcpy(out + 5, text, tl);
	return (int)(5 + tl);
}

int tlm__cm_fail_decode(const uint8_t *in, size_t len, struct tlm_cm_fail *m)
{
	size_t tl;

	if (len < 5 || in[0] != TLM_CM_FAIL)
		return -TLM_EFRAME;
	m->code = (int32_t)tlm__get32(in + 1);
	if (m->code >= 0)
		m->code = -EIO;   /* a failure is never success */
	tl = len - 5 < TLM_CM_FAIL_TEXT ? len - 5 : TLM_CM_FAIL_TEXT;
	memcpy(m->text, in + 5, tl);
	m->text[tl] = 0;
	/* The text ends up in our log: keep it printable. */
	for (size_t i = 0; i < tl; i++)
		if ((unsigned char)m->text[i] < 0x20 || (unsigned char)m->text[i] > 0x7e)
			m->text[i] = '?';
	return 0;
}

int tlm__cm_abort_encode(uint8_t *out, size_t cap)
{
	if (cap < 1)
		return -ENOSPC;
	out[0] = TLM_CM_ABORT;
	return 1;
}

int tlm__cm_abort_decode(const uint8_t *in, size_t len)
{
	return len == 1 && in[0] == TLM_CM_ABORT ? 0 : -TLM_EFRAME;
}

int tlm__cm_keepalive_encode(uint8_t *out, size_t cap)
{
	if (cap < 1)
		return -ENOSPC;
	out[0] = TLM_CM_KEEPALIVE;
	return 1;
}

int tlm__cm_keepalive_decode(const uint8_t *in, size_t len)
{
	return len == 1 && in[0] == TLM_CM_KEEPALIVE ? 0 : -TLM_EFRAME;
}
