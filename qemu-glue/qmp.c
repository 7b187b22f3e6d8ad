/* SPDX-License-Identifier: MIT */
/*
 * QMP client. The wire is a stream of JSON objects (QEMU ends each with
 * CRLF, but we do not rely on it): a json_tokener is fed whatever read()
 * returns and hands back one complete object at a time; bytes after that
 * object stay in rbuf for the next call.
 *
 * Message kinds, and where each goes:
 *   {"QMP": {...}}                    greeting, only expected by connect
 *   {"return": x, "id": n}            to the exec waiting for id n, else dropped
 *   {"error": {class, desc}, "id": n} likewise
 *   {"event": name, ...}              queued for tlm_qmp_wait_event
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tlm-internal.h"
#include "qmp.h"

/* A single QMP message bigger than this is treated as a broken peer
 * (query-qmp-schema, the largest QEMU 7.2 sends, is ~150 KiB). */
#define QMP_MAX_MSG (64u << 20)

struct tlm_qmp {
	int fd;
	int dead;                 /* 0, or the error that ended the connection */
	int64_t next_id;
	unsigned version;         /* major * 10000 + minor * 100 + micro */
	json_tokener *tok;
	size_t msg_bytes;         /* fed into tok for the object being parsed */
	char rbuf[16384];
	size_t roff, rlen;        /* unparsed bytes are rbuf[roff, rlen) */
	struct json_object **evq; /* oldest first */
	unsigned evn;
	char err[512];
	char errclass[64];
};

static void seterr(struct tlm_qmp *q, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(struct tlm_qmp *q, const char *cls, const char *fmt, ...)
{
	va_list ap;

	snprintf(q->errclass, sizeof(q->errclass), "%s", cls ? cls : "");
	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
}

/* The connection is unusable from now on; every later exec returns err. */
static int fail(struct tlm_qmp *q, int err)
{
	if (!q->dead) {
		q->dead = err;
		tlm__dbg("qmp: connection lost: %s", q->err);
	}
	return err;
}

int64_t tlm_qmp_get_i64(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_int64(v);
}

uint64_t tlm_qmp_get_u64(struct json_object *o, const char *key)
{
	int64_t v = tlm_qmp_get_i64(o, key);

	return v < 0 ? 0 : (uint64_t)v;
}

const char *tlm_qmp_get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int send_all(struct tlm_qmp *q, const char *buf, size_t n, uint64_t deadline)
{
	size_t off = 0;

	while (off < n) {
		struct pollfd p = { .fd = q->fd, .events = POLLOUT };
		ssize_t w;
		int r = poll(&p, 1, tlm__left_ms(deadline));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {
			seterr(q, NULL, "timed out sending a command");
			/* Half a command on the wire would garble the next one. */
			return off ? fail(q, -ETIMEDOUT) : -ETIMEDOUT;
		}
		w = send(q->fd, buf + off, n - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			seterr(q, NULL, "send: %s", strerror(errno));
			return fail(q, -errno);
		}
		off += (size_t)w;
	}
	return 0;
}

/* Next complete message, or -ETIMEDOUT at deadline, or the fatal error. */
static int read_msg(struct tlm_qmp *q, uint64_t deadline, struct json_object **out)
{
	for (;;) {
		while (q->roff < q->rlen) {
			size_t avail = q->rlen - q->roff;
			struct json_object *o;
			enum json_tokener_error jerr;

			o = json_tokener_parse_ex(q->tok, q->rbuf + q->roff, (int)avail);
			jerr = json_tokener_get_error(q->tok);
			if (o) {
				q->roff += json_tokener_get_parse_end(q->tok);
				json_tokener_reset(q->tok);
				q->msg_bytes = 0;
				if (!json_object_is_type(o, json_type_object)) {
					json_object_put(o);
					seterr(q, NULL, "QMP peer sent a non-object message");
					return fail(q, -EPROTO);
				}
				*out = o;
				return 0;
			}
			if (jerr != json_tokener_continue) {
				seterr(q, NULL, "QMP peer sent bad JSON: %s",
				       json_tokener_error_desc(jerr));
				return fail(q, -EPROTO);
			}
			q->msg_bytes += avail;
			q->roff = q->rlen;
			if (q->msg_bytes > QMP_MAX_MSG) {
				seterr(q, NULL, "QMP message over %u bytes", QMP_MAX_MSG);
				return fail(q, -EPROTO);
			}
		}
		q->roff = q->rlen = 0;

		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		int r = poll(&p, 1, tlm__left_ms(deadline));
		ssize_t n;

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ETIMEDOUT;
		n = read(q->fd, q->rbuf, sizeof(q->rbuf));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			seterr(q, NULL, "QMP read: %s", strerror(errno));
			return fail(q, -errno);
		}
		if (n == 0) {
			seterr(q, NULL, "QEMU closed the QMP connection");
			return fail(q, -ECONNRESET);
		}
		q->rlen = (size_t)n;
	}
}

static void enqueue_event(struct tlm_qmp *q, struct json_object *ev)
{
	if (q->evn == TLM_QMP_MAX_QUEUED) {
		tlm__warn("qmp: event queue full, dropping %s", tlm_qmp_get_str(q->evq[0], "event"));
		json_object_put(q->evq[0]);
		memmove(q->evq, q->evq + 1, (q->evn - 1) * sizeof(*q->evq));
		q->evn--;
	}
	q->evq[q->evn++] = ev;
}

/* Sorts out a message that is not the one being waited for. Takes o. */
static void stash(struct tlm_qmp *q, struct json_object *o)
{
	if (tlm_qmp_get_str(o, "event")) {
		enqueue_event(q, o);
		return;
	}
	/* A return for a command that already timed out, or a stray greeting. */
	tlm__dbg("qmp: dropping unexpected message %s",
		 json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

/* Parses whatever complete messages are already in rbuf (without reading
 * more) into the event queue, so that when a call returns, nothing complete
 * hides in our buffer while the caller poll()s the fd. A partial message
 * stays in the tokener; its rest makes the fd readable again. */
static void drain_buffered(struct tlm_qmp *q)
{
	struct json_object *o;

	while (!q->dead && q->roff < q->rlen && read_msg(q, 0, &o) == 0)
		stash(q, o);
}

int tlm_qmp_exec(struct tlm_qmp *q, const char *cmd, struct json_object *args,
		 struct json_object **ret, int timeout_ms)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
	struct json_object *req, *o = NULL, *v, *e;
	const char *s;
	char *line;
	int64_t id;
	int err;

	if (ret)
		*ret = NULL;
	q->err[0] = q->errclass[0] = '\0';
	if (q->dead) {
		json_object_put(args);
		seterr(q, NULL, "QMP connection is gone (%s)", strerror(-q->dead));
		return q->dead;
	}
	req = json_object_new_object();
	if (!req) {
		json_object_put(args);
		return -ENOMEM;
	}
	id = ++q->next_id;
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", args);
	json_object_object_add(req, "id", json_object_new_int64(id));
	s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	/* One send for the whole line: a peer that hangs up after the
	 * object should read as EOF, not as EPIPE on a separate CRLF. */
	line = s ? malloc(strlen(s) + 3) : NULL;
	if (line) {
		size_t n = (size_t)sprintf(line, "%s\r\n", s);

		err = send_all(q, line, n, deadline);
		free(line);
	} else {
		err = -ENOMEM;
	}
	json_object_put(req);
	if (err)
		return err;

	for (;;) {
		err = read_msg(q, deadline, &o);
		if (err == -ETIMEDOUT)
			seterr(q, NULL, "timed out after %d ms waiting for %s", timeout_ms, cmd);
		if (err)
			return err;
		if ((json_object_object_get_ex(o, "return", NULL) ||
		     json_object_object_get_ex(o, "error", NULL)) &&
		    json_object_object_get_ex(o, "id", &v) &&
		    json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id)
			break;
		stash(q, o);
	}
	drain_buffered(q);

	if (json_object_object_get_ex(o, "error", &e)) {
		const char *cls = tlm_qmp_get_str(e, "class"), *desc = tlm_qmp_get_str(e, "desc");

		seterr(q, cls ? cls : "GenericError", "%s: %s", cls ? cls : "GenericError",
		       desc ? desc : "(no description)");
		tlm__dbg("qmp: %s failed: %s", cmd, q->err);
		json_object_put(o);
		return -EREMOTEIO;
	}
	if (ret && json_object_object_get_ex(o, "return", &v))
		*ret = json_object_get(v);
	json_object_put(o);
	return 0;
}

static int event_matches(struct json_object *ev, const char *name)
{
	const char *n = tlm_qmp_get_str(ev, "event");

	return !name || (n && !strcmp(n, name));
}

int tlm_qmp_wait_event(struct tlm_qmp *q, const char *name, int timeout_ms,
		       struct json_object **ev)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
	struct json_object *o;
	unsigned i;
	int err;

	if (ev)
		*ev = NULL;
	q->err[0] = q->errclass[0] = '\0';
	for (i = 0; i < q->evn; i++) {
		if (event_matches(q->evq[i], name)) {
			o = q->evq[i];
			memmove(q->evq + i, q->evq + i + 1, (q->evn - i - 1) * sizeof(*q->evq));
			q->evn--;
			goto found;
		}
	}
	if (q->dead) {
		seterr(q, NULL, "QMP connection is gone (%s)", strerror(-q->dead));
		return q->dead;
	}
	for (;;) {
		err = read_msg(q, deadline, &o);
		if (err == -ETIMEDOUT)
			seterr(q, NULL, "timed out after %d ms waiting for event %s",
			       timeout_ms, name ? name : "(any)");
		if (err)
			return err;
		if (tlm_qmp_get_str(o, "event") && event_matches(o, name))
			break;
		stash(q, o);
	}
	drain_buffered(q);
found:
	if (ev)
		*ev = o;
	else
		json_object_put(o);
	return 0;
}

int tlm_qmp_drop_events(struct tlm_qmp *q)
{
	int n = (int)q->evn;

	while (q->evn)
		json_object_put(q->evq[--q->evn]);
	return n;
}

int tlm_qmp_pending(const struct tlm_qmp *q)
{
	return (int)q->evn;
}

const char *tlm_qmp_last_error(const struct tlm_qmp *q)
{
	return q->err;
}

const char *tlm_qmp_last_error_class(const struct tlm_qmp *q)
{
	return q->errclass;
}

int tlm_qmp_fd(const struct tlm_qmp *q)
{
	return q && q->fd >= 0 ? q->fd : -EBADF;
}

void tlm_qmp_close(struct tlm_qmp *q)
{
	if (!q)
		return;
	tlm_qmp_drop_events(q);
	free(q->evq);
	if (q->tok)
		json_tokener_free(q->tok);
	if (q->fd >= 0)
		close(q->fd);
	free(q);
}

static int unix_connect(struct tlm_qmp *q, const char *path, uint64_t deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (q->fd < 0)
		return -errno;
	for (;;) {
		if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		/* A non-blocking unix connect fails with EAGAIN while the
		 * listener's backlog is full: try again until the deadline. */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (!tlm__left_ms(deadline))
			return -ETIMEDOUT;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000000 }, NULL);
	}
}

int tlm_qmp_connect(const char *unix_path, int timeout_ms, struct tlm_qmp **out)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
	struct json_object *g = NULL, *qmp, *ver;
	struct tlm_qmp *q;
	int err;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = -1;
	q->evq = calloc(TLM_QMP_MAX_QUEUED, sizeof(*q->evq));
	q->tok = json_tokener_new();
	if (!q->evq || !q->tok) {
		err = -ENOMEM;
		goto fail;
	}
	err = unix_connect(q, unix_path, deadline);
	if (err) {
		/* Plain connect errors are the caller's to report (vmproc
		 * retries through ENOENT / ECONNREFUSED while QEMU starts). */
		tlm__dbg("qmp: connect %s: %s", unix_path, strerror(-err));
		goto fail;
	}
	err = read_msg(q, deadline, &g);
	if (err) {
		tlm__err("qmp: %s: no greeting: %s", unix_path,
			 err == -ETIMEDOUT ? "timed out" : q->err);
		goto fail;
	}
	if (!json_object_object_get_ex(g, "QMP", &qmp)) {
		tlm__err("qmp: %s: peer does not speak QMP", unix_path);
		err = -EPROTO;
		goto fail_greeting;
	}
	if (json_object_object_get_ex(qmp, "version", &ver) &&
	    json_object_object_get_ex(ver, "qemu", &ver))
		q->version = (unsigned)(tlm_qmp_get_i64(ver, "major") * 10000 +
					tlm_qmp_get_i64(ver, "minor") * 100 + tlm_qmp_get_i64(ver, "micro"));
	tlm__dbg("qmp: %s: QEMU %u.%u.%u", unix_path, q->version / 10000,
		 q->version / 100 % 100, q->version % 100);
	err = tlm_qmp_exec(q, "qmp_capabilities", NULL, NULL, tlm__left_ms(deadline));
	if (err) {
		tlm__err("qmp: %s: qmp_capabilities: %s", unix_path, q->err);
		goto fail_greeting;
	}
	json_object_put(g);
	*out = q;
	return 0;

fail_greeting:
	json_object_put(g);
fail:
	tlm_qmp_close(q);
	return err;
}

unsigned tlm_qmp_version(const struct tlm_qmp *q)
{
	return q->version;
}

/* ---- helpers ---- */

int tlm_qmp_query_status(struct tlm_qmp *q, char *status, size_t len, int *running)
{
	struct json_object *r, *v;
	const char *s;
	int err;

	err = tlm_qmp_exec(q, "query-status", NULL, &r, TLM_QMP_TIMEOUT_MS);
	if (err)
		return err;
	s = tlm_qmp_get_str(r, "status");
	if (!s) {
		seterr(q, NULL, "query-status without a status");
		json_object_put(r);
		return -EPROTO;
	}
	if (status && len)
		snprintf(status, len, "%s", s);
	if (running)
		*running = json_object_object_get_ex(r, "running", &v) &&
			   json_object_get_boolean(v);
	json_object_put(r);
	return 0;
}

int tlm_qmp_set_caps(struct tlm_qmp *q, const char *const *names, const bool *vals,
		     unsigned n)
{
	struct json_object *args = json_object_new_object();
	struct json_object *arr = json_object_new_array();
	unsigned i;

	if (!args || !arr) {
		json_object_put(args);
		json_object_put(arr);
		return -ENOMEM;
	}
	json_object_object_add(args, "capabilities", arr);
	for (i = 0; i < n; i++) {
		struct json_object *c = json_object_new_object();

		if (!c) {
			json_object_put(args);
			return -ENOMEM;
		}
		json_object_object_add(c, "capability", json_object_new_string(names[i]));
		json_object_object_add(c, "state", json_object_new_boolean(vals[i]));
		json_object_array_add(arr, c);
	}
	return tlm_qmp_exec(q, "migrate-set-capabilities", args, NULL, TLM_QMP_TIMEOUT_MS);
}

int tlm_qmp_get_caps(struct tlm_qmp *q, const char *const *names, bool *vals, unsigned n)
{
	struct json_object *r;
	int err = tlm_qmp_exec(q, "query-migrate-capabilities", NULL, &r, TLM_QMP_TIMEOUT_MS);

	if (err)
		return err;
	if (!json_object_is_type(r, json_type_array)) {
		seterr(q, NULL, "query-migrate-capabilities did not return a list");
		json_object_put(r);
		return -EPROTO;
	}
	for (unsigned i = 0; i < n; i++) {
		vals[i] = false;
		for (size_t k = 0; k < json_object_array_length(r); k++) {
			struct json_object *c = json_object_array_get_idx(r, k), *v;
			const char *name = tlm_qmp_get_str(c, "capability");

			if (name && !strcmp(name, names[i]) &&
			    json_object_object_get_ex(c, "state", &v))
				vals[i] = json_object_get_boolean(v);
		}
	}
	json_object_put(r);
	return 0;
}

int tlm_qmp_set_params(struct tlm_qmp *q, struct json_object *params)
{
	return tlm_qmp_exec(q, "migrate-set-parameters", params, NULL, TLM_QMP_TIMEOUT_MS);
}

/* cmd with the single string argument {key: val}. */
static int exec_str(struct tlm_qmp *q, const char *cmd, const char *key, const char *val)
{
	struct json_object *a = json_object_new_object();

	if (!a)
		return -ENOMEM;
	json_object_object_add(a, key, json_object_new_string(val));
	return tlm_qmp_exec(q, cmd, a, NULL, TLM_QMP_TIMEOUT_MS);
}

int tlm_qmp_migrate(struct tlm_qmp *q, const char *uri)
{
	return exec_str(q, "migrate", "uri", uri);
}

int tlm_qmp_migrate_incoming(struct tlm_qmp *q, const char *uri)
{
	return exec_str(q, "migrate-incoming", "uri", uri);
}

int tlm_qmp_migrate_continue(struct tlm_qmp *q)
{
	return exec_str(q, "migrate-continue", "state", "pre-switchover");
}

int tlm_qmp_migrate_cancel(struct tlm_qmp *q)
{
	return tlm_qmp_exec(q, "migrate_cancel", NULL, NULL, TLM_QMP_TIMEOUT_MS);
}

int tlm_qmp_query_migrate(struct tlm_qmp *q, struct tlm_qmp_migstat *st)
{
	struct json_object *r, *ram = NULL, *v;
	const char *s;
	int err;

	memset(st, 0, sizeof(*st));
	err = tlm_qmp_exec(q, "query-migrate", NULL, &r, TLM_QMP_TIMEOUT_MS);
	if (err)
		return err;
	s = tlm_qmp_get_str(r, "status");
	snprintf(st->status, sizeof(st->status), "%s", s ? s : "");
	st->total_time_ms = tlm_qmp_get_i64(r, "total-time");
	st->downtime_ms = tlm_qmp_get_i64(r, "downtime");
	st->expected_downtime_ms = tlm_qmp_get_i64(r, "expected-downtime");
	st->setup_time_ms = tlm_qmp_get_i64(r, "setup-time");
	s = tlm_qmp_get_str(r, "error-desc");
	snprintf(st->error_desc, sizeof(st->error_desc), "%s", s ? s : "");
	json_object_object_get_ex(r, "ram", &ram);
	st->ram_transferred = tlm_qmp_get_u64(ram, "transferred");
	st->ram_remaining = tlm_qmp_get_u64(ram, "remaining");
	st->ram_total = tlm_qmp_get_u64(ram, "total");
	st->ram_duplicate = tlm_qmp_get_u64(ram, "duplicate");
	st->ram_normal = tlm_qmp_get_u64(ram, "normal");
	st->ram_dirty_sync_count = tlm_qmp_get_u64(ram, "dirty-sync-count");
	st->ram_dirty_pages_rate = tlm_qmp_get_u64(ram, "dirty-pages-rate");
	st->ram_postcopy_requests = tlm_qmp_get_u64(ram, "postcopy-requests");
	st->ram_multifd_bytes = tlm_qmp_get_u64(ram, "multifd-bytes");
	if (ram && json_object_object_get_ex(ram, "mbps", &v))
		st->ram_mbps = json_object_get_double(v);
	json_object_put(r);
	return 0;
}

int tlm_qmp_wait_migrate(struct tlm_qmp *q, const char *const *until, int interval_ms,
			 int timeout_ms, struct tlm_qmp_migstat *st)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
	unsigned i, settle = 0;
	int err;

	for (;;) {
		err = tlm_qmp_query_migrate(q, st);
		if (err)
			return err;
		/* QEMU 7.2 sets "completed" before it computes total-time and
		 * downtime (migration_calculate_complete runs after the state
		 * change): a query in between reads both as 0. Give it up to a
		 * second to fill them in. */
		if (!strcmp(st->status, "completed") && !st->total_time_ms && settle++ < 100) {
			if (settle == 1)
				tlm__dbg("qmp: completed, but no total-time yet; asking again");
			nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000000 }, NULL);
			continue;
		}
		for (i = 0; until[i]; i++)
			if (!strcmp(st->status, until[i]))
				return 0;
		if (!tlm__left_ms(deadline)) {
			seterr(q, NULL, "migration still '%s' after %d ms", st->status,
			       timeout_ms);
			return -ETIMEDOUT;
		}
		int nap = tlm__left_ms(deadline) < interval_ms ? tlm__left_ms(deadline)
							       : interval_ms;
		nanosleep(&(struct timespec){ .tv_sec = nap / 1000,
					      .tv_nsec = (long)(nap % 1000) * 1000000 },
			  NULL);
	}
}
