/* SPDX-License-Identifier: MIT */
/*
 * Wire format, version 3 (docs/wire.md is the prose version of this file).
 *
 * Everything on a lane is a frame: an 8-byte header, then len bytes.
 *
 *   u32 len    payload bytes after the header (big-endian)
 *   u8  type   TLM_FT_*
 *   u8  flags  0 (reserved, must be 0)
 *   u16 check  ~(len ^ len>>16 ^ type) & 0xffff: catches desync cheaply
 *
 * Integers are big-endian. Decoders take untrusted bytes and never read
 * past what they were given; every function returns 0 or a negative error.
 */
#ifndef TLM_CORE_WIRE_H
#define TLM_CORE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tlm/tlm.h"

#define TLM_WIRE_MAGIC   0x544c4d57u /* "TLMW" */
#define TLM_WIRE_VERSION 3

#define TLM_FRAME_HDR     8
#define TLM_PAGE_HDR      24          /* page record header inside a PAGE frame */
#define TLM_MAX_PAGE_SIZE 65536
#define TLM_MIN_PAGE_SIZE 512
#define TLM_MAX_DATA_FRAME (256 * 1024) /* largest DATA payload */
#define TLM_MAX_MSG       4096        /* largest handshake message payload */
#define TLM_MAX_FRAME     (TLM_MAX_DATA_FRAME > TLM_PAGE_HDR + TLM_MAX_PAGE_SIZE ? \
			   TLM_MAX_DATA_FRAME : TLM_PAGE_HDR + TLM_MAX_PAGE_SIZE)

enum tlm_frame_type {
	TLM_FT_DATA = 1,       /* byte-stream chunk */
	TLM_FT_FIN = 2,        /* orderly end of a byte stream, len 0 */
	TLM_FT_PAGE = 3,       /* page record header + data (header only if PLACED) */
	TLM_FT_REGION = 4,     /* receiver -> sender: a region offered for RDMA WRITE */
	TLM_FT_SEALED = 5,     /* AEAD-sealed frames of a protected lane (seal.c) */
	TLM_FT_CREDIT = 6,     /* receiver -> sender, only inside sealed frames of
				* an encrypt lane that stages pages: u64 staged
				* pages opened so far (seal-place.c, "staged placement") */
	TLM_FT_HELLO = 16,     /* handshake, docs/wire.md */
	TLM_FT_CHALLENGE = 17,
	TLM_FT_AUTH = 18,
	TLM_FT_WELCOME = 19,
	TLM_FT_PARAMS = 20,
	TLM_FT_PARAMS_ACK = 21,
	TLM_FT_ERROR = 22,
	TLM_FT_CTRL = 32,      /* engine control messages (core/engine), opaque here */
};

struct tlm_frame_hdr {
	uint32_t len;
	uint8_t type;
};

/* Big-endian helpers. */
static inline void tlm__put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void tlm__put32(uint8_t *p, uint32_t v)
{ p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline void tlm__put64(uint8_t *p, uint64_t v)
{ tlm__put32(p, v >> 32); tlm__put32(p + 4, (uint32_t)v); }
static inline uint16_t tlm__get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t tlm__get32(const uint8_t *p)
{ return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline uint64_t tlm__get64(const uint8_t *p)
{ return (uint64_t)tlm__get32(p) << 32 | tlm__get32(p + 4); }

/* wire.c APIs: */
void tlm__frame_hdr_encode(uint8_t out[TLM_FRAME_HDR], uint32_t len, uint8_t type);
/* -TLM_EFRAME if the header is inconsistent, the type unknown, or len above
 * max_len for that type (max_len is the receiver's limit, e.g. page size). */
int tlm__frame_hdr_decode(const uint8_t in[TLM_FRAME_HDR], uint32_t page_size,
			  struct tlm_frame_hdr *out);

/* Page record flag, on the wire only: the crc field is 0, not summed. A
 * DPDK lane sends it for a page it sent zero-copy (the PMD reads the live
 * page after the header is written), where its link guards the bytes;
 * only such a receiver accepts it (tlm__page_verify refuses it). Never with
 * PLACED or XBZRLE. */
#define TLM__PF_NOSUM (1u << 4)

/* Page record flag, on the wire only with PLACED, and only inside sealed
 * frames of an integrity lane: the header is followed by TLM_PAGE_MAC
 * bytes, the MAC of the page the sender placed by RDMA WRITE (seal-place.c). The frame is then 24 + TLM_PAGE_MAC bytes long. The
 * receiver hands it on only to a sink that asked for the verdicts
 * (tlm__seal_defer_macs): the page's MAC was checked. */
#define TLM__PF_MAC   (1u << 5)
#define TLM_PAGE_MAC  16

/* TLM_PF_STAGED (include/tlm/tlm.h), on the wire only with PLACED and only
 * inside sealed frames of an encrypt lane: the header is followed by
 * TLM_STAGED_TAIL bytes, u32 the staging slot the sender's RDMA WRITE put
 * the page's ciphertext in, then the AEAD tag (seal.c, "Staged
 * placement"). The frame is then 24 + TLM_STAGED_TAIL bytes long. */
#define TLM_STAGED_TAIL (4 + TLM_PAGE_MAC)
#define TLM_CREDIT_LEN  8

/* Receiver-side record flag, never on the wire: a PLACED record whose page
 * did not match its MAC when it was checked, handed on only to a sink that
 * asked for it (tlm__seal_defer_macs): a later write of the same page may
 * have landed before the check, so only the page's last record decides. */
#define TLM__PF_UNCHECKED (1u << 13)

/* Page record header (24 bytes):
 *   u64 index, u32 epoch, u16 flags, u16 region, u32 len, u32 crc32c(data) */
void tlm__page_hdr_encode(uint8_t out[TLM_PAGE_HDR], const struct tlm_page_rec *r);
/* Decodes and checks the header against the frame length and page size
 * (len + 24 == frame len, len <= page_size, ZERO/LAST records carry no
 * data, unknown flags refused). Does not check the crc (needs the data). */
int tlm__page_hdr_decode(const uint8_t in[TLM_PAGE_HDR], uint32_t frame_len,
			 uint32_t page_size, struct tlm_page_rec *out);
/* Whole-record check once data is at hand: -TLM_ECRC on mismatch. */
int tlm__page_verify(const struct tlm_page_rec *r);
/* The same with the crc of r->data already summed (tlm__crc32c_copy). */
int tlm__page_verify_sum(const struct tlm_page_rec *r, uint32_t sum);

/* REGION payload (24 bytes), sent by a transport that places pages itself:
 *   u16 region, u16 offered (1, or 0: not offered, copy instead, or 2:
 *   staged, the pages come sealed through the staging area that rkey,
 *   addr and len describe, one page per slot: encrypt lanes only),
 *   u32 rkey, u64 addr, u64 len (0 when not offered) */
#define TLM_REGION_LEN 24
struct tlm_region_offer {
	uint16_t region;
	bool offered;
	bool staged;          /* offered == 2 */
	uint32_t rkey;
	uint64_t addr, len;
};
void tlm__region_encode(uint8_t out[TLM_REGION_LEN], const struct tlm_region_offer *o);
int tlm__region_decode(const uint8_t *in, size_t len, struct tlm_region_offer *o);

/* Handshake messages (payload of the HELLO.. frames). */
#define TLM_NONCE_LEN 32
#define TLM_MAC_LEN   32
#define TLM_SID_LEN   16

/* Sealed frames: a TLM_FT_SEALED frame's payload is the ciphertext (or,
 * for integrity, the clear text) of whole inner frames, then the AEAD tag;
 * the 8-byte outer header is the associated data. A sealed frame fits one
 * DATA frame of any transport. */
#define TLM_SEAL_TAG      16
#define TLM_SEAL_MAX      (TLM_MAX_DATA_FRAME - TLM_FRAME_HDR) /* outer len */
#define TLM_SEAL_PLAIN    (TLM_SEAL_MAX - TLM_SEAL_TAG)        /* inner bytes */

/* AEAD of a protected lane, named in HELLO. */
enum { TLM_CIPHER_NONE = 0, TLM_CIPHER_AES256GCM = 1, TLM_CIPHER_CHACHA20POLY1305 = 2 };

struct tlm_hello {
	uint32_t magic;
	uint16_t version;
	uint16_t lane;         /* 0 = control lane */
	uint8_t sid[TLM_SID_LEN];
	uint8_t nonce[TLM_NONCE_LEN];
	uint8_t protect;       /* enum tlm_protect */
	uint8_t cipher;        /* TLM_CIPHER_*: NONE iff protect is NONE */
};
#define TLM_HELLO_LEN (4 + 2 + 2 + TLM_SID_LEN + TLM_NONCE_LEN + 2)

/* The server's nonce only: it proves nothing before the client has, so an
 * unauthenticated HELLO gets nothing a key could be guessed against. */
struct tlm_challenge {
	uint32_t magic;
	uint16_t version;
	uint8_t nonce[TLM_NONCE_LEN];
};
#define TLM_CHALLENGE_LEN (4 + 2 + 2 + TLM_NONCE_LEN)
/* AUTH: the client's MAC; WELCOME: the server's MAC (TLM_MAC_LEN each). */

struct tlm_params {
	uint32_t page_size;
	uint16_t n_lanes;
	uint16_t n_regions;
	uint32_t caps;
	uint64_t page_lanes;   /* bit i set: data lane i+1 runs in page mode */
	uint64_t region_len[TLM_MAX_REGIONS];
	char region_name[TLM_MAX_REGIONS][TLM_REGION_NAME_MAX + 1];
};
#define TLM_PARAMS_FIXED (4 + 2 + 2 + 4 + 8)

struct tlm_errmsg {
	int32_t code;          /* negative tlm error */
	uint16_t version;      /* sender's wire version */
	char text[200];
};

int tlm__hello_encode(uint8_t *out, size_t cap, const struct tlm_hello *h);
int tlm__hello_decode(const uint8_t *in, size_t len, struct tlm_hello *h);
int tlm__challenge_encode(uint8_t *out, size_t cap, const struct tlm_challenge *c);
int tlm__challenge_decode(const uint8_t *in, size_t len, struct tlm_challenge *c);
int tlm__params_encode(uint8_t *out, size_t cap, const struct tlm_params *p);
int tlm__params_decode(const uint8_t *in, size_t len, struct tlm_params *p);
int tlm__errmsg_encode(uint8_t *out, size_t cap, const struct tlm_errmsg *e);
int tlm__errmsg_decode(const uint8_t *in, size_t len, struct tlm_errmsg *e);

/* Engine control messages: the payload of CTRL frames on the control lane,
 * a type byte (TLM_CM_*) and then big-endian fields. Per-lane arrays are
 * indexed by data lane, 1..n (n < TLM_MAX_LANES); [0] is unused. Each
 * encoder returns the bytes written or -ENOSPC; each decoder checks the
 * type, the length and every count against what it was given, and returns
 * 0 or -TLM_EFRAME. docs/wire.md is the prose version. */
enum {
	TLM_CM_START = 1,    /* src->dst: u16 chk, u16 ps, u8 policy, u32 epoch_ms,
			      * u8 flags (TLM_START_ZC) */
	TLM_CM_STAGE3 = 2,   /* src->dst: u16 n, u64 records[n], u64 devstate_len */
	TLM_CM_COMMIT = 3,   /* dst->src: every lane drained, all applied;
			      * then (optional, stage-3 accounting) u16 n,
			      * n x { u32 backlog records, u32 drain us },
			      * u64 backlog bytes, u32 commit us */
	TLM_CM_DEVSTATE = 4, /* src->dst: a chunk of the device-state blob */
	TLM_CM_FAIL = 5,     /* either way: i32 code, text (not terminated) */
	TLM_CM_ABORT = 6,    /* src->dst: give up, discard */
	TLM_CM_PAUSED = 7,   /* src->dst: u16 n, n x { u64 records, u64 bytes }
			      * sent on each data lane when the source paused */
	TLM_CM_SYNC = 8,     /* src->dst: u16 n, u64 records[n]: answer SYNCED
			      * once each lane has applied that many */
	TLM_CM_SYNCED = 9,   /* dst->src: u32 us the destination waited */
	TLM_CM_KEEPALIVE = 10, /* either way: nothing; sent on a control lane
				* idle for a while (core/keepalive.c) */
};

/* START flags. */
#define TLM_START_ZC 1       /* offer the regions for zero copy (RDMA WRITE) */

#define TLM_CM_START_LEN  11
#define TLM_CM_SYNCED_LEN 5
#define TLM_CM_FAIL_TEXT  200          /* longest FAIL text kept */
#define TLM_CM_MAX_LEN    (3 + 16 * TLM_MAX_LANES)  /* longest but DEVSTATE */

struct tlm_cm_start {
	uint16_t chk, ps;       /* CHK and PS lanes: chk + ps data lanes */
	uint8_t policy;         /* enum tlm_policy */
	uint32_t epoch_ms;
	uint8_t flags;          /* TLM_START_* */
};

/* STAGE3 (records, devstate_len), SYNC (records), PAUSED (records, bytes). */
struct tlm_cm_lanes {
	uint16_t n;
	uint64_t records[TLM_MAX_LANES];
	uint64_t bytes[TLM_MAX_LANES];
	uint64_t devstate_len;
};

struct tlm_cm_commit {
	bool stats;             /* the stage-3 accounting follows */
	uint16_t n;
	uint32_t backlog[TLM_MAX_LANES];
	uint32_t drain_us[TLM_MAX_LANES];
	uint64_t backlog_bytes;
	uint32_t commit_us;
};

struct tlm_cm_fail {
	int32_t code;           /* negative errno or -TLM_E* */
	char text[TLM_CM_FAIL_TEXT + 1];
};

/* The type of a control message (its first byte), or -TLM_EFRAME. */
int tlm__cm_type(const uint8_t *in, size_t len);
int tlm__cm_start_encode(uint8_t *out, size_t cap, const struct tlm_cm_start *m);
int tlm__cm_start_decode(const uint8_t *in, size_t len, struct tlm_cm_start *m);
int tlm__cm_stage3_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m);
int tlm__cm_stage3_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m);
int tlm__cm_sync_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m);
int tlm__cm_sync_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m);
int tlm__cm_paused_encode(uint8_t *out, size_t cap, const struct tlm_cm_lanes *m);
int tlm__cm_paused_decode(const uint8_t *in, size_t len, struct tlm_cm_lanes *m);
int tlm__cm_synced_encode(uint8_t *out, size_t cap, uint32_t waited_us);
int tlm__cm_synced_decode(const uint8_t *in, size_t len, uint32_t *waited_us);
int tlm__cm_commit_encode(uint8_t *out, size_t cap, const struct tlm_cm_commit *m);
int tlm__cm_commit_decode(const uint8_t *in, size_t len, struct tlm_cm_commit *m);
/* DEVSTATE: the chunk is copied in after the type byte; decoding points
 * *data into in (len - 1 bytes, at least one). */
int tlm__cm_devstate_encode(uint8_t *out, size_t cap, const void *data, size_t n);
int tlm__cm_devstate_decode(const uint8_t *in, size_t len, const uint8_t **data, size_t *n);
/* FAIL: text is cut to TLM_CM_FAIL_TEXT bytes; the decoded text is
 * terminated. A code that is not negative decodes as -EIO. */
int tlm__cm_fail_encode(uint8_t *out, size_t cap, int32_t code, const char *text);
int tlm__cm_fail_decode(const uint8_t *in, size_t len, struct tlm_cm_fail *m);
int tlm__cm_abort_encode(uint8_t *out, size_t cap);
int tlm__cm_abort_decode(const uint8_t *in, size_t len);
int tlm__cm_keepalive_encode(uint8_t *out, size_t cap);
int tlm__cm_keepalive_decode(const uint8_t *in, size_t len);

#endif /* TLM_CORE_WIRE_H */
