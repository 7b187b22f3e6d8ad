/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the frame, handshake and engine control decoders.
 * The input is read the way a receiver reads a lane: a sequence of frames,
 * each header checked before its payload is looked at, page records
 * verified, handshake and control messages decoded. Anything may be
 * refused; nothing may crash, read out of bounds or loop; a control message
 * that decodes encodes back to the same bytes (FAIL: once its code and
 * text are what a decoder keeps).
 *
 * Built with -fsanitize=fuzzer when -Dfuzz=true (clang); otherwise built
 * with the small main() below, which replays the corpus files given on the
 * command line, so the corpus is a regression test on every build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlm-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One CTRL payload: decode by type; what decodes must encode to the same
 * bytes (a mismatch aborts, which the fuzzer reports). */
static void ctrl(const uint8_t *p, size_t len)
{
	static uint8_t out[TLM_MAX_DATA_FRAME];
	union {
		struct tlm_cm_start st;
		struct tlm_cm_lanes l;
		struct tlm_cm_commit c;
		struct tlm_cm_fail f;
	} u;
	const uint8_t *chunk;
	size_t n;
	uint32_t us;
	int type = tlm__cm_type(p, len), r = -1;

	switch (type) {
	case TLM_CM_START:
		if (!tlm__cm_start_decode(p, len, &u.st))
			r = tlm__cm_start_encode(out, sizeof(out), &u.st);
		break;
	case TLM_CM_STAGE3:
		if (!tlm__cm_stage3_decode(p, len, &u.l))
			r = tlm__cm_stage3_encode(out, sizeof(out), &u.l);
		break;
	case TLM_CM_SYNC:
		if (!tlm__cm_sync_decode(p, len, &u.l))
			r = tlm__cm_sync_encode(out, sizeof(out), &u.l);
		break;
	case TLM_CM_PAUSED:
		if (!tlm__cm_paused_decode(p, len, &u.l))
			r = tlm__cm_paused_encode(out, sizeof(out), &u.l);
		break;
	case TLM_CM_SYNCED:
		if (!tlm__cm_synced_decode(p, len, &us))
			r = tlm__cm_synced_encode(out, sizeof(out), us);
		break;
	case TLM_CM_COMMIT:
		if (!tlm__cm_commit_decode(p, len, &u.c))
			r = tlm__cm_commit_encode(out, sizeof(out), &u.c);
		break;
	case TLM_CM_DEVSTATE:
		if (!tlm__cm_devstate_decode(p, len, &chunk, &n))
			r = tlm__cm_devstate_encode(out, sizeof(out), chunk, n);
		break;
	case TLM_CM_ABORT:
		if (!tlm__cm_abort_decode(p, len))
			r = tlm__cm_abort_encode(out, sizeof(out));
		break;
	case TLM_CM_KEEPALIVE:
		if (!tlm__cm_keepalive_decode(p, len))
			r = tlm__cm_keepalive_encode(out, sizeof(out));
		break;
	case TLM_CM_FAIL:
		if (!tlm__cm_fail_decode(p, len, &u.f)) {
			struct tlm_cm_fail again;

			if (u.f.code >= 0 || strlen(u.f.text) > TLM_CM_FAIL_TEXT)
				abort();
			r = tlm__cm_fail_encode(out, sizeof(out), u.f.code, u.f.text);
			if (r < 0 || tlm__cm_fail_decode(out, (size_t)r, &again) ||
			    again.code != u.f.code || strcmp(again.text, u.f.text))
				abort();
		}
		return;
	default:
		return;
	}
	if (r >= 0 && ((size_t)r != len || memcmp(out, p, len)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t page_size = 4096;
	size_t off = 0;

	if (size && data[0] & 1)
		page_size = 512u << (data[0] >> 1 & 7);
	while (size - off >= TLM_FRAME_HDR) {
		struct tlm_frame_hdr fh;
		const uint8_t *p;
		union {
			struct tlm_hello h;
			struct tlm_challenge c;
			struct tlm_params pa;
			struct tlm_errmsg e;
			struct tlm_page_rec r;
		} u;

		if (tlm__frame_hdr_decode(data + off, page_size, &fh))
			break;
		off += TLM_FRAME_HDR;
		if (fh.len > size - off)
			break; /* truncated */
		p = data + off;
		switch (fh.type) {
		case TLM_FT_PAGE:
			if (tlm__page_hdr_decode(p, fh.len, page_size, &u.r) == 0) {
				u.r.data = p + TLM_PAGE_HDR;
				(void)tlm__page_verify(&u.r);
			}
			break;
		case TLM_FT_HELLO: (void)tlm__hello_decode(p, fh.len, &u.h); break;
		case TLM_FT_CHALLENGE: (void)tlm__challenge_decode(p, fh.len, &u.c); break;
		case TLM_FT_PARAMS: (void)tlm__params_decode(p, fh.len, &u.pa); break;
		case TLM_FT_CTRL: ctrl(p, fh.len); break;
		case TLM_FT_ERROR:
			if (tlm__errmsg_decode(p, fh.len, &u.e) == 0 && strlen(u.e.text) >= sizeof(u.e.text))
				abort();
			break;
		default: break;
		}
		off += fh.len;
	}
	return 0;
}

#ifndef TLM_LIBFUZZER
#include "replay.h"

int main(int argc, char **argv)
{
	int n = tlm_fuzz_replay(argc, argv);

	if (n < 0)
		return 1;
	printf("replayed %d corpus inputs\n", n);
	return n ? 0 : 1;
}
#endif
