/* SPDX-License-Identifier: MIT */
/*
 * TCP lanes, the datapath: sends and receives (tcp.c sets lanes up).
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
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp-internal.h"

/* Bytes the peer has acknowledged since `written` was 0: what we handed
 * the kernel minus what its send queue still holds. */
static int64_t acked(int fd, int64_t written)
{
	int q = 0;

	if (ioctl(fd, SIOCOUTQ, &q) < 0)
		return written;
	return written - q;
}

/*
 * Send every byte the iovec array describes; the array is consumed (its
 * entries are adjusted after a partial write). With a send timeout, the
 * lane fails once the peer has acknowledged nothing for that long: the
 * clock restarts when the peer takes bytes, not when the kernel takes a
 * few more into its buffer (a partial write), so a peer that stopped
 * reading is given up on at the configured time.
 */
static int send_iov(struct tcp_lane *t, struct iovec *iov, int cnt)
{
	int64_t written = 0, last = acked(t->fd, 0);
	uint64_t deadline = t->opts.send_timeout > 0 ? tlm__now_ms() + (uint64_t)t->opts.send_timeout
						      : UINT64_MAX;

	while (cnt > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
		int dead = atomic_load(&t->dead);
		ssize_t w;

		if (dead)      /* tlm__tcp_abort, from another thread */
			return t->tx_err = dead;
		w = sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0) {
			struct pollfd p = { .fd = t->fd, .events = POLLOUT };
			int64_t a;
			int left;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				t->tx_err = map_sock_err(errno);
				return t->tx_err;
			}
			a = acked(t->fd, written);
			if (a != last && deadline != UINT64_MAX) {
				last = a;
				deadline = tlm__now_ms() + (uint64_t)t->opts.send_timeout;
			}
			left = poll_left(deadline);
			if (left == 0) {
				tlm__err("%s: lane %u: the peer has taken nothing for %d ms; "
					 "giving up", t->base.peer, t->base.index,
					 t->opts.send_timeout);
				t->tx_err = -ETIMEDOUT;
				return t->tx_err;
			}
			/* Look every 100 ms whether the peer took anything
			 * (POLLOUT waits for a third of the buffer to free up). */
			if (poll(&p, 1, left < 0 || left > 100 ? 100 : left) < 0 && errno != EINTR)
				return t->tx_err = -errno;
			continue;
		}
		written += w;
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

int tlm__tcp_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n)
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

ssize_t tlm__tcp_write(struct tlm_lane *l, const void *buf, size_t n)
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

int tlm__tcp_shutdown(struct tlm_lane *l)
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

int tlm__tcp_flush(struct tlm_lane *l)
{
	struct tcp_lane *t = to_tcp(l);
	int dead = atomic_load(&t->dead);

	/* Nothing is batched in user space: every call hands its bytes to
	 * the kernel before returning, and NODELAY pushes them out. */
	return dead ? dead : t->tx_err;
}

void tlm__tcp_abort(struct tlm_lane *l, int err)
{
	struct tcp_lane *t = to_tcp(l);
	int zero = 0;

	/* send_iov looks at `dead` before each sendmsg, and at least every
	 * 100 ms while the peer takes nothing. */
	atomic_compare_exchange_strong(&t->dead, &zero, err);
}

int tlm__tcp_inject_raw(struct tlm_lane *l, const void *buf, size_t n)
{
	struct tcp_lane *t = to_tcp(l);
	struct iovec iov = { (void *)buf, n };

	return send_iov(t, &iov, 1);
}

/*
 * One read into the free end of the receive buffer (compacting first when
 * the tail is short). Returns bytes read, -EAGAIN if nothing is there and
 * we may not wait, -ETIMEDOUT once the deadline passed, -TLM_EPEERCLOSED
 * at EOF or reset (rx_eof set), or another negative errno.
 */
static int rx_fill(struct tcp_lane *t, bool wait, uint64_t deadline)
{
	size_t room;

	if (t->rx_eof)
		return -TLM_EPEERCLOSED;
	room = tlm__stream_room(&t->rx, TLM_FRAME_HDR + TLM_MAX_FRAME);
	for (;;) {
		ssize_t r = recv(t->fd, tlm__stream_tail(&t->rx), room, MSG_DONTWAIT);

		if (r > 0) {
			tlm__stream_put(&t->rx, (size_t)r);
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
	int delivered = tlm__stream_parse_pages(&t->rx, sink, NULL, NULL, err);

	if (*err)
		*err = lane_fail(t, *err);
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
		if (rc == -TLM_EPEERCLOSED && tlm__stream_avail(&t->rx))
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
	ssize_t k;
	int rc = rx_check(t, TLM_MODE_BYTES);

	if (rc)
		return rc;
	if (n > SSIZE_MAX)
		n = SSIZE_MAX;
	if (t->rx.fin)
		return 0;
	for (;;) {
		k = tlm__stream_read(&t->rx, out, n, got);
		if (k < 0)
			return lane_fail(t, (int)k);
		got = (size_t)k;
		if (got == n || t->rx.fin)
			return (ssize_t)got;
		if (!tlm__stream_need(&t->rx))
			return (ssize_t)got;   /* a bad frame next: the next call says so */
		if (t->rx.data_left && n - got >= 65536 && !t->rx_eof) {
			/* Large read, nothing buffered: straight into the
			 * caller's buffer, no copy. */
			size_t want = n - got < t->rx.data_left ? n - got : t->rx.data_left;
			ssize_t r = recv(t->fd, out + got, want, MSG_DONTWAIT);

			if (r > 0) {
				t->rx.data_left -= (uint32_t)r;
				count_bytes(&l->rx_bytes, (uint64_t)r);
				got += (size_t)r;
				continue;
			}
			if (r == 0) {
				t->rx_eof = true;
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				rc = map_sock_err(errno);
				if (rc == -TLM_EPEERCLOSED)
					t->rx_eof = true;
				else
					return got ? (ssize_t)got : rc;
			}
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
}

/* Could a call make progress without more input from the socket? */
static bool rx_ready(struct tcp_lane *t)
{
	return atomic_load(&t->dead) || tlm__stream_ready(&t->rx);
}

/* Keep the eventfd readable exactly while rx_ready(). */
void tlm__tcp_rx_sync_ready(struct tcp_lane *t)
{
	bool want = rx_ready(t);
	uint64_t v = 1;

	if (want == t->ev_set)
		return;
	if (want ? write(t->evfd, &v, sizeof(v)) == sizeof(v)
		 : read(t->evfd, &v, sizeof(v)) == sizeof(v) || errno == EAGAIN)
		t->ev_set = want;
}

int tlm__tcp_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	int rc = recv_pages(l, sink, timeout_ms);

	tlm__tcp_rx_sync_ready(to_tcp(l));
	return rc;
}

ssize_t tlm__tcp_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms)
{
	ssize_t rc = read_bytes(l, buf, n, timeout_ms);

	tlm__tcp_rx_sync_ready(to_tcp(l));
	return rc;
}
