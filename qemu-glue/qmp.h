/* SPDX-License-Identifier: MIT */
/*
 * A small QMP (QEMU Machine Protocol) client over a unix socket, for the
 * relay and for tests. All JSON goes through json-c.
 *
 * Conventions as in the rest of tlm: 0 or a negative errno; every wait takes
 * a timeout and ends in -ETIMEDOUT; nothing is printed, details go to
 * tlm__log() and to tlm_qmp_last_error().
 *
 * One handle is used by one thread at a time. Commands carry an "id" and a
 * return is matched by it, so a late return of a command that timed out is
 * recognised and dropped instead of being taken for the next command's.
 * Events that arrive while a command waits for its return are queued (up to
 * TLM_QMP_MAX_QUEUED, oldest dropped first) and handed out by
 * tlm_qmp_wait_event().
 *
 * Once the connection fails (QEMU exited: -EPIPE / -ECONNRESET, or sent
 * something that is not QMP: -EPROTO) the handle is dead and every later
 * exec returns that same error at once; events queued before the failure can
 * still be taken.
 */
#ifndef TLM_QEMU_QMP_H
#define TLM_QEMU_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;
struct tlm_qmp;

#define TLM_QMP_MAX_QUEUED 1024

/* Connects to QEMU's QMP server socket, reads the greeting and negotiates
 * capabilities (qmp_capabilities). -ENOENT: no such path; -ECONNREFUSED:
 * nobody listening (or not a socket); -ETIMEDOUT: no greeting/answer within
 * timeout_ms; -EPROTO: the peer does not speak QMP. */
int tlm_qmp_connect(const char *unix_path, int timeout_ms, struct tlm_qmp **out);

/* Runs cmd with args (may be NULL; ownership is taken even on failure). On
 * success *ret (if ret is not NULL) is the "return" value, which the caller
 * json_object_put()s. A QMP error reply gives -EREMOTEIO with
 * "Class: description" in tlm_qmp_last_error(). */
int tlm_qmp_exec(struct tlm_qmp *q, const char *cmd, struct json_object *args,
		 struct json_object **ret, int timeout_ms);

/* The last failure in readable form ("CommandNotFound: The command foo has
 * not been found", "timed out waiting for ..."); "" if none. The class alone
 * (QMP errors only, else "") from tlm_qmp_last_error_class(). Both stay
 * valid until the next call on q. */
const char *tlm_qmp_last_error(const struct tlm_qmp *q);
const char *tlm_qmp_last_error_class(const struct tlm_qmp *q);

/* Waits for an event called name (NULL = any). Queued events are looked at
 * first, oldest first; events of other names stay queued. On success *ev (if
 * not NULL) is the whole event object ({"event","data","timestamp"}), which
 * the caller puts. */
int tlm_qmp_wait_event(struct tlm_qmp *q, const char *name, int timeout_ms,
		       struct json_object **ev);

/* Drops all queued events; returns how many were dropped. */
int tlm_qmp_drop_events(struct tlm_qmp *q);

/* Number of queued events. Check it before poll()ing tlm_qmp_fd: events
 * that came in with a command's return are already queued and will not make
 * the fd readable again. (No complete message is ever left unparsed in the
 * handle's buffer when a call returns.) */
int tlm_qmp_pending(const struct tlm_qmp *q);

/* The socket, for poll(); readable means QEMU sent something (call
 * tlm_qmp_wait_event with timeout 0 to take it). -EBADF when closed. */
int tlm_qmp_fd(const struct tlm_qmp *q);

void tlm_qmp_close(struct tlm_qmp *q);

/* Members of a JSON object: 0 (a negative number also 0 for u64) or NULL
 * when o is NULL or has no such member of that type. */
int64_t tlm_qmp_get_i64(struct json_object *o, const char *key);
uint64_t tlm_qmp_get_u64(struct json_object *o, const char *key);
const char *tlm_qmp_get_str(struct json_object *o, const char *key);

/* QEMU's version from the greeting, major * 10000 + minor * 100 + micro
 * (70222 for 7.2.22), so callers can work around version quirks. */
unsigned tlm_qmp_version(const struct tlm_qmp *q);

/* ---- helpers for the migration relay ---- */

#define TLM_QMP_TIMEOUT_MS 10000

/* query-status: status ("running", "paused", "prelaunch", "inmigrate",
 * "postmigrate", "finish-migrate", ...) copied into status (truncated to len),
 * *running set if running is not NULL. Either output may be NULL. */
int tlm_qmp_query_status(struct tlm_qmp *q, char *status, size_t len, int *running);

/* migrate-set-capabilities with n (name, state) pairs. */
int tlm_qmp_set_caps(struct tlm_qmp *q, const char *const *names, const bool *vals,
		     unsigned n);

/* query-migrate-capabilities: the state of each of the n names (false for
 * a name this QEMU does not list). */
int tlm_qmp_get_caps(struct tlm_qmp *q, const char *const *names, bool *vals, unsigned n);

/* migrate-set-parameters; params (a JSON object such as
 * {"multifd-channels": 4, "max-bandwidth": 10737418240}) is taken. */
int tlm_qmp_set_params(struct tlm_qmp *q, struct json_object *params);

/* The migration commands, with TLM_QMP_TIMEOUT_MS. uri: "unix:PATH",
 * "tcp:HOST:PORT", ... migrate and migrate-incoming return once QEMU has
 * started (the destination is listening when migrate_incoming returns);
 * progress is for query-migrate. continue: leaves the "pre-switchover" pause
 * (capability pause-before-switchover). */
int tlm_qmp_migrate(struct tlm_qmp *q, const char *uri);
int tlm_qmp_migrate_incoming(struct tlm_qmp *q, const char *uri);
int tlm_qmp_migrate_continue(struct tlm_qmp *q);
int tlm_qmp_migrate_cancel(struct tlm_qmp *q);

/* query-migrate, flattened. Fields QEMU leaves out are 0 / "". status is ""
 * before any migration ran (QEMU then returns {}). QEMU 7.2 reports
 * "completed" a moment before it fills in total-time and downtime (both read
 * 0 until then): tlm_qmp_wait_migrate waits that moment out, a caller of
 * tlm_qmp_query_migrate must do it itself. */
struct tlm_qmp_migstat {
	char status[32];          /* "setup", "active", "pre-switchover",
				   * "device", "completed", "failed", ... */
	int64_t total_time_ms;    /* so far while active, final once completed */
	int64_t downtime_ms;      /* measured by the source, completed only */
	int64_t expected_downtime_ms;
	int64_t setup_time_ms;
	uint64_t ram_transferred;
	uint64_t ram_remaining;
	uint64_t ram_total;
	uint64_t ram_duplicate;   /* zero pages */
	uint64_t ram_normal;      /* full pages sent */
	uint64_t ram_dirty_sync_count;
	uint64_t ram_dirty_pages_rate;
	uint64_t ram_postcopy_requests;
	uint64_t ram_multifd_bytes;  /* page data that went over multifd channels */
	double ram_mbps;
	char error_desc[256];     /* "error-desc" when failed */
};
int tlm_qmp_query_migrate(struct tlm_qmp *q, struct tlm_qmp_migstat *st);

/* Polls query-migrate every interval_ms until its status is one of until[]
 * (NULL-terminated, e.g. {"completed", "failed", "cancelled", NULL}).
 * 0 with st filled, or -ETIMEDOUT with st holding the last answer. */
int tlm_qmp_wait_migrate(struct tlm_qmp *q, const char *const *until, int interval_ms,
			 int timeout_ms, struct tlm_qmp_migstat *st);

#endif /* TLM_QEMU_QMP_H */
