/* SPDX-License-Identifier: MIT */
/*
 * What the sealed lane's code shares (core/seal.c: the sealed frames,
 * tx and rx; core/seal-place.c: pages the transport places, with a MAC
 * each under integrity or staged under encrypt): the lane's seal state
 * and the helpers both use.
 */
#ifndef TLM_SEAL_INTERNAL_H
#define TLM_SEAL_INTERNAL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "stream.h"
#include "tlm-internal.h"

#define PLAIN_CAP (2 * (TLM_FRAME_HDR + TLM_MAX_FRAME)) /* >= 2 sealed frames */
#define OPENS_MAX 16   /* sealed frames opened per recv_pages once records flow */
#define REC_HDR   (TLM_FRAME_HDR + TLM_PAGE_HDR)

_Static_assert(PLAIN_CAP >= 2 * TLM_SEAL_PLAIN, "room for one frame beside a partial one");
_Static_assert(REC_HDR + TLM_MAX_PAGE_SIZE <= TLM_SEAL_PLAIN, "a record fits a sealed frame");

/* Staged placement (encrypt): the tx side (sender) and the rx side
 * (receiver) of a lane's staging; see "Staged placement" in
 * core/seal-place.c. */
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
	char rx_why[112];         /* what failed, where the error alone does not
				   * say (tlm__seal_why); the rx thread's */
	int epfd, evfd;           /* pollfd: the transport's + ready */
	bool ev_set;

	/* zero copy (integrity): tx side, then rx side */
	EVP_CIPHER_CTX *mtx, *mrx; /* the directions' keys, for page MACs */
	uint64_t mtx_seq, mrx_seq; /* pages placed so far */
	bool place_tx, place_rx, defer;

	/* staged placement (encrypt), core/seal-place.c */
	struct stage stage;
};

static inline void nonce_of(uint64_t seq, uint8_t iv[12])
{
	memset(iv, 0, 4);
	tlm__put64(iv + 4, seq);
}

static inline int rx_err(const struct tlm__seal *s)
{
	return __atomic_load_n(&s->rx_err, __ATOMIC_ACQUIRE);
}

static inline int rx_fail(struct tlm__seal *s, int err)
{
	if (!rx_err(s))
		__atomic_store_n(&s->rx_err, err, __ATOMIC_RELEASE);
	return rx_err(s);
}

/* core/seal.c */
/* Append n inner bytes to the sealed frame being built (send_pages). */
int tlm__seal_tx_add(struct tlm__seal *s, const void *p, size_t n);
/* A sealed frame holding the one inner frame f (n bytes), sent now. */
int tlm__seal_tx_frame(struct tlm_lane *l, struct tlm__seal *s, const void *f, size_t n);
int tlm__seal_rx_pump(struct tlm_lane *l, struct tlm__seal *s, int timeout_ms);

/* core/seal-place.c: integrity's MAC per page */
bool tlm__seal_placed_rec(const struct tlm__seal *s, const struct tlm_page_rec *r);
int tlm__seal_tx_placed(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec);
int tlm__seal_rx_placed(void *arg, struct tlm_page_rec *rec, const uint8_t *hdr,
			const uint8_t *mac);

/* core/seal-place.c: staged placement (encrypt) */
int tlm__stage_start(struct tlm__seal *s, const EVP_CIPHER *c, const struct tlm__seal_params *p);
void tlm__stage_free(struct tlm__seal *s);
bool tlm__staged_rec(const struct tlm__seal *s, const struct tlm_page_rec *r);
int tlm__stage_room(struct tlm_lane *l, struct tlm__seal *s, bool need, unsigned *room);
int tlm__stage_tx(struct tlm_lane *l, struct tlm__seal *s, const struct tlm_page_rec *rec);
void tlm__stage_mark(struct tlm__seal *s, unsigned records);
int tlm__stage_rx(struct tlm_lane *l, struct tlm__seal *s, struct tlm_page_rec *rec,
		  const uint8_t *hdr, const uint8_t *tail);
int tlm__stage_credit(struct tlm_lane *l, struct tlm__seal *s, bool all);

#endif
