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
 * Zero copy (integrity only, on a transport that places pages: RDMA).
 * With one-sided WRITEs the receiver never reads the page, so no frame tag
 * can cover it. Once the transport registered the regions (lane.c), a
 * LIVE record's page goes by the transport's place op (an RDMA WRITE
 * straight from the caller's memory into the peer's) and its record, in
 * the sealed stream behind that WRITE, as PLACED with TLM__PF_MAC: the
 * 24-byte header, then the page's MAC, a GMAC (the lane's AEAD with
 * nothing to encrypt, the header and the page as associated data) under
 * the direction's key. Its nonce is 00 00 00 01 || the count of pages
 * placed on the lane, apart from the frames' 00 00 00 00 || frame number,
 * so no nonce is used twice under one key; the receiver counts the same
 * way, so a page moved to another record or lane, or replayed, fails too.
 * The receiver computes the MAC over the page where the WRITE put it before
 * the record goes on: a mismatch fails the lane with -TLM_ESEAL, or, for a
 * sink that can tell a page's last record (tlm__seal_defer_macs), is handed
 * on flagged TLM__PF_UNCHECKED: a live page may change between its MAC and
 * the WRITE's read, and a later WRITE of the same page may land before an
 * earlier record is checked, which only the page's last record rules out.
 * Under encrypt a transport with a staging area places pages too, sealed:
 * see "Staged placement" at the bottom of the file.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "stream.h"
#include "tlm-internal.h"

#define PLAIN_CAP (2 * (TLM_FRAME_HDR + TLM_MAX_FRAME)) /* >= 2 sealed frames */
#define OPENS_MAX 16   /* sealed frames opened per recv_pages once records flow */
#define REC_HDR   (TLM_FRAME_HDR + TLM_PAGE_HDR)

_Static_assert(PLAIN_CAP >= 2 * TLM_SEAL_PLAIN, "room for one frame beside a partial one");
_Static_assert(REC_HDR + TLM_MAX_PAGE_SIZE <= TLM_SEAL_PLAIN, "a record fits a sealed frame");

/* Staged placement (encrypt): the tx side (sender) and the rx side
 * (receiver) of a lane's staging; see "Staged placement" below. */
#define STAGE_MARKS 64
struct stage {
	EVP_CIPHER_CTX *tx, *rx;   /* the directions' keys, for staged pages */
	/* tx side (with the sender's thread) */
	unsigned tx_slots;         /* slots usable (the transport's stage_slots) */
	uint64_t tx_seq;           /* pages staged so far: nonce, and slot = seq % slots */
	uint64_t tx_opened;        /* the receiver's last CREDIT: pages it opened */
	uint64_t tx_records;       /* records handed to send_pages, for wait_sent */
	struct { uint64_t records, staged; } mark[STAGE_MARKS]; /* per sealed frame */
	unsigned mark_head, mark_n;
	/* rx side (with the receiver's thread) */
	unsigned rx_slots;
	uint64_t rx_seq;           /* pages opened so far */
	uint64_t rx_credited;      /* rx_seq as last sent in a CREDIT */
};

struct tlm__seal {
	uint8_t protect, cipher;
	enum tlm_lane_mode mode;  /* the lane's mode; the transport's is BYTES */
	struct tlm_lane *lane;

	/* tx side */
	EVP_CIPHER_CTX *tx;
	uint64_t tx_seq;
	uint8_t *tbuf;            /* TLM_FRAME_HDR + TLM_SEAL_MAX (wspans: none) */
	size_t tpos;
	int tx_err;
	bool tx_fin;
	bool wspans;              /* sealed into the transport's packets */
	uint8_t *wp;              /* ... the span being filled: wfill bytes */
	size_t wfill, wroom;      /* written at wp, wroom more fit there */

	/* rx side */
	EVP_CIPHER_CTX *rx;
	uint64_t rx_seq;
	uint8_t *raw;             /* the sealed frame being read (rspans: its
				   * header, then its tag) */
	size_t raw_got, raw_need;
	bool rspans;              /* opened out of the transport's packets */
	struct tlm__stream plain; /* opened inner frames not parsed yet */
	int rx_err;               /* sticky, read by the tx side too */
	int epfd, evfd;           /* pollfd: the transport's + ready */
	bool ev_set;

	/* zero copy (integrity): tx side, then rx side */
	EVP_CIPHER_CTX *mtx, *mrx; /* the directions' keys, for page MACs */
	uint64_t mtx_seq, mrx_seq; /* pages placed so far */
	bool place_tx, place_rx, defer;

	/* staged placement (encrypt), "Staged placement" below */
	struct stage stage;
};

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

static void nonce_of(uint64_t seq, uint8_t iv[12])
{
	memset(iv, 0, 4);
	tlm__put64(iv + 4, seq);
}

static int rx_err(const struct tlm__seal *s)
{
	return __atomic_load_n(&s->rx_err, __ATOMIC_ACQUIRE);
}

static int rx_fail(struct tlm__seal *s, int err)
{
	if (!rx_err(s))
		__atomic_store_n(&s->rx_err, err, __ATOMIC_RELEASE);
	return rx_err(s);
}

static int stage_start(struct tlm__seal *s, const EVP_CIPHER *c,
		       const struct tlm__seal_params *p);
static void stage_free(struct tlm__seal *s);
static bool staged_rec(const struct tlm__seal *s, const struct tlm_page_rec *r);
static int stage_room(struct tlm_lane *l, struct tlm__seal *s, bool need, unsigned *room);
static int tx_staged(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec);
static void stage_mark(struct tlm__seal *s, unsigned records);
static int rx_staged(struct tlm_lane *l, struct tlm__seal *s, struct tlm_page_rec *rec,
		     const uint8_t *hdr, const uint8_t *tail);
static int stage_credit(struct tlm_lane *l, struct tlm__seal *s, bool all);

void tlm__seal_free(struct tlm_lane *l)
{
	struct tlm__seal *s = l->seal;

	if (!s)
		return;
	stage_free(s);
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
	if (s->protect == TLM_PROTECT_ENCRYPT && stage_start(s, c, p))
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
static int tx_add(struct tlm__seal *s, const void *p, size_t n)
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

static void count_bytes(uint64_t *ctr, uint64_t n)
{
	__atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
}

/* The MAC of a placed page (see the top of the file): n-th page placed
 * in this direction, its record's header as sent, the page. */
static int page_mac(EVP_CIPHER_CTX *c, uint64_t n, const uint8_t hdr[TLM_PAGE_HDR],
		    const void *page, uint32_t len, uint8_t mac[TLM_PAGE_MAC])
{
	uint8_t iv[12];
	int outl = 0;

	nonce_of(n, iv);
	iv[3] = 1;
	if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &outl, hdr, TLM_PAGE_HDR) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &outl, page, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(c, mac, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLM_PAGE_MAC, mac) != 1)
		return -EIO;
	return 0;
}

static bool placed_rec(const struct tlm__seal *s, const struct tlm_page_rec *r)
{
	return s->place_tx && s->protect == TLM_PROTECT_INTEGRITY && (r->flags & TLM_PF_LIVE);
}

/* A LIVE record on a placing lane: its MAC, then its page handed to the
 * transport, then its PLACED record into the frame (the frame follows the
 * WRITE on the transport). */
static int tx_placed(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec)
{
	struct tlm_page_rec r = *rec;
	uint8_t hdr[REC_HDR + TLM_PAGE_MAC];
	int rc;

	r.flags = (uint16_t)((r.flags & ~TLM_PF_LIVE) | TLM_PF_PLACED | TLM__PF_MAC);
	r.crc = 0;
	tlm__frame_hdr_encode(hdr, TLM_PAGE_HDR + TLM_PAGE_MAC, TLM_FT_PAGE);
	tlm__page_hdr_encode(hdr + TLM_FRAME_HDR, &r);
	rc = page_mac(s->mtx, s->mtx_seq, hdr + TLM_FRAME_HDR, rec->data, rec->len,
		      hdr + REC_HDR);
	if (!rc)
		rc = l->ops->place(l, rec);
	if (rc)
		return rc;
	s->mtx_seq++;
	return tx_add(s, hdr, sizeof(hdr));
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
		rc = stage_room(l, s, staged_rec(s, &recs[i]), &room);
		if (rc)
			return s->tx_err = rc;
		for (j = i; j < n; j++) {
			const struct tlm_page_rec *r = &recs[j];

			if (r->len > l->page_size || (r->len && !r->data)) {
				tlm__err("%s: lane %u: record %u: len %u with page size %u",
					 l->peer, l->index, j, r->len, l->page_size);
				return -EINVAL;
			}
			size_t k = REC_HDR + (placed_rec(s, r) ? TLM_PAGE_MAC :
					      staged_rec(s, r) ? TLM_STAGED_TAIL : r->len);

			if (total + k > TLM_SEAL_PLAIN)
				break;
			if (staged_rec(s, r) && staged++ == room)
				break;
			total += k;
		}
		rc = tx_begin(s, total);
		for (; !rc && i < j; i++) {
			struct tlm_page_rec r = recs[i];
			uint8_t hdr[REC_HDR];

			if (placed_rec(s, &r)) {
				rc = tx_placed(l, s, &r);
				bytes += r.len;
				continue;
			}
			if (staged_rec(s, &r)) {
				rc = tx_staged(l, s, &r);
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
			rc = tx_add(s, hdr, sizeof(hdr));
			if (!rc && r.len)
				rc = tx_add(s, r.data, r.len);
			bytes += r.len;
		}
		if (!rc && s->place_tx && l->ops->count_records)
			l->ops->count_records(l, j - first);
		if (!rc)
			rc = tx_finish(l, s);
		if (rc)
			return s->tx_err = rc;
		stage_mark(s, j - first);
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
			rc = tx_add(s, hdr, sizeof(hdr));
		if (!rc)
			rc = tx_add(s, p + done, len);
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
	rc = tx_begin(s, sizeof(hdr));
	if (!rc)
		rc = tx_add(s, hdr, sizeof(hdr));
	if (!rc)
		rc = tx_finish(l, s);
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
static int rx_pump(struct tlm_lane *l, struct tlm__seal *s, int timeout_ms)
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

/* A PLACED record (tlm__stream_placed_fn): only with a MAC, only into
 * what we offered, and the page there must match the MAC. */
static int rx_placed(void *arg, struct tlm_page_rec *rec, const uint8_t *hdr, const uint8_t *mac)
{
	struct tlm_lane *l = arg;
	struct tlm__seal *s = l->seal;
	const uint8_t *page;
	uint8_t want[TLM_PAGE_MAC];

	if (rec->flags & TLM_PF_STAGED)
		return rx_staged(l, s, rec, hdr, mac);
	/* A MAC only on an integrity lane, and only into what we offered. */
	page = mac && s->protect == TLM_PROTECT_INTEGRITY ? l->ops->placed_page(l, rec) : NULL;
	if (!page)
		return -TLM_EFRAME;
	if (page_mac(s->mrx, s->mrx_seq++, hdr, page, rec->len, want))
		return -EIO;
	/* A sink that asked for the verdicts keeps the flag: the record had
	 * a MAC, checked (UNCHECKED if it did not match). */
	if (!s->defer)
		rec->flags &= (uint16_t)~TLM__PF_MAC;
	if (tlm__ct_equal(want, mac, TLM_PAGE_MAC))
		return 0;
	if (s->defer) {
		rec->flags |= TLM__PF_UNCHECKED;
		return 0;
	}
	tlm__err("%s: lane %u: page %u:%llu placed by RDMA WRITE does not match its MAC "
		 "(modified in transit); lane closed, the page not counted as placed",
		 l->peer, l->index, rec->region, (unsigned long long)rec->index);
	return -TLM_ESEAL;
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
		rc = tlm__stream_parse_pages(&s->plain, sink, s->place_rx ? rx_placed : NULL, l,
					     &err);
		delivered += rc;
		if (err) {
			rx_fail(s, err);
			return delivered ? delivered : err;
		}
		if (delivered && opens >= OPENS_MAX)
			return delivered;
		rc = rx_pump(l, s, delivered ? 0 : deadline == UINT64_MAX ? -1
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
		stage_credit(l, l->seal, true);
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
		rc = rx_pump(l, s, deadline == UINT64_MAX ? -1 : tlm__left_ms(deadline));
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

/* ---- zero copy ---- */

bool tlm__seal_can_place(const struct tlm_lane *l)
{
	return l->seal->protect == TLM_PROTECT_INTEGRITY && l->ops->place &&
	       l->ops->placed_page;
}

void tlm__seal_placing(struct tlm_lane *l, unsigned how)
{
	struct tlm__seal *s = l->seal;

	if (how == TLM_REG_SRC) {
		s->place_tx = true;
		if (tlm__seal_can_stage(l))
			s->stage.tx_slots = l->ops->stage_slots(l);
	} else if (how == TLM_REG_DST) {
		s->place_rx = true;
		if (tlm__seal_can_stage(l))
			s->stage.rx_slots = l->ops->stage_slots(l);
	} else {
		s->place_tx = s->place_rx = false;
	}
}

bool tlm__seal_places(const struct tlm_lane *l)
{
	return l->seal->place_tx;
}

void tlm__seal_defer_macs(struct tlm_lane *l)
{
	if (l->seal)
		l->seal->defer = true;
}

/*
 * ---- staged placement (encrypt) ----
 *
 * Zero copy that keeps the pages secret (see the top of the file for the
 * frames, and "Zero copy" for integrity's MAC per page). The transport
 * registers a staging area of page-sized slots on each side instead of
 * the regions (the regions are not pinned, and the receiver's memory is
 * never open to remote writes): the receiver offers its area with the
 * regions, the sender uses as many slots as both have.
 *
 * Sender, for each LIVE record: take slot = n mod slots (n: the pages
 * staged on the lane so far), once the receiver has opened page n - slots;
 * seal the page from the caller's memory into the sender's slot (one pass
 * of the lane's AEAD, the direction's key, nonce 00 00 00 02 || n, the
 * record's 24-byte header and the u32 slot as associated data); post the
 * RDMA WRITE of the ciphertext into the receiver's slot; put the record
 * into the sealed frame as PLACED | STAGED, followed by the slot and the
 * tag (frame len 44). The frame goes on the same queue pair after the
 * WRITE, so the ciphertext is in the receiver's slot when the record
 * arrives. A frame holds no more staged records than slots are free, so
 * a sender never waits for slots with records of its own unsent.
 *
 * Receiver, for each such record (tlm__stream_placed_fn, before the sink
 * sees it): decrypt the slot straight into the page's place in the region
 * it offered, checking the tag in the same pass, with the nonce from its
 * own count of pages opened (a page moved to another slot, record or lane,
 * or replayed, fails too). A mismatch fails the lane with -TLM_ESEAL at
 * once, under the engine too: the sender sealed a snapshot, so unlike a
 * live page under integrity nothing legitimate changes it in flight. The
 * page's place then holds garbage, and the record is never handed on: the
 * lane fails, and so does the migration (its regions are discarded, as on
 * any failure). One cipher pass per side, no copy besides the WRITE.
 *
 * Slots come back in CREDIT frames (u64 pages opened so far), sealed like
 * every frame from the receiver to the sender: after each slots/4 pages
 * opened and at the end of every receive call that opened any. The sender
 * reads them when it runs short of slots, and in wait_sent, which under
 * staging waits until the receiver opened every staged page of those
 * records: then each is in place, as a completed WRITE is under
 * integrity, and the engine's ordering rule (core/engine.h) holds as it
 * does there. A CREDIT for pages never staged fails the lane.
 *
 * Nonces: under one direction's key the frames use 00 00 00 00 || frame
 * number, integrity's page MACs 00 00 00 01 || pages placed, and staged
 * pages 00 00 00 02 || pages staged: a lane is either integrity or
 * encrypt, and the prefixes keep every nonce unique either way.
 */

#define STAGE_WAIT_MS (3 * TLM_DEFAULT_TIMEOUT_MS) /* longest wait for a slot */

static int stage_start(struct tlm__seal *s, const EVP_CIPHER *c,
		       const struct tlm__seal_params *p)
{
	s->stage.tx = EVP_CIPHER_CTX_new();
	s->stage.rx = EVP_CIPHER_CTX_new();
	if (!s->stage.tx || !s->stage.rx ||
	    EVP_EncryptInit_ex(s->stage.tx, c, NULL, p->tx_key, NULL) != 1 ||
	    EVP_DecryptInit_ex(s->stage.rx, c, NULL, p->rx_key, NULL) != 1)
		return -EIO;
	return 0;
}

static void stage_free(struct tlm__seal *s)
{
	EVP_CIPHER_CTX_free(s->stage.tx);
	EVP_CIPHER_CTX_free(s->stage.rx);
	s->stage.tx = s->stage.rx = NULL;
}

static void stage_nonce(uint64_t n, uint8_t iv[12])
{
	nonce_of(n, iv);
	iv[3] = 2;
}

bool tlm__seal_can_stage(const struct tlm_lane *l)
{
	const struct tlm_lane_ops *o = l->ops;

	return l->seal->protect == TLM_PROTECT_ENCRYPT && o->stage_slots && o->stage_get &&
	       o->stage_put && o->staged_page && o->placed_page;
}

static bool staged_rec(const struct tlm__seal *s, const struct tlm_page_rec *r)
{
	return s->place_tx && s->stage.tx_slots && s->protect == TLM_PROTECT_ENCRYPT &&
	       (r->flags & TLM_PF_LIVE);
}

/* Take the CREDIT frames opened so far: nothing else comes this way on a
 * lane that sends staged pages. */
static int take_credits(struct tlm_lane *l, struct tlm__seal *s)
{
	struct tlm__stream *p = &s->plain;

	while (tlm__stream_avail(p)) {
		const uint8_t *f = p->buf + p->start;
		struct tlm_frame_hdr fh;
		uint64_t v;

		if (tlm__stream_avail(p) < TLM_FRAME_HDR + TLM_CREDIT_LEN ||
		    tlm__frame_hdr_decode(f, l->page_size, &fh) < 0 || fh.type != TLM_FT_CREDIT) {
			tlm__err("%s: lane %u: a frame other than a staging credit from the receiver",
				 l->peer, l->index);
			return -TLM_EFRAME;
		}
		v = tlm__get64(f + TLM_FRAME_HDR);
		if (v < s->stage.tx_opened || v > s->stage.tx_seq) {
			tlm__err("%s: lane %u: the receiver credits %llu staged pages, %llu were sent",
				 l->peer, l->index, (unsigned long long)v,
				 (unsigned long long)s->stage.tx_seq);
			return -TLM_EFRAME;
		}
		s->stage.tx_opened = v;
		p->start += TLM_FRAME_HDR + TLM_CREDIT_LEN;
	}
	return 0;
}

/* Read the receiver's credits, waiting up to timeout_ms for the first
 * sealed frame (0: only what is there). 1: one was opened, 0: none. */
static int pump_credits(struct tlm_lane *l, struct tlm__seal *s, int timeout_ms)
{
	int rc = rx_err(s);

	if (rc)
		return rc;
	rc = rx_pump(l, s, timeout_ms);
	if (rc == 1)
		rc = take_credits(l, s) ? -TLM_EFRAME : 1;
	return rc < 0 ? rx_fail(s, rc) : rc;
}

static unsigned stage_free_slots(const struct tlm__seal *s)
{
	return s->stage.tx_slots - (unsigned)(s->stage.tx_seq - s->stage.tx_opened);
}

/* The slots free for the next frame in *room, waiting for one if need
 * (the frame before was sent, so the receiver can open every page). */
static int stage_room(struct tlm_lane *l, struct tlm__seal *s, bool need, unsigned *room)
{
	uint64_t deadline = tlm__now_ms() + STAGE_WAIT_MS;
	int rc = 0;

	*room = 0;
	if (!s->place_tx || !s->stage.tx_slots)
		return 0;
	if (stage_free_slots(s) < s->stage.tx_slots / 2)
		while ((rc = pump_credits(l, s, 0)) == 1)
			;
	while (rc >= 0 && need && !stage_free_slots(s)) {
		int left = tlm__left_ms(deadline);

		if (!left) {
			tlm__err("%s: lane %u: the receiver returned no staging slot for %d ms",
				 l->peer, l->index, STAGE_WAIT_MS);
			return -ETIMEDOUT;
		}
		rc = pump_credits(l, s, left);
	}
	*room = stage_free_slots(s);
	return rc < 0 ? rc : 0;
}

/* A LIVE record on a staging lane: its page sealed into a staging slot
 * and written to the receiver's, then its record into the frame. */
static int tx_staged(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec)
{
	struct tlm_page_rec r = *rec;
	uint8_t rec_out[REC_HDR + TLM_STAGED_TAIL], iv[12], *buf, *aad = rec_out + TLM_FRAME_HDR;
	uint32_t slot = (uint32_t)(s->stage.tx_seq % s->stage.tx_slots);
	EVP_CIPHER_CTX *c = s->stage.tx;
	int outl = 0, rc;

	r.flags = (uint16_t)((r.flags & ~TLM_PF_LIVE) | TLM_PF_PLACED | TLM_PF_STAGED);
	r.crc = 0;
	tlm__frame_hdr_encode(rec_out, TLM_PAGE_HDR + TLM_STAGED_TAIL, TLM_FT_PAGE);
	tlm__page_hdr_encode(aad, &r);
	tlm__put32(aad + TLM_PAGE_HDR, slot);
	rc = l->ops->stage_get(l, slot, &buf);
	if (rc)
		return rc;
	stage_nonce(s->stage.tx_seq, iv);
	if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &outl, aad, TLM_PAGE_HDR + 4) != 1 ||
	    EVP_EncryptUpdate(c, buf, &outl, rec->data, (int)rec->len) != 1 ||
	    (uint32_t)outl != rec->len ||
	    EVP_EncryptFinal_ex(c, iv, &outl) != 1 || outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLM_PAGE_MAC,
				aad + TLM_PAGE_HDR + 4) != 1)
		return -EIO;
	rc = l->ops->stage_put(l, slot, rec->len);
	if (rc)
		return rc;
	s->stage.tx_seq++;
	return tx_add(s, rec_out, sizeof(rec_out));
}

/* A sealed frame went out with `records` records: where wait_sent finds
 * how many staged pages they hold. */
static void stage_mark(struct tlm__seal *s, unsigned records)
{
	struct stage *g = &s->stage;
	unsigned k;

	if (!s->place_tx || !g->tx_slots)
		return;
	g->tx_records += records;
	if (g->mark_n < STAGE_MARKS) {
		k = (g->mark_head + g->mark_n++) % STAGE_MARKS;
	} else {
		k = g->mark_head;
		g->mark_head = (g->mark_head + 1) % STAGE_MARKS;
	}
	g->mark[k].records = g->tx_records;
	g->mark[k].staged = g->tx_seq;
}

int tlm__seal_stage_wait(struct tlm_lane *l, uint64_t records, int timeout_ms)
{
	struct tlm__seal *s = l->seal;
	struct stage *g = &s->stage;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
	uint64_t need = g->tx_seq;

	if (!s->place_tx || !g->tx_slots || !records)
		return 0;
	/* The oldest frame that holds the records (a later one if the marks
	 * of older frames were dropped: waiting longer, never shorter). */
	for (unsigned k = 0; k < g->mark_n; k++) {
		unsigned i = (g->mark_head + k) % STAGE_MARKS;

		if (g->mark[i].records >= records) {
			need = g->mark[i].staged;
			break;
		}
	}
	while (g->tx_opened < need) {
		int left = deadline == UINT64_MAX ? -1 : tlm__left_ms(deadline);
		int rc = s->tx_err;

		if (!rc && !left)
			rc = -ETIMEDOUT;
		if (!rc)
			rc = pump_credits(l, s, left);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Send a CREDIT for the pages opened so far: all of them, or only once a
 * quarter of the slots is waiting. Errors fail the lane (the sender waits
 * for these). */
static int stage_credit(struct tlm_lane *l, struct tlm__seal *s, bool all)
{
	struct stage *g = &s->stage;
	uint8_t f[TLM_FRAME_HDR + TLM_CREDIT_LEN];
	uint64_t owed = g->rx_seq - g->rx_credited;
	int rc;

	if (!owed || (!all && owed < (g->rx_slots / 4 ? g->rx_slots / 4 : 1)))
		return 0;
	if (s->tx_err || s->tx_fin)
		return rx_fail(s, s->tx_err ? s->tx_err : -EPIPE);
	tlm__frame_hdr_encode(f, TLM_CREDIT_LEN, TLM_FT_CREDIT);
	tlm__put64(f + TLM_FRAME_HDR, g->rx_seq);
	rc = tx_begin(s, sizeof(f));
	if (!rc)
		rc = tx_add(s, f, sizeof(f));
	if (!rc)
		rc = tx_finish(l, s);
	if (rc)
		return rx_fail(s, s->tx_err = rc);
	g->rx_credited = g->rx_seq;
	return 0;
}

/* A staged record (from rx_placed): open its slot into the page's place. */
static int rx_staged(struct tlm_lane *l, struct tlm__seal *s, struct tlm_page_rec *rec,
		     const uint8_t *hdr, const uint8_t *tail)
{
	struct stage *g = &s->stage;
	const uint8_t *ct = NULL;
	uint8_t *page = NULL, iv[12];
	uint32_t slot;
	int outl = 0;
	bool ok;

	if (s->protect != TLM_PROTECT_ENCRYPT || !s->place_rx || !g->rx_slots || !tail ||
	    tail != hdr + TLM_PAGE_HDR)
		return -TLM_EFRAME;
	slot = tlm__get32(tail);
	ct = l->ops->staged_page(l, slot, rec->len);
	page = (uint8_t *)l->ops->placed_page(l, rec);
	if (!ct || !page)
		return -TLM_EFRAME;
	stage_nonce(g->rx_seq++, iv);
	ok = EVP_DecryptInit_ex(g->rx, NULL, NULL, NULL, iv) == 1 &&
	     EVP_DecryptUpdate(g->rx, NULL, &outl, hdr, TLM_PAGE_HDR + 4) == 1 &&
	     EVP_DecryptUpdate(g->rx, page, &outl, ct, (int)rec->len) == 1 &&
	     (uint32_t)outl == rec->len &&
	     EVP_CIPHER_CTX_ctrl(g->rx, EVP_CTRL_AEAD_SET_TAG, TLM_PAGE_MAC,
				 (void *)(tail + 4)) == 1 &&
	     EVP_DecryptFinal_ex(g->rx, iv, &outl) == 1;
	if (!ok) {
		tlm__err("%s: lane %u: staged page %u:%llu (slot %u) failed authentication "
			 "(its ciphertext was modified in transit); lane closed, the page not "
			 "counted as placed", l->peer, l->index, rec->region,
			 (unsigned long long)rec->index, slot);
		return -TLM_ESEAL;
	}
	return stage_credit(l, s, false);
}
