/* SPDX-License-Identifier: MIT */
/*
 * The channels of one relay: the private socket QEMU connects to (source)
 * or is connected through (destination), QEMU's channels told apart by
 * their first bytes (the main channel's "QEVM", a multifd channel's
 * MultiFDInit_t and its id) and put on their lanes, the drain before the
 * switchover, and the stop. A failure (tlm__relay_fail) is recorded once,
 * with why, and stops every pump.
 */

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay-internal.h"

/* Source, once the relay failed: read and drop whatever QEMU still sends
 * on its channels until it closes them (or relay_stop), beside the pumps,
 * which may be held in a write the peer never takes: QEMU 7.2's cancel
 * waits for its channel threads, and they for their writes. Once every
 * channel QEMU opened has closed, r->drained. */
static void *drain_main(void *arg)
{
	struct relay *r = arg;
	bool eof[TLM_MAX_LANES] = { false };
	uint8_t drop[4096];

	while (!atomic_load(&r->closing)) {
		struct pollfd pfd[TLM_MAX_LANES];
		unsigned idx[TLM_MAX_LANES], np = 0;
		int rc;

		for (unsigned i = 1; i <= r->n; i++) {
			int fd = atomic_load(&r->ch[i].fd);

			if (fd >= 0 && !eof[i]) {
				pfd[np] = (struct pollfd){ .fd = fd, .events = POLLIN };
				idx[np++] = i;
			}
		}
		if (!np)
			atomic_store(&r->drained, true);
		rc = poll(pfd, np, POLL_MS);
		if (rc < 0 && errno != EINTR)
			break;
		for (unsigned k = 0; rc > 0 && k < np; k++) {
			ssize_t n;

			if (!pfd[k].revents)
				continue;
			n = recv(pfd[k].fd, drop, sizeof(drop), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				eof[idx[k]] = true;
		}
	}
	return NULL;
}

void tlm__relay_fail(struct relay *r, int err, const char *fmt, ...)
{
	int zero = 0;
	va_list ap;

	pthread_mutex_lock(&r->mu);
	if (atomic_compare_exchange_strong(&r->err, &zero, err ? err : -EIO)) {
		va_start(ap, fmt);
		vsnprintf(r->why, sizeof(r->why), fmt, ap);
		va_end(ap);
		tlm__warn("relay: %s", r->why);
		if (!r->dest && !atomic_load(&r->closing))
			r->drain_on = !pthread_create(&r->drainer, NULL, drain_main, r);
	}
	pthread_mutex_unlock(&r->mu);
	atomic_store(&r->stop, 1);
	/* The source's channels stay open: they are drained (pump_up in
	 * relay-pump.c, and drain_main above) until QEMU closes them itself,
	 * after migrate_cancel. Shut under a live migration, they fail in
	 * QEMU 7.2's multifd threads, and the source QEMU sometimes aborts in
	 * its cleanup (yank_unregister_instance: Assertion
	 * `QLIST_EMPTY(&entry->yankfns)' failed; 2 runs in 32 of
	 * relay-lane-cut), taking the VM with it. A passive source relay has
	 * no QMP to cancel with, and QEMU must fail for its manager (libvirt)
	 * to roll back: it shuts the main channel only, which QEMU's
	 * migration thread writes to and fails on, as on a cancel (which
	 * shuts that channel from QEMU's side); QEMU then ends its multifd
	 * threads and closes their channels itself, drained meanwhile
	 * (tlm__relay_wait_drained). The destination's QEMU holds nothing
	 * yet: unblock every pump stuck in a socket call. */
	if (!r->dest && !r->passive)
		return;
	for (unsigned i = 1; i <= (r->dest ? r->n : 1); i++) {
		int fd = atomic_load(&r->ch[i].fd);

		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
	}
}

int tlm__relay_wait_drained(struct relay *r, int timeout_ms)
{
	uint64_t end = tlm__now_ms() + (uint64_t)timeout_ms;
	bool on;

	pthread_mutex_lock(&r->mu);
	on = r->drain_on;
	pthread_mutex_unlock(&r->mu);
	while (on && !atomic_load(&r->drained)) {
		if (tlm__now_ms() >= end)
			return -ETIMEDOUT;
		usleep(20000);
	}
	return 0;
}

/* The first bytes of a migration channel from QEMU 7.2: the main channel
 * starts with QEMU_VM_FILE_MAGIC ("QEVM"), a multifd channel with its
 * MultiFDInit_t (migration/multifd.c), big-endian: */
struct multifd_init {
	uint8_t magic[4];       /* MAGIC_MULTIFD */
	uint8_t version[4];     /* 1 */
	uint8_t uuid[16];       /* the VM's */
	uint8_t id;             /* the channel's number, 0.. */
	uint8_t unused1[7];
	uint8_t unused2[32];
};
_Static_assert(sizeof(struct multifd_init) == MULTIFD_HDR, "MultiFDInit_t is 64 bytes");

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The lane for a channel whose first len bytes are b: 1 for the main
 * channel, 2 + id for multifd channel id, 0 while more bytes are needed to
 * tell; a channel we cannot carry fails the relay (-1). */
static int classify(struct relay *r, const uint8_t *b, size_t len)
{
	const struct multifd_init *mi = (const struct multifd_init *)b;
	uint32_t magic;

	if (len < sizeof(mi->magic))
		return 0;
	magic = be32(mi->magic);
	if (magic == MAGIC_QEVM)
		return 1;
	if (magic != MAGIC_MULTIFD) {
		tlm__relay_fail(r, -EPROTO, "unknown migration channel (first bytes %08x): not "
				"QEMU 7.2's stream format?", magic);
		return -1;
	}
	if (len < offsetof(struct multifd_init, id) + sizeof(mi->id))
		return 0;
	if (mi->id >= r->n - 1) {
		tlm__relay_fail(r, -TLM_EPARAM, "QEMU opened multifd channel %u, but the session "
				"carries %u (multifd-channels changed?)", mi->id, r->n - 1);
		return -1;
	}
	return 2 + mi->id;
}

/* A channel QEMU opened, not named yet: its first bytes so far. */
struct pend {
	int fd;
	uint8_t b[MULTIFD_HDR];
	size_t len;
};

/* More of p's first bytes: 1 once it is named and its pumps run (p is
 * done with), 0 while it is not, -1 once the relay failed (p->fd -1 if
 * the channel holds it by then). */
static int name_channel(struct relay *r, struct pend *p)
{
	ssize_t n = recv(p->fd, p->b + p->len, sizeof(p->b) - p->len, MSG_DONTWAIT);
	int idx;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		tlm__relay_fail(r, -EPROTO, "QEMU closed a migration channel before sending its "
				"header");
		return -1;
	}
	p->len += (size_t)n;
	idx = classify(r, p->b, p->len);
	if (idx <= 0)
		return idx;
	if (atomic_load(&r->ch[idx].fd) >= 0) {
		tlm__relay_fail(r, -EPROTO, "QEMU opened channel %d twice", idx);
		return -1;
	}
	memcpy(r->ch[idx].pre, p->b, p->len);
	r->ch[idx].pre_len = p->len;
	atomic_store(&r->ch[idx].fd, p->fd);
	tlm__dbg("relay: %s channel -> lane %d", idx == 1 ? "main" : "multifd", idx);
	p->fd = -1;
	if (tlm__relay_chan_start(&r->ch[idx], true)) {
		tlm__relay_fail(r, -EAGAIN, "no thread for channel %d", idx);
		return -1;
	}
	atomic_fetch_add(&r->accepted, 1);
	return 1;
}

/* Channels QEMU opened but has not named yet stay open, drained, until
 * relay_stop, like the named ones (see relay_fail). */
static void drain_unnamed(struct relay *r, struct pend *pend, unsigned np)
{
	while (np && !atomic_load(&r->closing)) {
		struct pollfd pfd[TLM_MAX_LANES];
		uint8_t drop[4096];
		int rc;

		for (unsigned i = 0; i < np; i++)
			pfd[i] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		rc = poll(pfd, np, POLL_MS);
		if (rc < 0 && errno != EINTR)
			break;
		for (unsigned i = np; rc > 0 && i-- > 0;) {
			ssize_t n;

			if (!pfd[i].revents)
				continue;
			n = recv(pend[i].fd, drop, sizeof(drop), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				close(pend[i].fd);
				pend[i] = pend[--np];
			}
		}
	}
	for (unsigned i = 0; i < np; i++)
		close(pend[i].fd);
}

/* Source: accept QEMU's channels and tell them apart by their first
 * bytes, which are kept and sent first. */
static void *acceptor(void *arg)
{
	struct relay *r = arg;
	struct pend pend[TLM_MAX_LANES];
	unsigned np = 0;

	while (!atomic_load(&r->stop) && (unsigned)atomic_load(&r->accepted) < r->n) {
		struct pollfd pfd[TLM_MAX_LANES + 1];
		int rc;

		pfd[0] = (struct pollfd){ .fd = r->lfd, .events = POLLIN };
		for (unsigned i = 0; i < np; i++)
			pfd[i + 1] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		rc = poll(pfd, np + 1, POLL_MS);
		if (rc < 0 && errno != EINTR) {
			tlm__relay_fail(r, -errno, "poll: %s", strerror(errno));
			break;
		}
		if (rc <= 0)
			continue;
		for (unsigned i = np; i-- > 0;) {
			if (!pfd[i + 1].revents)
				continue;
			rc = name_channel(r, &pend[i]);
			if (rc > 0 || pend[i].fd < 0)
				pend[i] = pend[--np];
			if (rc < 0)
				goto out;
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd < 0)
				continue;
			tlm_guardian_hold(r->guard, fd);
			if (np == TLM_MAX_LANES) {
				close(fd);
				tlm__relay_fail(r, -EPROTO, "QEMU opened more channels than expected");
				goto out;
			}
			pend[np++] = (struct pend){ .fd = fd };
		}
	}
out:
	drain_unnamed(r, pend, np);
	return NULL;
}

int tlm__relay_init(struct relay *r, struct tlm_session *s, bool dest)
{
	char tmpl[64];
	const char *tmp = getenv("TMPDIR");

	memset(r, 0, sizeof(*r));
	r->s = s;
	r->dest = dest;
	r->own_path = true;     /* ours, in our private dir, whoever made it */
	r->n = tlm_session_lanes(s);
	r->lfd = -1;
	r->guard = -1;
	pthread_mutex_init(&r->mu, NULL);
	for (unsigned i = 1; i <= r->n; i++) {
		r->ch[i].r = r;
		r->ch[i].idx = i;
		r->ch[i].lane = tlm_session_lane(s, i);
		atomic_store(&r->ch[i].fd, -1);
	}
	/* A short private dir: sun_path holds 108 bytes. */
	if (!tmp || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/tlmrelay-XXXXXX", tmp);
	if (!mkdtemp(tmpl))
		return -errno;
	chmod(tmpl, 0700);
	snprintf(r->dir, sizeof(r->dir), "%s", tmpl);
	snprintf(r->path, sizeof(r->path), "%s/%s.sock", r->dir, dest ? "in" : "mig");
	return 0;
}

void tlm__relay_init_passive(struct relay *r, struct tlm_session *s, bool dest,
			     const char *path, int lfd)
{
	memset(r, 0, sizeof(*r));
	r->s = s;
	r->dest = dest;
	r->passive = true;
	r->own_path = !dest;
	r->n = tlm_session_lanes(s);
	r->lfd = lfd;
	r->guard = -1;
	pthread_mutex_init(&r->mu, NULL);
	for (unsigned i = 1; i <= r->n; i++) {
		r->ch[i].r = r;
		r->ch[i].idx = i;
		r->ch[i].lane = tlm_session_lane(s, i);
		atomic_store(&r->ch[i].fd, -1);
	}
	tlm__relay_copy_str(r->path, sizeof(r->path), path);
}

int tlm__relay_accept_start(struct relay *r)
{
	if (pthread_create(&r->acc, NULL, acceptor, r))
		return -EAGAIN;
	r->acc_on = true;
	return 0;
}

int tlm__relay_listen(struct relay *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, TLM_MAX_LANES) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	r->lfd = fd;
	r->own_path = true;
	rc = tlm__relay_accept_start(r);
	if (rc) {
		close(fd);
		r->lfd = -1;
	}
	return rc;
}

/* Destination: main channel first, multifd ones as their bytes arrive. */
int tlm__relay_dest_start(struct relay *r)
{
	int fd = tlm__relay_unix_connect(r->path);

	if (fd < 0)
		return fd;
	atomic_store(&r->ch[1].fd, fd);
	for (unsigned i = 1; i <= r->n; i++)
		if (tlm__relay_chan_start(&r->ch[i], i == 1))
			return -EAGAIN;
	return 0;
}

/* Every pump that ran has ended (QEMU and the peer closed every channel). */
static bool relay_finished(struct relay *r)
{
	for (unsigned i = 1; i <= r->n; i++) {
		struct chan *c = &r->ch[i];

		if (atomic_load(&c->down_on) && !atomic_load(&c->down_done))
			return false;
		if (atomic_load(&c->up_on) && !atomic_load(&c->up_done))
			return false;
	}
	return true;
}

int tlm__relay_done(struct relay *r)
{
	int err = atomic_load(&r->err);
	bool any = false;

	if (err)
		return err;
	for (unsigned i = 1; i <= r->n; i++)
		any |= atomic_load(&r->ch[i].up_on) || atomic_load(&r->ch[i].down_on);
	return any && relay_finished(r);
}

int tlm__relay_wait_finished(struct relay *r, int timeout_ms)
{
	uint64_t end = tlm__now_ms() + (uint64_t)timeout_ms;

	while (!relay_finished(r)) {
		if (atomic_load(&r->err))
			return atomic_load(&r->err);
		if (tlm__now_ms() >= end)
			return -ETIMEDOUT;
		usleep(10000);
	}
	return atomic_load(&r->err);
}

/* Source at pre-switchover: everything QEMU wrote so far is on the lanes. */
int tlm__relay_drain(struct relay *r, int timeout_ms)
{
	uint64_t end = tlm__now_ms() + (uint64_t)timeout_ms;
	int quiet = 0;

	while (quiet < 2) {
		bool idle = true;

		for (unsigned i = 1; i <= r->n; i++) {
			struct chan *c = &r->ch[i];
			int fd = atomic_load(&c->fd), pending = 0;

			if (fd < 0 || atomic_load(&c->up_done))
				continue;
			if (ioctl(fd, FIONREAD, &pending) == 0 && pending > 0)
				idle = false;
			if (atomic_load(&c->rd) != atomic_load(&c->wr))
				idle = false;
		}
		quiet = idle ? quiet + 1 : 0;
		if (atomic_load(&r->err))
			return atomic_load(&r->err);
		if (tlm__now_ms() >= end)
			return -ETIMEDOUT;
		usleep(5000);
	}
	for (unsigned i = 1; i <= r->n; i++) {
		int rc = tlm_lane_flush(r->ch[i].lane);

		if (rc < 0)
			return rc;
	}
	return 0;
}

void tlm__relay_stop(struct relay *r, bool force)
{
	if (force)
		tlm__relay_fail(r, -TLM_EABORTED, "aborted");
	atomic_store(&r->stop, 1);
	pthread_mutex_lock(&r->mu);
	atomic_store(&r->closing, 1);
	pthread_mutex_unlock(&r->mu);
	if (r->drain_on) {
		pthread_join(r->drainer, NULL);
		r->drain_on = false;
	}
	if (r->acc_on) {
		pthread_join(r->acc, NULL);
		r->acc_on = false;
	}
	if (r->lfd >= 0) {
		close(r->lfd);
		r->lfd = -1;
	}
	for (unsigned i = 1; i <= r->n; i++) {
		struct chan *c = &r->ch[i];
		int fd = atomic_load(&c->fd);

		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
		if (atomic_load(&c->down_on))
			pthread_join(c->down, NULL);
		if (atomic_load(&c->up_on))
			pthread_join(c->up, NULL);
		atomic_store(&c->down_on, false);
		atomic_store(&c->up_on, false);
		if (fd >= 0)
			close(fd);
		atomic_store(&c->fd, -1);
	}
	if (r->path[0] && r->own_path)
		unlink(r->path);
	if (r->dir[0])
		rmdir(r->dir);
	r->path[0] = r->dir[0] = '\0';
	pthread_mutex_destroy(&r->mu);
}

void tlm__relay_abort_lanes(struct relay *r)
{
	for (unsigned i = 1; i <= r->n; i++)
		tlm__lane_abort(r->ch[i].lane, -ETIMEDOUT);
	/* and the control lane: a keepalive may wait there for the peer (an
	 * RDMA lane whose peer reads nothing runs out of message credits) */
	if (r->s)
		tlm__lane_abort(tlm_session_lane(r->s, 0), -ETIMEDOUT);
}

void tlm__relay_take_stats(struct tlm_session *s, struct tlm_relay_result *res)
{
	unsigned n = tlm_session_lanes(s);

	res->n_lanes = n;
	res->bytes = 0;
	for (unsigned i = 0; i <= n; i++) {
		tlm_lane_stats(tlm_session_lane(s, i), &res->lane_tx[i], &res->lane_rx[i]);
		if (i)
			res->bytes += res->lane_tx[i] + res->lane_rx[i];
	}
}
