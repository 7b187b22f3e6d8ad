/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the frame and handshake decoders. The input is read
 * the way a receiver reads a lane: a sequence of frames, each header
 * checked before its payload is looked at, page records verified, handshake
 * messages decoded. Anything may be refused; nothing may crash, read out of
 * bounds or loop.
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
int main(int argc, char **argv)
{
	static uint8_t buf[1 << 20];
	int n = 0;

	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t len;

		if (!f) {
			perror(argv[i]);
			return 1;
		}
		len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, len);
		n++;
	}
	printf("replayed %d corpus inputs\n", n);
	return n ? 0 : 1;
}
#endif
