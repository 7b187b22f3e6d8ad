/* SPDX-License-Identifier: MIT */
/*
 * What the relay's files share (relay.c says which file holds what):
 * the control lane, the channels and their pumps (the guardian: guard.h).
 */
#ifndef TLM_QEMU_RELAY_INTERNAL_H
#define TLM_QEMU_RELAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "keepalive.h"
#include "tlm-internal.h"
#include "guard.h"
#include "relay.h"

#define PUMP_BUF (256u << 10)
#define MAGIC_QEVM 0x5145564du
#define MAGIC_MULTIFD 0x11223344u
#define MULTIFD_HDR 64
#define CTRL_LINE 256
#define CTRL_QUEUE 16
#define CTRL_NAME 96             /* a passive relay's socket name */
#define POLL_MS 100
#define DEFAULT_TIMEOUT_MS (10 * 60 * 1000)
#define DOWNTIME_MAX_MS 2000000       /* QEMU 7.2's MAX_MIGRATE_DOWNTIME */
#define DOWNTIME_DEFAULT_MS 300
#define CTRL_KEEPALIVE "KEEPALIVE"

struct ctrl {
	struct tlm_lane *lane;
	pthread_t th;
	bool started;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char q[CTRL_QUEUE][CTRL_LINE];
	unsigned head, n;
	int dead;                      /* <0 once the lane failed / ended */
	char why[CTRL_LINE];           /* and why, naming the peer ("" if not known) */
	char buf[CTRL_LINE * 2];
	size_t len;
	/* Keepalives out and the peer's silence (core/keepalive.c): the
	 * keepalive thread writes a KEEPALIVE line whenever this end has been
	 * quiet for a while; the reader thread notes every byte heard and,
	 * once judging, ends the lane when the peer has been silent for
	 * ka.timeout_ms. */
	struct tlm__ka ka;
	atomic_bool judging;
	char peer[CTRL_NAME + 48];     /* "the receiver at ADDR:PORT", for errors */
};

/* The control lane's messages (relay-ctrl.c lists them on the wire). */
enum ctrl_type {
	CTRL_NONE,              /* a line we do not know */
	CTRL_HELLO,
	CTRL_READY,
	CTRL_ERR,
	CTRL_FAILED,
	CTRL_RESULT,
	CTRL_BYE,
	CTRL_START,
};

struct ctrl_msg {
	enum ctrl_type type;
	int proto;              /* HELLO: the relay protocol */
	unsigned multifd;       /* HELLO: multifd channels */
	char name[CTRL_NAME];   /* HELLO of a passive relay: the socket's name */
	bool ok;                /* RESULT: "ok" (the receiver's QEMU runs) */
	char text[CTRL_LINE];   /* ERR, FAILED: why; RESULT: QEMU's status */
	char line[CTRL_LINE];   /* the line as it came */
};

struct chan {
	struct relay *r;
	unsigned idx;                  /* data lane: 1 main, 2 + multifd id */
	atomic_int fd;                 /* QEMU-side socket, -1 until known */
	struct tlm_lane *lane;
	pthread_t up, down;
	atomic_bool up_on, down_on;
	atomic_bool up_done, down_done;
	atomic_uint_fast64_t rd, wr;   /* socket bytes read / handed to the lane */
	uint8_t pre[MULTIFD_HDR];      /* bytes read to classify the channel */
	size_t pre_len;
};

struct relay {
	struct tlm_session *s;
	bool dest;
	bool passive;                  /* no QMP: a failure closes QEMU's channels
					* on both sides, so QEMU's migration fails
					* and its manager (libvirt) rolls back */
	bool own_path;                 /* r->path is our socket: unlink at stop */
	unsigned n;                    /* data lanes */
	struct chan ch[TLM_MAX_LANES];
	atomic_int stop;
	atomic_int err;
	pthread_mutex_t mu;
	char why[200];
	char dir[64];
	char path[108];
	int lfd;
	pthread_t acc;
	bool acc_on;
	atomic_int accepted;           /* source: channels classified */
	atomic_int closing;            /* tlm__relay_stop is joining the acceptor */
	int guard;                     /* source: socket to the guardian, or -1 */
	pthread_t drainer;             /* source, once failed: see relay_fail */
	bool drain_on;                 /* under mu */
	atomic_bool drained;           /* the drainer saw every channel close */
};

/* The capabilities the relay sets (relay.c): the first N_DST_CAPS on
 * both sides, all N_SRC_CAPS on the source. */
#define N_SRC_CAPS 4
#define N_DST_CAPS 2
extern const char *const tlm__relay_caps[N_SRC_CAPS];

/* relay.c APIs: */
void tlm__relay_res_err(struct tlm_relay_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
bool tlm__relay_cancelled(volatile sig_atomic_t *c);
struct tlm_session_cfg tlm__relay_session_cfg(const char *transport, const char *targs,
					      const struct tlm_psk *psk, unsigned lanes,
					      int protect);
int tlm__relay_set_multifd(struct tlm_qmp *q, bool source, int policy, unsigned n,
			   uint64_t bw);

/* relay-ctrl.c APIs: */
void tlm__relay_copy_str(char *dst, size_t len, const char *src);
/* The reader thread on lane; who is at the other end ("the receiver": the
 * lane's peer address is added) names it in errors; peer_timeout_ms: its
 * silence that ends the lane once judging (0 = TLM_RELAY_PEER_TIMEOUT_MS). */
int tlm__relay_ctrl_start(struct ctrl *c, struct tlm_lane *lane, const char *who,
			  int peer_timeout_ms);
/* Once both ends know the other speaks this protocol (HELLO checked):
 * keepalives out, and from now on a peer silent for its timeout ends the
 * lane (-ETIMEDOUT, why names it). */
int tlm__relay_ctrl_keepalive(struct ctrl *c);
void tlm__relay_ctrl_stop(struct ctrl *c);
/* The next message (1), none within timeout_ms (0), or the lane's error. */
int tlm__relay_ctrl_recv(struct ctrl *c, struct ctrl_msg *m, int timeout_ms);
/* The lane's error once it ended and nothing is queued, else 0. */
int tlm__relay_ctrl_dead(struct ctrl *c);
/* The lane ended because the peer was silent for its timeout. */
bool tlm__relay_ctrl_silent(struct ctrl *c);
/* What ended the lane (err: what ctrl_recv returned), naming the peer. */
const char *tlm__relay_ctrl_why(struct ctrl *c, int err);
void tlm__relay_ctrl_decode(const char *line, struct ctrl_msg *m);
int tlm__relay_ctrl_put(struct ctrl *c, const struct ctrl_msg *m);
/* A message of type with its text (ERR, FAILED, RESULT: the status). */
int tlm__relay_ctrl_say(struct ctrl *c, enum ctrl_type type, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* relay-pump.c APIs: */
int tlm__relay_unix_connect(const char *path);
int tlm__relay_chan_start(struct chan *c, bool up);

/* relay-chan.c APIs: */
void tlm__relay_fail(struct relay *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int tlm__relay_init(struct relay *r, struct tlm_session *s, bool dest);
int tlm__relay_listen(struct relay *r);
/* A passive relay (relay-passive.c): path is the socket libvirt named;
 * the source's lfd is already listening there (-1 on the destination). */
void tlm__relay_init_passive(struct relay *r, struct tlm_session *s, bool dest,
			     const char *path, int lfd);
int tlm__relay_accept_start(struct relay *r);
/* Every channel that opened has closed on both sides (and at least one
 * opened): 1; 0 while not; the relay's error once it failed. */
int tlm__relay_done(struct relay *r);
int tlm__relay_dest_start(struct relay *r);
int tlm__relay_wait_finished(struct relay *r, int timeout_ms);
int tlm__relay_drain(struct relay *r, int timeout_ms);
/* Source, once failed: until QEMU has closed every channel it opened
 * (0), or -ETIMEDOUT after timeout_ms. */
int tlm__relay_wait_drained(struct relay *r, int timeout_ms);
void tlm__relay_stop(struct relay *r, bool force);
/* A peer silent for its timeout takes nothing more: every data lane, and
 * the control lane, fails now (tlm__lane_abort), so no pump or keepalive
 * waits out a send timeout in a write the peer never takes and the stop
 * that follows is prompt. */
void tlm__relay_abort_lanes(struct relay *r);
void tlm__relay_take_stats(struct tlm_session *s, struct tlm_relay_result *res);

/* relay-src.c APIs: */
bool tlm__relay_restore_caps(struct tlm_qmp *q, const bool *caps);

#endif
