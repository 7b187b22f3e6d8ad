/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for what a receiving lane does with its bytes past the
 * decoders: the frame stream (core/stream.c) in page and byte mode, and a
 * protected lane's sealed frames (core/seal.c), both as bytes off the wire
 * (which must all fail their tags) and as inner frames behind a tag that
 * checks (sealed here with the peer's key, so the fuzzer reaches the
 * parser behind the AEAD). Anything may be refused; nothing may crash,
 * read out of bounds, loop, or hand the sink a record that breaks the
 * rules (length, region, data present exactly when it should be).
 *
 * The first input byte picks the path (its value mod 5) and, for the
 * sealed ones, the protection and cipher (bit 0 of its value / 5:
 * integrity, bit 1: ChaCha20-Poly1305, bit 2: the transport shows its
 * bytes in place, rspan/rtake, and seal.c opens straight out of them):
 *   0  clear stream, page mode     1  clear stream, byte mode
 *   2  sealed, raw wire bytes      3  sealed, the rest sealed as one
 *                                     frame's inner bytes (page mode)
 *   4  as 3, byte mode
 *
 * Built with -fsanitize=fuzzer when -Dfuzz=true (clang); otherwise with a
 * main() that replays the corpus files given on the command line.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "tlm-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a lane whose transport reads from a buffer ---- */

struct buf_lane {
	struct tlm_lane base;
	const uint8_t *p;
	size_t n, off;
};

static ssize_t b_read(struct tlm_lane *l, void *out, size_t n, int timeout_ms)
{
	struct buf_lane *b = (struct buf_lane *)l;

	(void)timeout_ms;
	if (b->off == b->n)
		return 0;                 /* the transport's orderly end */
	if (n > b->n - b->off)
		n = b->n - b->off;
	if (n > 7)
		n = n / 2 + 1;            /* arrive in pieces */
	memcpy(out, b->p + b->off, n);
	b->off += n;
	return (ssize_t)n;
}

static ssize_t b_write(struct tlm_lane *l, const void *p, size_t n)
{
	(void)l; (void)p;
	return (ssize_t)n;
}

/* In place: spans of the same sizes read would return. */
static ssize_t b_rspan(struct tlm_lane *l, const uint8_t **out, int timeout_ms)
{
	struct buf_lane *b = (struct buf_lane *)l;
	size_t n = b->n - b->off;

	(void)timeout_ms;
	if (!n)
		return 0;
	if (n > 7)
		n = n / 2 + 1;
	*out = b->p + b->off;
	return (ssize_t)n;
}

static void b_rtake(struct tlm_lane *l, size_t k)
{
	((struct buf_lane *)l)->off += k;
}

static int b_shutdown(struct tlm_lane *l) { (void)l; return 0; }
static void b_close(struct tlm_lane *l) { (void)l; }

static const struct tlm_lane_dp b_dp = { .read = b_read, .write = b_write,
					 .shutdown = b_shutdown };
static const struct tlm_lane_dp b_span_dp = { .read = b_read, .write = b_write,
					      .shutdown = b_shutdown, .rspan = b_rspan,
					      .rtake = b_rtake };
static const struct tlm_lane_ops b_ops = { .name = "fuzz", .close = b_close, .dp = &b_dp };
static const struct tlm_lane_ops b_span_ops = { .name = "fuzz-spans", .close = b_close,
						.dp = &b_span_dp };

/* Seal n inner bytes as frame 0 of a direction keyed with key, as
 * docs/wire.md says (this is the peer's side, written from the spec). */
static size_t seal_one(const uint8_t *p, size_t n, const struct tlm__seal_params *sp,
		       uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	const EVP_CIPHER *e = sp->cipher == TLM_CIPHER_CHACHA20POLY1305 ? EVP_chacha20_poly1305()
									: EVP_aes_256_gcm();
	uint8_t iv[12] = { 0 };
	int l = 0;
	bool ok;

	tlm__frame_hdr_encode(out, (uint32_t)(n + TLM_SEAL_TAG), TLM_FT_SEALED);
	ok = c && EVP_EncryptInit_ex(c, e, NULL, sp->tx_key, iv) == 1 &&
	     EVP_EncryptUpdate(c, NULL, &l, out, TLM_FRAME_HDR) == 1;
	if (ok && sp->protect == TLM_PROTECT_INTEGRITY) {
		memcpy(out + TLM_FRAME_HDR, p, n);
		ok = EVP_EncryptUpdate(c, NULL, &l, p, (int)n) == 1;
	} else if (ok) {
		ok = EVP_EncryptUpdate(c, out + TLM_FRAME_HDR, &l, p, (int)n) == 1;
	}
	ok = ok && EVP_EncryptFinal_ex(c, out + TLM_FRAME_HDR + n, &l) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLM_SEAL_TAG,
				 out + TLM_FRAME_HDR + n) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? TLM_FRAME_HDR + n + TLM_SEAL_TAG : 0;
}

static unsigned long applied;   /* records the sink took (the replay says) */

static int apply(void *arg, const struct tlm_page_rec *r)
{
	(void)arg;
	applied++;
	if (r->len > 4096 || r->region >= TLM_MAX_REGIONS || (r->len && !r->data) ||
	    (r->flags & (TLM_PF_ZERO | TLM_PF_LAST) && r->len))
		abort();
	if (r->len) {
		volatile uint8_t sink = ((const uint8_t *)r->data)[r->len - 1];
		(void)sink;
	}
	return 0;
}

static void clear_stream(const uint8_t *p, size_t n, enum tlm_lane_mode mode)
{
	struct tlm_lane l = { .mode = mode, .page_size = 4096, .peer = "fuzz" };
	struct tlm_page_sink sink = { apply, NULL };
	static uint8_t out[TLM_MAX_DATA_FRAME];
	struct tlm__stream s;
	size_t off = 0;
	int err = 0;

	if (tlm__stream_init(&s, &l, "fuzz", TLM_FRAME_HDR + TLM_MAX_FRAME))
		return;
	while (off < n && !err) {
		size_t room = tlm__stream_room(&s, n - off), k = n - off < room ? n - off : room;

		if (!k)
			break;
		memcpy(tlm__stream_tail(&s), p + off, k);
		tlm__stream_put(&s, k);
		off += k;
		(void)tlm__stream_ready(&s);
		if (mode == TLM_MODE_PAGES) {
			tlm__stream_parse_pages(&s, &sink, NULL, NULL, &err);
		} else {
			ssize_t r;

			while ((r = tlm__stream_read(&s, out, sizeof(out), 0)) > 0 && !s.fin)
				;
			err = r < 0 ? (int)r : 0;
		}
	}
	tlm__stream_free(&s);
}

static void sealed(const uint8_t *p, size_t n, enum tlm_lane_mode mode, bool seal_first,
		   unsigned how)
{
	struct tlm__seal_params sp = { .protect = TLM_PROTECT_ENCRYPT,
				       .cipher = TLM_CIPHER_AES256GCM };
	struct buf_lane b = { .base = { .ops = &b_ops, .mode = TLM_MODE_BYTES, .page_size = 4096,
					.peer = "fuzz", .index = 1 } };
	struct tlm_page_sink sink = { apply, NULL };
	static uint8_t out[TLM_MAX_DATA_FRAME];
	int r;

	if (how & 1)
		sp.protect = TLM_PROTECT_INTEGRITY;
	if (how & 2)
		sp.cipher = TLM_CIPHER_CHACHA20POLY1305;
	if (how & 4)
		b.base.ops = &b_span_ops;
	memset(sp.tx_key, 0x5a, sizeof(sp.tx_key));
	memset(sp.rx_key, 0x5a, sizeof(sp.rx_key));   /* this lane reads what it sealed */
	if (tlm__seal_start(&b.base, &sp))
		return;
	tlm__seal_set_mode(&b.base, mode);
	if (seal_first) {
		/* The fuzzer's bytes are the inner frames, behind a tag that
		 * checks: they reach the parser. */
		static uint8_t wire[TLM_FRAME_HDR + TLM_SEAL_MAX];
		size_t len = n > TLM_SEAL_PLAIN ? TLM_SEAL_PLAIN : n;

		b.n = seal_one(p, len, &sp, wire);
		b.p = wire;
	} else {
		b.p = p;
		b.n = n;
	}
	for (int i = 0; i < 64; i++) {
		r = mode == TLM_MODE_PAGES ? tlm__seal_recv_pages(&b.base, &sink, 0)
					   : (int)tlm__seal_read(&b.base, out, sizeof(out), 0);
		if (r <= 0)
			break;
	}
	tlm__seal_free(&b.base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	switch (data[0] % 5) {
	case 0: clear_stream(data + 1, size - 1, TLM_MODE_PAGES); break;
	case 1: clear_stream(data + 1, size - 1, TLM_MODE_BYTES); break;
	case 2: sealed(data + 1, size - 1, TLM_MODE_PAGES, false, data[0] / 5u); break;
	case 3: sealed(data + 1, size - 1, TLM_MODE_PAGES, true, data[0] / 5u); break;
	case 4: sealed(data + 1, size - 1, TLM_MODE_BYTES, true, data[0] / 5u); break;
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
	printf("fuzz_seal: %d inputs replayed, %lu records applied\n", n, applied);
	return 0;
}
#endif
