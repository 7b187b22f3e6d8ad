/* SPDX-License-Identifier: MIT */
/*
 * The relay's control lane (lane 0): text lines, one message each, read by
 * a thread of their own into a small queue so the flows can look for a
 * message without blocking (ctrl_recv with timeout 0), and written by the
 * thread that runs the flow and the keepalive thread (core/keepalive.c,
 * under its tx lock). Every message is encoded and decoded here
 * (ctrl_put, ctrl_say, ctrl_decode; KEEPALIVE by the keepalive thread,
 * and dropped by the reader):
 *
 *   HELLO <proto> <multifd> [<name>]
 *                            source: the relay protocol and channel count
 *                            (a passive relay: and its socket's name)
 *   READY                    receiver: its QEMU waits for the channels
 *   ERR <why>                receiver: it refuses the session
 *   FAILED <why>             either side: it gave up (its QEMU rolled back
 *                            or quit)
 *   RESULT ok <status>       receiver: its QEMU left inmigrate and runs
 *   BYE                      source: it has read the RESULT
 *   START                    passive source: QEMU opened its main channel
 *                            (the receiver connects the main channel now)
 *   KEEPALIVE                either side, from the HELLO on (the source
 *                            once it sent it, the receiver once it
 *                            accepted it): this end has said nothing else
 *                            for T/4 (at most 1 s), T its peer timeout
 *
 * Liveness: once judging (tlm__relay_ctrl_keepalive), the reader ends the
 * lane with -ETIMEDOUT when nothing at all has come from the peer for T,
 * and why says who and for how long. It judges only after a read that
 * found nothing, so a process that was stopped reads what waits for it
 * before it looks at the clock.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "relay-internal.h"

/* Truncating copy (lines from the peer may be longer than the slot). */
void tlm__relay_copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* The lane is over for the flows: err, and why (once; the first reason
 * stands). */
static void ctrl_end(struct ctrl *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ctrl_end(struct ctrl *c, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->mu);
	if (!c->dead) {
		c->dead = err;
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof(c->why), fmt, ap);
		va_end(ap);
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static void *ctrl_thread(void *arg)
{
	struct ctrl *c = arg;

	while (!atomic_load(&c->stop)) {
		ssize_t n = tlm_lane_read(c->lane, c->buf + c->len,
					  sizeof(c->buf) - c->len, 200);
		char *nl;

		if (n == -ETIMEDOUT) {
			uint64_t ms = tlm__ka_silent_ms(&c->ka);

			if (!atomic_load(&c->judging) || ms < (uint64_t)c->ka.timeout_ms)
				continue;
			ctrl_end(c, -ETIMEDOUT, "%s has sent nothing for %llu ms (peer timeout "
				 "%d ms): silent or unreachable", c->peer, (unsigned long long)ms,
				 c->ka.timeout_ms);
			break;
		}
		if (n <= 0) {
			n = n == 0 ? -TLM_EPEERCLOSED : n;
			ctrl_end(c, (int)n, "control lane to %s: %s", c->peer, tlm_strerror((int)n));
			break;
		}
		tlm__ka_heard(&c->ka);
		c->len += (size_t)n;
		while ((nl = memchr(c->buf, '\n', c->len))) {
			size_t l = (size_t)(nl - c->buf);

			*nl = '\0';
			pthread_mutex_lock(&c->mu);
			if (c->n < CTRL_QUEUE && strcmp(c->buf, CTRL_KEEPALIVE)) {
				tlm__relay_copy_str(c->q[(c->head + c->n) % CTRL_QUEUE], CTRL_LINE, c->buf);
				c->n++;
			}
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
		}
		if (c->len == sizeof(c->buf)) {
			/* A line longer than we ever send: the peer is not us. */
			ctrl_end(c, -TLM_EFRAME, "control lane to %s: a line longer than %zu bytes",
				 c->peer, sizeof(c->buf));
			break;
		}
	}
	return NULL;
}

int tlm__relay_ctrl_start(struct ctrl *c, struct tlm_lane *lane, const char *who,
			  int peer_timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->lane = lane;
	snprintf(c->peer, sizeof(c->peer), "%s at %s", who, lane->peer);
	tlm__ka_init(&c->ka, lane, peer_timeout_ms > 0 ? peer_timeout_ms :
		     TLM_RELAY_PEER_TIMEOUT_MS);
	c->ka.ping = CTRL_KEEPALIVE "\n";
	c->ka.ping_len = sizeof(CTRL_KEEPALIVE);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&c->th, NULL, ctrl_thread, c)) {
		tlm__ka_destroy(&c->ka);
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		return -EAGAIN;
	}
	c->started = true;
	return 0;
}

/* The keepalive thread could not send: the lane is as good as gone. */
static void ka_failed(void *arg, int err)
{
	struct ctrl *c = arg;

	ctrl_end(c, err, "control lane to %s: keepalive: %s", c->peer, tlm_strerror(err));
}

int tlm__relay_ctrl_keepalive(struct ctrl *c)
{
	tlm__ka_heard(&c->ka);
	atomic_store(&c->judging, true);
	return tlm__ka_start(&c->ka, NULL, ka_failed, c);
}

void tlm__relay_ctrl_stop(struct ctrl *c)
{
	if (!c->started)
		return;
	tlm__ka_destroy(&c->ka);
	atomic_store(&c->stop, 1);
	pthread_join(c->th, NULL);
	c->started = false;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
}

int tlm__relay_ctrl_dead(struct ctrl *c)
{
	int rc;

	pthread_mutex_lock(&c->mu);
	rc = c->n ? 0 : c->dead;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

bool tlm__relay_ctrl_silent(struct ctrl *c)
{
	bool silent;

	pthread_mutex_lock(&c->mu);
	silent = c->dead == -ETIMEDOUT;
	pthread_mutex_unlock(&c->mu);
	return silent;
}

const char *tlm__relay_ctrl_why(struct ctrl *c, int err)
{
	const char *why;

	pthread_mutex_lock(&c->mu);
	why = c->dead == err && c->why[0] ? c->why : tlm_strerror(err);
	pthread_mutex_unlock(&c->mu);
	return why;
}

/* One line into out: 1, 0 if none within timeout_ms, or the lane's error
 * once it is dead and nothing is queued. */
static int ctrl_get(struct ctrl *c, char *out, size_t len, int timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&c->mu);
	while (!c->n && !c->dead && timeout_ms > 0)
		if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
			break;
	if (c->n) {
		snprintf(out, len, "%s", c->q[c->head]);
		c->head = (c->head + 1) % CTRL_QUEUE;
		c->n--;
		rc = 1;
	} else if (c->dead) {
		rc = c->dead;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static int ctrl_send(struct ctrl *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int ctrl_send(struct ctrl *c, const char *fmt, ...)
{
	char line[CTRL_LINE];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	for (int i = 0; i < n; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[n++] = '\n';
	return tlm__ka_write(&c->ka, line, (size_t)n);
}

static const char *const keyword[] = {
	[CTRL_HELLO] = "HELLO", [CTRL_READY] = "READY", [CTRL_ERR] = "ERR",
	[CTRL_FAILED] = "FAILED", [CTRL_RESULT] = "RESULT ok", [CTRL_BYE] = "BYE", [CTRL_START] = "START",
};

static bool starts(const char *line, const char *word)
{
	return !strncmp(line, word, strlen(word));
}

void tlm__relay_ctrl_decode(const char *line, struct ctrl_msg *m)
{
	memset(m, 0, sizeof(*m));
	tlm__relay_copy_str(m->line, sizeof(m->line), line);
	if (sscanf(line, "HELLO %d %u", &m->proto, &m->multifd) == 2) {
		char fmt[32];

		m->type = CTRL_HELLO;
		snprintf(fmt, sizeof(fmt), "%%*s %%*s %%*s %%%ds", CTRL_NAME - 1);
		if (sscanf(line, fmt, m->name) != 1)
			m->name[0] = '\0';
	} else if (starts(line, "READY")) {
		m->type = CTRL_READY;
	} else if (starts(line, "ERR ")) {
		m->type = CTRL_ERR;
		tlm__relay_copy_str(m->text, sizeof(m->text), line + 4);
	} else if (starts(line, "FAILED")) {
		m->type = CTRL_FAILED;
		tlm__relay_copy_str(m->text, sizeof(m->text), line[6] ? line + 7 : "?");
	} else if (starts(line, "RESULT")) {
		/* a RESULT that is not ok ends the wait for one, as a failure */
		m->type = CTRL_RESULT;
		m->ok = starts(line, "RESULT ok ");
		if (m->ok)
			tlm__relay_copy_str(m->text, sizeof(m->text), line + 10);
	} else if (starts(line, "BYE")) {
		m->type = CTRL_BYE;
	} else if (!strcmp(line, "START")) {
		m->type = CTRL_START;
	}
}

int tlm__relay_ctrl_recv(struct ctrl *c, struct ctrl_msg *m, int timeout_ms)
{
	char line[CTRL_LINE];
	int rc = ctrl_get(c, line, sizeof(line), timeout_ms);

	if (rc > 0)
		tlm__relay_ctrl_decode(line, m);
	return rc;
}

int tlm__relay_ctrl_put(struct ctrl *c, const struct ctrl_msg *m)
{
	if (m->type == CTRL_HELLO)
		return ctrl_send(c, "HELLO %d %u%s%s", m->proto, m->multifd, m->name[0] ? " " : "",
				 m->name);
	if (m->type == CTRL_READY || m->type == CTRL_BYE || m->type == CTRL_START)
		return ctrl_send(c, "%s", keyword[m->type]);
	if (m->type > CTRL_NONE && m->type < CTRL_START)
		return ctrl_send(c, "%s %s", keyword[m->type], m->text);
	return -EINVAL;
}

int tlm__relay_ctrl_say(struct ctrl *c, enum ctrl_type type, const char *fmt, ...)
{
	struct ctrl_msg m = { .type = type };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m.text, sizeof(m.text), fmt, ap);
	va_end(ap);
	return tlm__relay_ctrl_put(c, &m);
}
