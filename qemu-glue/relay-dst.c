/* SPDX-License-Identifier: MIT */
/*
 * The relay's destination side, tlm_relay_receive, as named steps.
 *
 * Destination side: listen, accept one session, read HELLO (protocol
 * version and channel count), configure the QEMU (multifd, same N),
 * migrate-incoming on a private socket, connect the main channel FIRST
 * (QEMU 7.2 takes the first connection as main), then each multifd channel
 * when its first bytes arrive (QEMU reads the 64-byte header of a new
 * multifd channel with a blocking read in its main loop, so it must not be
 * connected before its header can follow), READY; then relay until the QEMU
 * leaves "inmigrate" and report RESULT.
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay-internal.h"

/* The QEMU at the other end of the QMP socket, or -1. */
static pid_t qmp_peer_pid(struct tlm_qmp *q)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	int fd = tlm_qmp_fd(q);

	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) || uc.pid <= 0)
		return -1;
	return uc.pid;
}

/* Not exited (a zombie has exited; its parent reaps it). */
static bool pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static bool wait_gone(pid_t pid, int ms)
{
	for (; ms > 0; ms -= 50) {
		if (!pid_alive(pid))
			return true;
		usleep(50000);
	}
	return !pid_alive(pid);
}

static void dest_quit(struct tlm_qmp *q, struct tlm_relay_result *res)
{
	/* The source cancelled or vanished: this QEMU can never run the VM.
	 * QEMU 7.2 can hang in its incoming-migration cleanup with the main
	 * loop stuck (quit then never runs), so a QEMU still there after the
	 * quit is signalled; it holds nothing but a half-loaded VM. */
	pid_t pid = qmp_peer_pid(q);

	res->dst_quit = true;
	if (tlm_qmp_exec(q, "quit", NULL, NULL, 3000))
		tlm__dbg("quit: %s", tlm_qmp_last_error(q));
	if (pid <= 0 || wait_gone(pid, 5000))
		return;
	tlm__warn("destination QEMU (pid %d) did not quit; sending SIGTERM", (int)pid);
	kill(pid, SIGTERM);
	if (wait_gone(pid, 3000))
		return;
	tlm__warn("destination QEMU (pid %d) ignores SIGTERM; sending SIGKILL", (int)pid);
	kill(pid, SIGKILL);
}

/* One incoming migration: what its steps share. */
struct dst {
	const struct tlm_relay_dst_opts *o;
	struct tlm_relay_result *res;
	struct tlm_qmp *q;
	struct tlm_session *s;
	struct ctrl ctrl;
	struct relay r;
	bool relay_on;
	char status[32];
};

/* The QEMU waits for an incoming migration (-incoming defer). */
static int dst_check(struct dst *m)
{
	int rc = tlm_qmp_query_status(m->q, m->status, sizeof(m->status), NULL);

	if (rc) {
		tlm__relay_res_err(m->res, "destination QEMU: query-status: %s",
				   tlm_qmp_last_error(m->q));
		return rc;
	}
	if (strcmp(m->status, "inmigrate")) {
		tlm__relay_res_err(m->res, "destination QEMU is '%s', not 'inmigrate' (start "
				   "it with -incoming defer)", m->status);
		return -EINVAL;
	}
	return 0;
}

/* Listen and take one session. Lanes that fail authentication (wrong key,
 * garbage) are refused and logged by tlm_accept, which goes on waiting
 * for a good session. */
static int dst_accept(struct dst *m)
{
	const struct tlm_relay_dst_opts *o = m->o;
	int acc_timeout = o->accept_timeout_ms > 0 ? o->accept_timeout_ms : DEFAULT_TIMEOUT_MS;
	struct tlm_session_cfg cfg = tlm__relay_session_cfg(o->transport, o->transport_args,
							    o->psk, o->multifd ? o->multifd + 1 : 0,
							    o->protect);
	struct tlm_listener *l = NULL;
	int rc = tlm_listen(&cfg, o->addr, o->port, &l);

	if (rc) {
		tlm__relay_res_err(m->res, "cannot listen on %s:%s: %s", o->addr ? o->addr : "*",
				   o->port, tlm_strerror(rc));
		return rc;
	}
	if (o->listening)
		o->listening(tlm_listener_port(l), o->listening_arg);
	for (uint64_t end = tlm__now_ms() + (uint64_t)acc_timeout;;) {
		int left = tlm__left_ms(end);

		rc = tlm_accept(l, left < 1000 ? left : 1000, &m->s);
		if (rc != -ETIMEDOUT || !left)
			break;
		if (tlm__relay_cancelled(o->cancel)) {
			rc = -TLM_EABORTED;
			break;
		}
	}
	tlm_listener_close(l);
	if (rc) {
		tlm__relay_res_err(m->res, "no migration session arrived: %s",
				   rc == -TLM_EABORTED ? "interrupted" : tlm_strerror(rc));
		dest_quit(m->q, m->res);
	}
	return rc;
}

/* The source's HELLO: our protocol, and as many multifd channels as the
 * session has data lanes for. The source hears why not (ERR). */
static int dst_hello(struct dst *m, unsigned n)
{
	struct ctrl_msg msg;
	int rc = tlm__relay_ctrl_recv(&m->ctrl, &msg, 30000);

	if (rc <= 0) {
		tlm__relay_res_err(m->res, "no HELLO from the source: %s",
				   rc ? tlm__relay_ctrl_why(&m->ctrl, rc) : "timed out");
		return rc ? rc : -ETIMEDOUT;
	}
	if (msg.type != CTRL_HELLO) {
		tlm__relay_res_err(m->res, "the source does not speak the relay protocol "
				   "('%.40s')", msg.line);
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "bad HELLO");
		return -EPROTO;
	}
	if (msg.proto != TLM_RELAY_PROTO) {
		tlm__relay_res_err(m->res, "the source speaks relay protocol %d, this side %d",
				   msg.proto, TLM_RELAY_PROTO);
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "receiver speaks relay protocol %d, not %d",
				    TLM_RELAY_PROTO, msg.proto);
		return -TLM_EVERSION;
	}
	if (msg.multifd + 1 != n || msg.multifd < 1) {
		tlm__relay_res_err(m->res, "the source announced %u multifd channels over %u "
				   "data lanes", msg.multifd, n);
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "%u multifd channels need %u data lanes, "
				    "not %u", msg.multifd, msg.multifd + 1, n);
		return -TLM_EPARAM;
	}
	rc = tlm__relay_ctrl_keepalive(&m->ctrl);
	if (rc)
		tlm__relay_res_err(m->res, "no thread for the keepalive");
	return rc;
}

/* The QEMU set for multifd and listening on our private socket, its main
 * channel connected; READY tells the source to start. */
static int dst_start(struct dst *m, unsigned n)
{
	char uri[160];
	int rc = tlm__relay_set_multifd(m->q, false, 0, n - 1, 0);

	if (rc) {
		tlm__relay_res_err(m->res, "destination QEMU refused the migration settings: %s",
				   tlm_qmp_last_error(m->q));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "destination QEMU refused the settings: %s",
				    tlm_qmp_last_error(m->q));
		return rc;
	}
	rc = tlm__relay_init(&m->r, m->s, true);
	if (rc) {
		tlm__relay_res_err(m->res, "private socket dir: %s", strerror(-rc));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "receiver setup");
		return rc;
	}
	m->relay_on = true;
	snprintf(uri, sizeof(uri), "unix:%s", m->r.path);
	rc = tlm_qmp_migrate_incoming(m->q, uri);
	if (rc) {
		tlm__relay_res_err(m->res, "destination QEMU: migrate-incoming: %s",
				   tlm_qmp_last_error(m->q));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "destination QEMU: migrate-incoming failed");
		return rc;
	}
	rc = tlm__relay_dest_start(&m->r);
	if (rc) {
		tlm__relay_res_err(m->res, "connect to the destination QEMU: %s", strerror(-rc));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_ERR, "receiver cannot reach its QEMU");
		return rc;
	}
	rc = tlm__relay_ctrl_put(&m->ctrl, &(struct ctrl_msg){ .type = CTRL_READY });
	if (rc)
		tlm__relay_res_err(m->res, "control lane: %s", tlm_strerror(rc));
	return rc;
}

/* One look at the incoming migration: 1 once the QEMU left inmigrate
 * running (or paused), 0 to look again, or the error that ends it. */
static int dst_step(struct dst *m, uint64_t deadline, int timeout)
{
	struct ctrl_msg msg;
	int rc = tlm_qmp_query_status(m->q, m->status, sizeof(m->status), NULL), crc;

	if (rc) {
		/* QEMU exits by itself when the source cancels: say why. */
		if (tlm__relay_ctrl_recv(&m->ctrl, &msg, 1000) > 0 && msg.type == CTRL_FAILED)
			tlm__relay_res_err(m->res, "the source cancelled: %s", msg.text);
		tlm__relay_res_err(m->res, "destination QEMU went away (%s)",
				   tlm_qmp_last_error(m->q));
		return rc;
	}
	if (strcmp(m->status, "inmigrate")) {
		if (!strcmp(m->status, "running") || !strcmp(m->status, "paused"))
			return 1;
		tlm__relay_res_err(m->res, "destination QEMU ended in state '%s'", m->status);
		return -EIO;
	}
	if (tlm__relay_cancelled(m->o->cancel)) {
		tlm__relay_res_err(m->res, "interrupted");
		return -TLM_EABORTED;
	}
	crc = tlm__relay_ctrl_recv(&m->ctrl, &msg, 0);
	if (crc > 0 && msg.type == CTRL_FAILED) {
		tlm__relay_res_err(m->res, "the source cancelled: %s", msg.text);
		return -TLM_EABORTED;
	}
	if (crc < 0) {
		tlm__relay_res_err(m->res, "%s", tlm__relay_ctrl_why(&m->ctrl, crc));
		return crc;
	}
	if (atomic_load(&m->r.err)) {
		tlm__relay_res_err(m->res, "%s", m->r.why);
		return atomic_load(&m->r.err);
	}
	if (tlm__now_ms() >= deadline) {
		tlm__relay_res_err(m->res, "timed out after %d s", timeout / 1000);
		return -ETIMEDOUT;
	}
	usleep(50000);
	return 0;
}

/* The QEMU runs: RESULT to the source, and its BYE before the lanes go. */
static void dst_finish(struct dst *m, uint64_t t0)
{
	struct ctrl_msg msg;
	int rc;

	snprintf(m->res->dst_status, sizeof(m->res->dst_status), "%s", m->status);
	rc = tlm__relay_wait_finished(&m->r, 10000);
	if (rc)
		tlm__dbg("relay: channels not all closed after the switchover (%d)", rc);
	m->res->wall_ms = (int64_t)(tlm__now_ms() - t0);
	tlm__relay_take_stats(m->s, m->res);
	m->res->completed = true;
	rc = tlm__relay_ctrl_say(&m->ctrl, CTRL_RESULT, "%s", m->status);
	if (rc)
		tlm__warn("could not tell the source the result: %s", tlm_strerror(rc));
	while (tlm__relay_ctrl_recv(&m->ctrl, &msg, 5000) > 0 && msg.type != CTRL_BYE)
		;
	tlm__relay_stop(&m->r, false);
	m->relay_on = false;
}

int tlm_relay_receive(const struct tlm_relay_dst_opts *o, struct tlm_relay_result *res)
{
	struct dst m = { .o = o, .res = res, .q = o->qmp };
	int rc, timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	uint64_t t0, deadline;
	unsigned n;

	memset(res, 0, sizeof(*res));
	if (o->multifd > TLM_RELAY_MAX_MULTIFD) {
		tlm__relay_res_err(res, "multifd channels: %u, must be 1..%d", o->multifd,
				   TLM_RELAY_MAX_MULTIFD);
		return -EINVAL;
	}
	rc = dst_check(&m);
	if (!rc)
		rc = dst_accept(&m);
	if (rc)
		return rc;
	n = tlm_session_lanes(m.s);
	rc = tlm__relay_ctrl_start(&m.ctrl, tlm_session_lane(m.s, 0), "the source",
				   o->peer_timeout_ms);
	if (rc)
		goto out_session;
	rc = dst_hello(&m, n);
	if (!rc)
		rc = dst_start(&m, n);
	if (rc)
		goto out_fail;
	t0 = tlm__now_ms();
	deadline = t0 + (uint64_t)timeout;
	while (!(rc = dst_step(&m, deadline, timeout)))
		;
	if (rc < 0)
		goto out_fail;
	dst_finish(&m, t0);
	rc = 0;
	goto out_ctrl;

out_fail:
	if (m.relay_on && tlm__relay_ctrl_silent(&m.ctrl))
		tlm__relay_abort_lanes(&m.r);
	tlm__relay_ctrl_say(&m.ctrl, CTRL_FAILED, "%s", res->error);
	if (m.relay_on) {
		tlm__relay_stop(&m.r, true);
		m.relay_on = false;
	}
	dest_quit(m.q, res);
	tlm__relay_take_stats(m.s, res);
	if (!rc)
		rc = -EIO;
out_ctrl:
	tlm__relay_ctrl_stop(&m.ctrl);
out_session:
	tlm_session_close(m.s);
	return rc;
}
