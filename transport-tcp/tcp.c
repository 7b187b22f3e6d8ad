/* SPDX-License-Identifier: MIT */
/*
 * TCP lanes: one TCP connection per lane.
 *
 * Connection setup (each lane on its own; the session authenticates on top):
 *
 *   connecting side                      accepting side
 *   getaddrinfo(addr, port)              listen(): getaddrinfo(AI_PASSIVE),
 *   for each address:                      SO_REUSEADDR, buffer sizes set on
 *     socket(O_NONBLOCK), buffers          the listener so accepted sockets
 *     connect() -> EINPROGRESS             inherit them (window scaling is
 *     poll(POLLOUT, time left)             fixed by the SYN)
 *     SO_ERROR                           accept(): poll(POLLIN, timeout),
 *   back to blocking, TCP_NODELAY          accept4(), TCP_NODELAY
 *
 * The send and receive paths are in datapath.c, which says what goes on
 * the wire and who owns what.
 */
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp-internal.h"

extern const struct tlm_lane_ops tlm__tcp_ops;

static int parse_size(const char *s, size_t n, int *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (n == 0)
		return -EINVAL;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > INT_MAX)
			return -EINVAL;
	}
	if (i + 1 == n && (s[i] == 'k' || s[i] == 'K'))
		v <<= 10, i++;
	else if (i + 1 == n && (s[i] == 'm' || s[i] == 'M'))
		v <<= 20, i++;
	if (i != n || v > INT_MAX)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

/*
 * transport_args: comma-separated key=value. sndbuf=SIZE, rcvbuf=SIZE
 * (K/M suffixes; 0 = kernel autotuning; unset: 4 MiB unless autotuning
 * already reaches that, see set_bufs), nodelay=0|1 (data lanes; the
 * control lane always has it), send_timeout=MS (a send during which the
 * peer acknowledges nothing that long fails the lane; default 30000,
 * 0 = never).
 */
static int parse_opts(const char *args, struct tcp_opts *o)
{
	const char *p = args;
	char item[256], *v;
	int rc;

	o->sndbuf = -1;
	o->rcvbuf = -1;
	o->nodelay = 1;
	o->send_timeout = SEND_TIMEOUT_DEFAULT;
	while ((rc = tlm__kv_next(&p, item, sizeof(item))) > 0) {
		int *dst = NULL;

		v = tlm__kv_split(item);
		if (!v) {
			tlm__err("tcp: bad transport argument '%s' (want key=value)", item);
			return -EINVAL;
		}
		if (!strcmp(item, "sndbuf"))
			dst = &o->sndbuf;
		else if (!strcmp(item, "rcvbuf"))
			dst = &o->rcvbuf;
		else if (!strcmp(item, "nodelay"))
			dst = &o->nodelay;
		else if (!strcmp(item, "send_timeout"))
			dst = &o->send_timeout;
		if (!dst || parse_size(v, strlen(v), dst) < 0 ||
		    (dst == &o->nodelay && *dst > 1)) {
			tlm__err("tcp: bad transport argument '%s=%s'", item, v);
			return -EINVAL;
		}
	}
	if (rc < 0)
		tlm__err("tcp: transport argument '%s...' too long", item);
	return rc;
}

/* The n-th number (0..) of a /proc/sys file, or -1. */
static long read_sysctl(const char *path, int nth)
{
	char buf[64], *p = buf, *end;
	long v = -1;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	for (int i = 0; i <= nth; i++, p = end) {
		v = strtol(p, &end, 10);
		if (end == p)
			return -1;
	}
	return v;
}

/*
 * Socket buffers. Setting SO_SNDBUF/SO_RCVBUF switches the kernel's
 * autotuning off for good. By default (-1) we want SOCKBUF_DEFAULT of
 * room, but when autotuning may grow the buffer that far anyway
 * (net.ipv4.tcp_[wr]mem max) it is the better choice: it keeps small
 * buffers where the receiver keeps up, which on loopback with several
 * lanes measurably saves receiver CPU (cache footprint). An explicit size
 * is set only when it will be granted: the *FORCE variants
 * (CAP_NET_ADMIN) ignore the limits; the plain ones are clamped to
 * net.core.[wr]mem_max, and a clamped small buffer does worse than
 * autotuning, so then the socket is left alone.
 */
static void set_bufs(int fd, const struct tcp_opts *o)
{
	static const struct { int force, plain; const char *max, *autotune; } opt[2] = {
		{ SO_SNDBUFFORCE, SO_SNDBUF, "/proc/sys/net/core/wmem_max",
		  "/proc/sys/net/ipv4/tcp_wmem" },
		{ SO_RCVBUFFORCE, SO_RCVBUF, "/proc/sys/net/core/rmem_max",
		  "/proc/sys/net/ipv4/tcp_rmem" },
	};
	int want[2] = { o->sndbuf, o->rcvbuf };

	for (int i = 0; i < 2; i++) {
		int v = want[i];

		if (v < 0) {
			if (read_sysctl(opt[i].autotune, 2) >= SOCKBUF_DEFAULT)
				continue;
			v = SOCKBUF_DEFAULT;
		}
		if (v == 0)
			continue;
		if (setsockopt(fd, SOL_SOCKET, opt[i].force, &v, sizeof(v)) == 0)
			continue;
		if (read_sysctl(opt[i].max, 0) < v) {
			tlm__dbg("tcp: %s below %d, socket buffers left to autotuning",
				 opt[i].max, v);
			continue;
		}
		if (setsockopt(fd, SOL_SOCKET, opt[i].plain, &v, sizeof(v)) < 0)
			tlm__dbg("tcp: socket buffer of %d bytes: %s", v, strerror(errno));
	}
}

static void set_lane_opts(int fd, const struct tcp_opts *o, unsigned index)
{
	int one = 1;

	/* The control lane carries small request/answer messages, and byte
	 * lanes relay whatever QEMU writes: Nagle would hold those back for
	 * an ACK. Data lanes write in large batches anyway, so NODELAY costs
	 * nothing there. */
	if (o->nodelay || index == 0)
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			tlm__dbg("tcp: TCP_NODELAY: %s", strerror(errno));
	/* send_timeout is kept by send_iov (datapath.c) on its own clock. */
}

static int set_blocking(int fd, bool blocking)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

static void fmt_peer(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN], serv[8];   /* numeric forms only */

	if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, cap, "?");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(out, cap, "[%s]:%s", host, serv);
	else
		snprintf(out, cap, "%s:%s", host, serv);
}

static int epoll_add(int epfd, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int lane_new(int fd, const struct tcp_opts *o, unsigned index,
		    const struct sockaddr *sa, socklen_t salen, struct tlm_lane **out)
{
	struct tcp_lane *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	int rc = tlm__stream_init(&t->rx, &t->base, "tcp", RBUF_SIZE);

	t->thdr = malloc(TX_RECS * sizeof(*t->thdr));
	t->iov = malloc(TX_IOV * sizeof(*t->iov));
	if (rc || !t->thdr || !t->iov) {
		tlm__stream_free(&t->rx);
		free(t->thdr);
		free(t->iov);
		free(t);
		return -ENOMEM;
	}
	t->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->evfd < 0 || t->epfd < 0 ||
	    epoll_add(t->epfd, fd) < 0 || epoll_add(t->epfd, t->evfd) < 0) {
		int err = -errno;

		if (t->evfd >= 0)
			close(t->evfd);
		if (t->epfd >= 0)
			close(t->epfd);
		tlm__stream_free(&t->rx);
		free(t->thdr);
		free(t->iov);
		free(t);
		return err;
	}
	t->fd = fd;
	t->opts = *o;
	atomic_init(&t->dead, 0);
	t->base.ops = &tlm__tcp_ops;
	t->base.mode = TLM_MODE_BYTES;
	t->base.page_size = TLM_DEFAULT_PAGE_SIZE;
	t->base.index = index;
	fmt_peer(sa, salen, t->base.peer, sizeof(t->base.peer));
	*out = &t->base;
	return 0;
}

static int tcp_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode)
{
	struct tcp_lane *t = to_tcp(l);

	if (mode != TLM_MODE_BYTES && mode != TLM_MODE_PAGES)
		return -EINVAL;
	/* Switching inside a DATA frame would misparse its rest. */
	if (t->rx.data_left)
		return -EBUSY;
	l->mode = mode;
	tlm__tcp_rx_sync_ready(t);   /* what counts as ready depends on the mode */
	return 0;
}

static int tcp_pollfd(const struct tlm_lane *l)
{
	return ((const struct tcp_lane *)l)->epfd;
}

static void tcp_close(struct tlm_lane *l)
{
	struct tcp_lane *t = to_tcp(l);

	if (!l)
		return;
	/* No FIN frame unless shutdown() sent one: the peer sees the socket
	 * end without it and reports -TLM_EPEERCLOSED. Data already handed
	 * to the kernel is still delivered. */
	close(t->epfd);
	close(t->evfd);
	close(t->fd);
	tlm__stream_free(&t->rx);
	free(t->thdr);
	free(t->iov);
	free(t);
}

static int resolve(const char *addr, const char *port, bool passive, int family,
		   struct addrinfo **res)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	/* No AI_ADDRCONFIG: it hides 127.0.0.1 in a namespace with only lo. */
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	rc = getaddrinfo(addr, port ? port : "0", &hints, res);
	if (rc == 0)
		return 0;
	tlm__err("tcp: cannot resolve %s port %s: %s", addr ? addr : "(any)",
		 port ? port : "0", gai_strerror(rc));
	if (rc == EAI_SYSTEM)
		return errno ? -errno : -EADDRNOTAVAIL;
	if (rc == EAI_MEMORY)
		return -ENOMEM;
	return -EADDRNOTAVAIL;
}

static int listen_on(const struct addrinfo *ai, const struct tcp_opts *o)
{
	int one = 1, zero = 0, err;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			ai->ai_protocol);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail;
	/* "::" takes IPv4 too, whatever the system default says. */
	if (ai->ai_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		goto fail;
	set_bufs(fd, o);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

static int tcp_listen(const char *addr, const char *port, const char *args,
		      struct tlm_xlistener **out)
{
	struct tcp_listener *xl;
	struct addrinfo *res = NULL, *ai;
	struct tcp_opts o;
	int rc, fd = -EADDRNOTAVAIL;

	rc = parse_opts(args, &o);
	if (rc)
		return rc;
	/* Any address: one dual-stack IPv6 socket when the host has IPv6,
	 * else IPv4 only. */
	if (!addr || !*addr) {
		rc = resolve(NULL, port, true, AF_INET6, &res);
		if (rc == 0) {
			fd = listen_on(res, &o);
			freeaddrinfo(res);
			res = NULL;
		}
		if (fd < 0)
			rc = resolve(NULL, port, true, AF_INET, &res);
	} else {
		rc = resolve(addr, port, true, AF_UNSPEC, &res);
	}
	if (rc)
		return rc;
	for (ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = listen_on(ai, &o);
	if (res)
		freeaddrinfo(res);
	if (fd < 0) {
		tlm__err("tcp: cannot listen on %s port %s: %s", addr ? addr : "(any)",
			 port ? port : "0", strerror(-fd));
		return fd;
	}
	xl = calloc(1, sizeof(*xl));
	if (!xl) {
		close(fd);
		return -ENOMEM;
	}
	xl->base.ops = &tlm__tcp_ops;
	xl->fd = fd;
	xl->opts = o;
	*out = &xl->base;
	return 0;
}

static int tcp_listener_port(const struct tlm_xlistener *x)
{
	const struct tcp_listener *xl = (const struct tcp_listener *)x;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(xl->fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int tcp_listener_pollfd(const struct tlm_xlistener *x)
{
	return ((const struct tcp_listener *)x)->fd;
}

static int tcp_accept(struct tlm_xlistener *x, int timeout_ms, struct tlm_lane **out)
{
	struct tcp_listener *xl = (struct tcp_listener *)x;
	uint64_t deadline = deadline_of(timeout_ms);
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, rc;

	for (;;) {
		struct pollfd p = { .fd = xl->fd, .events = POLLIN };

		len = sizeof(ss);
		fd = accept4(xl->fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED && errno != EPROTO)
			return -errno;
		rc = poll(&p, 1, poll_left(deadline));
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
	/* Linux accept4() does not pass the listener's O_NONBLOCK on, but
	 * other systems do: lanes need blocking sends (MSG_DONTWAIT receives).
	 * Which lane this is shows only in the handshake, so every accepted
	 * lane is tuned like the control lane. */
	rc = set_blocking(fd, true);
	if (rc == 0) {
		set_lane_opts(fd, &xl->opts, 0);
		rc = lane_new(fd, &xl->opts, 0, (struct sockaddr *)&ss, len, out);
	}
	if (rc)
		close(fd);
	return rc;
}

static void tcp_listener_close(struct tlm_xlistener *x)
{
	struct tcp_listener *xl = (struct tcp_listener *)x;

	if (!xl)
		return;
	close(xl->fd);
	free(xl);
}

/* Non-blocking connect bounded by the deadline. Returns the fd or a
 * negative error. */
static int connect_one(const struct addrinfo *ai, const struct tcp_opts *o,
		       uint64_t deadline)
{
	int fd, rc, soerr = 0;
	socklen_t sl = sizeof(soerr);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
	if (fd < 0)
		return -errno;
	set_bufs(fd, o);   /* before the SYN: it fixes the window scale */
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS && errno != EINTR) {
			rc = -errno;
			goto fail;
		}
		for (;;) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			rc = poll(&p, 1, poll_left(deadline));
			if (rc > 0)
				break;
			if (rc == 0) {
				rc = -ETIMEDOUT;
				goto fail;
			}
			if (errno != EINTR) {
				rc = -errno;
				goto fail;
			}
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
			rc = -errno;
			goto fail;
		}
		if (soerr) {
			rc = -soerr;
			goto fail;
		}
	}
	rc = set_blocking(fd, true);
	if (rc)
		goto fail;
	return fd;
fail:
	close(fd);
	return rc;
}

static int tcp_connect(const char *addr, const char *port, const char *args,
		       unsigned index, int timeout_ms, struct tlm_lane **out)
{
	struct addrinfo *res, *ai;
	struct tcp_opts o;
	uint64_t deadline = deadline_of(timeout_ms);
	int rc, fd = -EADDRNOTAVAIL;

	rc = parse_opts(args, &o);
	if (rc)
		return rc;
	rc = resolve(addr && *addr ? addr : "localhost", port, false, AF_UNSPEC, &res);
	if (rc)
		return rc;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = connect_one(ai, &o, deadline);
		if (fd >= 0)
			break;
		if (fd == -ETIMEDOUT)
			break;
	}
	if (fd < 0) {
		tlm__err("tcp: lane %u: cannot connect to %s port %s: %s", index,
			 addr ? addr : "localhost", port, strerror(-fd));
		freeaddrinfo(res);
		return fd;
	}
	set_lane_opts(fd, &o, index);
	rc = lane_new(fd, &o, index, ai->ai_addr, ai->ai_addrlen, out);
	freeaddrinfo(res);
	if (rc)
		close(fd);
	return rc;
}

static const struct tlm_lane_dp tcp_dp = {
	.send_pages = tlm__tcp_send_pages,
	.recv_pages = tlm__tcp_recv_pages,
	.write = tlm__tcp_write,
	.read = tlm__tcp_read,
	.shutdown = tlm__tcp_shutdown,
	.flush = tlm__tcp_flush,
};

const struct tlm_lane_ops tlm__tcp_ops = {
	.name = "tcp",
	.listen = tcp_listen,
	.listener_port = tcp_listener_port,
	.listener_pollfd = tcp_listener_pollfd,
	.accept = tcp_accept,
	.listener_close = tcp_listener_close,
	.connect = tcp_connect,
	.close = tcp_close,
	.set_mode = tcp_set_mode,
	.pollfd = tcp_pollfd,
	.inject_raw = tlm__tcp_inject_raw,
	.abort = tlm__tcp_abort,
	.dp = &tcp_dp,
};
