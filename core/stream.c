/* SPDX-License-Identifier: MIT */
/*
 * The frame stream shared by the byte-pipe transports (stream.h): the
 * reassembly buffer and the parse of frames out of it. Every check a
 * received frame goes through is here, so TCP and RDMA lanes refuse the
 * same things the same way:
 *
 *   page mode   PAGE frames only, of a length the buffer can hold; the
 *               record header decodes; the data matches its crc, or (a
 *               PLACED record) the transport's hook vouches for where the
 *               data went. The read position moves past a record before
 *               the sink sees it, so nothing is parsed twice.
 *   byte mode   DATA frames, then an empty FIN; anything else is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"

_Static_assert(TLM_FRAME_HDR + TLM_PAGE_HDR <= TLM_FRAME_HDR + TLM_MAX_FRAME,
	       "a record header fits a frame");

/* Only the rx side writes rx_bytes, but tlm_lane_stats() reads it from
 * any thread. */
static void count_bytes(uint64_t *ctr, uint64_t n)
{
	__atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
}

int tlm__stream_init(struct tlm__stream *s, struct tlm_lane *lane, const char *who, size_t cap)
{
	memset(s, 0, sizeof(*s));
	if (cap < TLM_FRAME_HDR + TLM_MAX_FRAME)
		return -EINVAL;
	s->buf = malloc(cap);
	if (!s->buf)
		return -ENOMEM;
	s->lane = lane;
	s->who = who;
	s->cap = cap;
	return 0;
}

void tlm__stream_free(struct tlm__stream *s)
{
	free(s->buf);
	s->buf = NULL;
}

size_t tlm__stream_room(struct tlm__stream *s, size_t want)
{
	if (s->start == s->end) {
		s->start = s->end = 0;
	} else if (s->cap - s->end < want) {
		memmove(s->buf, s->buf + s->start, tlm__stream_avail(s));
		s->end -= s->start;
		s->start = 0;
	}
	return s->cap - s->end;
}

/* The frame header at the read position, if one is buffered: 1 with *fh,
 * 0 if fewer bytes than a header are there, or -TLM_EFRAME. */
static int peek_hdr(const struct tlm__stream *s, struct tlm_frame_hdr *fh)
{
	if (tlm__stream_avail(s) < TLM_FRAME_HDR)
		return 0;
	return tlm__frame_hdr_decode(s->buf + s->start, s->lane->page_size, fh) < 0 ?
	       -TLM_EFRAME : 1;
}

/* Is the frame fh one page mode takes? A frame longer than the buffer
 * could never complete. */
static bool page_frame(const struct tlm__stream *s, const struct tlm_frame_hdr *fh)
{
	return fh->type == TLM_FT_PAGE && fh->len >= TLM_PAGE_HDR &&
	       fh->len <= s->cap - TLM_FRAME_HDR;
}

/* The record in the whole PAGE frame at p, decoded and verified. */
static int page_record(struct tlm__stream *s, const uint8_t *p, const struct tlm_frame_hdr *fh,
		       tlm__stream_placed_fn placed, void *arg, struct tlm_page_rec *rec)
{
	const struct tlm_lane *l = s->lane;
	int rc = tlm__page_hdr_decode(p + TLM_FRAME_HDR, fh->len, l->page_size, rec);

	if (rc < 0) {
		tlm__err("%s %s: lane %u: malformed page record", s->who, l->peer, l->index);
		return -TLM_EFRAME;
	}
	if (rec->flags & TLM_PF_PLACED) {
		const uint8_t *hdr = p + TLM_FRAME_HDR;

		rc = placed ? placed(arg, rec, hdr,
				     (rec->flags & (TLM__PF_MAC | TLM_PF_STAGED)) ?
				     hdr + TLM_PAGE_HDR : NULL)
			    : -TLM_EFRAME;
		if (rc == -TLM_EFRAME)
			tlm__err("%s %s: lane %u: placed record %u:%llu outside what we offered",
				 s->who, l->peer, l->index, rec->region,
				 (unsigned long long)rec->index);
		return rc;
	}
	rec->data = rec->len ? p + TLM_FRAME_HDR + TLM_PAGE_HDR : NULL;
	if (s->sealed) {
		/* Its tag vouched for every byte as the sender sealed it, crc
		 * field included: no second pass over the data. */
		rec->flags &= (uint16_t)~TLM__PF_NOSUM;
		return 0;
	}
	rc = tlm__page_verify(rec);
	if (rc < 0)
		tlm__err("%s %s: lane %u: page %u:%llu failed its crc", s->who, l->peer, l->index,
			 rec->region, (unsigned long long)rec->index);
	return rc;
}

int tlm__stream_parse_pages(struct tlm__stream *s, const struct tlm_page_sink *sink,
			    tlm__stream_placed_fn placed, void *arg, int *err)
{
	struct tlm_lane *l = s->lane;
	int delivered = 0;

	*err = 0;
	for (;;) {
		const uint8_t *p = s->buf + s->start;
		struct tlm_frame_hdr fh;
		struct tlm_page_rec rec;
		int rc = peek_hdr(s, &fh);

		if (rc == 0)
			break;
		if (rc < 0 || !page_frame(s, &fh)) {
			tlm__err("%s %s: lane %u: %s in page mode", s->who, l->peer, l->index,
				 rc < 0 ? "malformed frame header" : "frame of another kind");
			*err = -TLM_EFRAME;
			break;
		}
		if (tlm__stream_avail(s) < TLM_FRAME_HDR + (size_t)fh.len)
			break;
		rc = page_record(s, p, &fh, placed, arg, &rec);
		if (rc < 0) {
			*err = rc;
			break;
		}
		s->start += TLM_FRAME_HDR + fh.len;
		rc = sink->apply(sink->arg, &rec);
		if (rc < 0) {
			*err = rc;
			break;
		}
		count_bytes(&l->rx_bytes, rec.len);
		delivered++;
	}
	return delivered;
}

ssize_t tlm__stream_read(struct tlm__stream *s, uint8_t *out, size_t n, size_t got)
{
	struct tlm_lane *l = s->lane;

	while (got < n && !s->fin) {
		struct tlm_frame_hdr fh;
		int rc;

		if (s->data_left) {
			size_t take = tlm__stream_avail(s);

			if (take > s->data_left)
				take = s->data_left;
			if (take > n - got)
				take = n - got;
			if (!take)
				break;
			memcpy(out + got, s->buf + s->start, take);
			s->start += take;
			s->data_left -= (uint32_t)take;
			count_bytes(&l->rx_bytes, take);
			got += take;
			continue;
		}
		rc = peek_hdr(s, &fh);
		if (rc == 0)
			break;
		if (rc < 0 || (fh.type != TLM_FT_DATA && fh.type != TLM_FT_FIN) ||
		    (fh.type == TLM_FT_FIN && fh.len != 0)) {
			if (got)
				break;   /* the error shows on the next call */
			tlm__err("%s %s: lane %u: %s in byte mode", s->who, l->peer, l->index,
				 rc < 0 ? "malformed frame header" : "frame of another kind");
			return -TLM_EFRAME;
		}
		s->start += TLM_FRAME_HDR;
		if (fh.type == TLM_FT_FIN)
			s->fin = true;
		else
			s->data_left = fh.len;
	}
	return (ssize_t)got;
}

bool tlm__stream_ready(const struct tlm__stream *s)
{
	enum tlm_lane_mode mode = s->sealed ? s->mode : s->lane->mode;
	struct tlm_frame_hdr fh;
	int rc;

	if (s->fin)
		return true;
	if (mode == TLM_MODE_BYTES && s->data_left)
		return tlm__stream_avail(s) > 0;
	rc = peek_hdr(s, &fh);
	if (rc <= 0)
		return rc < 0;   /* an error to report, or not a header yet */
	if (mode == TLM_MODE_BYTES)
		return true;     /* data, FIN or an error */
	return tlm__stream_avail(s) >= TLM_FRAME_HDR + (size_t)fh.len;
}
