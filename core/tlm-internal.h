/* SPDX-License-Identifier: MIT */
/*
 * Internals shared across core/ and the transports. Names: tlm_ public,
 * tlm__ internal across files, file statics unprefixed.
 */
#ifndef TLM_CORE_INTERNAL_H
#define TLM_CORE_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "tlm/tlm.h"
#include "wire.h"

#define TLM_DEFAULT_TIMEOUT_MS 10000
#define TLM_DEFAULT_PAGE_SIZE  4096

struct tlm_lane_ops;
struct tlm__seal;

/* The part of every lane that core/ reads. Each transport embeds it first
 * in its own lane struct and casts back in its ops. */
struct tlm_lane {
	const struct tlm_lane_ops *ops;
	enum tlm_lane_mode mode;
	uint32_t page_size;       /* largest record data the receiver accepts */
	unsigned index;           /* 0 = control lane */
	uint64_t tx_bytes;        /* payload bytes sent (page data or stream bytes) */
	uint64_t rx_bytes;
	char peer[80];            /* "addr:port" for messages */
	/* Set once the lane's handshake is done and it is protected: every
	 * call then goes through seal.c, which keeps the transport in byte
	 * mode and the lane's own mode in seal->mode. NULL: --protect none. */
	struct tlm__seal *seal;
};

struct tlm_xlistener {
	const struct tlm_lane_ops *ops;
};

/*
 * A transport. Control ops are called rarely; the datapath ops are in their
 * own table so the hot path costs one indirect call per burst.
 *
 * Every op returns 0 / a count or a negative error. A transport whose peer
 * vanishes returns -TLM_EPEERCLOSED from every later call; one that sees a
 * malformed frame returns -TLM_EFRAME and the lane is dead from then on.
 */
struct tlm_lane_dp {
	/* Page mode. send: hand all n records over, blocking under back-pressure
	 * (memory stays bounded), return n. recv: see tlm_lane_recv_pages. */
	int (*send_pages)(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n);
	int (*recv_pages)(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms);
	/* Byte-stream mode. */
	ssize_t (*write)(struct tlm_lane *l, const void *buf, size_t n);
	ssize_t (*read)(struct tlm_lane *l, void *buf, size_t n, int timeout_ms);
	int (*shutdown)(struct tlm_lane *l);
	int (*flush)(struct tlm_lane *l);
	/* Optional, byte mode: the stream's bytes where the transport keeps
	 * them, so a sealed lane (seal.c) seals straight into the transport's
	 * packets and opens straight out of them, with no buffer of its own
	 * and no copy to or from it (NULL: seal.c goes through write/read).
	 * Neither counts tx_bytes/rx_bytes: seal.c counts the payload.
	 *
	 * wopen: a write of n bytes (1..TLM_MAX_DATA_FRAME) begins. wspan:
	 * where its next bytes go, *p, and how many fit there in one piece
	 * (> 0, never more than are left of n; on packet transports one
	 * segment's room, so callers fill it piece by piece). wput: k of
	 * them were written there. The write goes out once all n are put;
	 * until then the lane writes nothing else. An error from any of the
	 * three is the lane's: the write is lost, and so is the lane.
	 *
	 * rspan: waits up to timeout_ms (-1: forever) for bytes to read; *p:
	 * the next ones, where they lie, valid until rtake; returns how many
	 * lie there in one piece (> 0), 0 at the end of the stream, else
	 * -ETIMEDOUT or the error read would return. rtake: k of them (at
	 * most what rspan returned) were read. */
	int (*wopen)(struct tlm_lane *l, size_t n);
	ssize_t (*wspan)(struct tlm_lane *l, uint8_t **p);
	int (*wput)(struct tlm_lane *l, size_t k);
	ssize_t (*rspan)(struct tlm_lane *l, const uint8_t **p, int timeout_ms);
	void (*rtake)(struct tlm_lane *l, size_t k);
};

struct tlm_lane_ops {
	const char *name;
	/* addr NULL = any; port "0" = pick one. args: transport_args. */
	int (*listen)(const char *addr, const char *port, const char *args,
		      struct tlm_xlistener **out);
	int (*listener_port)(const struct tlm_xlistener *xl);
	/* Optional: a file descriptor readable when accept would not wait
	 * (NULL: the session polls accept on a short tick). */
	int (*listener_pollfd)(const struct tlm_xlistener *xl);
	/* One raw (unauthenticated) lane; -ETIMEDOUT after timeout_ms. */
	int (*accept)(struct tlm_xlistener *xl, int timeout_ms, struct tlm_lane **out);
	void (*listener_close)(struct tlm_xlistener *xl);
	/* index: 0 for the control lane (transports may tune it, e.g. NODELAY). */
	int (*connect)(const char *addr, const char *port, const char *args,
		       unsigned index, int timeout_ms, struct tlm_lane **out);
	void (*close)(struct tlm_lane *l);
	/* Optional (NULL = nothing to do). */
	int (*set_mode)(struct tlm_lane *l, enum tlm_lane_mode mode);
	int (*pollfd)(const struct tlm_lane *l);
	/* Test hook: put raw bytes on the wire, bypassing framing, so the
	 * conformance suite can feed malformed and truncated frames. */
	int (*inject_raw)(struct tlm_lane *l, const void *buf, size_t n);
	/* Optional (NULL: a send waits out the transport's own timeout):
	 * from any thread, fail the lane with err, so that a send waiting
	 * for the peer to take bytes returns err within about 100 ms and
	 * every later call returns it. For a peer judged silent by the
	 * control lane's timer (core/keepalive.c): it takes nothing more. */
	void (*abort)(struct tlm_lane *l, int err);

	/* Optional: zero copy of pages (NULL = the transport always copies);
	 * semantics: tlm_lane_register_region() and friends in tlm.h. */
	int (*register_region)(struct tlm_lane *l, unsigned region, void *base, size_t len,
			       unsigned how, int timeout_ms);
	void (*unregister_regions)(struct tlm_lane *l);
	int (*wait_sent)(struct tlm_lane *l, uint64_t records, int timeout_ms);
	/* Optional: zero copy under a sealed lane (integrity; seal-place.c,
	 * the top), with the transport in byte mode. place: post the page of a
	 * TLM_PF_LIVE record (checked as send_pages would) so that it lands
	 * before the bytes written next. count_records: n records went into
	 * the bytes written next (what wait_sent counts). placed_page: where
	 * the page of a PLACED record lies in the memory we offered (NULL if
	 * not in it). */
	int (*place)(struct tlm_lane *l, const struct tlm_page_rec *rec);
	void (*count_records)(struct tlm_lane *l, unsigned n);
	const uint8_t *(*placed_page)(struct tlm_lane *l, const struct tlm_page_rec *rec);
	/* Optional: staged placement under a sealed lane (encrypt; seal-place.c,
	 * "staged placement"): register_region gets how | TLM__REG_STAGED and
	 * registers a staging area of page-sized slots instead of the region
	 * (the receiver offers its area; the sender registers its own, as
	 * many slots as both have). stage_slots: the slots usable (0 before
	 * registration). stage_get: the sender's slot, once no WRITE from it
	 * is in flight, to seal a page into. stage_put: post the RDMA WRITE
	 * of len bytes of slot into the peer's slot of the same number, so
	 * that it lands before the bytes written next. staged_page: the
	 * receiver's slot, holding len bytes of ciphertext (NULL if slot or
	 * len are out of range). placed_page as above, without the region
	 * being registered. */
	unsigned (*stage_slots)(struct tlm_lane *l);
	int (*stage_get)(struct tlm_lane *l, uint32_t slot, uint8_t **buf);
	int (*stage_put)(struct tlm_lane *l, uint32_t slot, uint32_t len);
	const uint8_t *(*staged_page)(struct tlm_lane *l, uint32_t slot, uint32_t len);
	const struct tlm_lane_dp *dp;
};

/* TLM_REG_SRC/DST and TLM_PF_LIVE: include/tlm/tlm.h (zero copy).
 * TLM__REG_STAGED: or'ed into how by lane.c on an encrypt lane. */
#define TLM__REG_STAGED 0x100u

/* lane.c APIs: */
const struct tlm_lane_ops *tlm__transport_find(const char *name);
int tlm__lane_inject_raw(struct tlm_lane *l, const void *buf, size_t n);
/* The transport's abort (above), where it has one. The lane fails with
 * err, but -ECONNABORTED for -ETIMEDOUT, which a transport's waits (and
 * seal.c's reads) take for "nothing yet, look again". */
void tlm__lane_abort(struct tlm_lane *l, int err);
/* Close a lane, sealed or not (its seal first). */
void tlm__lane_close(struct tlm_lane *l);
/* Each transport defines `const struct tlm_lane_ops tlm__<name>_ops`. */

/* kv.c APIs: transport_args ("k=v,k=v", values may be quoted; kv.c says
 * the whole syntax). next: the next item at *p into item (cap bytes),
 * quotes and a leading "--" dropped: 1, 0 at the end, -EINVAL when it does
 * not fit. split: item cut at its first '=', the value (NULL if none). */
int tlm__kv_next(const char **p, char *item, size_t cap);
char *tlm__kv_split(char *item);

/* log.c APIs: */
void tlm__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define tlm__err(...)  tlm__log(TLM_LOG_ERR, __VA_ARGS__)
#define tlm__warn(...) tlm__log(TLM_LOG_WARN, __VA_ARGS__)
#define tlm__info(...) tlm__log(TLM_LOG_INFO, __VA_ARGS__)
#define tlm__dbg(...)  tlm__log(TLM_LOG_DEBUG, __VA_ARGS__)

/* time helpers */
static inline uint64_t tlm__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint64_t tlm__now_ms(void) { return tlm__now_ns() / 1000000ull; }

/* Milliseconds left until deadline_ms (>= 0). */
static inline int tlm__left_ms(uint64_t deadline_ms)
{
	uint64_t now = tlm__now_ms();
	return now >= deadline_ms ? 0 : (int)(deadline_ms - now);
}

/* seal.c APIs (the lane calls of lane.c go there when l->seal is set): */
struct tlm__seal_params {
	uint8_t protect, cipher;
	uint8_t tx_key[32], rx_key[32];
};
/* cipher.c: the cipher this machine seals fastest with under protect
 * (TLM_PROTECT_*): AES-256-GCM where the CPU has AES instructions and runs
 * them fast, ChaCha20-Poly1305 where not (timed once per process;
 * TLM_SEAL_CIPHER=aes|chacha in the environment overrides, for tests and
 * benchmarks). */
uint8_t tlm__seal_cipher(uint8_t protect);
/* The choice from two timings of the same seal (0 = that one failed). */
uint8_t tlm__cipher_pick(uint64_t aes_ns, uint64_t chacha_ns);
const char *tlm__cipher_name(uint8_t cipher);
/* From now on every frame on l is sealed. 0 or -ENOMEM/-EIO. */
int tlm__seal_start(struct tlm_lane *l, const struct tlm__seal_params *p);
/* Frees what tlm__seal_start made (tlm__lane_close calls it). */
void tlm__seal_free(struct tlm_lane *l);
enum tlm_lane_mode tlm__seal_mode(const struct tlm_lane *l);
int tlm__seal_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode);
int tlm__seal_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n);
int tlm__seal_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms);
ssize_t tlm__seal_write(struct tlm_lane *l, const void *buf, size_t n);
ssize_t tlm__seal_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms);
int tlm__seal_shutdown(struct tlm_lane *l);
int tlm__seal_pollfd(const struct tlm_lane *l);
/* What failed the lane's receiving side, where its error alone does not
 * say (a staged page that failed authentication, with its place and
 * slot), or NULL; for the thread that got the error. */
const char *tlm__seal_why(const struct tlm_lane *l);
/* seal-place.c APIs. Zero copy on a sealed lane under integrity, on a transport with
 * place/placed_page (under encrypt: staged placement, below). tlm__seal_placing: the transport registered regions
 * (how: TLM_REG_SRC, LIVE records are placed from now on, with a MAC each;
 * TLM_REG_DST, PLACED records with a MAC are taken) or, how 0, dropped
 * them all. tlm__seal_places: LIVE records are placed (wait_sent counts).
 * tlm__seal_defer_macs: a placed page that does not match its MAC goes to
 * the sink flagged TLM__PF_UNCHECKED instead of failing the lane, and every
 * placed record that had a MAC keeps TLM__PF_MAC (for a sink that knows
 * which record of a page is the last: core/apply.c). */
bool tlm__seal_can_place(const struct tlm_lane *l);
void tlm__seal_placing(struct tlm_lane *l, unsigned how);
bool tlm__seal_places(const struct tlm_lane *l);
void tlm__seal_defer_macs(struct tlm_lane *l);
/* Staged placement on a sealed lane (encrypt, on a transport with the
 * stage ops): tlm__seal_can_stage says whether the lane can;
 * tlm__seal_placing above then also switches staging on and off (LIVE
 * records are sealed into staging slots and opened into place by the
 * receiver). tlm__seal_stage_wait: wait_sent for a staging lane, until the
 * receiver has opened every staged page of the first `records` records
 * handed to tlm__seal_send_pages (then each is in place, as a completed
 * WRITE is under integrity). 0, -ETIMEDOUT or the lane's error. */
bool tlm__seal_can_stage(const struct tlm_lane *l);
int tlm__seal_stage_wait(struct tlm_lane *l, uint64_t records, int timeout_ms);

/* msg.c APIs: framed messages over a lane's byte stream (handshake, engine
 * control). recv: -TLM_EFRAME if the frame is malformed or over max. */
int tlm__msg_send(struct tlm_lane *l, uint8_t type, const void *payload, uint32_t len);
int tlm__msg_recv(struct tlm_lane *l, uint8_t *type, void *buf, uint32_t max,
		  uint32_t *len, int timeout_ms);

/* auth.c APIs: */
int tlm__hmac(const struct tlm_psk *psk, const char *label, const uint8_t *sid,
	      uint16_t lane, const uint8_t *n1, const uint8_t *n2,
	      uint8_t mac[TLM_MAC_LEN]);
int tlm__random(void *buf, size_t n);
/* The AEAD key of one direction of one lane (dir 'C': client to server,
 * 'S': server to client), HKDF-SHA256 from the key and both nonces. */
int tlm__seal_key(const struct tlm_psk *psk, const uint8_t *sid, uint16_t lane,
		  const uint8_t *nonce_c, const uint8_t *nonce_s, uint8_t protect,
		  uint8_t cipher, char dir, uint8_t key[32]);

/* memcpy(dst, src, len), returning tlm_crc32c(crc, src, len): the crc is
 * of exactly the bytes written to dst (summed there, a chunk at a time
 * while it is in L1, after its copy). */
uint32_t tlm__crc32c_copy(uint32_t crc, void *dst, const void *src, size_t len);
int tlm__ct_equal(const void *a, const void *b, size_t n);

#endif /* TLM_CORE_INTERNAL_H */
