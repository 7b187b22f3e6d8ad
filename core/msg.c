/* SPDX-License-Identifier: MIT */
/*
 * Framed messages over a lane's byte stream: the handshake and the engine's
 * control messages travel this way on every transport, so they only need
 * each transport's byte-stream mode.
 */
#include <string.h>

#include "tlm-internal.h"

#define TLM_MSG_REST_MS 30000   /* the rest of a message once it has begun */

int tlm__msg_send(struct tlm_lane *l, uint8_t type, const void *payload, uint32_t len)
{
	uint8_t buf[TLM_FRAME_HDR + TLM_MAX_MSG];
	ssize_t r;

	if (len > TLM_MAX_MSG) {
		/* Large control payloads (device state) go as header + body. */
		tlm__frame_hdr_encode(buf, len, type);
		r = tlm_lane_write(l, buf, TLM_FRAME_HDR);
		if (r < 0)
			return (int)r;
		r = tlm_lane_write(l, payload, len);
		return r < 0 ? (int)r : 0;
	}
	tlm__frame_hdr_encode(buf, len, type);
	if (len)
		memcpy(buf + TLM_FRAME_HDR, payload, len);
	r = tlm_lane_write(l, buf, TLM_FRAME_HDR + len);
	return r < 0 ? (int)r : 0;
}

static int read_full(struct tlm_lane *l, uint8_t *p, size_t n, uint64_t deadline)
{
	while (n) {
		int left = tlm__left_ms(deadline);
		ssize_t r;

		if (left == 0)
			return -ETIMEDOUT;
		r = tlm_lane_read(l, p, n, left);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -TLM_EPEERCLOSED; /* orderly end inside a message */
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int tlm__msg_recv(struct tlm_lane *l, uint8_t *type, void *buf, uint32_t max,
		  uint32_t *len, int timeout_ms)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	uint8_t hdr[TLM_FRAME_HDR];
	struct tlm_frame_hdr fh;
	int err;

	/* Only the first byte waits until the caller's deadline: once a
	 * message has begun, the rest is in flight and is read whole, or a
	 * deadline falling inside it would cost the stream its framing. */
	err = read_full(l, hdr, 1, deadline);
	if (err)
		return err;
	deadline = tlm__now_ms() + (uint64_t)(timeout_ms > TLM_MSG_REST_MS ? timeout_ms
									    : TLM_MSG_REST_MS);
	err = read_full(l, hdr + 1, sizeof(hdr) - 1, deadline);
	if (err)
		return err;
	err = tlm__frame_hdr_decode(hdr, 0, &fh);
	if (err)
		return err;
	if (fh.type == TLM_FT_DATA || fh.type == TLM_FT_FIN || fh.type == TLM_FT_PAGE)
		return -TLM_EFRAME;
	if (fh.len > max)
		return -TLM_EFRAME;
	err = read_full(l, buf, fh.len, deadline);
	if (err)
		return err;
	*type = fh.type;
	*len = fh.len;
	return 0;
}
