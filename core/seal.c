/* SPDX-License-Identifier: MIT */
/*
 * Sealed lanes: after its handshake every frame a protected lane carries is
 * AEAD-sealed, on every transport (docs/wire.md, docs/security.md).
 *
 * The transport stays in byte-stream mode and carries sealed frames as
 * opaque bytes; this file does the lane's own framing on top of it. A
 * sealed frame is
 *
 *   outer header (8)   len, type TLM_FT_SEALED       the associated data
 *   payload            whole inner frames (PAGE records, DATA, FIN),
 *                      encrypted (encrypt) or in clear text (integrity)
 *   tag (16)           over the header and the inner frames
 *
 * under the direction's key (tlm__seal_key) with the frame's sequence
 * number as nonce. Neither side sends the number: each counts, so a frame
 * that was modified, replayed, dropped or reordered fails its tag and the
 * lane with -TLM_ESEAL. Nothing reaches the parser (core/stream.c, the
 * same checks as on a clear lane) before its tag has been checked, so
 * nothing of a bad frame is ever applied.
 *
 * Records are sealed in batches of up to TLM_SEAL_PLAIN bytes, straight
 * from the caller's memory into the send buffer: one pass of the cipher
 * over the data, no copy before it. Where the transport lends its own
 * memory (tlm_lane_dp wopen/wspan/wput, rspan/rtake: DPDK's packets), the
 * send buffer is its packets and frames are opened straight out of them,
 * so no copy of ours follows the cipher either ("In place" below). The
 * tag vouches for every byte as the sender sealed it, crc fields
 * included, so the receiver does not sum the crc32c again; a LIVE page
 * (no crc summed) goes as NOSUM, read once, by the cipher.
 *
 * Threads: one sender and one receiver at a time, as on every lane. The
 * tx side owns tx, tbuf and tx_seq; the rx side owns rx, raw, plain,
 * rx_seq and the eventfd. rx_err is read by both.
 *
 * Counters: the lane's tx_bytes and rx_bytes count payload (page data and
 * stream bytes), not the sealed bytes the transport counted.
 *
 * Pages the transport places (RDMA) are in core/seal-place.c.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "seal-internal.h"
#include "stream.h"
#include "tlm-internal.h"

static const EVP_CIPHER *evp_of(uint8_t cipher)
{
	return cipher == TLM_CIPHER_CHACHA20POLY1305 ? EVP_chacha20_poly1305()
						     : EVP_aes_256_gcm();
}

const char *tlm__cipher_name(uint8_t cipher)
{
	switch (cipher) {
	case TLM_CIPHER_AES256GCM: return "aes-256-gcm";
	case TLM_CIPHER_CHACHA20POLY1305: return "chacha20-poly1305";
	default: return "none";
	}
}

void tlm__seal_free(struct tlm_lane *l)
{
	struct tlm__seal *s = l->seal;

	if (!s)
		return;
	tlm__stage_free(s);
	EVP_CIPHER_CTX_free(s->tx);
	EVP_CIPHER_CTX_free(s->rx);
	EVP_CIPHER_CTX_free(s->mtx);
	EVP_CIPHER_CTX_free(s->mrx);
	free(s->tbuf);
	free(s->raw);
	tlm__stream_free(&s->plain);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->evfd >= 0)
		close(s->evfd);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
	l->seal = NULL;
}

int tlm__seal_start(struct tlm_lane *l, const struct tlm__seal_params *p)
{
	struct tlm__seal *s = calloc(1, sizeof(*s));
	const EVP_CIPHER *c = evp_of(p->cipher);
	int tfd, err = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->epfd = s->evfd = -1;
	s->protect = p->protect;
	s->cipher = p->cipher;
	s->mode = l->mode;
	s->lane = l;
	l->seal = s;
	s->wspans = l->ops->dp->wopen && l->ops->dp->wspan && l->ops->dp->wput;
	s->rspans = l->ops->dp->rspan && l->ops->dp->rtake;
	s->tx = EVP_CIPHER_CTX_new();
	s->rx = EVP_CIPHER_CTX_new();
	s->tbuf = malloc(s->wspans ? TLM_FRAME_HDR : TLM_FRAME_HDR + TLM_SEAL_MAX);
	s->raw = malloc(s->rspans ? TLM_FRAME_HDR + TLM_SEAL_TAG : TLM_FRAME_HDR + TLM_SEAL_MAX);
	if (!s->tx || !s->rx || !s->tbuf || !s->raw)
		goto fail;
	err = tlm__stream_init(&s->plain, l, "sealed", PLAIN_CAP);
	if (err)
		goto fail;
	s->plain.sealed = true;
	s->plain.mode = s->mode;
	err = -EIO;
	if (EVP_EncryptInit_ex(s->tx, c, NULL, p->tx_key, NULL) != 1 ||
	    EVP_DecryptInit_ex(s->rx, c, NULL, p->rx_key, NULL) != 1)
		goto fail;
	if (s->protect == TLM_PROTECT_INTEGRITY) {
		/* Both compute a tag (the receiver compares it itself). */
		s->mtx = EVP_CIPHER_CTX_new();
		s->mrx = EVP_CIPHER_CTX_new();
		if (!s->mtx || !s->mrx ||
		    EVP_EncryptInit_ex(s->mtx, c, NULL, p->tx_key, NULL) != 1 ||
		    EVP_EncryptInit_ex(s->mrx, c, NULL, p->rx_key, NULL) != 1)
			goto fail;
	}
	if (s->protect == TLM_PROTECT_ENCRYPT && tlm__stage_start(s, c, p))
		goto fail;
	tfd = l->ops->pollfd ? l->ops->pollfd(l) : -1;
	if (tfd >= 0) {
		struct epoll_event ev = { .events = EPOLLIN };

		s->epfd = epoll_create1(EPOLL_CLOEXEC);
		s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (s->epfd < 0 || s->evfd < 0 ||
		    epoll_ctl(s->epfd, EPOLL_CTL_ADD, tfd, &ev) < 0 ||
		    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) < 0) {
			err = -errno;
			goto fail;
		}
	}
	return 0;
fail:
	tlm__seal_free(l);
	return err;
}

enum tlm_lane_mode tlm__seal_mode(const struct tlm_lane *l)
{
	return l->seal->mode;
}

int tlm__seal_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode)
{
	l->seal->mode = mode;
	l->seal->plain.mode = mode;
	return 0;
}

/* ---- tx ---- */

static int tx_check(struct tlm__seal *s, enum tlm_lane_mode mode)
{
	int err = rx_err(s);

	if (err)
		return err;
	if (s->tx_err)
		return s->tx_err;
	if (s->mode != mode)
		return -EINVAL;
	return s->tx_fin ? -EPIPE : 0;
}

/*
 * In place, tx: sealing into the transport's packets (wspans: tlm_lane_dp
 * wopen, wspan, wput). A frame goes out as one write: its header, its
 * inner bytes encrypted (or, under integrity, copied and authenticated)
 * straight from the caller's memory into the spans the transport offers,
 * piece by piece, then its tag. The cipher's one pass is the only one
 * over the data on this side; tbuf holds only the header the tag covers.
 */

/* n bytes into the write: through the cipher (seal), or as they are.
 * A span is put once it is full, so a packet's worth of records costs
 * one wspan and one wput; the transport never offers more than is left
 * of the write, so the tag's last byte fills the last span. */
static int span_put(struct tlm__seal *s, const void *src, size_t n, bool seal)
{
	struct tlm_lane *l = s->lane;
	const struct tlm_lane_dp *dp = l->ops->dp;
	const uint8_t *p = src;

	while (n) {
		uint8_t *out;
		size_t k;
		int outl = 0, rc;

		if (!s->wroom) {
			ssize_t room = dp->wspan(l, &s->wp);

			if (room <= 0)
				return room < 0 ? (int)room : -EIO;
			s->wroom = (size_t)room;
			s->wfill = 0;
		}
		out = s->wp + s->wfill;
		k = s->wroom < n ? s->wroom : n;
		if (!seal || s->protect == TLM_PROTECT_INTEGRITY) {
			memcpy(out, p, k);
			if (seal && EVP_EncryptUpdate(s->tx, NULL, &outl, out, (int)k) != 1)
				return -EIO;
		} else if (EVP_EncryptUpdate(s->tx, out, &outl, p, (int)k) != 1 ||
			   (size_t)outl != k) {
			return -EIO;
		}
		s->wfill += k;
		s->wroom -= k;
		p += k;
		n -= k;
		if (!s->wroom) {
			rc = dp->wput(l, s->wfill);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int span_begin(struct tlm__seal *s, size_t plain_len)
{
	struct tlm_lane *l = s->lane;
	int rc = l->ops->dp->wopen(l, TLM_FRAME_HDR + plain_len + TLM_SEAL_TAG);

	return rc < 0 ? rc : span_put(s, s->tbuf, TLM_FRAME_HDR, false);
}

/* The tag ends the write: the transport sends it. */
static int span_finish(struct tlm__seal *s)
{
	uint8_t tag[TLM_SEAL_TAG];
	int outl = 0, rc;

	if (EVP_EncryptFinal_ex(s->tx, tag, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(s->tx, EVP_CTRL_AEAD_GET_TAG, TLM_SEAL_TAG, tag) != 1)
		return s->tx_err = -EIO;
	s->tx_seq++;
	rc = span_put(s, tag, sizeof(tag), false);
	return rc ? s->tx_err = rc : 0;
}

/* Open a sealed frame of plain_len inner bytes in tbuf. */
static int tx_begin(struct tlm__seal *s, size_t plain_len)
{
	uint8_t iv[12];
	int n;

	tlm__frame_hdr_encode(s->tbuf, (uint32_t)(plain_len + TLM_SEAL_TAG), TLM_FT_SEALED);
	nonce_of(s->tx_seq, iv);
	if (EVP_EncryptInit_ex(s->tx, NULL, NULL, NULL, iv) != 1 ||
	    EVP_EncryptUpdate(s->tx, NULL, &n, s->tbuf, TLM_FRAME_HDR) != 1)
		return -EIO;
	s->tpos = TLM_FRAME_HDR;
	if (s->wspans)
		return span_begin(s, plain_len);
	return 0;
}

/* Append n inner bytes: encrypted into tbuf, or copied and authenticated. */
int tlm__seal_tx_add(struct tlm__seal *s, const void *p, size_t n)
{
	uint8_t *out = s->tbuf + s->tpos;
	int outl = 0;

	if (s->wspans)
		return span_put(s, p, n, true);
	if (s->protect == TLM_PROTECT_INTEGRITY) {
		memcpy(out, p, n);
		if (EVP_EncryptUpdate(s->tx, NULL, &outl, out, (int)n) != 1)
			return -EIO;
	} else if (EVP_EncryptUpdate(s->tx, out, &outl, p, (int)n) != 1 || (size_t)outl != n) {
		return -EIO;
	}
	s->tpos += n;
	return 0;
}

/* Close the frame with its tag and hand it to the transport. */
static int tx_finish(struct tlm_lane *l, struct tlm__seal *s)
{
	uint64_t before = __atomic_load_n(&l->tx_bytes, __ATOMIC_RELAXED);
	int outl = 0;
	ssize_t w;

	if (s->wspans)
		return span_finish(s);
	if (EVP_EncryptFinal_ex(s->tx, s->tbuf + s->tpos, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(s->tx, EVP_CTRL_AEAD_GET_TAG, TLM_SEAL_TAG,
				s->tbuf + s->tpos) != 1)
		return s->tx_err = -EIO;
	s->tpos += TLM_SEAL_TAG;
	s->tx_seq++;
	w = l->ops->dp->write(l, s->tbuf, s->tpos);
	__atomic_store_n(&l->tx_bytes, before, __ATOMIC_RELAXED);
	if (w < 0)
		return s->tx_err = (int)w;
	return 0;
}

int tlm__seal_tx_frame(struct tlm_lane *l, struct tlm__seal *s, const void *f, size_t n)
{
	int rc = tx_begin(s, n);

	if (!rc)
		rc = tlm__seal_tx_add(s, f, n);
	if (!rc)
		rc = tx_finish(l, s);
	return rc;
}

static void count_bytes(uint64_t *ctr, uint64_t n)
{
	__atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
}

int tlm__seal_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n)
{
	struct tlm__seal *s = l->seal;
	unsigned i = 0;
	int rc = tx_check(s, TLM_MODE_PAGES);

	if (rc)
		return rc;
	if (n > INT32_MAX)
		return -EINVAL;
	while (i < n) {
		size_t total = 0;
		uint64_t bytes = 0;
		unsigned j, first = i, room = 0, staged = 0;

		/* Staged pages: no more in one frame than slots are free. */
		rc = tlm__stage_room(l, s, tlm__staged_rec(s, &recs[i]), &room);
		if (rc)
			return s->tx_err = rc;
		for (j = i; j < n; j++) {
			const struct tlm_page_rec *r = &recs[j];

			if (r->len > l->page_size || (r->len && !r->data)) {
				tlm__err("%s: lane %u: record %u: len %u with page size %u",
					 l->peer, l->index, j, r->len, l->page_size);
				return -EINVAL;
			}
			size_t k = REC_HDR + (tlm__seal_placed_rec(s, r) ? TLM_PAGE_MAC :
					      tlm__staged_rec(s, r) ? TLM_STAGED_TAIL : r->len);

			if (total + k > TLM_SEAL_PLAIN)
				break;
			if (tlm__staged_rec(s, r) && staged++ == room)
				break;
			total += k;
		}
		rc = tx_begin(s, total);
		for (; !rc && i < j; i++) {
			struct tlm_page_rec r = recs[i];
			uint8_t hdr[REC_HDR];

			if (tlm__seal_placed_rec(s, &r)) {
				rc = tlm__seal_tx_placed(l, s, &r);
				bytes += r.len;
				continue;
			}
			if (tlm__staged_rec(s, &r)) {
				rc = tlm__stage_tx(l, s, &r);
				bytes += r.len;
				continue;
			}

			if (r.flags & TLM_PF_LIVE) {
				/* No crc was summed; the tag guards the bytes, and
				 * the live page is read once, by the cipher. */
				r.flags &= (uint16_t)~TLM_PF_LIVE;
				r.flags |= TLM__PF_NOSUM;
				r.crc = 0;
			}
			tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR + r.len, TLM_FT_PAGE);
			tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, &r);
			rc = tlm__seal_tx_add(s, hdr, sizeof(hdr));
			if (!rc && r.len)
				rc = tlm__seal_tx_add(s, r.data, r.len);
			bytes += r.len;
		}
		if (!rc && s->place_tx && l->ops->count_records)
			l->ops->count_records(l, j - first);
		if (!rc)
			rc = tx_finish(l, s);
		if (rc)
			return s->tx_err = rc;
		tlm__stage_mark(s, j - first);
		count_bytes(&l->tx_bytes, bytes);
	}
	return (int)n;
}

ssize_t tlm__seal_write(struct tlm_lane *l, const void *buf, size_t n)
{
	struct tlm__seal *s = l->seal;
	const uint8_t *p = buf;
	size_t done = 0;
	int rc = tx_check(s, TLM_MODE_BYTES);

	if (rc)
		return rc;
	if (n > SSIZE_MAX)
		return -EINVAL;
	while (done < n) {
		size_t len = n - done;
		uint8_t hdr[TLM_FRAME_HDR];

		if (len > TLM_SEAL_PLAIN - TLM_FRAME_HDR)
			len = TLM_SEAL_PLAIN - TLM_FRAME_HDR;
		tlm__frame_hdr_encode(hdr, (uint32_t)len, TLM_FT_DATA);
		rc = tx_begin(s, TLM_FRAME_HDR + len);
		if (!rc)
			rc = tlm__seal_tx_add(s, hdr, sizeof(hdr));
		if (!rc)
			rc = tlm__seal_tx_add(s, p + done, len);
		if (!rc)
			rc = tx_finish(l, s);
		if (rc)
			return s->tx_err = rc;
		done += len;
		count_bytes(&l->tx_bytes, len);
	}
	return (ssize_t)n;
}

int tlm__seal_shutdown(struct tlm_lane *l)
{
	struct tlm__seal *s = l->seal;
	uint8_t hdr[TLM_FRAME_HDR];
	int rc = rx_err(s);

	if (rc)
		return rc;
	if (s->tx_err)
		return s->tx_err;
	if (s->tx_fin)
		return 0;
	/* The end is sealed too: a peer cut short by anyone else sees a
	 * stream that ends without it. */
	tlm__frame_hdr_encode(hdr, 0, TLM_FT_FIN);
	rc = tlm__seal_tx_frame(l, s, hdr, sizeof(hdr));
	if (rc)
		return s->tx_err = rc;
	s->tx_fin = true;
	return l->ops->dp->shutdown(l);
}

/* ---- rx ---- */

/* Check the tag of the whole sealed frame in raw and move its inner frames
 * to the plain stream. -TLM_ESEAL (logged) if the tag does not match. */
static int rx_open(struct tlm_lane *l, struct tlm__seal *s)
{
	size_t len = s->raw_need - TLM_FRAME_HDR - TLM_SEAL_TAG;
	const uint8_t *in = s->raw + TLM_FRAME_HDR;
	uint8_t *out, iv[12];
	int outl = 0;
	bool ok;

	if (tlm__stream_room(&s->plain, len) < len)
		return -EAGAIN;
	out = tlm__stream_tail(&s->plain);
	nonce_of(s->rx_seq, iv);
	ok = EVP_DecryptInit_ex(s->rx, NULL, NULL, NULL, iv) == 1 &&
	     EVP_DecryptUpdate(s->rx, NULL, &outl, s->raw, TLM_FRAME_HDR) == 1;
	if (ok && s->protect == TLM_PROTECT_INTEGRITY) {
		memcpy(out, in, len);
		ok = EVP_DecryptUpdate(s->rx, NULL, &outl, out, (int)len) == 1;
	} else if (ok) {
		ok = EVP_DecryptUpdate(s->rx, out, &outl, in, (int)len) == 1 && (size_t)outl == len;
	}
	ok = ok && EVP_CIPHER_CTX_ctrl(s->rx, EVP_CTRL_AEAD_SET_TAG, TLM_SEAL_TAG,
				       (void *)(in + len)) == 1 &&
	     EVP_DecryptFinal_ex(s->rx, out + len, &outl) == 1;
	if (!ok) {
		tlm__err("%s: lane %u: sealed frame %llu failed authentication (modified, "
			 "replayed, dropped or reordered in transit); lane closed, nothing of "
			 "it applied", l->peer, l->index, (unsigned long long)s->rx_seq);
		return -TLM_ESEAL;
	}
	s->rx_seq++;
	tlm__stream_put(&s->plain, len);
	s->raw_got = s->raw_need = 0;
	return 1;
}

/*
 * In place, rx: opening out of the transport's packets (rspans:
 * tlm_lane_dp rspan, rtake). A frame is opened as its bytes are read, straight from where the
 * transport keeps them into the plain stream past its end: the header
 * into raw (the associated data), the inner bytes through the cipher (or,
 * under integrity, copied and authenticated), the tag into raw after the
 * header. The opened bytes join the stream (tlm__stream_put) only once the
 * tag matched, so nothing of a bad frame is parsed, as with rx_open. While
 * a frame is opened in part (raw_need > TLM_FRAME_HDR) the plain stream's
 * tail must not move: only this side writes it, and stream_room is not
 * called until the frame is done.
 */

/* A sealed frame's header is in raw: its length, the cipher started. */
static int span_hdr(struct tlm_lane *l, struct tlm__seal *s)
{
	struct tlm_frame_hdr fh;
	uint8_t iv[12];
	int outl = 0;

	if (tlm__frame_hdr_decode(s->raw, 0, &fh) < 0 || fh.type != TLM_FT_SEALED) {
		tlm__err("%s: lane %u: a frame that is not sealed on a protected lane",
			 l->peer, l->index);
		return -TLM_ESEAL;
	}
	nonce_of(s->rx_seq, iv);
	if (EVP_DecryptInit_ex(s->rx, NULL, NULL, NULL, iv) != 1 ||
	    EVP_DecryptUpdate(s->rx, NULL, &outl, s->raw, TLM_FRAME_HDR) != 1)
		return -EIO;
	s->raw_need += fh.len;
	return 0;
}

/* k bytes of the frame at p, from byte raw_got of it on. */
static int span_take(struct tlm__seal *s, const uint8_t *p, size_t k)
{
	size_t body = s->raw_need - TLM_SEAL_TAG, at = s->raw_got;
	int outl = 0;

	if (at < TLM_FRAME_HDR) {
		memcpy(s->raw + at, p, k);
		return 0;
	}
	if (at < body) {
		size_t n = body - at < k ? body - at : k;
		uint8_t *out = tlm__stream_tail(&s->plain) + (at - TLM_FRAME_HDR);

		if (s->protect == TLM_PROTECT_INTEGRITY) {
			memcpy(out, p, n);
			if (EVP_DecryptUpdate(s->rx, NULL, &outl, out, (int)n) != 1)
				return -EIO;
		} else if (EVP_DecryptUpdate(s->rx, out, &outl, p, (int)n) != 1 ||
			   (size_t)outl != n) {
			return -EIO;
		}
		p += n;
		k -= n;
		at += n;
	}
	memcpy(s->raw + TLM_FRAME_HDR + (at - body), p, k);
	return 0;
}

/* The whole frame is read: its tag checked, its inner bytes let in. */
static int span_open(struct tlm_lane *l, struct tlm__seal *s)
{
	size_t len = s->raw_need - TLM_FRAME_HDR - TLM_SEAL_TAG;
	uint8_t *out = tlm__stream_tail(&s->plain) + len;
	int outl = 0;

	if (EVP_CIPHER_CTX_ctrl(s->rx, EVP_CTRL_AEAD_SET_TAG, TLM_SEAL_TAG,
				s->raw + TLM_FRAME_HDR) != 1 ||
	    EVP_DecryptFinal_ex(s->rx, out, &outl) != 1) {
		tlm__err("%s: lane %u: sealed frame %llu failed authentication (modified, "
			 "replayed, dropped or reordered in transit); lane closed, nothing of "
			 "it applied", l->peer, l->index, (unsigned long long)s->rx_seq);
		return -TLM_ESEAL;
	}
	s->rx_seq++;
	tlm__stream_put(&s->plain, len);
	s->raw_got = s->raw_need = 0;
	return 1;
}

/* rx_pump with rspans: the same contract. */
static int span_pump(struct tlm_lane *l, struct tlm__seal *s, uint64_t deadline)
{
	const struct tlm_lane_dp *dp = l->ops->dp;

	if (!s->raw_need) {
		if (tlm__stream_room(&s->plain, TLM_SEAL_PLAIN) < TLM_SEAL_PLAIN)
			return 0;
		s->raw_need = TLM_FRAME_HDR;
	}
	for (;;) {
		int left = deadline == UINT64_MAX ? -1 : tlm__left_ms(deadline);
		const uint8_t *p;
		ssize_t r = dp->rspan(l, &p, left);
		size_t k;
		int rc;

		if (r == -ETIMEDOUT || r == -EAGAIN)
			return 0;
		if (r == 0) {
			if (s->raw_got)
				tlm__err("%s: lane %u: the stream ended inside a sealed frame",
					 l->peer, l->index);
			return -TLM_EPEERCLOSED;
		}
		if (r < 0)
			return (int)r;
		k = s->raw_need - s->raw_got < (size_t)r ? s->raw_need - s->raw_got : (size_t)r;
		rc = span_take(s, p, k);
		dp->rtake(l, k);
		if (rc)
			return rc;
		s->raw_got += k;
		if (s->raw_got < s->raw_need)
			continue;
		if (s->raw_need > TLM_FRAME_HDR)
			return span_open(l, s);
		rc = span_hdr(l, s);
		if (rc)
			return rc;
	}
}

/*
 * Read the transport's bytes towards the next sealed frame, waiting up to
 * timeout_ms (-1: forever) for them, and open it once it is whole. A frame
 * read in part is kept for the next call. 1: a frame was opened; 0: not
 * yet (timeout, or no room until what was opened is consumed); else a
 * negative error.
 */
int tlm__seal_rx_pump(struct tlm_lane *l, struct tlm__seal *s, int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;

	if (s->rspans)
		return span_pump(l, s, deadline);
	if (tlm__stream_room(&s->plain, TLM_SEAL_PLAIN) < TLM_SEAL_PLAIN)
		return 0;
	if (!s->raw_need)
		s->raw_need = TLM_FRAME_HDR;
	for (;;) {
		uint64_t before = __atomic_load_n(&l->rx_bytes, __ATOMIC_RELAXED);
		int left = deadline == UINT64_MAX ? -1 : tlm__left_ms(deadline);
		ssize_t r = l->ops->dp->read(l, s->raw + s->raw_got, s->raw_need - s->raw_got, left);

		__atomic_store_n(&l->rx_bytes, before, __ATOMIC_RELAXED);
		if (r == -ETIMEDOUT || r == -EAGAIN)
			return 0;
		if (r == 0) {
			/* A stream's orderly end is sealed (FIN inside a frame): a
			 * bare end of the transport's stream is a cut. */
			if (s->raw_got)
				tlm__err("%s: lane %u: the stream ended inside a sealed frame",
					 l->peer, l->index);
			return -TLM_EPEERCLOSED;
		}
		if (r < 0)
			return (int)r;
		s->raw_got += (size_t)r;
		if (s->raw_got < s->raw_need)
			continue;
		if (s->raw_need == TLM_FRAME_HDR) {
			struct tlm_frame_hdr fh;

			if (tlm__frame_hdr_decode(s->raw, 0, &fh) < 0 || fh.type != TLM_FT_SEALED) {
				tlm__err("%s: lane %u: a frame that is not sealed on a protected "
					 "lane", l->peer, l->index);
				return -TLM_ESEAL;
			}
			s->raw_need += fh.len;
			continue;
		}
		return rx_open(l, s);
	}
}

/* Would a call make progress with what is opened (or fail at once)? */
static bool rx_ready(const struct tlm__seal *s)
{
	return rx_err(s) || tlm__stream_ready(&s->plain);
}

static void sync_ready(struct tlm__seal *s)
{
	bool want;
	uint64_t v = 1;

	if (s->evfd < 0)
		return;
	want = rx_ready(s);
	if (want == s->ev_set)
		return;
	if (want ? write(s->evfd, &v, sizeof(v)) == sizeof(v)
		 : read(s->evfd, &v, sizeof(v)) == sizeof(v) || errno == EAGAIN)
		s->ev_set = want;
}

static int recv_pages(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_sink *sink,
		      int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
	int delivered = 0, opens = 0, err, rc = rx_err(s);

	if (rc)
		return rc;
	if (s->mode != TLM_MODE_PAGES)
		return -EINVAL;
	for (;;) {
		rc = tlm__stream_parse_pages(&s->plain, sink, s->place_rx ? tlm__seal_rx_placed : NULL, l,
					     &err);
		delivered += rc;
		if (err) {
			rx_fail(s, err);
			return delivered ? delivered : err;
		}
		if (delivered && opens >= OPENS_MAX)
			return delivered;
		rc = tlm__seal_rx_pump(l, s, delivered ? 0 : deadline == UINT64_MAX ? -1
								  : tlm__left_ms(deadline));
		if (rc == 1) {
			opens++;
			continue;
		}
		if (rc < 0) {
			rx_fail(s, rc);
			return delivered ? delivered : rc;
		}
		return delivered;
	}
}

int tlm__seal_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	int rc = recv_pages(l, l->seal, sink, timeout_ms);

	/* Staged pages opened by this call: their slots back to the sender. */
	if (rc > 0)
		tlm__stage_credit(l, l->seal, true);
	sync_ready(l->seal);
	return rc;
}

static ssize_t read_bytes(struct tlm_lane *l, struct tlm__seal *s, void *buf, size_t n,
			  int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
	int rc = rx_err(s);

	if (rc)
		return rc;
	if (s->mode != TLM_MODE_BYTES)
		return -EINVAL;
	for (;;) {
		ssize_t k = tlm__stream_read(&s->plain, buf, n, 0);

		if (k < 0)
			return rx_fail(s, (int)k);
		if (k > 0 || s->plain.fin)
			return k;
		rc = tlm__seal_rx_pump(l, s, deadline == UINT64_MAX ? -1 : tlm__left_ms(deadline));
		if (rc == 1)
			continue;
		if (rc == 0)
			return -ETIMEDOUT;
		return rx_fail(s, rc);
	}
}

ssize_t tlm__seal_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	ssize_t rc = read_bytes(l, l->seal, buf, n, timeout_ms);

	sync_ready(l->seal);
	return rc;
}

int tlm__seal_pollfd(const struct tlm_lane *l)
{
	return l->seal->epfd;
}

