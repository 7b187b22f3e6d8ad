/* SPDX-License-Identifier: MIT */
/*
 * What tcp.c (setup, options, listen/accept/connect/close) and
 * datapath.c (send and receive) share: the lane and its options.
 */
#ifndef TLM_TCP_INTERNAL_H
#define TLM_TCP_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "tlm-internal.h"
#include "stream.h"

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
	struct tlm__stream rx;     /* RBUF_SIZE of bytes read, not yet parsed */
	bool rx_eof;               /* socket said EOF or reset */

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

/* Peer gone, in whatever way the kernel tells it. */
static inline int map_sock_err(int err)
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
static inline int lane_fail(struct tcp_lane *t, int err)
{
	int expected = 0;

	atomic_compare_exchange_strong(&t->dead, &expected, err);
	return atomic_load(&t->dead);
}

static inline uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : tlm__now_ms() + (uint64_t)timeout_ms;
}

static inline int poll_left(uint64_t deadline)
{
	uint64_t left;

	if (deadline == UINT64_MAX)
		return -1;
	left = (uint64_t)tlm__left_ms(deadline);
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* datapath.c APIs: */
int tlm__tcp_send_pages(struct tlm_lane *l, const struct tlm_page_rec *recs, unsigned n);
ssize_t tlm__tcp_write(struct tlm_lane *l, const void *buf, size_t n);
int tlm__tcp_shutdown(struct tlm_lane *l);
int tlm__tcp_flush(struct tlm_lane *l);
int tlm__tcp_inject_raw(struct tlm_lane *l, const void *buf, size_t n);
void tlm__tcp_abort(struct tlm_lane *l, int err);
void tlm__tcp_rx_sync_ready(struct tcp_lane *t);
int tlm__tcp_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms);
ssize_t tlm__tcp_read(struct tlm_lane *l, void *buf, size_t n, int timeout_ms);

#endif
