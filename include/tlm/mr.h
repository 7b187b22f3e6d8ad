/* SPDX-License-Identifier: MIT */
/*
 * mr — the original parallel TCP library API, kept unchanged for programs
 * written against it. Both `#include <mr.h>` and `#include <tlm/mr.h>` work
 * (pkg-config's cflags name both .../include and .../include/tlm).
 *
 * Pattern (both sides read the same config file, which lists the server's
 * addresses):
 *
 *   int n;
 *   mr_addr_port *ap = mr_get_opt("lanes.conf", &n);
 *   int *fd = mr_get_fd_list(n);
 *
 *   server:  mr_server_listen(fd, ap, n);           // errno == 0 on success
 *            int *cfd = mr_server_accept(fd, n);    // cfd[i] came in on entry i
 *   client:  mr_client_connect(fd, ap, n);          // fd[i] connected to entry i
 *
 *   then one thread per connected fd, join, close every fd (server: both
 *   cfd[] and the listening fd[]), free() every array.
 *
 * Config file: one `ADDR PORT` pair per line, separated by blanks; `#`
 * starts a comment (to end of line); blank lines are ignored. ADDR is an
 * IPv4/IPv6 literal or a host name of at most ADDRLEN-1 characters, PORT a
 * number or service name of at most PORTLEN-1 characters.
 *
 * Errors: calls returning a pointer return NULL and set errno; the void
 * calls set errno to 0 on success and to the error otherwise. The library
 * never prints. Arrays are allocated with malloc() and belong to the
 * caller. Every call is blocking and has no timeout, as in the original.
 */
#ifndef TLM_MR_H
#define TLM_MR_H

#ifdef __cplusplus
extern "C" {
#endif

#define ADDRLEN 16
#define PORTLEN 16

typedef struct {
	char addr[ADDRLEN];   /* NUL-terminated */
	char port[PORTLEN];   /* NUL-terminated */
} mr_addr_port;

/*
 * Parse the config file; *n gets the number of entries. Returns a malloc'd
 * array of *n entries, or NULL with errno set: the fopen()/read error
 * (e.g. ENOENT), EINVAL for a malformed line (address or port too long,
 * missing port, extra fields) or a file without any entry, ENOMEM.
 * *n is 0 whenever NULL is returned.
 */
mr_addr_port *mr_get_opt(const char *filename, int *n);

/*
 * n fresh TCP stream sockets (IPv4; mr_server_listen / mr_client_connect
 * replace one in place, same descriptor number, when its entry is IPv6).
 * Returns a malloc'd array, or NULL with errno set (EINVAL for n <= 0, or
 * the socket() error; nothing is left open then).
 */
int *mr_get_fd_list(int n);

/*
 * Bind fd[i] to entry i (SO_REUSEADDR set) and listen on it, for all n.
 * errno: 0 on success, else the first failure (getaddrinfo failures map to
 * EADDRNOTAVAIL, EINVAL for bad arguments); the fds stay the caller's to
 * close either way.
 */
void mr_server_listen(int *fd, mr_addr_port *ap, int n);

/*
 * Accept exactly one connection on each of the n listening fds, in whatever
 * order clients arrive, and return the accepted fds in entry order
 * (result[i] came in on fd[i]). Blocks until all n are in. Returns a
 * malloc'd array, or NULL with errno set (already accepted fds are closed).
 * The listening fds stay open.
 */
int *mr_server_accept(int *fd, int n);

/*
 * Connect fd[i] to entry i, for all n, in order. errno: 0 on success, else
 * the first failure (ECONNREFUSED when the server is not listening yet: the
 * caller may close the fds and retry with a fresh mr_get_fd_list()).
 */
void mr_client_connect(int *fd, mr_addr_port *ap, int n);

#ifdef __cplusplus
}
#endif
#endif /* TLM_MR_H */
