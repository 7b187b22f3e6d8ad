/* SPDX-License-Identifier: MIT */
/*
 * The byte pumps: per channel one socket->lane ("up") and one
 * lane->socket ("down").
 *
 * Threads: per channel one pump socket->lane ("up") and one lane->socket
 * ("down"); a lane is written by one thread and read by another. The
 * control lane is read by its own thread and written by the thread that
 * called tlm_relay_migrate/receive, which also owns the QMP handle, and by
 * its keepalive thread (relay-ctrl.c).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay-internal.h"

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
		tlm__relay_fail(r, -ENOMEM, "lane %u: out of memory", c->idx);
		goto out;
	}
	if (c->pre_len) {
		n = tlm_lane_write(c->lane, c->pre, c->pre_len);
		if (n < 0) {
			tlm__relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
			goto out;
		}
	}
	for (;;) {
		n = read(fd, buf, PUMP_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (!atomic_load(&r->stop))
				tlm__relay_fail(r, -errno, "channel %u: read from QEMU: %s", c->idx,
					   strerror(errno));
			break;
		}
		if (n == 0) {
			if (atomic_load(&r->stop))
				break;
			n = tlm_lane_shutdown(c->lane);
			if (n < 0)
				tlm__relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
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
			tlm__relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
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

int tlm__relay_unix_connect(const char *path)
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
		tlm__relay_fail(r, -ENOMEM, "lane %u: out of memory", c->idx);
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
				tlm__relay_fail(r, (int)n, "lane %u: %s", c->idx, tlm_strerror((int)n));
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
			fd = tlm__relay_unix_connect(r->path);
			if (fd < 0) {
				tlm__relay_fail(r, fd, "channel %u: connect to QEMU: %s", c->idx,
					   strerror(-fd));
				break;
			}
			atomic_store(&c->fd, fd);
			if (atomic_load(&r->stop)) {
				shutdown(fd, SHUT_RDWR);
				break;
			}
			if (pthread_create(&c->up, NULL, pump_up, c)) {
				tlm__relay_fail(r, -EAGAIN, "channel %u: no thread", c->idx);
				break;
			}
			atomic_store(&c->up_on, true);
		}
		rc = write_all(fd, buf, (size_t)n);
		if (rc) {
			if (!atomic_load(&r->stop))
				tlm__relay_fail(r, rc, "channel %u: write to QEMU: %s", c->idx,
					   strerror(-rc));
			break;
		}
	}
out:
	free(buf);
	atomic_store(&c->down_done, true);
	return NULL;
}

int tlm__relay_chan_start(struct chan *c, bool up)
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
