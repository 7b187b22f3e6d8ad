/* SPDX-License-Identifier: MIT */
/*
 * rdma_cm for the RDMA lanes: addresses resolved, event channels made
 * non-blocking, and the next event (or the one expected) within a
 * deadline, its failure in errno terms (cm_err: librdmacm returns -1 and
 * sets errno).
 */
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include "rdma-internal.h"

int tlm__rdma_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

void tlm__rdma_fmt_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;

		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		port = ntohs(s->sin_port);
		snprintf(out, cap, "%s:%u", host, port);
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)sa;

		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		port = ntohs(s->sin6_port);
		snprintf(out, cap, "[%s]:%u", host, port);
	} else {
		snprintf(out, cap, "?");
	}
}

int tlm__rdma_resolve(const char *addr, const char *port, bool passive,
		      struct addrinfo **out)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	int rc = getaddrinfo(addr, port ? port : "0", &hints, out);

	if (rc) {
		tlm__err("rdma: cannot resolve %s:%s: %s", addr ? addr : "*",
			 port ? port : "0", gai_strerror(rc));
		return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	}
	return 0;
}

int tlm__rdma_make_channel(struct rdma_event_channel **out)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	int err;

	if (!ch) {
		err = errno ? -errno : -ENODEV;
		tlm__err("rdma: no rdma_cm (%s): is an RDMA device present "
			 "(e.g. rdma_rxe with 'rdma link add')?", strerror(-err));
		return err == -ENOENT ? -ENODEV : err;
	}
	err = tlm__rdma_set_nonblock(ch->fd);
	if (err) {
		rdma_destroy_event_channel(ch);
		return err;
	}
	*out = ch;
	return 0;
}

/*
 * Wait for the next event on a channel. The event is returned un-acked
 * (its id and private data stay valid until rdma_ack_cm_event).
 */
int tlm__rdma_cm_next(struct rdma_event_channel *ch, uint64_t deadline,
		      struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int rc;

		errno = 0;
		rc = rdma_get_cm_event(ch, ev);
		if (rc == 0)
			return 0;
		rc = cm_err(rc);
		if (rc != -EAGAIN && rc != -EWOULDBLOCK && rc != -EINTR)
			return rc;
		rc = poll(&p, 1, left_of(deadline) == INT_MAX ? -1 : left_of(deadline));
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

static int cm_event_err(const struct rdma_cm_event *ev)
{
	switch (ev->event) {
	case RDMA_CM_EVENT_REJECTED:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return -TLM_EPEERCLOSED;
	default:
		return -EPROTO;
	}
}

/* Wait for one expected event; anything else fails. */
int tlm__rdma_cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
			uint64_t deadline, const char *what, uint32_t *peer_nrecv)
{
	struct rdma_cm_event *ev;
	int rc = tlm__rdma_cm_next(ch, deadline, &ev);

	if (rc) {
		tlm__err("rdma: %s: %s", what, rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
		return rc;
	}
	if (ev->event != want) {
		rc = cm_event_err(ev);
		tlm__err("rdma: %s: %s (status %d)", what, rdma_event_str(ev->event),
			 ev->status);
	} else if (peer_nrecv) {
		const uint8_t *pd = ev->param.conn.private_data;

		*peer_nrecv = pd && ev->param.conn.private_data_len >= 4 ? tlm__get32(pd) : 0;
	}
	rdma_ack_cm_event(ev);
	return rc;
}
