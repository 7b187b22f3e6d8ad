/* SPDX-License-Identifier: MIT */
/*
 * The relay for stock QEMU: QEMU migrates over its own multifd channels to a
 * private unix socket; tlm carries each channel over its own lane to the
 * destination host, where the mirror image reconnects them to the waiting
 * QEMU. docs/qemu.md has the whole picture and the QMP sequence.
 *
 * Lanes of the tlm session (all byte mode):
 *   lane 0        control: text lines of our own (HELLO, READY, FAILED, ...)
 *   lane 1        QEMU's main channel, both directions (return path)
 *   lane 2 + id   multifd channel `id` (from its MultiFDInit_t header)
 *
 * Both entry points block until the migration is over, drive QEMU through
 * the QMP handle they are given (used by the calling thread only), never
 * print, and return 0 on a completed migration or a negative error with a
 * readable reason in result->error. On any failure before the switchover the
 * source QEMU is cancelled and keeps running; the destination QEMU is told
 * to quit.
 */
#ifndef TLM_QEMU_RELAY_H
#define TLM_QEMU_RELAY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "tlm/tlm.h"
#include "qmp.h"

#define TLM_RELAY_PROTO 2           /* our control-lane protocol version (2:
				     * keepalives both ways) */
#define TLM_RELAY_PEER_TIMEOUT_MS 30000 /* a silent peer, by default */
#define TLM_RELAY_MAX_MULTIFD (TLM_MAX_LANES - 2)

enum tlm_relay_policy {
	TLM_RELAY_POLICY_QEMU,          /* QEMU's own precopy, untouched */
	TLM_RELAY_POLICY_TLM,           /* switch over after the first full pass */
	TLM_RELAY_POLICY_AUTOCONVERGE,  /* QEMU's auto-converge throttling */
};

/* "qemu", "one-pass", "auto-converge" -> policy, or -EINVAL. ("tlm" names
 * the engine inside QEMU, mode inside.) */
int tlm_relay_policy_parse(const char *s);
const char *tlm_relay_policy_name(int policy);

/* Called by the source about every progress_ms with QEMU's query-migrate. */
typedef void (*tlm_relay_progress_fn)(const struct tlm_qmp_migstat *st, void *arg);

struct tlm_relay_src_opts {
	struct tlm_qmp *qmp;            /* the source QEMU */
	const char *qmp_path;           /* where qmp was opened: if this process
					 * dies mid-migration, a guardian process
					 * reconnects there and rolls the source
					 * back (NULL: no guardian) */
	const char *transport;          /* NULL = "tcp" */
	const char *transport_args;
	const char *host, *port;        /* where `tlm receive` listens */
	const struct tlm_psk *psk;
	int protect;                    /* enum tlm_protect, as both ends name it */
	unsigned multifd;               /* multifd channels = data lanes - 1 */
	int policy;                     /* enum tlm_relay_policy */
	uint64_t max_bandwidth;         /* bytes/s for QEMU; 0 = 64 GiB/s */
	int timeout_ms;                 /* whole migration; 0 = 10 min */
	int peer_timeout_ms;            /* the peer silent this long on the control
					 * lane fails the migration; 0 = 30 s */
	int progress_ms;                /* 0 = 500 */
	tlm_relay_progress_fn progress;
	void *progress_arg;
	volatile sig_atomic_t *cancel;  /* set non-zero (e.g. by SIGINT) to abort */
};

struct tlm_relay_dst_opts {
	struct tlm_qmp *qmp;            /* the destination QEMU (-incoming defer) */
	const char *transport;
	const char *transport_args;
	const char *addr, *port;        /* listen here; port "0" picks one */
	const struct tlm_psk *psk;
	int protect;                    /* enum tlm_protect, as both ends name it */
	unsigned multifd;               /* expected; 0 = whatever the source says */
	int accept_timeout_ms;          /* for the source to connect; 0 = 10 min */
	int timeout_ms;                 /* migration once connected; 0 = 10 min */
	int peer_timeout_ms;            /* the peer silent this long on the control
					 * lane fails the migration; 0 = 30 s */
	void (*listening)(int port, void *arg); /* once listening; may be NULL */
	void *listening_arg;
	volatile sig_atomic_t *cancel;
};

struct tlm_relay_result {
	bool completed;                 /* QEMU completed and the destination runs */
	bool forced;                    /* policy tlm raised downtime-limit */
	bool qemu_converged;            /* QEMU reached the switchover on its own */
	char error[256];                /* why not, "" on success */
	char dst_status[32];            /* destination runstate after the migration */
	bool dst_quit;                  /* receiver: its QEMU was told to quit */
	struct tlm_qmp_migstat st;      /* the source's final query-migrate */
	int64_t wall_ms;                /* from `migrate` to the end, our clock */
	unsigned n_lanes;               /* data lanes (1 + multifd) */
	uint64_t lane_tx[TLM_MAX_LANES];/* per lane, index 0 = control */
	uint64_t lane_rx[TLM_MAX_LANES];
	uint64_t bytes;                 /* sum of data-lane bytes, both ways */
};

/* Passive relays (relay-passive.c): no QMP. Something else (libvirt)
 * owns both QEMUs and their migration; the source QEMU connects to a unix
 * socket on its host and the destination QEMU listens on the same path on
 * its own, and the two relays join them over the lanes: main channel and
 * return path on lane 1, multifd channel id on lane 2 + id. They end when
 * QEMU has closed every channel, and on any lane failure close every
 * channel so QEMU's migration fails and its manager rolls back. */
struct tlm_relay_out_opts {
	const char *unix_path;          /* where the source QEMU connects */
	const char *name;               /* the socket's name for the receiver
					 * (relay-in --unix-dir); NULL: the
					 * last part of unix_path */
	int socket_gid;                 /* group that may connect (mode 0660);
					 * -1: only the owner (0600) */
	const char *transport;          /* NULL = "tcp" */
	const char *transport_args;
	const char *host, *port;        /* where `tlm relay-in` listens */
	const struct tlm_psk *psk;
	int protect;                    /* enum tlm_protect, as both ends name it
					 * (0 = encrypt) */
	unsigned multifd;               /* QEMU's multifd channels (libvirt's
					 * parallel connections) */
	int accept_timeout_ms;          /* for QEMU's first channel; 0 = 10 min */
	int timeout_ms;                 /* migration once started; 0 = 10 min */
	int peer_timeout_ms;            /* the peer silent this long on the control
					 * lane fails the migration; 0 = 30 s */
	void (*ready)(const char *unix_path, void *arg); /* listening; may be NULL */
	void *ready_arg;
	volatile sig_atomic_t *cancel;
};

struct tlm_relay_in_opts {
	const char *unix_path;          /* the destination QEMU's socket, or */
	const char *unix_dir;           /* the directory of the one the source
					 * names (relay-out's name) */
	unsigned multifd;               /* expected; 0 = whatever the source says */
	int accept_timeout_ms;          /* for a session; 0 = 10 min, <0 forever */
	int timeout_ms;                 /* migration once the session is up;
					 * 0 = 10 min */
	int peer_timeout_ms;            /* the peer silent this long on the control
					 * lane fails the migration; 0 = 30 s */
	volatile sig_atomic_t *cancel;
};

/* Source host: listen on unix_path, connect the session, relay QEMU's
 * channels until they close. */
int tlm_relay_out(const struct tlm_relay_out_opts *o, struct tlm_relay_result *r);

/* Destination host: take one session from l (made with
 * tlm_relay_session_cfg), connect it to the waiting QEMU, relay until
 * every channel closed. */
int tlm_relay_in(const struct tlm_relay_in_opts *o, struct tlm_listener *l,
		 struct tlm_relay_result *r);

/* The session a passive relay uses (relay-in listens with it); protect
 * must be what the source's relay-out names, or its handshake is refused. */
struct tlm_session_cfg tlm_relay_session_cfg(const char *transport, const char *targs,
					     const struct tlm_psk *psk, unsigned multifd,
					     int protect);

/* Source side: connect to the receiver, configure the source QEMU, relay,
 * switch over. */
int tlm_relay_migrate(const struct tlm_relay_src_opts *o, struct tlm_relay_result *r);

/* Destination side: listen, take one session, configure the destination
 * QEMU, relay until it runs. */
int tlm_relay_receive(const struct tlm_relay_dst_opts *o, struct tlm_relay_result *r);

#endif /* TLM_QEMU_RELAY_H */
