/* SPDX-License-Identifier: MIT */
/*
 * mr_parallel — the original parallel TCP API in use.
 *
 *   mr_parallel server CONFIG BYTES
 *   mr_parallel client CONFIG BYTES
 *
 * Both sides read CONFIG (`ADDR PORT` lines, the server's addresses). The
 * client opens one connection per entry and, from one thread per
 * connection, sends BYTES of a pattern derived from (connection, offset);
 * the server verifies every byte from one thread per connection and
 * answers 'K' (all verified) or 'X' (mismatch or short). Both exit 0 only
 * if every connection verified. BYTES takes K/M/G suffixes (powers of 2).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <mr.h>

#define CHUNK (64 * 1024)

struct conn {
	int fd;
	unsigned id;
	uint64_t bytes;
	uint64_t done;      /* bytes moved */
	int ok;             /* 1 if verified end to end */
	int err;            /* errno of a failure, 0 if none */
};

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Byte `off` of connection `id`'s stream: word off/8 of a keyed sequence. */
static void fill(unsigned id, uint64_t off, uint8_t *buf, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint64_t w = mix((uint64_t)id << 48 ^ ((off + i) >> 3));
		unsigned b = (unsigned)((off + i) & 7);

		for (; b < 8 && i < n; b++, i++)
			buf[i] = (uint8_t)(w >> (8 * b));
	}
}

static void *server_thread(void *arg)
{
	struct conn *c = arg;
	uint8_t *buf = malloc(CHUNK), *want = malloc(CHUNK);
	int mismatch = 0;
	char ack;

	if (!buf || !want) {
		c->err = ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r = read(c->fd, buf, CHUNK);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			c->err = errno;
			goto out;
		}
		if (r == 0)
			break;
		if (c->done + (uint64_t)r > c->bytes) {
			mismatch = 1;    /* more than was announced */
			break;
		}
		fill(c->id, c->done, want, (size_t)r);
		if (memcmp(buf, want, (size_t)r) != 0)
			mismatch = 1;
		c->done += (uint64_t)r;
	}
	c->ok = !mismatch && c->done == c->bytes;
	ack = c->ok ? 'K' : 'X';
	if (write(c->fd, &ack, 1) != 1)
		c->err = errno;
out:
	free(buf);
	free(want);
	return NULL;
}

static void *client_thread(void *arg)
{
	struct conn *c = arg;
	uint8_t *buf = malloc(CHUNK);
	char ack = 0;
	ssize_t r;

	if (!buf) {
		c->err = ENOMEM;
		return NULL;
	}
	while (c->done < c->bytes) {
		size_t n = c->bytes - c->done < CHUNK ? (size_t)(c->bytes - c->done) : CHUNK;
		size_t off = 0;

		fill(c->id, c->done, buf, n);
		while (off < n) {
			ssize_t w = send(c->fd, buf + off, n - off, MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				c->err = errno;
				goto out;
			}
			off += (size_t)w;
		}
		c->done += n;
	}
	/* End of our stream; the server answers once it has checked it all. */
	if (shutdown(c->fd, SHUT_WR) < 0) {
		c->err = errno;
		goto out;
	}
	do
		r = read(c->fd, &ack, 1);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		c->err = errno;
	c->ok = r == 1 && ack == 'K';
out:
	free(buf);
	return NULL;
}

static int parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mr_parallel server|client CONFIG BYTES\n"
		   "  CONFIG: `ADDR PORT` per line (the server's addresses)\n"
		   "  BYTES: per connection, K/M/G suffixes allowed\n");
}

/* The client may start before the server listens: retry a refused
 * connect with a fresh socket, entry by entry (the API itself never
 * retries). Entries already connected are kept: closing them and starting
 * over would leave those first connections in the server's accept queue,
 * where mr_server_accept() would take them instead of the live ones. */
static int *client_connect_retry(mr_addr_port *ap, int n)
{
	int *fd = mr_get_fd_list(n);
	int i;

	if (!fd)
		return NULL;
	for (i = 0; i < n; i++) {
		int attempt;

		for (attempt = 0; attempt < 100; attempt++) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			int *one;

			mr_client_connect(&fd[i], &ap[i], 1);
			if (errno == 0)
				break;
			if (errno != ECONNREFUSED)
				goto fail;
			/* A socket whose connect failed cannot be reused. */
			close(fd[i]);
			one = mr_get_fd_list(1);
			if (!one) {
				fd[i] = -1;
				goto fail;
			}
			fd[i] = one[0];
			free(one);
			nanosleep(&ts, NULL);
		}
		if (attempt == 100) {
			errno = ECONNREFUSED;
			goto fail;
		}
	}
	return fd;
fail:
	{
		int err = errno;
		for (int k = 0; k < n; k++)
			if (fd[k] >= 0)
				close(fd[k]);
		free(fd);
		errno = err;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n, i, started = 0, server, *fd = NULL, *cfd = NULL, rc = 1;
	mr_addr_port *ap;
	struct conn *c = NULL;
	pthread_t *th = NULL;
	uint64_t bytes, total = 0;
	struct timespec t0, t1;
	double secs;
	int all_ok = 1;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc != 4 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		usage(stderr);
		return 2;
	}
	server = !strcmp(argv[1], "server");
	if (parse_bytes(argv[3], &bytes) < 0) {
		fprintf(stderr, "mr_parallel: bad BYTES '%s'\n", argv[3]);
		return 2;
	}
	ap = mr_get_opt(argv[2], &n);
	if (!ap) {
		fprintf(stderr, "mr_parallel: %s: %s\n", argv[2], strerror(errno));
		return 2;
	}

	if (server) {
		fd = mr_get_fd_list(n);
		if (!fd) {
			fprintf(stderr, "mr_parallel: sockets: %s\n", strerror(errno));
			goto out_ap;
		}
		mr_server_listen(fd, ap, n);
		if (errno) {
			fprintf(stderr, "mr_parallel: listen: %s\n", strerror(errno));
			goto out_fd;
		}
		cfd = mr_server_accept(fd, n);
		if (!cfd) {
			fprintf(stderr, "mr_parallel: accept: %s\n", strerror(errno));
			goto out_fd;
		}
	} else {
		cfd = client_connect_retry(ap, n);
		if (!cfd) {
			fprintf(stderr, "mr_parallel: connect: %s\n", strerror(errno));
			goto out_ap;
		}
	}

	c = calloc((size_t)n, sizeof(*c));
	th = calloc((size_t)n, sizeof(*th));
	if (!c || !th) {
		fprintf(stderr, "mr_parallel: out of memory\n");
		goto out_cfd;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	started = n;
	for (i = 0; i < n; i++) {
		c[i] = (struct conn){ .fd = cfd[i], .id = (unsigned)i, .bytes = bytes };
		if (pthread_create(&th[i], NULL, server ? server_thread : client_thread,
				   &c[i]) != 0) {
			fprintf(stderr, "mr_parallel: cannot start thread %d\n", i);
			started = i;
			all_ok = 0;
			break;
		}
	}
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

	for (i = 0; i < started; i++) {
		total += c[i].done;
		if (!c[i].ok)
			all_ok = 0;
		printf("%s conn %d %s:%s bytes %llu %s%s%s\n", argv[1], i, ap[i].addr,
		       ap[i].port, (unsigned long long)c[i].done,
		       c[i].ok ? "verified" : "FAILED",
		       c[i].err ? ": " : "", c[i].err ? strerror(c[i].err) : "");
	}
	printf("%s total %llu bytes in %.3f s (%.1f MB/s) %s\n", argv[1],
	       (unsigned long long)total, secs, secs > 0 ? (double)total / secs / 1e6 : 0.0,
	       all_ok ? "all verified" : "FAILED");
	rc = all_ok ? 0 : 1;

out_cfd:
	for (i = 0; i < n; i++)
		close(cfd[i]);
	free(cfd);
	free(c);
	free(th);
out_fd:
	if (fd) {
		for (i = 0; i < n; i++)
			close(fd[i]);
		free(fd);
	}
out_ap:
	free(ap);
	return rc;
}
