/* SPDX-License-Identifier: MIT */
/*
 * The passive relays (relay.h): tlm_relay_out on the source host and
 * tlm_relay_in on the destination host, for migrations that something
 * else drives (libvirt's `virsh migrate --migrateuri unix://PATH`), so no
 * QMP: the source QEMU connects to PATH on its host, the destination QEMU
 * listens on PATH on its own.
 *
 *   relay-out                               relay-in
 *   listen on PATH
 *   connect the session      ----------->   accept it
 *   HELLO proto multifd name ----------->   check; PATH = --unix or DIR/name
 *                            <-----------   READY
 *   QEMU connects (main)
 *   START                    ----------->   connect the main channel to PATH
 *   classify each channel,                  (QEMU 7.2 takes the first
 *   pump it to its lane      <---------->   connection as main), each
 *                                           multifd channel as its header
 *                                           arrives
 *   ... QEMU closes every channel ...
 *                            <-----------   RESULT ok closed
 *   BYE                      ----------->
 *
 * Whether the migration succeeded is QEMU's and its manager's to say; the
 * relays say whether they carried every byte. On a failure (a lane, the
 * peer, a timeout, the peer silent) each makes QEMU's migration fail on its
 * side (relay-chan.c, tlm__relay_fail: relay-in closes every channel,
 * relay-out only the main one, and drains the others until QEMU closes
 * them), and libvirt rolls back: the source VM keeps running.
 */

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay-internal.h"

#define START_CONNECT_MS 10000  /* for the destination QEMU's socket to appear */
#define RESULT_WAIT_MS 30000
#define DRAIN_WAIT_MS 20000    /* for a failed QEMU to close its channels */

struct tlm_session_cfg tlm_relay_session_cfg(const char *transport, const char *targs,
					     const struct tlm_psk *psk, unsigned multifd,
					     int protect)
{
	return tlm__relay_session_cfg(transport, targs, psk, multifd ? multifd + 1 : 0,
				      protect);
}

/* A socket name the receiver may put in its directory: no path. */
static bool name_ok(const char *n)
{
	if (!n[0] || !strcmp(n, ".") || !strcmp(n, ".."))
		return false;
	for (; *n; n++)
		if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') ||
		      (*n >= '0' && *n <= '9') || *n == '.' || *n == '_' || *n == '-'))
			return false;
	return true;
}

/* The unix socket QEMU connects to: a stale socket at path is replaced,
 * anything else there is an error. */
static int bind_unix(const char *path, int gid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (!lstat(path, &st)) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	if ((gid >= 0 && (chown(path, (uid_t)-1, (gid_t)gid) || chmod(path, 0660))) ||
	    (gid < 0 && chmod(path, 0600)))
		goto fail_unlink;
	if (listen(fd, TLM_MAX_LANES) < 0)
		goto fail_unlink;
	return fd;
fail_unlink:
	unlink(path);
fail: {
	int e = -errno;

	close(fd);
	return e;
}
}

/* One passive relay: what the steps of either side share. */
struct passive {
	struct tlm_relay_result *res;
	volatile sig_atomic_t *cancel;
	struct tlm_session *s;
	struct ctrl ctrl;
	struct relay r;
	bool relay_on;
	bool have_result;       /* the receiver's RESULT came during passive_run */
	struct ctrl_msg result;
	int timeout;
	uint64_t t0;
};

/* Until the relay has carried every channel to its end (1), or whatever
 * ends it first: an interrupt, the relay's error, the peer's FAILED or
 * its lane, the deadline. */
static int passive_run(struct passive *p, uint64_t deadline)
{
	for (;;) {
		struct ctrl_msg msg;
		int rc = tlm__relay_done(&p->r), crc;

		if (rc > 0)
			return 1;
		if (rc < 0) {
			tlm__relay_res_err(p->res, "%s", p->r.why);
			return rc;
		}
		if (tlm__relay_cancelled(p->cancel)) {
			tlm__relay_res_err(p->res, "interrupted");
			return -TLM_EABORTED;
		}
		crc = tlm__relay_ctrl_recv(&p->ctrl, &msg, 50);
		if (crc > 0 && msg.type == CTRL_RESULT) {
			/* the receiver's channels closed before ours */
			p->result = msg;
			p->have_result = true;
		}
		if (crc > 0 && msg.type == CTRL_FAILED) {
			tlm__relay_res_err(p->res, "the other relay failed: %s", msg.text);
			return -TLM_EABORTED;
		}
		/* The peer's control lane ends once it is done: only its data
		 * lanes still count then. */
		if (crc < 0 && crc != -TLM_EPEERCLOSED) {
			tlm__relay_res_err(p->res, "%s", tlm__relay_ctrl_why(&p->ctrl, crc));
			return crc;
		}
		if (tlm__now_ms() >= deadline) {
			tlm__relay_res_err(p->res, "timed out after %d s", p->timeout / 1000);
			return -ETIMEDOUT;
		}
	}
}

static int passive_fail(struct passive *p, int rc)
{
	if (p->relay_on && tlm__relay_ctrl_silent(&p->ctrl))
		tlm__relay_abort_lanes(&p->r);
	tlm__relay_ctrl_say(&p->ctrl, CTRL_FAILED, "%s", p->res->error);
	if (p->relay_on && !p->r.dest) {
		/* QEMU fails on its main channel and closes the others itself
		 * (relay-chan.c, tlm__relay_fail) */
		tlm__relay_fail(&p->r, rc, "%s", p->res->error);
		if (tlm__relay_wait_drained(&p->r, DRAIN_WAIT_MS))
			tlm__warn("relay: QEMU kept channels open %d s after its main channel "
				  "was shut; closing them", DRAIN_WAIT_MS / 1000);
	}
	if (p->relay_on) {
		tlm__relay_stop(&p->r, true);
		p->relay_on = false;
	}
	return rc ? rc : -EIO;
}

static void passive_end(struct passive *p)
{
	p->res->wall_ms = (int64_t)(tlm__now_ms() - p->t0);
	if (p->relay_on)
		tlm__relay_stop(&p->r, false);
	tlm__relay_take_stats(p->s, p->res);
	tlm__relay_ctrl_stop(&p->ctrl);
	tlm_session_close(p->s);
}

/* Source: wait for QEMU's first channel (its main one). */
static int out_wait_qemu(struct passive *p, int lfd, int timeout_ms)
{
	uint64_t end = tlm__now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		struct ctrl_msg msg;
		int rc = poll(&pfd, 1, 100), crc;

		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR) {
			tlm__relay_res_err(p->res, "poll: %s", strerror(errno));
			return -errno;
		}
		if (tlm__relay_cancelled(p->cancel)) {
			tlm__relay_res_err(p->res, "interrupted");
			return -TLM_EABORTED;
		}
		crc = tlm__relay_ctrl_recv(&p->ctrl, &msg, 0);
		if (crc < 0 || (crc > 0 && msg.type == CTRL_FAILED)) {
			tlm__relay_res_err(p->res, "the receiver went away before QEMU connected: %s",
					   crc < 0 ? tlm__relay_ctrl_why(&p->ctrl, crc) : msg.text);
			return crc < 0 ? crc : -TLM_EABORTED;
		}
		if (tlm__now_ms() >= end) {
			tlm__relay_res_err(p->res, "QEMU did not connect within %d s",
					   timeout_ms / 1000);
			return -ETIMEDOUT;
		}
	}
}

static int out_hello(struct passive *p, const struct tlm_relay_out_opts *o, const char *name)
{
	struct ctrl_msg msg = { .type = CTRL_HELLO, .proto = TLM_RELAY_PROTO,
				.multifd = o->multifd };
	int rc;

	tlm__relay_copy_str(msg.name, sizeof(msg.name), name);
	rc = tlm__relay_ctrl_put(&p->ctrl, &msg);
	if (rc) {
		tlm__relay_res_err(p->res, "control lane: %s", tlm_strerror(rc));
		return rc;
	}
	rc = tlm__relay_ctrl_keepalive(&p->ctrl);
	if (rc) {
		tlm__relay_res_err(p->res, "no thread for the keepalive");
		return rc;
	}
	rc = tlm__relay_ctrl_recv(&p->ctrl, &msg, 30000);
	if (rc <= 0) {
		tlm__relay_res_err(p->res, "the receiver did not answer: %s",
				   rc ? tlm__relay_ctrl_why(&p->ctrl, rc) : "timed out");
		return rc ? rc : -ETIMEDOUT;
	}
	if (msg.type != CTRL_READY) {
		tlm__relay_res_err(p->res, "the receiver refused: %s",
				   msg.type == CTRL_ERR ? msg.text : msg.line);
		return -TLM_EPARAM;
	}
	return 0;
}

/* After QEMU closed every channel: the receiver's word that its side
 * closed too. */
static int out_result(struct passive *p)
{
	struct ctrl_msg msg = p->result;
	int rc = 1;

	if (!p->have_result)
		do
			rc = tlm__relay_ctrl_recv(&p->ctrl, &msg, RESULT_WAIT_MS);
		while (rc > 0 && msg.type != CTRL_RESULT && msg.type != CTRL_FAILED);
	if (rc > 0 && msg.type == CTRL_RESULT && msg.ok) {
		tlm__relay_copy_str(p->res->dst_status, sizeof(p->res->dst_status), msg.text);
		tlm__relay_ctrl_put(&p->ctrl, &(struct ctrl_msg){ .type = CTRL_BYE });
		return 0;
	}
	tlm__relay_res_err(p->res, "the receiver did not close cleanly: %s",
			   rc > 0 ? msg.line : rc ? tlm__relay_ctrl_why(&p->ctrl, rc) : "no answer");
	return rc < 0 ? rc : -EIO;
}

int tlm_relay_out(const struct tlm_relay_out_opts *o, struct tlm_relay_result *res)
{
	struct passive p = { .res = res, .cancel = o->cancel,
			     .timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS };
	int acc = o->accept_timeout_ms > 0 ? o->accept_timeout_ms : DEFAULT_TIMEOUT_MS;
	const char *name = o->name;
	struct tlm_session_cfg cfg;
	int lfd, rc;

	memset(res, 0, sizeof(*res));
	p.t0 = tlm__now_ms();
	if (o->multifd < 1 || o->multifd > TLM_RELAY_MAX_MULTIFD) {
		tlm__relay_res_err(res, "multifd channels: %u, must be 1..%d", o->multifd,
				   TLM_RELAY_MAX_MULTIFD);
		return -EINVAL;
	}
	if (!name) {
		name = strrchr(o->unix_path, '/');
		name = name ? name + 1 : o->unix_path;
	}
	if (!name_ok(name) || strlen(name) >= CTRL_NAME) {
		tlm__relay_res_err(res, "socket name '%s': letters, digits, '.', '_' and '-' only, "
				   "at most %d", name, CTRL_NAME - 1);
		return -EINVAL;
	}
	lfd = bind_unix(o->unix_path, o->socket_gid);
	if (lfd < 0) {
		tlm__relay_res_err(res, "cannot listen on %s: %s", o->unix_path,
				   lfd == -EEXIST ? "something that is not a socket is there" :
				   strerror(-lfd));
		return lfd;
	}
	cfg = tlm__relay_session_cfg(o->transport, o->transport_args, o->psk, o->multifd + 1,
				     o->protect);
	rc = tlm_connect(&cfg, o->host, o->port, &p.s);
	if (rc) {
		/* The receiver's reason (another --protect, lane count, ...) is in
		 * the log; the result names this side's choice. */
		tlm__relay_res_err(res, "cannot open %u lanes to %s:%s: %s%s%s", o->multifd + 2,
				   o->host, o->port, tlm_strerror(rc),
				   rc == -TLM_EPARAM ? "; this side: --protect " : "",
				   rc == -TLM_EPARAM ? tlm_protect_name(o->protect) : "");
		close(lfd);
		unlink(o->unix_path);
		return rc;
	}
	tlm__relay_init_passive(&p.r, p.s, false, o->unix_path, lfd);
	p.relay_on = true;
	rc = tlm__relay_ctrl_start(&p.ctrl, tlm_session_lane(p.s, 0), "relay-in",
				   o->peer_timeout_ms);
	if (!rc)
		rc = out_hello(&p, o, name);
	if (!rc && o->ready)
		o->ready(o->unix_path, o->ready_arg);
	if (!rc)
		rc = out_wait_qemu(&p, lfd, acc);
	if (!rc) {
		p.t0 = tlm__now_ms();
		rc = tlm__relay_ctrl_put(&p.ctrl, &(struct ctrl_msg){ .type = CTRL_START });
		if (rc)
			tlm__relay_res_err(res, "control lane: %s", tlm_strerror(rc));
	}
	if (!rc) {
		rc = tlm__relay_accept_start(&p.r);
		if (rc)
			tlm__relay_res_err(res, "no thread for the acceptor");
	}
	if (!rc)
		rc = passive_run(&p, p.t0 + (uint64_t)p.timeout);
	if (rc > 0)
		rc = out_result(&p);
	else
		rc = passive_fail(&p, rc);
	res->completed = !rc;
	passive_end(&p);
	return rc;
}

/* The source's HELLO: our protocol, as many multifd channels as the
 * session has data lanes for, a socket we may connect to. */
static int in_hello(struct passive *p, const struct tlm_relay_in_opts *o, char *path,
		    size_t plen)
{
	unsigned n = tlm_session_lanes(p->s);
	struct ctrl_msg msg;
	int rc = tlm__relay_ctrl_recv(&p->ctrl, &msg, 30000);

	if (rc <= 0) {
		tlm__relay_res_err(p->res, "no HELLO from the source: %s",
				   rc ? tlm__relay_ctrl_why(&p->ctrl, rc) : "timed out");
		return rc ? rc : -ETIMEDOUT;
	}
	if (msg.type != CTRL_HELLO || msg.proto != TLM_RELAY_PROTO) {
		tlm__relay_res_err(p->res, "the source does not speak relay protocol %d ('%.40s')",
				   TLM_RELAY_PROTO, msg.line);
		tlm__relay_ctrl_say(&p->ctrl, CTRL_ERR, "receiver speaks relay protocol %d",
				    TLM_RELAY_PROTO);
		return -TLM_EVERSION;
	}
	if (msg.multifd < 1 || msg.multifd + 1 != n) {
		tlm__relay_res_err(p->res, "the source announced %u multifd channels over %u "
				   "data lanes", msg.multifd, n);
		tlm__relay_ctrl_say(&p->ctrl, CTRL_ERR, "%u multifd channels need %u data lanes, "
				    "not %u", msg.multifd, msg.multifd + 1, n);
		return -TLM_EPARAM;
	}
	if (o->unix_path) {
		tlm__relay_copy_str(path, plen, o->unix_path);
	} else if (!name_ok(msg.name)) {
		tlm__relay_res_err(p->res, "the source named no usable socket ('%s')", msg.name);
		tlm__relay_ctrl_say(&p->ctrl, CTRL_ERR, "socket name '%s' refused", msg.name);
		return -TLM_EPARAM;
	} else if ((size_t)snprintf(path, plen, "%s/%s", o->unix_dir, msg.name) >= plen) {
		tlm__relay_res_err(p->res, "socket path %s/%s is too long", o->unix_dir, msg.name);
		tlm__relay_ctrl_say(&p->ctrl, CTRL_ERR, "socket path too long");
		return -ENAMETOOLONG;
	}
	rc = tlm__relay_ctrl_keepalive(&p->ctrl);
	if (rc) {
		tlm__relay_res_err(p->res, "no thread for the keepalive");
		return rc;
	}
	rc = tlm__relay_ctrl_put(&p->ctrl, &(struct ctrl_msg){ .type = CTRL_READY });
	if (rc)
		tlm__relay_res_err(p->res, "control lane: %s", tlm_strerror(rc));
	return rc;
}

/* START: the source QEMU opened its main channel, so the destination
 * QEMU listens by now (libvirt prepares it first). */
static int in_wait_start(struct passive *p, uint64_t deadline)
{
	for (;;) {
		struct ctrl_msg msg;
		int rc = tlm__relay_ctrl_recv(&p->ctrl, &msg, 100);

		if (rc > 0 && msg.type == CTRL_START)
			return 0;
		if (rc > 0 && msg.type == CTRL_FAILED) {
			tlm__relay_res_err(p->res, "the source relay failed: %s", msg.text);
			return -TLM_EABORTED;
		}
		if (rc < 0) {
			tlm__relay_res_err(p->res, "%s", tlm__relay_ctrl_why(&p->ctrl, rc));
			return rc;
		}
		if (tlm__relay_cancelled(p->cancel)) {
			tlm__relay_res_err(p->res, "interrupted");
			return -TLM_EABORTED;
		}
		if (tlm__now_ms() >= deadline) {
			tlm__relay_res_err(p->res, "the source QEMU did not start within %d s",
					   p->timeout / 1000);
			return -ETIMEDOUT;
		}
	}
}

/* The main channel to the QEMU at path (its socket may take a moment to
 * appear), then the pumps. */
static int in_connect(struct passive *p, const char *path)
{
	uint64_t end = tlm__now_ms() + START_CONNECT_MS;
	int rc;

	tlm__relay_init_passive(&p->r, p->s, true, path, -1);
	p->relay_on = true;
	while ((rc = tlm__relay_dest_start(&p->r)) == -ENOENT || rc == -ECONNREFUSED) {
		if (tlm__now_ms() >= end || tlm__relay_cancelled(p->cancel))
			break;
		usleep(50000);
	}
	if (rc)
		tlm__relay_res_err(p->res, "connect to the destination QEMU at %s: %s", path,
				   strerror(-rc));
	return rc;
}

static int in_accept(struct passive *p, const struct tlm_relay_in_opts *o,
		     struct tlm_listener *l)
{
	int acc = o->accept_timeout_ms ? o->accept_timeout_ms : DEFAULT_TIMEOUT_MS;
	uint64_t end = tlm__now_ms() + (uint64_t)(acc > 0 ? acc : 0);
	int rc;

	for (;;) {
		rc = tlm_accept(l, 1000, &p->s);
		if (rc != -ETIMEDOUT)
			break;
		if (tlm__relay_cancelled(o->cancel)) {
			rc = -TLM_EABORTED;
			break;
		}
		if (acc > 0 && tlm__now_ms() >= end)
			break;
	}
	if (rc)
		tlm__relay_res_err(p->res, "no session arrived: %s",
				   rc == -TLM_EABORTED ? "interrupted" : tlm_strerror(rc));
	return rc;
}

int tlm_relay_in(const struct tlm_relay_in_opts *o, struct tlm_listener *l,
		 struct tlm_relay_result *res)
{
	struct passive p = { .res = res, .cancel = o->cancel,
			     .timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS };
	char path[sizeof(p.r.path)];
	int rc;

	memset(res, 0, sizeof(*res));
	if (!o->unix_path == !o->unix_dir) {
		tlm__relay_res_err(res, "give the destination QEMU's socket or its directory");
		return -EINVAL;
	}
	rc = in_accept(&p, o, l);
	if (rc)
		return rc;
	p.t0 = tlm__now_ms();
	rc = tlm__relay_ctrl_start(&p.ctrl, tlm_session_lane(p.s, 0), "relay-out",
				   o->peer_timeout_ms);
	if (rc) {
		tlm_session_close(p.s);
		return rc;
	}
	rc = in_hello(&p, o, path, sizeof(path));
	if (!rc)
		rc = in_wait_start(&p, p.t0 + (uint64_t)p.timeout);
	if (!rc) {
		p.t0 = tlm__now_ms();
		rc = in_connect(&p, path);
	}
	if (!rc)
		rc = passive_run(&p, p.t0 + (uint64_t)p.timeout);
	if (rc > 0) {
		snprintf(res->dst_status, sizeof(res->dst_status), "closed");
		rc = tlm__relay_ctrl_say(&p.ctrl, CTRL_RESULT, "closed");
		if (rc)
			tlm__warn("could not tell the source the result: %s", tlm_strerror(rc));
		else {
			struct ctrl_msg msg;

			while (tlm__relay_ctrl_recv(&p.ctrl, &msg, 5000) > 0 && msg.type != CTRL_BYE)
				;
		}
		rc = 0;
	} else {
		rc = passive_fail(&p, rc);
	}
	res->completed = !rc;
	passive_end(&p);
	return rc;
}
