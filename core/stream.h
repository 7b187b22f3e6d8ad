/* SPDX-License-Identifier: MIT */
/*
 * The frame stream of a transport that carries lanes as ordered bytes
 * (TCP, RDMA SEND/RECV): a reassembly buffer the transport fills as its
 * bytes arrive, and the parse of core/wire.h frames out of it, with every
 * check in one place. The transport supplies how bytes arrive (it writes
 * at tlm__stream_tail and calls tlm__stream_put) and, where it places page
 * data itself (RDMA WRITE), a hook that checks PLACED records.
 *
 * One reader at a time: the transport's rx side (or its lock) owns the
 * stream. Errors are negative errnos; -TLM_EFRAME and -TLM_ECRC mean the
 * stream is unusable and the transport fails the lane with them.
 */
#ifndef TLM_CORE_STREAM_H
#define TLM_CORE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tlm-internal.h"

struct tlm__stream {
	struct tlm_lane *lane;  /* mode and page_size; peer and index for the
				 * log; rx_bytes counted here */
	const char *who;        /* the transport's name, for the log */
	uint8_t *buf;           /* cap bytes; [start, end) not parsed yet */
	size_t cap, start, end;
	uint32_t data_left;     /* byte mode: payload left in this DATA frame */
	bool fin;               /* byte mode: the peer's FIN frame was taken */
	/* The frames came out of sealed frames (seal.c): their tags guarded
	 * the bytes, so NOSUM records are taken, and mode is the lane's own
	 * (lane->mode is the transport's, which stays BYTES). */
	bool sealed;
	enum tlm_lane_mode mode;
};

/* A PLACED record (its data came another way, by RDMA WRITE): 0 if it lies
 * in memory this side offered (and, with a MAC, the page there matches it
 * or rec was flagged TLM__PF_UNCHECKED; staged, its ciphertext was opened
 * into place), else a negative error (-TLM_EFRAME is logged by the
 * caller). hdr: the record's 24 header bytes as sent; mac: the bytes after
 * them (TLM_PAGE_MAC with TLM__PF_MAC, TLM_STAGED_TAIL with TLM_PF_STAGED),
 * or NULL. */
typedef int (*tlm__stream_placed_fn)(void *arg, struct tlm_page_rec *rec, const uint8_t *hdr,
				     const uint8_t *mac);

/* stream.c APIs: */

/* A buffer of cap bytes, at least one whole frame of the largest kind
 * (TLM_FRAME_HDR + TLM_MAX_FRAME). 0, -EINVAL or -ENOMEM. */
int tlm__stream_init(struct tlm__stream *s, struct tlm_lane *lane, const char *who, size_t cap);
void tlm__stream_free(struct tlm__stream *s);

static inline size_t tlm__stream_avail(const struct tlm__stream *s)
{
	return s->end - s->start;
}

/* Room for want more bytes at the tail: what is not parsed yet moves to
 * the front when the tail is shorter. Returns the room there is, which is
 * less than want only when that much is not parsed yet. */
size_t tlm__stream_room(struct tlm__stream *s, size_t want);

static inline uint8_t *tlm__stream_tail(const struct tlm__stream *s)
{
	return s->buf + s->end;
}

/* n bytes were written at the tail. */
static inline void tlm__stream_put(struct tlm__stream *s, size_t n)
{
	s->end += n;
}

/* Page mode: parse the whole PAGE frames buffered, verify each (crc, or
 * placed() for PLACED records: NULL refuses them) and hand it to sink.
 * Returns the records delivered; *err is 0 when the parse stopped for
 * want of bytes, else the error that stopped it (logged; the sink's own
 * errors as they came): nothing of that record was applied, the records
 * before it were. */
int tlm__stream_parse_pages(struct tlm__stream *s, const struct tlm_page_sink *sink,
			    tlm__stream_placed_fn placed, void *arg, int *err);

/* Byte mode: copy the payload of the buffered DATA frames into out, from
 * out + got (the bytes this read has already) up to out + n, across frame
 * boundaries. Stops when the buffer runs out, at a FIN (s->fin set), or
 * before a bad frame. Returns the new total; a bad frame is reported
 * (logged, -TLM_EFRAME) only when the total is 0, so bytes that came
 * before it are read first and the next call reports it. */
ssize_t tlm__stream_read(struct tlm__stream *s, uint8_t *out, size_t n, size_t got);

/* Must more bytes arrive before a read can go on (no payload buffered in
 * the current DATA frame, or no whole header)? */
static inline bool tlm__stream_need(const struct tlm__stream *s)
{
	return s->data_left ? s->end == s->start : s->end - s->start < TLM_FRAME_HDR;
}

/* Would a receive call make progress with what is buffered: a whole frame
 * in page mode, stream bytes or a header in byte mode, an error to
 * report, the FIN? */
bool tlm__stream_ready(const struct tlm__stream *s);

#endif
