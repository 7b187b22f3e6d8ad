/* SPDX-License-Identifier: MIT */
/*
 * If the command driving a migration dies mid-way (a crash, SIGKILL, the
 * OOM killer), nobody cancels QEMU's migration: a guest stopped at
 * pre-switchover or after a checkpoint stays stopped, and the capabilities
 * set stay set. A guardian process, forked before anything starts (no
 * lanes, no other threads yet), waits on a socket: the command sends "d"
 * once it has put everything back itself, and the guardian exits. The
 * relay also sends it a copy of each of QEMU's channel sockets as it is
 * accepted ("f"), so its death does not close them under a live migration
 * (see tlm__relay_fail: QEMU 7.2 may abort on that). EOF without "d" means
 * the command is gone; its QMP connection went with it, so the guardian
 * connects anew and rolls back: migrate_cancel, cont if the guest ran
 * before, the capabilities as they were, while a thread drains the
 * channels until QEMU closes them. A migration QEMU completed is left
 * alone (the destination may be running the guest), unless its
 * destination was a file (resume_completed): then the guest runs on.
 */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdatomic.h>

#include "guard.h"
#include "tlm-internal.h"
#include "tlm/tlm.h"

#define GUARD_FDS (2 * TLM_MAX_LANES)
#define GUARD_POLL_MS 100

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
		rc = poll(pfd, d->n, GUARD_POLL_MS);
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

void tlm_guardian_rollback(struct tlm_qmp *q, bool was_running)
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

static void guardian_main(int rd, const struct tlm_guardian_cfg *c)
{
	static struct guard_drain d;
	struct tlm_qmp_migstat st;
	struct tlm_qmp *q = NULL;
	pthread_t drainer;
	bool draining = false, completed, caps_back = true;
	int rc = 0, fd;
	char b;

	/* the command decides what Ctrl-C and SIGTERM mean; nothing of its
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
	tlm__err("%s: the migrating process ended without putting QEMU back; the guardian "
		 "does it", c->who);
	draining = d.n && !pthread_create(&drainer, NULL, guard_drain_main, &d);
	for (int i = 0; i < 3 && (rc = tlm_qmp_connect(c->qmp_path, 10000, &q)); i++)
		sleep(1);
	if (rc) {
		tlm__err("%s guardian: cannot reach QEMU at %s: %s", c->who, c->qmp_path,
			 strerror(-rc));
		_exit(1);
	}
	completed = !tlm_qmp_query_migrate(q, &st) && !strcmp(st.status, "completed");
	if (completed && !c->resume_completed)
		tlm__err("%s guardian: QEMU had completed the migration: the source stays "
			 "stopped (the destination may be running the guest)", c->who);
	else
		tlm_guardian_rollback(q, c->was_running);
	if (c->n_caps && tlm_qmp_set_caps(q, c->caps, c->caps_on, c->n_caps)) {
		tlm__warn("%s guardian: could not restore QEMU's migration capabilities: %s",
			  c->who, tlm_qmp_last_error(q));
		caps_back = false;
	}
	if (!completed || c->resume_completed)
		tlm__err("%s guardian: QEMU rolled back (migration cancelled%s%s)", c->who,
			 caps_back ? ", capabilities restored" : "",
			 c->was_running ? ", guest running" : "");
	tlm_qmp_close(q);
	if (draining) {
		atomic_store(&d.stop, true);
		pthread_join(drainer, NULL);
	}
	_exit(0);
}

int tlm_guardian_start(struct tlm_guardian *g, const struct tlm_guardian_cfg *cfg)
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
		guardian_main(p[0], cfg);
	}
	close(p[0]);
	if (g->pid < 0) {
		close(p[1]);
		return -errno;
	}
	g->wr = p[1];
	return 0;
}

void tlm_guardian_hold(int sock, int fd)
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
		tlm__dbg("guardian: cannot hand over a channel: %s", strerror(errno));
}

void tlm_guardian_done(struct tlm_guardian *g)
{
	if (g->pid <= 0)
		return;
	if (send(g->wr, "d", 1, MSG_NOSIGNAL) != 1)
		tlm__warn("guardian: %s", strerror(errno));
	close(g->wr);
	while (waitpid(g->pid, NULL, 0) < 0 && errno == EINTR)
		;
	g->pid = -1;
}
