/* SPDX-License-Identifier: MIT */
/*
 * Sealed lanes, the pages the transport places (RDMA): integrity's MAC
 * per page, and staged placement under encrypt. The sealed frames these
 * records travel in are core/seal.c's.
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
 * see "Staged placement" below.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "seal-internal.h"
#include "stream.h"
#include "tlm-internal.h"

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

bool tlm__seal_placed_rec(const struct tlm__seal *s, const struct tlm_page_rec *r)
{
	return s->place_tx && s->protect == TLM_PROTECT_INTEGRITY && (r->flags & TLM_PF_LIVE);
}

/* A LIVE record on a placing lane: its MAC, then its page handed to the
 * transport, then its PLACED record into the frame (the frame follows the
 * WRITE on the transport). */
int tlm__seal_tx_placed(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec)
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
	return tlm__seal_tx_add(s, hdr, sizeof(hdr));
}

/* A PLACED record (tlm__stream_placed_fn): only with a MAC, only into
 * what we offered, and the page there must match the MAC. */
int tlm__seal_rx_placed(void *arg, struct tlm_page_rec *rec, const uint8_t *hdr, const uint8_t *mac)
{
	struct tlm_lane *l = arg;
	struct tlm__seal *s = l->seal;
	const uint8_t *page;
	uint8_t want[TLM_PAGE_MAC];

	if (rec->flags & TLM_PF_STAGED)
		return tlm__stage_rx(l, s, rec, hdr, mac);
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
 * Zero copy that keeps the pages secret (see core/seal.c for the frames,
 * and the top of this file for integrity's MAC per page). The transport
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

int tlm__stage_start(struct tlm__seal *s, const EVP_CIPHER *c,
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

void tlm__stage_free(struct tlm__seal *s)
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

bool tlm__staged_rec(const struct tlm__seal *s, const struct tlm_page_rec *r)
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
	rc = tlm__seal_rx_pump(l, s, timeout_ms);
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
int tlm__stage_room(struct tlm_lane *l, struct tlm__seal *s, bool need, unsigned *room)
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
int tlm__stage_tx(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec)
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
	return tlm__seal_tx_add(s, rec_out, sizeof(rec_out));
}

/* A sealed frame went out with `records` records: where wait_sent finds
 * how many staged pages they hold. */
void tlm__stage_mark(struct tlm__seal *s, unsigned records)
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
int tlm__stage_credit(struct tlm_lane *l, struct tlm__seal *s, bool all)
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
	rc = tlm__seal_tx_frame(l, s, f, sizeof(f));
	if (rc)
		return rx_fail(s, s->tx_err = rc);
	g->rx_credited = g->rx_seq;
	return 0;
}

/* A staged record (from rx_placed): open its slot into the page's place. */
int tlm__stage_rx(struct tlm_lane *l, struct tlm__seal *s, struct tlm_page_rec *rec,
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
		snprintf(s->rx_why, sizeof(s->rx_why), "staged page %u:%llu (slot %u) failed "
			 "authentication (its ciphertext was modified in transit)", rec->region,
			 (unsigned long long)rec->index, slot);
		tlm__err("%s: lane %u: %s; lane closed, the page not counted as placed", l->peer,
			 l->index, s->rx_why);
		return -TLM_ESEAL;
	}
	return tlm__stage_credit(l, s, false);
}

const char *tlm__seal_why(const struct tlm_lane *l)
{
	return l && l->seal && l->seal->rx_why[0] ? l->seal->rx_why : NULL;
}
