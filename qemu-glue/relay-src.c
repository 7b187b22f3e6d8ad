/* SPDX-License-Identifier: MIT */
/*
 * The relay's source side, tlm_relay_migrate, as named steps.
 *
 * Source side, in order:
 *   1. check the QEMU (running, no migration under way), connect the tlm
 *      session (control lane + 1 + N byte lanes), send HELLO, wait READY;
 *   2. migrate-set-capabilities multifd, events, pause-before-switchover
 *      (+ auto-converge per policy); migrate-set-parameters multifd-channels
 *      N, max-bandwidth, downtime-limit;
 *   3. listen on <private 0700 dir>/mig.sock, `migrate unix:...`; the
 *      acceptor thread classifies each connection by its first bytes (QEVM:
 *      main channel -> lane 1; MultiFDInit_t magic: multifd channel id ->
 *      lane 2 + id) and starts its two pumps;
 *   4. poll query-migrate: progress, policy; at pre-switchover drain the
 *      lanes, migrate-continue; keep relaying until QEMU closes every
 *      channel (the last dirty pages and the device state come after the
 *      continue);
 *   5. wait for the receiver's RESULT: only a destination that runs makes
 *      the migration a success; if it does not, the stopped source is
 *      resumed with `cont`.
 * Any failure before the switchover: migrate_cancel, source keeps running,
 * FAILED goes to the receiver, which tells its QEMU to quit.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "relay-internal.h"

/* Before anything starts: the QEMU must run (or be paused) with no
 * migration under way. */
static int check_source(struct tlm_qmp *q, struct tlm_relay_result *res)
{
	struct tlm_qmp_migstat st;
	char status[32];
	int rc = tlm_qmp_query_status(q, status, sizeof(status), NULL);

	if (rc) {
		tlm__relay_res_err(res, "source QEMU: query-status: %s", tlm_qmp_last_error(q));
		return rc;
	}
	if (strcmp(status, "running") && strcmp(status, "paused")) {
		tlm__relay_res_err(res, "source QEMU is '%s', not running: nothing to migrate", status);
		return -EINVAL;
	}
	rc = tlm_qmp_query_migrate(q, &st);
	if (rc) {
		tlm__relay_res_err(res, "source QEMU: query-migrate: %s", tlm_qmp_last_error(q));
		return rc;
	}
	if (!strcmp(st.status, "setup") || !strcmp(st.status, "active") ||
	    !strcmp(st.status, "pre-switchover") || !strcmp(st.status, "device") ||
	    !strcmp(st.status, "cancelling")) {
		tlm__relay_res_err(res, "source QEMU already has a migration in state '%s'", st.status);
		return -EBUSY;
	}
	return 0;
}

/* Cancels the source migration and makes sure the VM runs again. */
/* The source's migration capabilities back as saved; false if QEMU said no. */
bool tlm__relay_restore_caps(struct tlm_qmp *q, const bool *caps)
{
	if (!tlm_qmp_set_caps(q, tlm__relay_caps, caps, N_SRC_CAPS))
		return true;
	tlm__warn("source QEMU: could not restore its migration capabilities: %s",
		  tlm_qmp_last_error(q));
	return false;
}

/* One source migration: what its steps share. */
struct src {
	const struct tlm_relay_src_opts *o;
	struct tlm_relay_result *res;
	struct tlm_qmp *q;
	struct tlm_session *s;
	struct ctrl ctrl;
	struct relay r;
	bool relay_on, migrating, continued, was_running;
	bool caps[N_SRC_CAPS], caps_saved;
	struct tlm_guardian guard;
	int timeout;
	uint64_t t0, deadline, next_progress;
};

/* The options make sense, the QEMU can migrate; its state saved (was it
 * running, its capabilities) and a guardian to restore it if we die. */
static int src_prepare(struct src *m)
{
	const struct tlm_relay_src_opts *o = m->o;
	char status[32];
	int rc;

	if (o->multifd < 1 || o->multifd > TLM_RELAY_MAX_MULTIFD) {
		tlm__relay_res_err(m->res, "multifd channels: %u, must be 1..%d", o->multifd,
				   TLM_RELAY_MAX_MULTIFD);
		return -EINVAL;
	}
	if (o->policy < TLM_RELAY_POLICY_QEMU || o->policy > TLM_RELAY_POLICY_AUTOCONVERGE) {
		tlm__relay_res_err(m->res, "unknown policy %d", o->policy);
		return -EINVAL;
	}
	rc = check_source(m->q, m->res);
	if (rc)
		return rc;
	rc = tlm_qmp_query_status(m->q, status, sizeof(status), NULL);
	m->was_running = !rc && !strcmp(status, "running");
	m->caps_saved = !tlm_qmp_get_caps(m->q, tlm__relay_caps, m->caps, N_SRC_CAPS);
	if (o->qmp_path && m->caps_saved) {
		struct tlm_guardian_cfg gc = {
			.qmp_path = o->qmp_path, .was_running = m->was_running,
			.caps = tlm__relay_caps, .caps_on = m->caps, .n_caps = N_SRC_CAPS,
			.who = "relay",
		};

		rc = tlm_guardian_start(&m->guard, &gc);
		if (rc) {
			tlm__relay_res_err(m->res, "cannot start the guardian process: %s",
					   strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* HELLO on the control lane; the receiver answers READY once its QEMU
 * waits for the channels. */
static int src_handshake(struct src *m)
{
	struct ctrl_msg msg = { .type = CTRL_HELLO, .proto = TLM_RELAY_PROTO,
				.multifd = m->o->multifd };
	int rc = tlm__relay_ctrl_put(&m->ctrl, &msg);

	if (rc) {
		tlm__relay_res_err(m->res, "control lane: %s", tlm_strerror(rc));
		return rc;
	}
	rc = tlm__relay_ctrl_keepalive(&m->ctrl);
	if (rc) {
		tlm__relay_res_err(m->res, "no thread for the keepalive");
		return rc;
	}
	rc = tlm__relay_ctrl_recv(&m->ctrl, &msg, 60000);
	if (rc <= 0) {
		tlm__relay_res_err(m->res, "receiver did not answer: %s",
				   rc ? tlm__relay_ctrl_why(&m->ctrl, rc) : "timed out");
		return rc ? rc : -ETIMEDOUT;
	}
	if (msg.type != CTRL_READY) {
		tlm__relay_res_err(m->res, "receiver refused: %s",
				   msg.type == CTRL_ERR ? msg.text : msg.line);
		return -TLM_EPARAM;
	}
	return 0;
}

/* The QEMU set for multifd, the relay listening, `migrate` to it. 1: the
 * migration may have started (a failure now rolls the source back). */
static int src_start(struct src *m)
{
	const struct tlm_relay_src_opts *o = m->o;
	uint64_t bw = o->max_bandwidth ? o->max_bandwidth : 64ull << 30;
	char uri[160];
	int rc = tlm__relay_set_multifd(m->q, true, o->policy, o->multifd, bw);

	if (rc) {
		tlm__relay_res_err(m->res, "source QEMU refused the migration settings: %s",
				   tlm_qmp_last_error(m->q));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_FAILED, "source QEMU refused the settings");
		return rc;
	}
	rc = tlm__relay_init(&m->r, m->s, false);
	if (rc) {
		tlm__relay_res_err(m->res, "private socket dir: %s", strerror(-rc));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_FAILED, "source relay setup");
		return rc;
	}
	m->r.guard = m->guard.pid > 0 ? m->guard.wr : -1;
	m->relay_on = true;
	rc = tlm__relay_listen(&m->r);
	if (rc) {
		tlm__relay_res_err(m->res, "listen on %s: %s", m->r.path, strerror(-rc));
		tlm__relay_ctrl_say(&m->ctrl, CTRL_FAILED, "source relay setup");
		return rc;
	}
	snprintf(uri, sizeof(uri), "unix:%s", m->r.path);
	m->t0 = tlm__now_ms();
	m->deadline = m->t0 + (uint64_t)m->timeout;
	/* Counted as migrating before the answer: a reply lost to a timeout
	 * may hide a migration QEMU did start, and the rollback cancels it
	 * (migrate_cancel on an idle QEMU does nothing). */
	m->migrating = true;
	rc = tlm_qmp_migrate(m->q, uri);
	if (rc)
		tlm__relay_res_err(m->res, "source QEMU: migrate: %s", tlm_qmp_last_error(m->q));
	return rc;
}

/* Anything that ends the migration from outside QEMU: an interrupt, a
 * relay error, the receiver failing, the deadline. 0 or the error. */
static int src_check(struct src *m, const struct tlm_qmp_migstat *st)
{
	struct ctrl_msg msg;
	int crc;

	if (tlm__relay_cancelled(m->o->cancel)) {
		tlm__relay_res_err(m->res, "interrupted");
		return -TLM_EABORTED;
	}
	if (atomic_load(&m->r.err)) {
		tlm__relay_res_err(m->res, "%s", m->r.why);
		return atomic_load(&m->r.err);
	}
	crc = tlm__relay_ctrl_recv(&m->ctrl, &msg, 0);
	if (crc < 0) {
		tlm__relay_res_err(m->res, "%s", tlm__relay_ctrl_why(&m->ctrl, crc));
		return crc;
	}
	if (crc > 0 && msg.type == CTRL_FAILED) {
		tlm__relay_res_err(m->res, "receiver failed: %s", msg.text);
		return -TLM_EABORTED;
	}
	if (tlm__now_ms() >= m->deadline) {
		tlm__relay_res_err(m->res, "timed out after %d s (%s)", m->timeout / 1000,
				   st->status);
		return -ETIMEDOUT;
	}
	return 0;
}

/* Policy tlm: once the first full pass is done, let the next check
 * complete (downtime-limit at its maximum). */
static int src_policy(struct src *m, const struct tlm_qmp_migstat *st)
{
	struct json_object *p;
	int rc;

	if (m->o->policy != TLM_RELAY_POLICY_TLM || m->res->forced || m->continued ||
	    st->ram_dirty_sync_count < 2 || strcmp(st->status, "active"))
		return 0;
	p = json_object_new_object();
	json_object_object_add(p, "downtime-limit", json_object_new_int64(DOWNTIME_MAX_MS));
	rc = tlm_qmp_set_params(m->q, p);
	if (rc) {
		tlm__relay_res_err(m->res, "source QEMU: downtime-limit: %s",
				   tlm_qmp_last_error(m->q));
		return rc;
	}
	m->res->forced = true;
	tlm__info("policy tlm: first pass done after %llu ms, switching over",
		  (unsigned long long)(tlm__now_ms() - m->t0));
	return 0;
}

/* At pre-switchover: the lanes drained, then migrate-continue. */
static int src_switchover(struct src *m, const struct tlm_qmp_migstat *st)
{
	int rc;

	if (m->continued || strcmp(st->status, "pre-switchover"))
		return 0;
	m->res->qemu_converged = !m->res->forced;
	rc = tlm__relay_drain(&m->r, 5000);
	if (rc && rc != -ETIMEDOUT) {
		tlm__relay_res_err(m->res, "draining lanes: %s",
				   m->r.why[0] ? m->r.why : tlm_strerror(rc));
		return rc;
	}
	rc = tlm_qmp_migrate_continue(m->q);
	if (rc) {
		tlm__relay_res_err(m->res, "source QEMU: migrate-continue: %s",
				   tlm_qmp_last_error(m->q));
		return rc;
	}
	m->continued = true;
	return 0;
}

/* One look at the migration: 1 once QEMU completed it, 0 to look again,
 * or the error that ends it. */
static int src_step(struct src *m)
{
	struct tlm_qmp_migstat *st = &m->res->st;
	int rc = tlm_qmp_query_migrate(m->q, st);

	if (rc) {
		tlm__relay_res_err(m->res, "source QEMU: query-migrate: %s",
				   tlm_qmp_last_error(m->q));
		return rc;
	}
	if (m->o->progress && tlm__now_ms() >= m->next_progress) {
		m->o->progress(st, m->o->progress_arg);
		m->next_progress = tlm__now_ms() + (uint64_t)(m->o->progress_ms > 0 ?
							      m->o->progress_ms : 500);
	}
	if (!strcmp(st->status, "completed"))
		return 1;
	if (!strcmp(st->status, "failed") || !strcmp(st->status, "cancelled")) {
		/* Our own failure makes QEMU's socket fail: ours says more. */
		if (atomic_load(&m->r.err))
			tlm__relay_res_err(m->res, "%s (QEMU: %s)", m->r.why,
					   st->error_desc[0] ? st->error_desc : st->status);
		tlm__relay_res_err(m->res, "source QEMU: migration %s%s%s", st->status,
				   st->error_desc[0] ? ": " : "", st->error_desc);
		return -EIO;
	}
	rc = src_check(m, st);
	if (!rc)
		rc = src_policy(m, st);
	if (!rc)
		rc = src_switchover(m, st);
	if (rc)
		return rc;
	/* A MIGRATION event (pre-switchover above all: the guest is
	 * stopped and every ms counts as downtime) ends the wait early. */
	if (tlm_qmp_wait_event(m->q, "MIGRATION", m->continued ? 10 : 50, NULL) == 0)
		tlm_qmp_drop_events(m->q);
	return 0;
}

/* QEMU completed: the channels drain, the receiver says whether its QEMU
 * runs. 0 if it does; if not, the source (which still has the whole VM)
 * runs again and the migration failed. */
static int src_finish(struct src *m)
{
	/* total-time and downtime come a moment after "completed". */
	static const char *const done[] = { "completed", NULL };
	struct ctrl_msg msg;
	int rc;

	tlm_qmp_wait_migrate(m->q, done, 20, 5000, &m->res->st);
	if (m->o->progress)
		m->o->progress(&m->res->st, m->o->progress_arg);
	/* QEMU has handed everything to us; it is not over until the
	 * destination has it and runs. */
	for (uint64_t end = tlm__now_ms() + 60000;;) {
		rc = tlm__relay_wait_finished(&m->r, 200);
		if (rc != -ETIMEDOUT || tlm__now_ms() >= end || tlm__relay_ctrl_dead(&m->ctrl))
			break;
	}
	if (rc == -ETIMEDOUT && tlm__relay_ctrl_dead(&m->ctrl))
		tlm__warn("relay: channels still open when the control lane ended; closing them");
	else if (rc == -ETIMEDOUT)
		tlm__warn("relay: channels still open 60 s after completion; closing them");
	else if (rc)
		tlm__warn("relay after completion: %s", m->r.why);
	do
		rc = tlm__relay_ctrl_recv(&m->ctrl, &msg, 60000);
	while (rc > 0 && msg.type != CTRL_RESULT && msg.type != CTRL_FAILED);
	m->res->wall_ms = (int64_t)(tlm__now_ms() - m->t0);
	tlm__relay_take_stats(m->s, m->res);
	if (rc > 0 && msg.type == CTRL_RESULT && msg.ok) {
		tlm__relay_copy_str(m->res->dst_status, sizeof(m->res->dst_status), msg.text);
		m->res->completed = true;
		tlm__relay_ctrl_put(&m->ctrl, &(struct ctrl_msg){ .type = CTRL_BYE });
		return 0;
	}
	tlm__relay_res_err(m->res, "destination failed after the switchover: %s",
			   rc > 0 ? msg.line : rc ? tlm__relay_ctrl_why(&m->ctrl, rc) : "no answer");
	if (m->was_running && tlm_qmp_exec(m->q, "cont", NULL, NULL, TLM_QMP_TIMEOUT_MS))
		tlm__err("cont on the source: %s", tlm_qmp_last_error(m->q));
	return -EIO;
}

/* A failure under way: the source VM first (telling the peer may block on
 * a stalled lane), then the receiver, then the relay. */
static int src_fail(struct src *m, int rc)
{
	/* The relay stops carrying and drains QEMU's channels (relay_fail),
	 * so the cancel never waits on a stalled lane. */
	if (m->relay_on)
		tlm__relay_fail(&m->r, rc, "%s", m->res->error);
	if (m->relay_on && tlm__relay_ctrl_silent(&m->ctrl))
		tlm__relay_abort_lanes(&m->r);
	if (m->migrating)
		tlm_guardian_rollback(m->q, m->was_running);
	tlm__relay_ctrl_say(&m->ctrl, CTRL_FAILED, "%s", m->res->error);
	m->res->wall_ms = (int64_t)(tlm__now_ms() - m->t0);
	if (m->relay_on) {
		tlm__relay_stop(&m->r, true);
		m->relay_on = false;
	}
	tlm__relay_take_stats(m->s, m->res);
	return rc ? rc : -EIO;
}

int tlm_relay_migrate(const struct tlm_relay_src_opts *o, struct tlm_relay_result *res)
{
	struct src m = { .o = o, .res = res, .q = o->qmp, .guard = { .pid = -1, .wr = -1 },
			 .timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS };
	struct tlm_session_cfg cfg;
	int rc;

	memset(res, 0, sizeof(*res));
	m.t0 = tlm__now_ms();
	rc = src_prepare(&m);
	if (rc)
		return rc;
	cfg = tlm__relay_session_cfg(o->transport, o->transport_args, o->psk, o->multifd + 1,
				     o->protect);
	rc = tlm_connect(&cfg, o->host, o->port, &m.s);
	if (rc) {
		tlm__relay_res_err(res, "cannot open %u lanes to %s:%s: %s", o->multifd + 2,
				   o->host, o->port, tlm_strerror(rc));
		tlm_guardian_done(&m.guard);
		return rc;
	}
	rc = tlm__relay_ctrl_start(&m.ctrl, tlm_session_lane(m.s, 0), "the receiver",
				   o->peer_timeout_ms);
	if (rc)
		goto out_session;
	rc = src_handshake(&m);
	if (rc)
		goto out_ctrl;
	rc = src_start(&m);
	if (rc && !m.migrating)
		goto out_relay;
	while (!rc)
		rc = src_step(&m);
	rc = rc > 0 ? src_finish(&m) : src_fail(&m, rc);
out_relay:
	if (m.relay_on)
		tlm__relay_stop(&m.r, false);
out_ctrl:
	if (m.caps_saved)
		tlm__relay_restore_caps(m.q, m.caps);
	tlm__relay_ctrl_stop(&m.ctrl);
out_session:
	if (!res->n_lanes)
		tlm__relay_take_stats(m.s, res);
	tlm_session_close(m.s);
	tlm_guardian_done(&m.guard);
	return rc;
}
