/* SPDX-License-Identifier: MIT */
/*
 * The relay for stock QEMU (see relay.h and docs/qemu.md).
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
 *
 * Destination side: listen, accept one session, read HELLO (protocol
 * version and channel count), configure the QEMU (multifd, same N),
 * migrate-incoming on a private socket, connect the main channel FIRST
 * (QEMU 7.2 takes the first connection as main), then each multifd channel
 * when its first bytes arrive (QEMU reads the 64-byte header of a new
 * multifd channel with a blocking read in its main loop, so it must not be
 * connected before its header can follow), READY; then relay until the QEMU
 * leaves "inmigrate" and report RESULT.
 *
 * Threads: per channel one pump socket->lane ("up") and one lane->socket
 * ("down"); a lane is written by one thread and read by another. The
 * control lane is read by its own thread and written only by the thread
 * that called tlm_relay_migrate/receive, which also owns the QMP handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tlm-internal.h"
#include "relay.h"

#define PUMP_BUF (256u << 10)
#define MAGIC_QEVM 0x5145564du
#define MAGIC_MULTIFD 0x11223344u
#define MULTIFD_HDR 64
#define CTRL_LINE 256
#define CTRL_QUEUE 16
#define POLL_MS 100
#define DEFAULT_TIMEOUT_MS (10 * 60 * 1000)
#define DOWNTIME_MAX_MS 2000000       /* QEMU 7.2's MAX_MIGRATE_DOWNTIME */
#define DOWNTIME_DEFAULT_MS 300

/* ---- control lane: text lines, one reader thread ---- */

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
	char buf[CTRL_LINE * 2];
	size_t len;
};

/* Truncating copy (lines from the peer may be longer than the slot). */
static void copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void *ctrl_thread(void *arg)
{
	struct ctrl *c = arg;

	while (!atomic_load(&c->stop)) {
		ssize_t n = tlm_lane_read(c->lane, c->buf + c->len,
					  sizeof(c->buf) - c->len, 200);
		char *nl;

		if (n == -ETIMEDOUT)
			continue;
		if (n <= 0) {
			pthread_mutex_lock(&c->mu);
			c->dead = n == 0 ? -TLM_EPEERCLOSED : (int)n;
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			break;
		}
		c->len += (size_t)n;
		while ((nl = memchr(c->buf, '\n', c->len))) {
			size_t l = (size_t)(nl - c->buf);

			*nl = '\0';
			pthread_mutex_lock(&c->mu);
			if (c->n < CTRL_QUEUE) {
				copy_str(c->q[(c->head + c->n) % CTRL_QUEUE], CTRL_LINE, c->buf);
				c->n++;
			}
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
		}
		if (c->len == sizeof(c->buf)) {
			/* A line longer than we ever send: the peer is not us. */
			pthread_mutex_lock(&c->mu);
			c->dead = -TLM_EFRAME;
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			break;
		}
	}
	return NULL;
}

static int ctrl_start(struct ctrl *c, struct tlm_lane *lane)
{
	memset(c, 0, sizeof(*c));
	c->lane = lane;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&c->th, NULL, ctrl_thread, c))
		return -EAGAIN;
	c->started = true;
	return 0;
}

static void ctrl_stop(struct ctrl *c)
{
	if (!c->started)
		return;
	atomic_store(&c->stop, 1);
	pthread_join(c->th, NULL);
	c->started = false;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
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
	ssize_t w;

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
	w = tlm_lane_write(c->lane, line, (size_t)n);
	if (w < 0)
		return (int)w;
	return tlm_lane_flush(c->lane);
}

/* ---- channel pumps ---- */

struct relay;

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
	atomic_int closing;            /* relay_stop is joining the acceptor */
	int guard;                     /* source: socket to the guardian, or -1 */
};

static void guardian_hold(int sock, int fd);

static void relay_fail(struct relay *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void relay_fail(struct relay *r, int err, const char *fmt, ...)
{
	int zero = 0;
	va_list ap;

	pthread_mutex_lock(&r->mu);
	if (atomic_compare_exchange_strong(&r->err, &zero, err ? err : -EIO)) {
		va_start(ap, fmt);
		vsnprintf(r->why, sizeof(r->why), fmt, ap);
		va_end(ap);
		tlm__warn("relay: %s", r->why);
	}
	pthread_mutex_unlock(&r->mu);
	atomic_store(&r->stop, 1);
	/* The source's channels stay open: its pumps drain them (pump_up)
	 * until migrate_cancel has QEMU close them itself. Shut under a live
	 * migration, they fail in QEMU 7.2's multifd threads, and the source
	 * QEMU sometimes aborts in its cleanup (yank_unregister_instance:
	 * Assertion `QLIST_EMPTY(&entry->yankfns)' failed; 2 runs in 32 of
	 * relay-lane-cut), taking the VM with it. The destination's QEMU
	 * holds nothing yet: unblock every pump stuck in a socket call. */
	if (!r->dest)
		return;
	for (unsigned i = 1; i <= r->n; i++) {
		int fd = atomic_load(&r->ch[i].fd);

		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
	}
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void *pump_up(void *arg)
{
	struct chan *c = arg;
	struct relay *r = c->r;
	int fd = atomic_load(&c->fd);
	uint8_t *buf = malloc(PUMP_BUF);
	ssize_t n;

	if (!buf) {
		relay_fail(r, -ENOMEM, "lane %u: out of memory", c->idx);
		goto out;
	}
	if (c->pre_len) {
		n = tlm_lane_write(c->lane, c->pre, c->pre_len);
		if (n < 0) {
			relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
			goto out;
		}
	}
	for (;;) {
		n = read(fd, buf, PUMP_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (!atomic_load(&r->stop))
				relay_fail(r, -errno, "channel %u: read from QEMU: %s", c->idx,
					   strerror(errno));
			break;
		}
		if (n == 0) {
			if (atomic_load(&r->stop))
				break;
			n = tlm_lane_shutdown(c->lane);
			if (n < 0)
				relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
			break;
		}
		atomic_fetch_add(&c->rd, (uint64_t)n);
		if (atomic_load(&r->stop)) {
			if (r->dest)
				break;
			continue;   /* source: drop it, QEMU must not block or fail */
		}
		n = tlm_lane_write(c->lane, buf, (size_t)n);
		if (n < 0) {
			relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
			if (r->dest)
				break;
			continue;
		}
		atomic_fetch_add(&c->wr, (uint64_t)n);
	}
out:
	free(buf);
	atomic_store(&c->up_done, true);
	return NULL;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

static void *pump_down(void *arg)
{
	struct chan *c = arg;
	struct relay *r = c->r;
	uint8_t *buf = malloc(PUMP_BUF);
	ssize_t n;
	int rc;

	if (!buf) {
		relay_fail(r, -ENOMEM, "lane %u: out of memory", c->idx);
		goto out;
	}
	for (;;) {
		int fd;

		n = tlm_lane_read(c->lane, buf, PUMP_BUF, 250);
		if (n == -ETIMEDOUT) {
			if (atomic_load(&r->stop))
				break;
			continue;
		}
		if (n < 0) {
			if (!atomic_load(&r->stop))
				relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
			break;
		}
		fd = atomic_load(&c->fd);
		if (n == 0) {
			if (fd >= 0)
				shutdown(fd, SHUT_WR);
			break;
		}
		if (fd < 0) {
			/* Destination multifd channel: connect now that its header
			 * is here (the main channel is connected already). */
			fd = unix_connect(r->path);
			if (fd < 0) {
				relay_fail(r, fd, "channel %u: connect to QEMU: %s", c->idx,
					   strerror(-fd));
				break;
			}
			atomic_store(&c->fd, fd);
			if (atomic_load(&r->stop)) {
				shutdown(fd, SHUT_RDWR);
				break;
			}
			if (pthread_create(&c->up, NULL, pump_up, c)) {
				relay_fail(r, -EAGAIN, "channel %u: no thread", c->idx);
				break;
			}
			atomic_store(&c->up_on, true);
		}
		rc = write_all(fd, buf, (size_t)n);
		if (rc) {
			if (!atomic_load(&r->stop))
				relay_fail(r, rc, "channel %u: write to QEMU: %s", c->idx,
					   strerror(-rc));
			break;
		}
	}
out:
	free(buf);
	atomic_store(&c->down_done, true);
	return NULL;
}

static int chan_start(struct chan *c, bool up)
{
	if (up) {
		if (pthread_create(&c->up, NULL, pump_up, c))
			return -EAGAIN;
		atomic_store(&c->up_on, true);
	}
	if (pthread_create(&c->down, NULL, pump_down, c))
		return -EAGAIN;
	atomic_store(&c->down_on, true);
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Source: accept QEMU's channels and tell them apart by their first
 * bytes, which are kept and sent first. */
static void *acceptor(void *arg)
{
	struct relay *r = arg;
	struct pend { int fd; uint8_t b[MULTIFD_HDR]; size_t len; } pend[TLM_MAX_LANES];
	unsigned np = 0;

	while (!atomic_load(&r->stop) && (unsigned)atomic_load(&r->accepted) < r->n) {
		struct pollfd pfd[TLM_MAX_LANES + 1];
		int rc;

		pfd[0] = (struct pollfd){ .fd = r->lfd, .events = POLLIN };
		for (unsigned i = 0; i < np; i++)
			pfd[i + 1] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		rc = poll(pfd, np + 1, POLL_MS);
		if (rc < 0 && errno != EINTR) {
			relay_fail(r, -errno, "poll: %s", strerror(errno));
			break;
		}
		if (rc <= 0)
			continue;
		for (unsigned i = np; i-- > 0;) {
			struct pend *p = &pend[i];
			ssize_t n;
			uint32_t magic;
			unsigned idx;

			if (!pfd[i + 1].revents)
				continue;
			n = recv(p->fd, p->b + p->len, sizeof(p->b) - p->len, MSG_DONTWAIT);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (n <= 0) {
				relay_fail(r, -EPROTO, "QEMU closed a migration channel before "
					   "sending its header");
				goto out;
			}
			p->len += (size_t)n;
			if (p->len < 4)
				continue;
			magic = be32(p->b);
			if (magic == MAGIC_QEVM) {
				idx = 1;
			} else if (magic == MAGIC_MULTIFD) {
				if (p->len < 25)
					continue;
				if (p->b[24] >= r->n - 1) {
					relay_fail(r, -TLM_EPARAM, "QEMU opened multifd channel %u, but "
						   "the session carries %u (multifd-channels changed?)",
						   p->b[24], r->n - 1);
					goto out;
				}
				idx = 2 + p->b[24];
			} else {
				relay_fail(r, -EPROTO, "unknown migration channel (first bytes "
					   "%08x): not QEMU 7.2's stream format?", magic);
				goto out;
			}
			if (atomic_load(&r->ch[idx].fd) >= 0) {
				relay_fail(r, -EPROTO, "QEMU opened channel %u twice", idx);
				goto out;
			}
			memcpy(r->ch[idx].pre, p->b, p->len);
			r->ch[idx].pre_len = p->len;
			atomic_store(&r->ch[idx].fd, p->fd);
			*p = pend[--np];
			tlm__dbg("relay: %s channel -> lane %u", idx == 1 ? "main" : "multifd", idx);
			if (chan_start(&r->ch[idx], true)) {
				relay_fail(r, -EAGAIN, "no thread for channel %u", idx);
				goto out;
			}
			atomic_fetch_add(&r->accepted, 1);
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd < 0)
				continue;
			guardian_hold(r->guard, fd);
			if (np == TLM_MAX_LANES) {
				close(fd);
				relay_fail(r, -EPROTO, "QEMU opened more channels than expected");
				goto out;
			}
			pend[np++] = (struct pend){ .fd = fd };
		}
	}
out:
	/* Channels QEMU opened but has not named yet stay open, drained,
	 * until relay_stop, like the named ones (see relay_fail). */
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
	return NULL;
}

static int relay_init(struct relay *r, struct tlm_session *s, bool dest)
{
	char tmpl[64];
	const char *tmp = getenv("TMPDIR");

	memset(r, 0, sizeof(*r));
	r->s = s;
	r->dest = dest;
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

static int relay_listen(struct relay *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, TLM_MAX_LANES) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	r->lfd = fd;
	if (pthread_create(&r->acc, NULL, acceptor, r)) {
		close(fd);
		r->lfd = -1;
		return -EAGAIN;
	}
	r->acc_on = true;
	return 0;
}

/* Destination: main channel first, multifd ones as their bytes arrive. */
static int relay_dest_start(struct relay *r)
{
	int fd = unix_connect(r->path);

	if (fd < 0)
		return fd;
	atomic_store(&r->ch[1].fd, fd);
	for (unsigned i = 1; i <= r->n; i++)
		if (chan_start(&r->ch[i], i == 1))
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

static int relay_wait_finished(struct relay *r, int timeout_ms)
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
static int relay_drain(struct relay *r, int timeout_ms)
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

static void relay_stop(struct relay *r, bool force)
{
	if (force)
		relay_fail(r, -TLM_EABORTED, "aborted");
	atomic_store(&r->stop, 1);
	atomic_store(&r->closing, 1);
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
	if (r->path[0])
		unlink(r->path);
	if (r->dir[0])
		rmdir(r->dir);
	r->path[0] = r->dir[0] = '\0';
	pthread_mutex_destroy(&r->mu);
}

static void take_stats(struct tlm_session *s, struct tlm_relay_result *res)
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

/* ---- shared helpers ---- */

int tlm_relay_policy_parse(const char *s)
{
	if (!s)
		return -EINVAL;
	if (!strcmp(s, "qemu"))
		return TLM_RELAY_POLICY_QEMU;
	if (!strcmp(s, "one-pass"))
		return TLM_RELAY_POLICY_TLM;
	if (!strcmp(s, "auto-converge"))
		return TLM_RELAY_POLICY_AUTOCONVERGE;
	return -EINVAL;
}

const char *tlm_relay_policy_name(int policy)
{
	switch (policy) {
	case TLM_RELAY_POLICY_QEMU: return "qemu";
	case TLM_RELAY_POLICY_TLM: return "one-pass";
	case TLM_RELAY_POLICY_AUTOCONVERGE: return "auto-converge";
	default: return "?";
	}
}

static void res_err(struct tlm_relay_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void res_err(struct tlm_relay_result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	tlm__err("%s", r->error);
}

static bool cancelled(volatile sig_atomic_t *c)
{
	return c && *c;
}

static struct tlm_session_cfg session_cfg(const char *transport, const char *targs,
					  const struct tlm_psk *psk, unsigned lanes)
{
	struct tlm_session_cfg c = {
		.transport = transport ? transport : "tcp",
		.transport_args = targs, .n_lanes = lanes, .psk = psk,
		.timeout_ms = 10000,
	};
	for (unsigned i = 1; i < TLM_MAX_LANES; i++)
		c.lane_modes[i] = TLM_MODE_BYTES;
	return c;
}

/* The capabilities the relay sets; the source gets them back as they were
 * once its migration has ended, so a later migration without tlm does not
 * stop in pre-switchover waiting for a migrate-continue nobody sends. */
static const char *const relay_caps[] = { "multifd", "events", "pause-before-switchover",
					  "auto-converge" };
#define N_SRC_CAPS 4
#define N_DST_CAPS 2

static int set_multifd(struct tlm_qmp *q, bool source, int policy, unsigned n,
		       uint64_t bw)
{
	bool vals[] = { true, true, true, policy == TLM_RELAY_POLICY_AUTOCONVERGE };
	struct json_object *p = json_object_new_object();
	int rc = tlm_qmp_set_caps(q, relay_caps, vals, source ? N_SRC_CAPS : N_DST_CAPS);

	if (rc) {
		json_object_put(p);
		return rc;
	}
	json_object_object_add(p, "multifd-channels", json_object_new_int((int)n));
	if (source) {
		json_object_object_add(p, "max-bandwidth", json_object_new_int64((int64_t)bw));
		json_object_object_add(p, "downtime-limit",
				       json_object_new_int64(DOWNTIME_DEFAULT_MS));
	}
	return tlm_qmp_set_params(q, p);
}

/* ---- source ---- */

/* Before anything starts: the QEMU must run (or be paused) with no
 * migration under way. */
static int check_source(struct tlm_qmp *q, struct tlm_relay_result *res)
{
	struct tlm_qmp_migstat st;
	char status[32];
	int rc = tlm_qmp_query_status(q, status, sizeof(status), NULL);

	if (rc) {
		res_err(res, "source QEMU: query-status: %s", tlm_qmp_last_error(q));
		return rc;
	}
	if (strcmp(status, "running") && strcmp(status, "paused")) {
		res_err(res, "source QEMU is '%s', not running: nothing to migrate", status);
		return -EINVAL;
	}
	rc = tlm_qmp_query_migrate(q, &st);
	if (rc) {
		res_err(res, "source QEMU: query-migrate: %s", tlm_qmp_last_error(q));
		return rc;
	}
	if (!strcmp(st.status, "setup") || !strcmp(st.status, "active") ||
	    !strcmp(st.status, "pre-switchover") || !strcmp(st.status, "device") ||
	    !strcmp(st.status, "cancelling")) {
		res_err(res, "source QEMU already has a migration in state '%s'", st.status);
		return -EBUSY;
	}
	return 0;
}

/* Cancels the source migration and makes sure the VM runs again. */
static void source_rollback(struct tlm_qmp *q, bool was_running)
{
	static const char *const ended[] = { "cancelled", "failed", "completed", "", NULL };
	struct tlm_qmp_migstat st;
	char status[32] = "";

	if (tlm_qmp_migrate_cancel(q))
		tlm__warn("migrate_cancel: %s", tlm_qmp_last_error(q));
	if (tlm_qmp_wait_migrate(q, ended, 20, 20000, &st))
		tlm__warn("source migration did not end after migrate_cancel (%s)", st.status);
	if (!tlm_qmp_query_status(q, status, sizeof(status), NULL) &&
	    strcmp(status, "running") && was_running) {
		tlm__warn("source VM is '%s' after cancel: resuming it", status);
		if (tlm_qmp_exec(q, "cont", NULL, NULL, TLM_QMP_TIMEOUT_MS))
			tlm__err("cont: %s", tlm_qmp_last_error(q));
	}
}

/* The source's migration capabilities back as saved; false if QEMU said no. */
static bool restore_caps(struct tlm_qmp *q, const bool *caps)
{
	if (!tlm_qmp_set_caps(q, relay_caps, caps, N_SRC_CAPS))
		return true;
	tlm__warn("source QEMU: could not restore its migration capabilities: %s",
		  tlm_qmp_last_error(q));
	return false;
}

/* ---- the guardian ---- */

/* If this process dies mid-migration (a crash, SIGKILL, the OOM killer),
 * nobody cancels QEMU's migration: a guest stopped at pre-switchover
 * stays stopped, and the capabilities we set stay set. A guardian process,
 * forked before anything starts (no lanes, no other threads yet), waits
 * on a socket: we send "d" once we have put everything back ourselves,
 * and it exits. We also send it a copy of each of QEMU's channel sockets
 * as it is accepted ("f"), so our death does not close them under a live
 * migration (see relay_fail: QEMU 7.2 may abort on that). EOF without "d"
 * means we are gone; our QMP connection went with us, so it connects anew
 * and rolls back: migrate_cancel, cont if the guest ran before, the
 * capabilities as they were, while a thread drains the channels until
 * QEMU closes them. A migration QEMU completed is left alone (the
 * destination may be running the guest): only the capabilities go back. */
struct guardian {
	pid_t pid;
	int wr;
};

#define GUARD_FDS (2 * TLM_MAX_LANES)

struct guard_drain {
	int fd[GUARD_FDS];
	unsigned n;
	atomic_bool stop;
};

/* The guardian: read and drop what QEMU sends until it closes, or stop. */
static void *guard_drain_main(void *arg)
{
	struct guard_drain *d = arg;
	uint8_t drop[4096];

	while (d->n && !atomic_load(&d->stop)) {
		struct pollfd pfd[GUARD_FDS];
		int rc;

		for (unsigned i = 0; i < d->n; i++)
			pfd[i] = (struct pollfd){ .fd = d->fd[i], .events = POLLIN };
		rc = poll(pfd, d->n, POLL_MS);
		if (rc < 0 && errno != EINTR)
			break;
		for (unsigned i = d->n; rc > 0 && i-- > 0;) {
			ssize_t n;

			if (!pfd[i].revents)
				continue;
			n = recv(d->fd[i], drop, sizeof(drop), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				close(d->fd[i]);
				d->fd[i] = d->fd[--d->n];
			}
		}
	}
	return NULL;
}

/* Guardian: one message from the relay; 'd', 'f' (*fd set), 0 at EOF. */
static char guard_recv(int sock, int *fd)
{
	char b, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &b, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t n;

	*fd = -1;
	while ((n = recvmsg(sock, &m, 0)) < 0 && errno == EINTR)
		;
	if (n != 1)
		return 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return b;
}

static void guardian_main(int rd, const char *path, const bool *caps, bool was_running)
{
	static struct guard_drain d;
	struct tlm_qmp_migstat st;
	struct tlm_qmp *q = NULL;
	pthread_t drainer;
	bool draining = false;
	int rc = 0, fd;
	char b;

	/* the relay decides what Ctrl-C and SIGTERM mean; nothing of its
	 * (QMP connection, sockets) may stay open on our account */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (rd != 3 && (dup2(rd, 3) < 0 || close(rd)))
		_exit(1);
	close_range(4, ~0u, 0);
	while ((b = guard_recv(3, &fd)) == 'f') {
		if (fd >= 0 && d.n < GUARD_FDS)
			d.fd[d.n++] = fd;
		else if (fd >= 0)
			close(fd);
	}
	if (b == 'd')
		_exit(0);
	tlm__err("relay: the migrating process ended without rolling the source back; "
		 "the guardian does it");
	draining = d.n && !pthread_create(&drainer, NULL, guard_drain_main, &d);
	for (int i = 0; i < 3 && (rc = tlm_qmp_connect(path, 10000, &q)); i++)
		sleep(1);
	if (rc) {
		tlm__err("relay guardian: cannot reach the source QEMU at %s: %s", path,
			 strerror(-rc));
		_exit(1);
	}
	bool completed = !tlm_qmp_query_migrate(q, &st) && !strcmp(st.status, "completed");

	if (completed)
		tlm__err("relay guardian: QEMU had completed the migration: the source stays "
			 "stopped (the destination may be running the guest)");
	else
		source_rollback(q, was_running);
	if (restore_caps(q, caps) && !completed)
		tlm__err("relay guardian: source rolled back (migration cancelled, capabilities "
			 "restored%s)", was_running ? ", guest running" : "");
	tlm_qmp_close(q);
	if (draining) {
		atomic_store(&d.stop, true);
		pthread_join(drainer, NULL);
	}
	_exit(0);
}

static int guardian_start(struct guardian *g, const char *path, const bool *caps,
			  bool was_running)
{
	int p[2];

	g->pid = -1;
	g->wr = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p))
		return -errno;
	fflush(NULL);
	g->pid = fork();
	if (g->pid == 0) {
		close(p[1]);
		guardian_main(p[0], path, caps, was_running);
	}
	close(p[0]);
	if (g->pid < 0) {
		close(p[1]);
		return -errno;
	}
	g->wr = p[1];
	return 0;
}

/* A copy of one of QEMU's channel sockets for the guardian to hold. */
static void guardian_hold(int sock, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { "f", 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	if (sock < 0)
		return;
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &m, MSG_NOSIGNAL) != 1)
		tlm__dbg("relay: guardian: cannot hand over channel: %s", strerror(errno));
}

/* We have put the source back ourselves (or never touched it). */
static void guardian_stop(struct guardian *g)
{
	if (g->pid <= 0)
		return;
	if (send(g->wr, "d", 1, MSG_NOSIGNAL) != 1)
		tlm__warn("relay: guardian: %s", strerror(errno));
	close(g->wr);
	while (waitpid(g->pid, NULL, 0) < 0 && errno == EINTR)
		;
	g->pid = -1;
}

int tlm_relay_migrate(const struct tlm_relay_src_opts *o, struct tlm_relay_result *res)
{
	struct tlm_qmp *q = o->qmp;
	struct tlm_session_cfg cfg;
	struct tlm_session *s = NULL;
	struct ctrl ctrl = { 0 };
	struct relay r;
	bool relay_on = false, migrating = false, continued = false, was_running;
	bool caps[N_SRC_CAPS], caps_saved = false;
	struct guardian guard = { .pid = -1, .wr = -1 };
	char line[CTRL_LINE], status[32], uri[160];
	int rc, timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	int pms = o->progress_ms > 0 ? o->progress_ms : 500;
	uint64_t t0 = tlm__now_ms(), deadline, next_progress = 0, bw;

	memset(res, 0, sizeof(*res));
	if (o->multifd < 1 || o->multifd > TLM_RELAY_MAX_MULTIFD) {
		res_err(res, "multifd channels: %u, must be 1..%d", o->multifd,
			TLM_RELAY_MAX_MULTIFD);
		return -EINVAL;
	}
	if (o->policy < TLM_RELAY_POLICY_QEMU || o->policy > TLM_RELAY_POLICY_AUTOCONVERGE) {
		res_err(res, "unknown policy %d", o->policy);
		return -EINVAL;
	}
	rc = check_source(q, res);
	if (rc)
		return rc;
	rc = tlm_qmp_query_status(q, status, sizeof(status), NULL);
	was_running = !rc && !strcmp(status, "running");
	caps_saved = !tlm_qmp_get_caps(q, relay_caps, caps, N_SRC_CAPS);
	if (o->qmp_path && caps_saved) {
		rc = guardian_start(&guard, o->qmp_path, caps, was_running);
		if (rc) {
			res_err(res, "cannot start the guardian process: %s", strerror(-rc));
			return rc;
		}
	}

	cfg = session_cfg(o->transport, o->transport_args, o->psk, o->multifd + 1);
	rc = tlm_connect(&cfg, o->host, o->port, &s);
	if (rc) {
		res_err(res, "cannot open %u lanes to %s:%s: %s", o->multifd + 2, o->host,
			o->port, tlm_strerror(rc));
		guardian_stop(&guard);
		return rc;
	}
	rc = ctrl_start(&ctrl, tlm_session_lane(s, 0));
	if (rc)
		goto out_session;
	rc = ctrl_send(&ctrl, "HELLO %d %u", TLM_RELAY_PROTO, o->multifd);
	if (rc) {
		res_err(res, "control lane: %s", tlm_strerror(rc));
		goto out_ctrl;
	}
	rc = ctrl_get(&ctrl, line, sizeof(line), 60000);
	if (rc <= 0) {
		res_err(res, "receiver did not answer: %s",
			rc ? tlm_strerror(rc) : "timed out");
		rc = rc ? rc : -ETIMEDOUT;
		goto out_ctrl;
	}
	if (strncmp(line, "READY", 5)) {
		res_err(res, "receiver refused: %s", !strncmp(line, "ERR ", 4) ? line + 4 : line);
		rc = -TLM_EPARAM;
		goto out_ctrl;
	}

	bw = o->max_bandwidth ? o->max_bandwidth : 64ull << 30;
	rc = set_multifd(q, true, o->policy, o->multifd, bw);
	if (rc) {
		res_err(res, "source QEMU refused the migration settings: %s",
			tlm_qmp_last_error(q));
		ctrl_send(&ctrl, "FAILED source QEMU refused the settings");
		goto out_ctrl;
	}
	rc = relay_init(&r, s, false);
	if (rc) {
		res_err(res, "private socket dir: %s", strerror(-rc));
		ctrl_send(&ctrl, "FAILED source relay setup");
		goto out_ctrl;
	}
	r.guard = guard.pid > 0 ? guard.wr : -1;
	relay_on = true;
	rc = relay_listen(&r);
	if (rc) {
		res_err(res, "listen on %s: %s", r.path, strerror(-rc));
		ctrl_send(&ctrl, "FAILED source relay setup");
		goto out_relay;
	}
	snprintf(uri, sizeof(uri), "unix:%s", r.path);
	t0 = tlm__now_ms();
	deadline = t0 + (uint64_t)timeout;
	/* Counted as migrating before the answer: a reply lost to a timeout
	 * may hide a migration QEMU did start, and the rollback cancels it
	 * (migrate_cancel on an idle QEMU does nothing). */
	migrating = true;
	rc = tlm_qmp_migrate(q, uri);
	if (rc) {
		res_err(res, "source QEMU: migrate: %s", tlm_qmp_last_error(q));
		goto fail;
	}

	for (;;) {
		struct tlm_qmp_migstat *st = &res->st;
		int crc;

		rc = tlm_qmp_query_migrate(q, st);
		if (rc) {
			res_err(res, "source QEMU: query-migrate: %s", tlm_qmp_last_error(q));
			goto fail;
		}
		if (o->progress && tlm__now_ms() >= next_progress) {
			o->progress(st, o->progress_arg);
			next_progress = tlm__now_ms() + (uint64_t)pms;
		}
		if (!strcmp(st->status, "completed"))
			break;
		if (!strcmp(st->status, "failed") || !strcmp(st->status, "cancelled")) {
			/* Our own failure makes QEMU's socket fail: ours says more. */
			if (atomic_load(&r.err))
				res_err(res, "%s (QEMU: %s)", r.why,
					st->error_desc[0] ? st->error_desc : st->status);
			res_err(res, "source QEMU: migration %s%s%s", st->status,
				st->error_desc[0] ? ": " : "", st->error_desc);
			rc = -EIO;
			goto fail;
		}
		if (cancelled(o->cancel)) {
			res_err(res, "interrupted");
			rc = -TLM_EABORTED;
			goto fail;
		}
		if (atomic_load(&r.err)) {
			res_err(res, "%s", r.why);
			rc = atomic_load(&r.err);
			goto fail;
		}
		crc = ctrl_get(&ctrl, line, sizeof(line), 0);
		if (crc < 0) {
			res_err(res, "control lane to the receiver: %s", tlm_strerror(crc));
			rc = crc;
			goto fail;
		}
		if (crc > 0 && !strncmp(line, "FAILED", 6)) {
			res_err(res, "receiver failed: %s", line[6] ? line + 7 : "?");
			rc = -TLM_EABORTED;
			goto fail;
		}
		if (tlm__now_ms() >= deadline) {
			res_err(res, "timed out after %d s (%s)", timeout / 1000, st->status);
			rc = -ETIMEDOUT;
			goto fail;
		}
		if (o->policy == TLM_RELAY_POLICY_TLM && !res->forced && !continued &&
		    st->ram_dirty_sync_count >= 2 && !strcmp(st->status, "active")) {
			/* The first full pass is done: let the next check complete. */
			struct json_object *p = json_object_new_object();

			json_object_object_add(p, "downtime-limit",
					       json_object_new_int64(DOWNTIME_MAX_MS));
			rc = tlm_qmp_set_params(q, p);
			if (rc) {
				res_err(res, "source QEMU: downtime-limit: %s", tlm_qmp_last_error(q));
				goto fail;
			}
			res->forced = true;
			tlm__info("policy tlm: first pass done after %llu ms, switching over",
				  (unsigned long long)(tlm__now_ms() - t0));
		}
		if (!continued && !strcmp(st->status, "pre-switchover")) {
			res->qemu_converged = !res->forced;
			rc = relay_drain(&r, 5000);
			if (rc && rc != -ETIMEDOUT) {
				res_err(res, "draining lanes: %s", r.why[0] ? r.why : tlm_strerror(rc));
				goto fail;
			}
			rc = tlm_qmp_migrate_continue(q);
			if (rc) {
				res_err(res, "source QEMU: migrate-continue: %s", tlm_qmp_last_error(q));
				goto fail;
			}
			continued = true;
		}
		/* A MIGRATION event (pre-switchover above all: the guest is
		 * stopped and every ms counts as downtime) ends the wait early. */
		if (tlm_qmp_wait_event(q, "MIGRATION", continued ? 10 : 50, NULL) == 0)
			tlm_qmp_drop_events(q);
	}
	{
		/* total-time and downtime come a moment after "completed". */
		static const char *const done[] = { "completed", NULL };

		tlm_qmp_wait_migrate(q, done, 20, 5000, &res->st);
	}
	if (o->progress)
		o->progress(&res->st, o->progress_arg);

	/* QEMU has handed everything to us; it is not over until the
	 * destination has it and runs. */
	rc = relay_wait_finished(&r, 60000);
	if (rc == -ETIMEDOUT)
		tlm__warn("relay: channels still open 60 s after completion; closing them");
	else if (rc)
		tlm__warn("relay after completion: %s", r.why);
	rc = ctrl_get(&ctrl, line, sizeof(line), 60000);
	while (rc > 0 && strncmp(line, "RESULT", 6) && strncmp(line, "FAILED", 6))
		rc = ctrl_get(&ctrl, line, sizeof(line), 60000);
	res->wall_ms = (int64_t)(tlm__now_ms() - t0);
	take_stats(s, res);
	if (rc > 0 && !strncmp(line, "RESULT ok ", 10)) {
		copy_str(res->dst_status, sizeof(res->dst_status), line + 10);
		res->completed = true;
		ctrl_send(&ctrl, "BYE");
		rc = 0;
		goto out_relay;
	}
	res_err(res, "destination failed after the switchover: %s",
		rc > 0 ? line : rc ? tlm_strerror(rc) : "no answer");
	/* The source still has the whole VM: bring it back. */
	if (was_running && tlm_qmp_exec(q, "cont", NULL, NULL, TLM_QMP_TIMEOUT_MS))
		tlm__err("cont on the source: %s", tlm_qmp_last_error(q));
	rc = -EIO;
	goto out_relay;

fail:
	/* The source VM first: telling the peer may block on a stalled lane. */
	if (migrating)
		source_rollback(q, was_running);
	ctrl_send(&ctrl, "FAILED %s", res->error);
	res->wall_ms = (int64_t)(tlm__now_ms() - t0);
	relay_stop(&r, true);
	relay_on = false;
	take_stats(s, res);
	if (!rc)
		rc = -EIO;
out_relay:
	if (relay_on)
		relay_stop(&r, false);
out_ctrl:
	if (caps_saved)
		restore_caps(q, caps);
	ctrl_stop(&ctrl);
out_session:
	if (!res->n_lanes)
		take_stats(s, res);
	tlm_session_close(s);
	guardian_stop(&guard);
	return rc;
}

/* ---- destination ---- */

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

int tlm_relay_receive(const struct tlm_relay_dst_opts *o, struct tlm_relay_result *res)
{
	struct tlm_qmp *q = o->qmp;
	struct tlm_session_cfg cfg;
	struct tlm_listener *l = NULL;
	struct tlm_session *s = NULL;
	struct ctrl ctrl = { 0 };
	struct relay r;
	bool relay_on = false;
	char line[CTRL_LINE], status[32], uri[160];
	int rc, proto, timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	int acc_timeout = o->accept_timeout_ms > 0 ? o->accept_timeout_ms : DEFAULT_TIMEOUT_MS;
	unsigned n;
	uint64_t t0, deadline;

	memset(res, 0, sizeof(*res));
	if (o->multifd > TLM_RELAY_MAX_MULTIFD) {
		res_err(res, "multifd channels: %u, must be 1..%d", o->multifd,
			TLM_RELAY_MAX_MULTIFD);
		return -EINVAL;
	}
	rc = tlm_qmp_query_status(q, status, sizeof(status), NULL);
	if (rc) {
		res_err(res, "destination QEMU: query-status: %s", tlm_qmp_last_error(q));
		return rc;
	}
	if (strcmp(status, "inmigrate")) {
		res_err(res, "destination QEMU is '%s', not 'inmigrate' (start it with "
			"-incoming defer)", status);
		return -EINVAL;
	}
	cfg = session_cfg(o->transport, o->transport_args, o->psk,
			  o->multifd ? o->multifd + 1 : 0);
	rc = tlm_listen(&cfg, o->addr, o->port, &l);
	if (rc) {
		res_err(res, "cannot listen on %s:%s: %s", o->addr ? o->addr : "*", o->port,
			tlm_strerror(rc));
		return rc;
	}
	if (o->listening)
		o->listening(tlm_listener_port(l), o->listening_arg);
	/* Lanes that fail authentication (wrong key, garbage) are refused and
	 * logged by tlm_accept, which goes on waiting for a good session. */
	for (uint64_t end = tlm__now_ms() + (uint64_t)acc_timeout;;) {
		int left = tlm__left_ms(end);

		rc = tlm_accept(l, left < 1000 ? left : 1000, &s);
		if (rc != -ETIMEDOUT || !left)
			break;
		if (cancelled(o->cancel)) {
			rc = -TLM_EABORTED;
			break;
		}
	}
	tlm_listener_close(l);
	if (rc) {
		res_err(res, "no migration session arrived: %s",
			rc == -TLM_EABORTED ? "interrupted" : tlm_strerror(rc));
		dest_quit(q, res);
		return rc;
	}
	n = tlm_session_lanes(s);
	rc = ctrl_start(&ctrl, tlm_session_lane(s, 0));
	if (rc)
		goto out_session;
	rc = ctrl_get(&ctrl, line, sizeof(line), 30000);
	if (rc <= 0) {
		res_err(res, "no HELLO from the source: %s", rc ? tlm_strerror(rc) : "timed out");
		rc = rc ? rc : -ETIMEDOUT;
		goto out_fail;
	}
	{
		unsigned mf = 0;

		if (sscanf(line, "HELLO %d %u", &proto, &mf) != 2) {
			res_err(res, "the source does not speak the relay protocol ('%.40s')", line);
			ctrl_send(&ctrl, "ERR bad HELLO");
			rc = -EPROTO;
			goto out_fail;
		}
		if (proto != TLM_RELAY_PROTO) {
			res_err(res, "the source speaks relay protocol %d, this side %d", proto,
				TLM_RELAY_PROTO);
			ctrl_send(&ctrl, "ERR receiver speaks relay protocol %d, not %d",
				  TLM_RELAY_PROTO, proto);
			rc = -TLM_EVERSION;
			goto out_fail;
		}
		if (mf + 1 != n || mf < 1) {
			res_err(res, "the source announced %u multifd channels over %u data lanes",
				mf, n);
			ctrl_send(&ctrl, "ERR %u multifd channels need %u data lanes, not %u",
				  mf, mf + 1, n);
			rc = -TLM_EPARAM;
			goto out_fail;
		}
	}
	rc = set_multifd(q, false, 0, n - 1, 0);
	if (rc) {
		res_err(res, "destination QEMU refused the migration settings: %s",
			tlm_qmp_last_error(q));
		ctrl_send(&ctrl, "ERR destination QEMU refused the settings: %s",
			  tlm_qmp_last_error(q));
		goto out_fail;
	}
	rc = relay_init(&r, s, true);
	if (rc) {
		res_err(res, "private socket dir: %s", strerror(-rc));
		ctrl_send(&ctrl, "ERR receiver setup");
		goto out_fail;
	}
	relay_on = true;
	snprintf(uri, sizeof(uri), "unix:%s", r.path);
	rc = tlm_qmp_migrate_incoming(q, uri);
	if (rc) {
		res_err(res, "destination QEMU: migrate-incoming: %s", tlm_qmp_last_error(q));
		ctrl_send(&ctrl, "ERR destination QEMU: migrate-incoming failed");
		goto out_fail;
	}
	rc = relay_dest_start(&r);
	if (rc) {
		res_err(res, "connect to the destination QEMU: %s", strerror(-rc));
		ctrl_send(&ctrl, "ERR receiver cannot reach its QEMU");
		goto out_fail;
	}
	rc = ctrl_send(&ctrl, "READY");
	if (rc) {
		res_err(res, "control lane: %s", tlm_strerror(rc));
		goto out_fail;
	}
	t0 = tlm__now_ms();
	deadline = t0 + (uint64_t)timeout;
	for (;;) {
		int crc;

		rc = tlm_qmp_query_status(q, status, sizeof(status), NULL);
		if (rc) {
			/* QEMU exits by itself when the source cancels: say why. */
			if (ctrl_get(&ctrl, line, sizeof(line), 1000) > 0 &&
			    !strncmp(line, "FAILED", 6))
				res_err(res, "the source cancelled: %s", line[6] ? line + 7 : "?");
			res_err(res, "destination QEMU went away (%s)", tlm_qmp_last_error(q));
			goto out_fail;
		}
		if (strcmp(status, "inmigrate")) {
			if (!strcmp(status, "running") || !strcmp(status, "paused"))
				break;
			res_err(res, "destination QEMU ended in state '%s'", status);
			rc = -EIO;
			goto out_fail;
		}
		if (cancelled(o->cancel)) {
			res_err(res, "interrupted");
			rc = -TLM_EABORTED;
			goto out_fail;
		}
		crc = ctrl_get(&ctrl, line, sizeof(line), 0);
		if (crc > 0 && !strncmp(line, "FAILED", 6)) {
			res_err(res, "the source cancelled: %s", line[6] ? line + 7 : "?");
			rc = -TLM_EABORTED;
			goto out_fail;
		}
		if (crc < 0) {
			res_err(res, "control lane to the source: %s", tlm_strerror(crc));
			rc = crc;
			goto out_fail;
		}
		if (atomic_load(&r.err)) {
			res_err(res, "%s", r.why);
			rc = atomic_load(&r.err);
			goto out_fail;
		}
		if (tlm__now_ms() >= deadline) {
			res_err(res, "timed out after %d s", timeout / 1000);
			rc = -ETIMEDOUT;
			goto out_fail;
		}
		usleep(50000);
	}
	snprintf(res->dst_status, sizeof(res->dst_status), "%s", status);
	rc = relay_wait_finished(&r, 10000);
	if (rc)
		tlm__dbg("relay: channels not all closed after the switchover (%d)", rc);
	res->wall_ms = (int64_t)(tlm__now_ms() - t0);
	take_stats(s, res);
	res->completed = true;
	rc = ctrl_send(&ctrl, "RESULT ok %s", status);
	if (rc)
		tlm__warn("could not tell the source the result: %s", tlm_strerror(rc));
	/* Wait for the source to have read it before the lanes go. */
	while (ctrl_get(&ctrl, line, sizeof(line), 5000) > 0 && strncmp(line, "BYE", 3))
		;
	rc = 0;
	relay_stop(&r, false);
	relay_on = false;
	goto out_ctrl;

out_fail:
	ctrl_send(&ctrl, "FAILED %s", res->error);
	if (relay_on) {
		relay_stop(&r, true);
		relay_on = false;
	}
	dest_quit(q, res);
	take_stats(s, res);
	if (!rc)
		rc = -EIO;
out_ctrl:
	ctrl_stop(&ctrl);
out_session:
	tlm_session_close(s);
	return rc;
}
