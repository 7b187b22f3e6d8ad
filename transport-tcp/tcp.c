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
 * Everything on the wire is a frame (core/wire.h): an 8-byte header, then
 * the payload. Page mode: one PAGE frame per record (24-byte record header
 * + data). Byte mode: DATA frames of at most TLM_MAX_DATA_FRAME, FIN at
 * the orderly end.
 *
 * Threads and ownership: one thread may send while another receives on the
 * same lane (the relay does). The tx side owns fd writes, the header
 * scratch, its sticky error and base.tx_bytes; the rx side owns the
 * receive buffer, the parse state (EOF included) and base.rx_bytes. The
 * only state both touch is `dead`, an atomic: once the rx side finds the
 * stream broken (malformed frame, bad crc, the sink refused a record)
 * every later call on either side fails the same way. A send error stays
 * on the tx side, so input that arrived before the peer went away can
 * still be read.
 * Two threads sending (or two receiving) on one lane at once is not
 * supported.
 *
 * Memory is bounded per lane: a fixed receive buffer (RBUF_SIZE) holds the
 * bytes read but not yet parsed; sends go straight from the caller's
 * memory to the kernel with sendmsg() on iovec arrays.
 *
 * pollfd: reads take big chunks from the socket, so input can sit in the
 * receive buffer while the socket itself is empty; polling the socket
 * would then hang with data at hand. The lane's pollfd is an epoll
 * instance watching the socket and an eventfd that the rx side keeps
 * readable exactly while buffered input can make progress (a whole frame,
 * stream bytes, an error to report). Only transitions cost a syscall.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tlm-internal.h"

extern const struct tlm_lane_ops tlm__tcp_ops;

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define RBUF_SIZE      (2u * 1024 * 1024) /* receive buffer per lane */
#define TX_IOV         (IOV_MAX < 1024 ? IOV_MAX : 1024)
#define TX_RECS        (TX_IOV / 2)       /* records per sendmsg: hdr + data */
#define TX_HDR         (TLM_FRAME_HDR + TLM_PAGE_HDR)
#define SOCKBUF_DEFAULT (4 * 1024 * 1024)
#define RX_FILLS_MAX   16  /* reads per recv_pages once records flow: bounds
                              * the call (<= 17 buffers of records) */

/* Room for one whole frame of the largest kind must always fit. */
_Static_assert(RBUF_SIZE >= TLM_FRAME_HDR + TLM_MAX_FRAME, "receive buffer too small");

struct tcp_opts {
	int sndbuf;    /* bytes; 0 = kernel autotuning; -1 = SOCKBUF_DEFAULT
			* unless autotuning may grow that far by itself */
	int rcvbuf;
	int nodelay;   /* on every lane (1) or only the control lane (0) */
	int send_timeout; /* ms a send may make no progress before the lane
			   * fails: a peer that is alive but stopped reading
			   * must not block the sender (and a paused guest)
			   * forever. 0 = wait forever. */
};

#define SEND_TIMEOUT_DEFAULT 30000

struct tcp_listener {
	struct tlm_xlistener base;
	int fd;
	struct tcp_opts opts;
};

struct tcp_lane {
	struct tlm_lane base;
	int fd;
	struct tcp_opts opts;
	atomic_int dead;           /* 0, or the error every call returns */

	int epfd;                  /* pollfd: socket + evfd */
	int evfd;

	/* rx side */
	bool ev_set;               /* evfd signalled */
	uint8_t *rbuf;             /* RBUF_SIZE; [rstart, rend) unparsed */
	size_t rstart, rend;
	uint32_t data_left;        /* byte mode: payload left in this DATA frame */
	bool rx_eof;               /* socket said EOF or reset */
	bool rx_fin;               /* byte mode: peer's FIN frame seen */

	/* tx side */
	int tx_err;                /* sticky send error, 0 if none */
	bool tx_fin;               /* we sent FIN: no more writes */
	uint8_t (*thdr)[TX_HDR];   /* TX_RECS header slots */
	struct iovec *iov;         /* TX_IOV */
};

static inline struct tcp_lane *to_tcp(struct tlm_lane *l)
{
	return (struct tcp_lane *)l;
}

/* Only the tx side writes tx_bytes and only the rx side rx_bytes, but
 * tlm_lane_stats() reads them from any thread. */
static inline void count_bytes(uint64_t *ctr, uint64_t n)
{
	__atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
}

/* ---- helpers ---- */

/* Peer gone, in whatever way the kernel tells it. */
static int map_sock_err(int err)
{
	switch (err) {
	case ECONNRESET:
	case EPIPE:
	case ENOTCONN:
	case ESHUTDOWN:
	case ETIMEDOUT:   /* from the socket itself: the connection died */
	case EHOSTUNREACH:
		return -TLM_EPEERCLOSED;
	default:
		return -err;
	}
}

/* The stream is broken for both directions. */
static int lane_fail(struct tcp_lane *t, int err)
{
	int expected = 0;

	atomic_compare_exchange_strong(&t->dead, &expected, err);
	return atomic_load(&t->dead);
}

static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
}

static int poll_left(uint64_t deadline)
{
	uint64_t left;

	if (deadline == UINT64_MAX)
		return -1;
	left = (uint64_t)tlm__left_ms(deadline);
	return left > INT_MAX ? INT_MAX : (int)left;
}

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
 * control lane always has it), send_timeout=MS (a send that makes no
 * progress that long fails the lane; default 30000, 0 = never).
 */
static int parse_opts(const char *args, struct tcp_opts *o)
{
	const char *p = args;

	o->sndbuf = -1;
	o->rcvbuf = -1;
	o->nodelay = 1;
	o->send_timeout = SEND_TIMEOUT_DEFAULT;
	while (p && *p) {
		const char *end = strchr(p, ','), *eq;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		size_t klen;
		int *dst = NULL;

		eq = memchr(p, '=', len);
		if (!eq) {
			tlm__err("tcp: bad transport argument '%.*s' (want key=value)", (int)len, p);
			return -EINVAL;
		}
		klen = (size_t)(eq - p);
		if (klen == 6 && !memcmp(p, "sndbuf", 6))
			dst = &o->sndbuf;
		else if (klen == 6 && !memcmp(p, "rcvbuf", 6))
			dst = &o->rcvbuf;
		else if (klen == 7 && !memcmp(p, "nodelay", 7))
			dst = &o->nodelay;
		else if (klen == 12 && !memcmp(p, "send_timeout", 12))
			dst = &o->send_timeout;
		if (!dst || parse_size(eq + 1, len - klen - 1, dst) < 0 ||
		    (dst == &o->nodelay && *dst > 1)) {
			tlm__err("tcp: bad transport argument '%.*s'", (int)len, p);
			return -EINVAL;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
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
	if (o->send_timeout > 0) {
		struct timeval tv = { .tv_sec = o->send_timeout / 1000,
				      .tv_usec = (o->send_timeout % 1000) * 1000 };
		if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
			tlm__dbg("tcp: SO_SNDTIMEO: %s", strerror(errno));
	}
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
	t->rbuf = malloc(RBUF_SIZE);
	t->thdr = malloc(TX_RECS * sizeof(*t->thdr));
	t->iov = malloc(TX_IOV * sizeof(*t->iov));
	if (!t->rbuf || !t->thdr || !t->iov) {
		free(t->rbuf);
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
		free(t->rbuf);
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

/* ---- tx ---- */

/* Send every byte the iovec array describes; the array is consumed (its
 * entries are adjusted after a partial write). */
static int send_iov(struct tcp_lane *t, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
		ssize_t w = sendmsg(t->fd, &mh, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* SO_SNDTIMEO ran out with nothing sent. */
				tlm__err("%s: lane %u: the peer has read nothing for %d ms; "
					 "giving up", t->base.peer, t->base.index,
					 t->opts.send_timeout);
				t->tx_err = -ETIMEDOUT;
				return t->tx_err;
			}
			t->tx_err = map_sock_err(errno);
			return t->tx_err;
		}
		while (cnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int tx_check(struct tcp_lane *t, enum tlm_lane_mode mode)
{
	int dead = atomic_load(&t->dead);

	if (dead)
		return dead;
	if (t->tx_err)
		return t->tx_err;
	if (t->base.mode != mode)
		return -EINVAL;
	if (t->tx_fin)
		return -EPIPE;
	return 0;
}

static int tcp_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n)
{
	struct tcp_lane *t = to_tcp(l);
	unsigned i = 0;
	int rc = tx_check(t, TLM_MODE_PAGES);

	if (rc)
		return rc;
	if (n > INT_MAX)
		return -EINVAL;
	while (i < n) {
		unsigned k = 0;
		int cnt = 0;
		uint64_t bytes = 0;

		for (; i < n && k < TX_RECS; i++, k++) {
			const struct tlm_page_rec *r = &recs[i];

			if (r->len > l->page_size || (r->len && !r->data)) {
				tlm__err("tcp %s: record %u: len %u with page size %u",
					 l->peer, i, r->len, l->page_size);
				return -EINVAL;
			}
			tlm__frame_hdr_encode(t->thdr[k], TLM_PAGE_HDR + r->len, TLM_FT_PAGE);
			tlm__page_hdr_encode(t->thdr[k] + TLM_FRAME_HDR, r);
			t->iov[cnt].iov_base = t->thdr[k];
			t->iov[cnt++].iov_len = TX_HDR;
			if (r->len) {
				/* Straight from the caller's memory. */
				t->iov[cnt].iov_base = (void *)r->data;
				t->iov[cnt++].iov_len = r->len;
			}
			bytes += r->len;
		}
		rc = send_iov(t, t->iov, cnt);
		if (rc)
			return rc;
		count_bytes(&l->tx_bytes, bytes);
	}
	return (int)n;
}

static ssize_t tcp_write(struct tlm_lane *l, const void *buf, size_t n)
{
	struct tcp_lane *t = to_tcp(l);
	const uint8_t *p = buf;
	size_t done = 0;
	int rc = tx_check(t, TLM_MODE_BYTES);

	if (rc)
		return rc;
	if (n > SSIZE_MAX)
		return -EINVAL;
	while (done < n) {
		int cnt = 0;
		size_t batch = 0;

		for (unsigned k = 0; k < TX_RECS && done + batch < n; k++) {
			size_t len = n - done - batch;

			if (len > TLM_MAX_DATA_FRAME)
				len = TLM_MAX_DATA_FRAME;
			tlm__frame_hdr_encode(t->thdr[k], (uint32_t)len, TLM_FT_DATA);
			t->iov[cnt].iov_base = t->thdr[k];
			t->iov[cnt++].iov_len = TLM_FRAME_HDR;
			t->iov[cnt].iov_base = (void *)(p + done + batch);
			t->iov[cnt++].iov_len = len;
			batch += len;
		}
		rc = send_iov(t, t->iov, cnt);
		if (rc)
			return rc;
		done += batch;
		count_bytes(&l->tx_bytes, batch);
	}
	return (ssize_t)n;
}

static int tcp_shutdown(struct tlm_lane *l)
{
	struct tcp_lane *t = to_tcp(l);
	uint8_t hdr[TLM_FRAME_HDR];
	struct iovec iov = { hdr, sizeof(hdr) };
	int rc, dead = atomic_load(&t->dead);

	if (dead)
		return dead;
	if (t->tx_err)
		return t->tx_err;
	if (t->tx_fin)
		return 0;
	tlm__frame_hdr_encode(hdr, 0, TLM_FT_FIN);
	rc = send_iov(t, &iov, 1);
	if (rc)
		return rc;
	t->tx_fin = true;
	return 0;
}

static int tcp_flush(struct tlm_lane *l)
{
	struct tcp_lane *t = to_tcp(l);
	int dead = atomic_load(&t->dead);

	/* Nothing is batched in user space: every call hands its bytes to
	 * the kernel before returning, and NODELAY pushes them out. */
	return dead ? dead : t->tx_err;
}

static int tcp_inject_raw(struct tlm_lane *l, const void *buf, size_t n)
{
	struct tcp_lane *t = to_tcp(l);
	struct iovec iov = { (void *)buf, n };

	return send_iov(t, &iov, 1);
}

/* ---- rx ---- */

static size_t rx_avail(const struct tcp_lane *t)
{
	return t->rend - t->rstart;
}

/*
 * One read into the free end of the receive buffer (compacting first when
 * the tail is short). Returns bytes read, -EAGAIN if nothing is there and
 * we may not wait, -ETIMEDOUT once the deadline passed, -TLM_EPEERCLOSED
 * at EOF or reset (rx_eof set), or another negative errno.
 */
static int rx_fill(struct tcp_lane *t, bool wait, uint64_t deadline)
{
	if (t->rx_eof)
		return -TLM_EPEERCLOSED;
	if (t->rstart == t->rend) {
		t->rstart = t->rend = 0;
	} else if (RBUF_SIZE - t->rend < TLM_FRAME_HDR + TLM_MAX_FRAME) {
		memmove(t->rbuf, t->rbuf + t->rstart, rx_avail(t));
		t->rend -= t->rstart;
		t->rstart = 0;
	}
	for (;;) {
		ssize_t r = recv(t->fd, t->rbuf + t->rend, RBUF_SIZE - t->rend, MSG_DONTWAIT);

		if (r > 0) {
			t->rend += (size_t)r;
			return (int)r;
		}
		if (r == 0) {
			t->rx_eof = true;
			return -TLM_EPEERCLOSED;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			int err = map_sock_err(errno);

			if (err == -TLM_EPEERCLOSED)
				t->rx_eof = true;
			return err;
		}
		if (!wait)
			return -EAGAIN;
		for (;;) {
			struct pollfd p = { .fd = t->fd, .events = POLLIN };
			int left = poll_left(deadline);
			int pr = poll(&p, 1, left);

			if (pr > 0)
				break;
			if (pr == 0)
				return -ETIMEDOUT;
			if (errno != EINTR)
				return -errno;
		}
	}
}

static int rx_check(struct tcp_lane *t, enum tlm_lane_mode mode)
{
	int dead = atomic_load(&t->dead);

	if (dead)
		return dead;
	if (t->base.mode != mode)
		return -EINVAL;
	return 0;
}

/*
 * Parse whole PAGE frames from the buffer and hand them to the sink.
 * Returns records delivered (>= 0); *err gets the error that stopped the
 * parse, if any. A bad record fails the lane for good (the error is kept
 * in `dead`): nothing of it is applied, the records before it were.
 */
static int rx_parse_pages(struct tcp_lane *t, const struct tlm_page_sink *sink, int *err)
{
	int delivered = 0;

	*err = 0;
	while (rx_avail(t) >= TLM_FRAME_HDR) {
		const uint8_t *p = t->rbuf + t->rstart;
		struct tlm_frame_hdr fh;
		struct tlm_page_rec rec;
		int rc;

		rc = tlm__frame_hdr_decode(p, t->base.page_size, &fh);
		if (rc < 0 || fh.type != TLM_FT_PAGE || fh.len < TLM_PAGE_HDR ||
		    fh.len > RBUF_SIZE - TLM_FRAME_HDR) {
			tlm__err("tcp %s: lane %u: %s in page mode", t->base.peer,
				 t->base.index, rc < 0 ? "malformed frame header"
						       : "frame of another kind");
			*err = lane_fail(t, -TLM_EFRAME);
			break;
		}
		if (rx_avail(t) < TLM_FRAME_HDR + (size_t)fh.len)
			break;
		rc = tlm__page_hdr_decode(p + TLM_FRAME_HDR, fh.len, t->base.page_size, &rec);
		if (rc < 0) {
			tlm__err("tcp %s: lane %u: malformed page record", t->base.peer,
				 t->base.index);
			*err = lane_fail(t, -TLM_EFRAME);
			break;
		}
		rec.data = rec.len ? p + TLM_FRAME_HDR + TLM_PAGE_HDR : NULL;
		rc = tlm__page_verify(&rec);
		if (rc < 0) {
			tlm__err("tcp %s: lane %u: page %u:%llu failed its crc",
				 t->base.peer, t->base.index, rec.region,
				 (unsigned long long)rec.index);
			*err = lane_fail(t, rc);
			break;
		}
		t->rstart += TLM_FRAME_HDR + fh.len;
		rc = sink->apply(sink->arg, &rec);
		if (rc < 0) {
			*err = lane_fail(t, rc);
			break;
		}
		count_bytes(&t->base.rx_bytes, rec.len);
		delivered++;
	}
	return delivered;
}

static int recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	struct tcp_lane *t = to_tcp(l);
	uint64_t deadline = deadline_of(timeout_ms);
	int delivered = 0, fills = 0, err, rc = rx_check(t, TLM_MODE_PAGES);

	if (rc)
		return rc;
	for (;;) {
		/* Records delivered before an error are reported first; the lane
		 * is dead by then, so the next call returns the error. */
		rc = rx_parse_pages(t, sink, &err);
		delivered += rc;
		if (err)
			return delivered ? delivered : err;
		if (delivered > 0 && fills >= RX_FILLS_MAX)
			return delivered;
		/* Wait only until the first record; after that take what the
		 * socket already has and return. */
		rc = rx_fill(t, delivered == 0, deadline);
		fills++;
		if (rc > 0)
			continue;
		if (delivered > 0)
			return delivered;     /* an error shows on the next call */
		if (rc == -ETIMEDOUT || rc == -EAGAIN)
			return 0;
		/* EOF is sticky by itself (rx_eof). */
		if (rc == -TLM_EPEERCLOSED && rx_avail(t))
			tlm__err("tcp %s: lane %u: peer closed mid-record", l->peer, l->index);
		return rc;
	}
}

/*
 * Byte mode: copy payload of DATA frames into buf, crossing frame
 * boundaries while bytes are already buffered, so one large read drains
 * what poll() reported. Waits (until the deadline) only while nothing has
 * been copied yet.
 */
static ssize_t read_bytes(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	struct tcp_lane *t = to_tcp(l);
	uint64_t deadline = deadline_of(timeout_ms);
	uint8_t *out = buf;
	size_t got = 0;
	int rc = rx_check(t, TLM_MODE_BYTES);

	if (rc)
		return rc;
	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	if (t->rx_fin)
		return 0;
	while (got < n) {
		if (t->data_left > 0) {
			size_t take = rx_avail(t);

			if (take > t->data_left)
				take = t->data_left;
			if (take > n - got)
				take = n - got;
			if (take == 0 && n - got >= 65536 && !t->rx_eof) {
				/* Large read, nothing buffered: straight into the
				 * caller's buffer, no copy. */
				size_t want = n - got < t->data_left ? n - got : t->data_left;
				ssize_t r = recv(t->fd, out + got, want, MSG_DONTWAIT);

				if (r > 0) {
					t->data_left -= (uint32_t)r;
					count_bytes(&l->rx_bytes, (uint64_t)r);
					got += (size_t)r;
					continue;
				}
				if (r == 0) {
					t->rx_eof = true;
				} else if (errno != EAGAIN && errno != EWOULDBLOCK &&
					   errno != EINTR) {
					rc = map_sock_err(errno);
					if (rc == -TLM_EPEERCLOSED)
						t->rx_eof = true;
					else
						return got ? (ssize_t)got : rc;
				}
			}
			if (take > 0) {
				memcpy(out + got, t->rbuf + t->rstart, take);
				t->rstart += take;
				t->data_left -= (uint32_t)take;
				count_bytes(&l->rx_bytes, take);
				got += take;
				continue;
			}
		} else if (rx_avail(t) >= TLM_FRAME_HDR) {
			struct tlm_frame_hdr fh;

			rc = tlm__frame_hdr_decode(t->rbuf + t->rstart, l->page_size, &fh);
			if (rc < 0 || (fh.type != TLM_FT_DATA && fh.type != TLM_FT_FIN) ||
			    (fh.type == TLM_FT_FIN && fh.len != 0)) {
				if (got)
					return (ssize_t)got;   /* error on the next call */
				tlm__err("tcp %s: lane %u: %s in byte mode", l->peer, l->index,
					 rc < 0 ? "malformed frame header" : "frame of another kind");
				return lane_fail(t, -TLM_EFRAME);
			}
			t->rstart += TLM_FRAME_HDR;
			if (fh.type == TLM_FT_FIN) {
				t->rx_fin = true;
				return (ssize_t)got;
			}
			t->data_left = fh.len;
			continue;
		}
		/* Need more bytes from the socket. */
		rc = rx_fill(t, got == 0, deadline);
		if (rc > 0)
			continue;
		if (got)
			return (ssize_t)got;
		if (rc == -EAGAIN)
			return -ETIMEDOUT;
		return rc;   /* -ETIMEDOUT, or EOF (sticky by itself) */
	}
	return (ssize_t)got;
}

/* Could a call make progress without more input from the socket? */
static bool rx_ready(struct tcp_lane *t)
{
	size_t avail = rx_avail(t);
	struct tlm_frame_hdr fh;

	if (atomic_load(&t->dead) || t->rx_fin)
		return true;
	if (t->base.mode == TLM_MODE_BYTES && t->data_left)
		return avail > 0;
	if (avail < TLM_FRAME_HDR)
		return false;
	if (t->base.mode == TLM_MODE_BYTES)
		return true;   /* a header: data, FIN or an error */
	if (tlm__frame_hdr_decode(t->rbuf + t->rstart, t->base.page_size, &fh) < 0)
		return true;   /* an error to report */
	return avail >= TLM_FRAME_HDR + (size_t)fh.len;
}

/* Keep the eventfd readable exactly while rx_ready(). */
static void rx_sync_ready(struct tcp_lane *t)
{
	bool want = rx_ready(t);
	uint64_t v = 1;

	if (want == t->ev_set)
		return;
	if (want ? write(t->evfd, &v, sizeof(v)) == sizeof(v)
		 : read(t->evfd, &v, sizeof(v)) == sizeof(v) || errno == EAGAIN)
		t->ev_set = want;
}

static int tcp_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	int rc = recv_pages(l, sink, timeout_ms);

	rx_sync_ready(to_tcp(l));
	return rc;
}

static ssize_t tcp_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	ssize_t rc = read_bytes(l, buf, n, timeout_ms);

	rx_sync_ready(to_tcp(l));
	return rc;
}

/* ---- control ---- */

static int tcp_set_mode(struct tlm_lane *l, enum tlm_lane_mode mode)
{
	struct tcp_lane *t = to_tcp(l);

	if (mode != TLM_MODE_BYTES && mode != TLM_MODE_PAGES)
		return -EINVAL;
	/* Switching inside a DATA frame would misparse its rest. */
	if (t->data_left)
		return -EBUSY;
	l->mode = mode;
	rx_sync_ready(t);   /* what counts as ready depends on the mode */
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
	free(t->rbuf);
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
	.send_pages = tcp_send_pages,
	.recv_pages = tcp_recv_pages,
	.write = tcp_write,
	.read = tcp_read,
	.shutdown = tcp_shutdown,
	.flush = tcp_flush,
};

const struct tlm_lane_ops tlm__tcp_ops = {
	.name = "tcp",
	.listen = tcp_listen,
	.listener_port = tcp_listener_port,
	.accept = tcp_accept,
	.listener_close = tcp_listener_close,
	.connect = tcp_connect,
	.close = tcp_close,
	.set_mode = tcp_set_mode,
	.pollfd = tcp_pollfd,
	.inject_raw = tcp_inject_raw,
	.dp = &tcp_dp,
};
