/* SPDX-License-Identifier: MIT */
/*
 * tlm — Thread-based Live Migration over RDMA, DPDK and parallel TCP lanes.
 *
 * This header is the whole public contract of libtlm. Handles are opaque;
 * no libibverbs, rte_ or QEMU type appears here.
 *
 * Conventions:
 *  - every function returns 0, a count, or a negative errno (or one of the
 *    negative TLM_E* codes below); tlm_strerror() turns either into text;
 *  - the library never prints: it reports details (which version the peer
 *    speaks, which lane failed and why) through the log callback set with
 *    tlm_set_log_fn(); cli/ prints them;
 *  - every blocking call takes a timeout or uses the session's.
 */
#ifndef TLM_TLM_H
#define TLM_TLM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TLM_VERSION_STRING "0.1.0"

/* Errors of our own, beyond errno. Returned negated, like errno values. */
enum {
	TLM_EBASE = 4096,
	TLM_EAUTH,      /* peer failed authentication (wrong or missing PSK) */
	TLM_EVERSION,   /* peer speaks another wire version */
	TLM_ECRC,       /* a page record failed its crc32c */
	TLM_EFRAME,     /* malformed or truncated frame */
	TLM_ESESSION,   /* lane joined with an unknown session id / bad index */
	TLM_EPARAM,     /* session parameters the peer refused */
	TLM_EPEERCLOSED,/* peer closed the lane mid-stream (no FIN) */
	TLM_ENOTRANSPORT, /* transport not built into this libtlm */
	TLM_EPSK,       /* unusable pre-shared key (short, readable by others) */
	TLM_EABORTED,   /* migration aborted (by request or by the peer) */
	TLM_ENOTCONV,   /* policy did not converge within its cap */
	TLM_ESEAL,      /* a sealed frame failed authentication: modified,
			 * replayed, dropped or reordered in transit */
	TLM_ELAST
};

const char *tlm_strerror(int err);

/* Logging. level: 0 error, 1 warning, 2 info, 3 debug. The default sink
 * drops everything; the library never writes to stdout/stderr itself. */
enum { TLM_LOG_ERR, TLM_LOG_WARN, TLM_LOG_INFO, TLM_LOG_DEBUG };
typedef void (*tlm_log_fn)(int level, const char *msg, void *arg);
void tlm_set_log_fn(tlm_log_fn fn, void *arg);

/* ---- transports ---- */

/* Name of transport i (0..), or NULL past the last one built in. */
const char *tlm_transport_name(unsigned i);
/* 1 if the named transport is built into this libtlm, else 0. */
int tlm_transport_available(const char *name);

/* ---- pre-shared keys ---- */

#define TLM_PSK_MIN 16
#define TLM_PSK_MAX 256

struct tlm_psk {
	size_t len;
	uint8_t key[TLM_PSK_MAX];
};

/* Read a key file: a random key of at least TLM_PSK_MIN bytes written as
 * hex or base64 (surrounding whitespace ignored), as `tlm keygen` makes
 * it. Refuses (-TLM_EPSK, with a log line saying why) other text, keys
 * that are shorter or visibly not random (a repeating pattern, text
 * dressed up as base64), and files readable or writable by group/others. */
int tlm_psk_load(const char *path, struct tlm_psk *out);
/* A fresh random 32-byte key (tlm keygen; loopback runs where we start
 * both ends). */
int tlm_psk_random(struct tlm_psk *out);
/* Hex encode/decode (for handing a random key to a local child). */
int tlm_psk_to_hex(const struct tlm_psk *psk, char *buf, size_t buflen);
int tlm_psk_from_hex(const char *hex, struct tlm_psk *out);

/* ---- sessions and lanes ----
 *
 * A session is one control lane plus n data lanes between a connecting
 * side (usually the migration source) and an accepting side. Lane 0 is the
 * control lane; data lanes are 1..n. Every lane joins with the session id
 * and proves knowledge of the PSK by HMAC challenge-response (the
 * connecting side first) before the accepting side reads anything else
 * from it; after that every frame on it is sealed with keys of its own
 * (cfg.protect; docs/wire.md, docs/security.md).
 *
 * A lane starts in byte-stream mode; data lanes switch to page mode when
 * the session says so (lane_modes). */

enum tlm_lane_mode { TLM_MODE_BYTES = 0, TLM_MODE_PAGES = 1 };

#define TLM_MAX_LANES 64
#define TLM_MAX_REGIONS 16
#define TLM_REGION_NAME_MAX 200   /* bytes of a region name, without the NUL */

/* Capability bits negotiated in the handshake: a session has those both
 * sides offered, and the migration engine sends only what they allow (a
 * destination that did not offer ZERO_PAGE gets zero pages in full, one
 * without XBZRLE no deltas; one without DEVSTATE fails a source that has
 * device state), and its destination refuses records they do not allow. */
enum {
	TLM_CAP_ZERO_PAGE = 1u << 0,  /* zero-page records (no data) */
	TLM_CAP_XBZRLE    = 1u << 1,  /* delta-encoded page records */
	TLM_CAP_DEVSTATE  = 1u << 2,  /* device-state blob in stage 3 */
};
#define TLM_CAP_ALL (TLM_CAP_ZERO_PAGE | TLM_CAP_XBZRLE | TLM_CAP_DEVSTATE)

struct tlm_session_cfg {
	const char *transport;     /* "tcp", "rdma", "dpdk" */
	const char *transport_args;/* transport-specific, may be NULL */
	unsigned n_lanes;          /* data lanes, 1..TLM_MAX_LANES-1 */
	uint8_t lane_modes[TLM_MAX_LANES]; /* per data lane (index 1..n) */
	uint32_t page_size;        /* 4096 by default (0 = default) */
	unsigned n_regions;        /* regions described for page mode */
	uint64_t region_len[TLM_MAX_REGIONS];
	/* Region names (NULL or "" = unnamed), carried in the handshake. An
	 * accepting side that names its regions refuses a peer whose names
	 * differ, region by region. After tlm_accept() they are the peer's. */
	const char *region_name[TLM_MAX_REGIONS];
	/* Accepting side only: region i may be any size up to region_max[i]
	 * (memory the caller can still resize); 0 = exactly region_len[i]. */
	uint64_t region_max[TLM_MAX_REGIONS];
	uint32_t caps;             /* TLM_CAP_* offered (0: TLM_CAP_ALL); after
				    * tlm_connect/tlm_accept, those both offered */
	const struct tlm_psk *psk; /* required */
	int timeout_ms;            /* per blocking step; 0 = 10000 */
	/* What protects every frame after the handshake (docs/security.md);
	 * both ends must name the same. 0 = TLM_PROTECT_ENCRYPT. */
	int protect;
};

/* Lane protection after the handshake. */
enum tlm_protect {
	TLM_PROTECT_ENCRYPT = 0,   /* AEAD: frames secret and authenticated */
	TLM_PROTECT_INTEGRITY = 1, /* AEAD tag over clear text: authenticated */
	TLM_PROTECT_NONE = 2,      /* clear text, crc32c only: a trusted path */
};
/* "encrypt", "integrity", "none" (NULL for anything else), and back
 * (-EINVAL for an unknown name). */
const char *tlm_protect_name(int protect);
int tlm_protect_parse(const char *name);

struct tlm_listener;
struct tlm_session;
struct tlm_lane;

/* Accepting side (cfg, region names included, must stay valid while the
 * listener lives). addr may be NULL (any), "::" or an IPv4/IPv6 literal or
 * name; port "0" picks a free one (see tlm_listener_port). */
int tlm_listen(const struct tlm_session_cfg *cfg, const char *addr,
	       const char *port, struct tlm_listener **out);
int tlm_listener_port(const struct tlm_listener *l);
/* Waits up to timeout_ms for a session to start (a control lane that
 * authenticates), then up to the listener's cfg timeout_ms for its data
 * lanes to join, so polling with short timeouts never cuts a session in
 * half. Handshakes run side by side: connections that have not proved the
 * key within a fixed time, or are the oldest of too many pending ones, are
 * dropped and logged, as are lanes that fail authentication or name
 * another session, and the accept goes on (docs/security.md gives the
 * limits). On success the peer's parameters are in tlm_session_cfg_get(). */
int tlm_accept(struct tlm_listener *l, int timeout_ms, struct tlm_session **out);
void tlm_listener_close(struct tlm_listener *l);

/* Connecting side: control lane first, then every data lane. */
int tlm_connect(const struct tlm_session_cfg *cfg, const char *addr,
		const char *port, struct tlm_session **out);

const struct tlm_session_cfg *tlm_session_cfg_get(const struct tlm_session *s);
unsigned tlm_session_lanes(const struct tlm_session *s);       /* data lanes */
struct tlm_lane *tlm_session_lane(struct tlm_session *s, unsigned i); /* 0 = control */
const uint8_t *tlm_session_id(const struct tlm_session *s);    /* 16 bytes */
void tlm_session_close(struct tlm_session *s);

/* ---- page mode ----
 *
 * A page record: which page (region, index), the epoch in which its content
 * was read, flags, and len bytes of data (0..page_size) with a crc32c over
 * the data. The receiver places records into its regions through a sink. */

enum {
	TLM_PF_ZERO   = 1u << 0,  /* page is all zeroes; len == 0 */
	TLM_PF_XBZRLE = 1u << 1,  /* data is an XBZRLE delta against the last copy */
	TLM_PF_PS     = 1u << 2,  /* sent by the page saver: for the same page and
				   * epoch, the engine's destination keeps this
				   * copy over the checkpoint's (core/apply.c) */
	TLM_PF_PLACED = 1u << 3,  /* the transport already placed the data in the
				   * receiver's region (RDMA WRITE): data is NULL,
				   * len is what was placed, crc is 0 */
	TLM_PF_STAGED = 1u << 6,  /* with PLACED: the page crossed the wire
				   * encrypted, through the transport's staging
				   * buffers, and was opened (decrypted and
				   * authenticated) into place (--protect encrypt
				   * on RDMA lanes, core/seal.c) */
	TLM_PF_LAST   = 1u << 15, /* marks the end of a stream (no page) */
};

struct tlm_page_rec {
	uint64_t index;     /* page index within the region */
	uint32_t epoch;     /* epoch in which the content was read */
	uint16_t flags;     /* TLM_PF_* */
	uint16_t region;    /* region number */
	uint32_t len;       /* bytes of data, 0..page_size */
	uint32_t crc;       /* crc32c of data (sender fills with tlm_crc32c) */
	const void *data;
};

/* The receiving side's destination for page records. apply() gets each
 * record after the transport verified its crc; data points into transport
 * buffers valid only during the call. A negative return fails the lane. */
struct tlm_page_sink {
	int (*apply)(void *arg, const struct tlm_page_rec *rec);
	void *arg;
};

/* Send a burst of records (one or thousands). Blocks under back-pressure
 * until all are handed to the transport; returns n or a negative error. */
int tlm_lane_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n);
/* Receive what is available (waiting up to timeout_ms for the first record)
 * and hand each record to sink. Returns records delivered, 0 on timeout,
 * -TLM_ECRC / -TLM_EFRAME on bad input (nothing of the bad record applied),
 * -TLM_EPEERCLOSED if the peer vanished. A TLM_PF_LAST record is delivered
 * to the sink like any other. */
int tlm_lane_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms);

/* ---- zero copy (page mode) ----
 *
 * Transports that can move pages without copies (RDMA: one-sided WRITE)
 * take the regions once per session. Both calls return -EOPNOTSUPP on a
 * transport that cannot; the pages then go as copies. On a sealed lane
 * (core/seal.c) an RDMA lane places pages too: under INTEGRITY by WRITE
 * with a MAC per page, under ENCRYPT sealed into registered staging
 * buffers and opened into place at the receiver (TLM_PF_PLACED |
 * TLM_PF_STAGED; the regions themselves are then not pinned). */
enum { TLM_REG_SRC = 1, TLM_REG_DST = 2 };

/*
 * TLM_REG_DST (receiving side): offer [base, base + len) as region
 * `region` for the sender to place pages into directly. The peer is told
 * the outcome either way, so it never waits in vain. Records whose data
 * was placed arrive with TLM_PF_PLACED (data NULL).
 *
 * TLM_REG_SRC (sending side): [base, base + len) holds region `region`.
 * Returns 0 if records of it may from now on be sent with TLM_PF_LIVE, or
 * -EOPNOTSUPP (e.g. the peer offered nothing). May wait up to timeout_ms
 * for the peer's offer; registration pins the memory (RLIMIT_MEMLOCK).
 */
int tlm_lane_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			     unsigned how, int timeout_ms);
/* Forget every region of the lane; afterwards the peer can no longer place
 * anything in our memory. Call before freeing registered memory. */
void tlm_lane_unregister_regions(struct tlm_lane *l);
/* Wait until the first `records` records handed to tlm_lane_send_pages()
 * are complete at the peer (for LIVE records: read from our memory and
 * placed in the peer's). 0 at once on transports without zero copy. */
int tlm_lane_wait_sent(struct tlm_lane *l, uint64_t records, int timeout_ms);

/*
 * Sender-side record flag, never on the wire: data points at the page
 * inside a region registered with TLM_REG_SRC (live memory that may change
 * under the transport), and crc is not filled in. The transport reads the
 * page when it sends it (an RDMA WRITE from the region; a frame built from
 * it, crc computed then) and may read it again to retransmit, so what it
 * reads is never older than the moment the record was handed over.
 */
#define TLM_PF_LIVE (1u << 14)

/* ---- byte-stream mode ---- */

/* Write all n bytes (blocking); returns n or a negative error. */
ssize_t tlm_lane_write(struct tlm_lane *l, const void *buf, size_t n);
/* Read up to n bytes: >0 bytes, 0 at the peer's orderly end of stream
 * (tlm_lane_shutdown), -ETIMEDOUT, -TLM_EPEERCLOSED if it vanished. */
ssize_t tlm_lane_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms);
/* Orderly end of our direction of the stream. */
int tlm_lane_shutdown(struct tlm_lane *l);
/* Push out anything batched. */
int tlm_lane_flush(struct tlm_lane *l);

/* Switch a lane's mode (both ends must agree; the session does it for data
 * lanes from lane_modes). */
int tlm_lane_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode);
/* Bytes carried (payload) in each direction. */
void tlm_lane_stats(const struct tlm_lane *l, uint64_t *tx_bytes, uint64_t *rx_bytes);
/* A file descriptor that becomes readable when the lane may have input, or
 * -1 if the transport has none (poll with timeouts then). */
int tlm_lane_pollfd(const struct tlm_lane *l);

/* ---- helpers ---- */

uint32_t tlm_crc32c(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* TLM_TLM_H */
