/* SPDX-License-Identifier: MIT */
/*
 * The original parallel TCP library API (include/tlm/mr.h), kept unchanged
 * for programs written against it. It shares nothing with the lane
 * machinery in tcp.c: plain blocking sockets, errno-style reporting as the
 * original did, and no printing.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mr.h"

/* Returns 0, or -1 with errno set. Fields are split on blanks after the
 * comment is cut off; exactly two are expected. */
static int parse_line(char *line, mr_addr_port *out, int *have)
{
	char *save = NULL, *addr, *port;
	char *hash = strchr(line, '#');

	if (hash)
		*hash = '\0';
	*have = 0;
	addr = strtok_r(line, " \t\r\n\v\f", &save);
	if (!addr)
		return 0;
	port = strtok_r(NULL, " \t\r\n\v\f", &save);
	if (!port || strtok_r(NULL, " \t\r\n\v\f", &save) ||
	    strlen(addr) >= ADDRLEN || strlen(port) >= PORTLEN) {
		errno = EINVAL;
		return -1;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out->addr, addr, strlen(addr) + 1);
	memcpy(out->port, port, strlen(port) + 1);
	*have = 1;
	return 0;
}

mr_addr_port *mr_get_opt(const char *filename, int *n)
{
	mr_addr_port *ap = NULL, *grown, ent;
	size_t count = 0, cap = 0, linecap = 0;
	char *line = NULL;
	int have, err = 0;
	FILE *f;

	if (!n) {
		errno = EINVAL;
		return NULL;
	}
	*n = 0;
	if (!filename) {
		errno = EINVAL;
		return NULL;
	}
	f = fopen(filename, "re");
	if (!f)
		return NULL;
	while (getline(&line, &linecap, f) >= 0) {
		if (parse_line(line, &ent, &have) < 0) {
			err = errno;
			goto fail;
		}
		if (!have)
			continue;
		if (count == cap) {
			if (cap >= INT_MAX / 2) {
				err = E2BIG;
				goto fail;
			}
			cap = cap ? cap * 2 : 8;
			grown = realloc(ap, cap * sizeof(*ap));
			if (!grown) {
				err = ENOMEM;
				goto fail;
			}
			ap = grown;
		}
		ap[count++] = ent;
	}
	if (ferror(f)) {
		err = EIO;
		goto fail;
	}
	if (count == 0) {
		err = EINVAL;
		goto fail;
	}
	free(line);
	fclose(f);
	*n = (int)count;
	return ap;

fail:
	free(ap);
	free(line);
	fclose(f);
	errno = err;
	return NULL;
}

int *mr_get_fd_list(int n)
{
	int *fd, i, err;

	if (n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	fd = malloc((size_t)n * sizeof(*fd));
	if (!fd)
		return NULL;
	for (i = 0; i < n; i++) {
		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fd[i] < 0) {
			err = errno;
			while (i-- > 0)
				close(fd[i]);
			free(fd);
			errno = err;
			return NULL;
		}
	}
	return fd;
}

/* Give descriptor number fd a fresh socket of the given family. dup2()
 * closes the old socket atomically, so the caller's array stays valid. */
static int fresh_socket(int fd, int family)
{
	int nfd = socket(family, SOCK_STREAM, 0);

	if (nfd < 0)
		return -1;
	if (dup2(nfd, fd) < 0) {
		int err = errno;

		close(nfd);
		errno = err;
		return -1;
	}
	close(nfd);
	return 0;
}

static int socket_family(int fd)
{
	int dom = -1;
	socklen_t len = sizeof(dom);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0)
		return -1;
	return dom;
}

static int resolve(const mr_addr_port *ap, int passive, struct addrinfo **res)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	/* The fields are fixed-size arrays a caller may have filled without a
	 * terminator; refuse those instead of reading past them. */
	if (!memchr(ap->addr, '\0', ADDRLEN) || !memchr(ap->port, '\0', PORTLEN)) {
		errno = EINVAL;
		return -1;
	}
	rc = getaddrinfo(ap->addr[0] ? ap->addr : NULL, ap->port, &hints, res);
	if (rc != 0) {
		errno = rc == EAI_SYSTEM ? errno : rc == EAI_MEMORY ? ENOMEM
					: EADDRNOTAVAIL;
		return -1;
	}
	return 0;
}

static int listen_one(int fd, const mr_addr_port *ap)
{
	struct addrinfo *res, *ai;
	int one = 1, err = EADDRNOTAVAIL;

	if (resolve(ap, 1, &res) < 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		if (socket_family(fd) != ai->ai_family &&
		    fresh_socket(fd, ai->ai_family) < 0) {
			err = errno;
			continue;
		}
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, 16) < 0) {
			err = errno;
			/* A bound socket cannot be rebound: start over. */
			if (ai->ai_next && fresh_socket(fd, ai->ai_next->ai_family) < 0)
				err = errno;
			continue;
		}
		freeaddrinfo(res);
		return 0;
	}
	freeaddrinfo(res);
	errno = err;
	return -1;
}

void mr_server_listen(int *fd, mr_addr_port *ap, int n)
{
	int i;

	if (!fd || !ap || n <= 0) {
		errno = EINVAL;
		return;
	}
	for (i = 0; i < n; i++)
		if (listen_one(fd[i], &ap[i]) < 0)
			return;
	errno = 0;
}

int *mr_server_accept(int *fd, int n)
{
	struct pollfd *pfd = NULL;
	int *out = NULL, left = n, i, err;

	if (!fd || n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	out = malloc((size_t)n * sizeof(*out));
	pfd = calloc((size_t)n, sizeof(*pfd));
	if (!out || !pfd) {
		err = ENOMEM;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		out[i] = -1;
		pfd[i].fd = fd[i];
		pfd[i].events = POLLIN;
	}
	/* Clients may arrive in any order; poll all entries still waiting so
	 * one slow entry never blocks accepting the others. */
	while (left > 0) {
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			goto fail;
		}
		for (i = 0; i < n; i++) {
			int c;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			if (pfd[i].revents & (POLLERR | POLLNVAL)) {
				err = EBADF;
				goto fail;
			}
			c = accept(fd[i], NULL, NULL);
			if (c < 0) {
				if (errno == EINTR || errno == EAGAIN ||
				    errno == ECONNABORTED)
					continue;
				err = errno;
				goto fail;
			}
			out[i] = c;
			pfd[i].fd = -1;   /* poll() ignores negative fds */
			left--;
		}
	}
	free(pfd);
	errno = 0;
	return out;

fail:
	if (out)
		for (i = 0; i < n; i++)
			if (out[i] >= 0)
				close(out[i]);
	free(out);
	free(pfd);
	errno = err;
	return NULL;
}

/* connect() interrupted by a signal goes on in the background; wait for
 * its outcome rather than calling connect() again (which gives EALREADY). */
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINTR)
		return -1;
	for (;;) {
		if (poll(&p, 1, -1) >= 0)
			break;
		if (errno != EINTR)
			return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -1;
	if (soerr) {
		errno = soerr;
		return -1;
	}
	return 0;
}

static int connect_one(int fd, const mr_addr_port *ap)
{
	struct addrinfo *res, *ai;
	int err = EADDRNOTAVAIL, tried = 0;

	if (resolve(ap, 0, &res) < 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		/* After a failed connect the socket's state is unspecified:
		 * every further attempt gets a fresh one. */
		if ((tried || socket_family(fd) != ai->ai_family) &&
		    fresh_socket(fd, ai->ai_family) < 0) {
			err = errno;
			continue;
		}
		tried = 1;
		if (connect_wait(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(res);
			return 0;
		}
		err = errno;
	}
	freeaddrinfo(res);
	errno = err;
	return -1;
}

void mr_client_connect(int *fd, mr_addr_port *ap, int n)
{
	int i;

	if (!fd || !ap || n <= 0) {
		errno = EINVAL;
		return;
	}
	for (i = 0; i < n; i++)
		if (connect_one(fd[i], &ap[i]) < 0)
			return;
	errno = 0;
}
