/* SPDX-License-Identifier: MIT */
/*
 * The receive path. Packets come from a burst on the lane's own queue
 * (poll.c's pump, the lane's callers or the poll thread) or on the shared
 * queue (the poll thread, port->lock held, tlm__dpdk_rx_pkt demultiplexes
 * by lane id). A lane's packet (tlm__dpdk_rx_lane, lane->mu held) moves
 * the connection's state (conn.c), ACKs and credit, and its stream bytes
 * into the lane's receive ring (reliab.c).
 *
 * The ring: bytes [rcv_rd, rcv_nxt) wait for the reader. The next bytes
 * in order, when nothing waits in the ring before them, stay in the packet
 * they came in (up to HELD_MAX packets, a window of jumbo frames): the
 * reader parses records in place there, or in the ring unless they wrap,
 * and gathers them into scratch otherwise (summing the crc on the way).
 * Readers (read, recv_pages) are one at a time (rmu); a malformed frame
 * or a failed crc poisons the lane, and the peer is told (RST).
 */
#include "dpdk-internal.h"

/* A packet for lane l; l->mu held. True if the lane keeps k->m. */
bool tlm__dpdk_rx_lane(struct dlane *l, const struct pkt *k, uint64_t now)
{
	if (l->state == LS_SYN_SENT && !tlm__dpdk_conn_rx_syn_sent(l, k))
		return false;
	if (l->rid != k->src || l->state == LS_DEAD) {
		l->rx_ignored++;
		return false;
	}
	l->rx_pkts++;
	l->rx_ownq += k->qid && k->qid == l->q;
	tlm__dpdk_timers_any_received(l, now);
	if (k->type == PT_CLOSE || k->type == PT_RST) {
		tlm__dpdk_conn_rx_close(l, k);
		return false;
	}
	tlm__dpdk_rel_rx_ack(l, k, now);
	if (k->type == PT_PING)
		l->need_ack = true;
	return k->dlen && tlm__dpdk_rel_rx_data(l, k, now);
}

/* Any packet, any lane: port->lock held. qid: the queue it came in on. */
void tlm__dpdk_rx_pkt(struct dport *p, struct rte_mbuf *m, bool local, uint16_t qid)
{
	struct pkt k;
	int r = tlm__dpdk_parse_pkt(p, m, local, &k);

	k.qid = qid;
	if (r == 0) {
		tlm__dpdk_arp_input(p, k.eh);
	} else if (r > 0) {
		if (!p->p2p)
			tlm__dpdk_arp_learn(p, k.sip, &k.eh->src_addr);
		if (k.type == PT_SYN) {
			tlm__dpdk_rx_syn(p, &k, local, qid);
		} else {
			struct dlane *l = tlm__dpdk_find_lane(p, k.dst);
			if (l && !l->gone) {
				pthread_mutex_lock(&l->mu);
				bool kept = tlm__dpdk_rx_lane(l, &k, tlm__now_ns());
				pthread_mutex_unlock(&l->mu);
				if (kept)
					return;
			}
		}
	}
	rte_pktmbuf_free(m);
}

/* Wait (l->mu held) until at least want bytes are readable. 0, or
 * -ETIMEDOUT, or the lane's error once buffered bytes are not enough. */
static int wait_bytes(struct dlane *l, size_t want, uint64_t end)
{
	struct waiter w = { 0 };
	int r = 0;

	if (l->bad)
		return l->bad;
	while (l->rcv_nxt - l->rcv_rd < want) {
		if (l->state == LS_DEAD) {
			r = l->err;
			break;
		}
		if (l->peer_closed) {
			tlm__dpdk_peer_closed_fail(l);
			r = l->err;
			break;
		}
		l->rd_want = want;
		int t = tlm__dpdk_lane_wait(l, &w, end);
		l->rd_want = 0;
		if (t == ETIMEDOUT && l->rcv_nxt - l->rcv_rd < want) {
			r = -ETIMEDOUT;
			break;
		}
	}
	tlm__dpdk_wait_done(l, &w);
	return r;
}

/* Copy k bytes; those from byte `from` of the whole on are summed into
 * *sum as they are copied (at is where this piece starts). */
static void peek_piece(uint8_t *d, const uint8_t *s, size_t k, size_t at, size_t from,
		       uint32_t *sum)
{
	size_t plain = !sum ? k : at >= from ? 0 : from - at < k ? from - at : k;

	memcpy(d, s, plain);
	if (sum && k > plain)
		*sum = tlm__crc32c_copy(*sum, d + plain, s + plain, k - plain);
}

/* The next n readable bytes: from the packets kept, then the ring. With
 * sum, the crc32c of the bytes from `from` on, in the same pass. */
static void ring_peek_sum(struct dlane *l, void *dst, size_t n, size_t from, uint32_t *sum)
{
	uint8_t *d = dst;
	size_t h = (size_t)(l->rcv_held - l->rcv_rd), skip = l->hoff, at = 0;

	if (sum)
		*sum = 0;
	for (unsigned i = 0; i < l->hn && h && n; i++) {
		unsigned e = (l->hhead + i) % HELD_MAX;
		size_t k = l->hq[e].len - skip;
		if (k > n)
			k = n;
		peek_piece(d + at, l->hq[e].p + skip, k, at, from, sum);
		at += k;
		n -= k;
		h -= k;
		skip = 0;
	}
	size_t off = (size_t)(l->rcv_held % RING_BYTES);
	size_t k = RING_BYTES - off < n ? RING_BYTES - off : n;
	peek_piece(d + at, l->rbuf + off, k, at, from, sum);
	peek_piece(d + at + k, l->rbuf, n - k, at + k, from, sum);
}

static void ring_peek(struct dlane *l, void *dst, size_t n)
{
	ring_peek_sum(l, dst, n, 0, NULL);
}

/* The next n readable bytes in place, or NULL if they are not in one
 * piece (then ring_peek them). Valid until they are consumed. */
static const uint8_t *ring_ptr(const struct dlane *l, size_t n)
{
	if (l->rcv_held > l->rcv_rd) {
		const struct rxp *e = &l->hq[l->hhead];
		return e->len - l->hoff >= n ? e->p + l->hoff : NULL;
	}
	size_t off = (size_t)(l->rcv_rd % RING_BYTES);
	return off + n <= RING_BYTES ? l->rbuf + off : NULL;
}

static void ring_consume(struct dlane *l, size_t n)
{
	size_t h = (size_t)(l->rcv_held - l->rcv_rd);

	if (h > n)
		h = n;
	while (h) {
		size_t left = l->hq[l->hhead].len - l->hoff;
		if (h < left) {
			l->hoff += (uint32_t)h;
			break;
		}
		h -= left;
		rte_pktmbuf_free(l->hq[l->hhead].m);
		l->hhead = (l->hhead + 1) % HELD_MAX;
		l->hn--;
		l->hoff = 0;
	}
	l->rcv_rd += n;
	if (l->rcv_held < l->rcv_rd)
		l->rcv_held = l->rcv_rd;
	if (l->rcv_rd == l->rcv_nxt && atomic_load(&l->efd_on)) {
		uint64_t v;
		if (read(l->efd, &v, sizeof(v)) < 0) {
			/* already drained */
		}
	}
}

/* Has the reader freed enough of the ring (a quarter) since we last
 * told the peer, for a window update to be due? l->mu held. */
static bool window_due(const struct dlane *l)
{
	return l->rcv_rd + RING_BYTES - l->adv_edge >= RING_BYTES / 4;
}

/* Send the window update now (not l->mu). */
static void window_update(struct dlane *l)
{
	tlm__dpdk_drive(l, false);
}

/* Poison the lane: a bad frame leaves the stream unsynchronized. */
static int bad_frame(struct dlane *l, int err, const char *why)
{
	tlm__dpdk_lane_fail(l, TLM_LOG_ERR, err, why);
	l->bad = err;
	l->tell_peer = true;
	return err;
}

/* Byte mode, l->mu held: past the frame headers to the next payload
 * byte, which is then readable. 1, 0 at the end of the stream (FIN), or a
 * negative error. */
static int next_data(struct dlane *l, uint64_t end)
{
	int r;

	while (!l->data_left) {
		uint8_t h[TLM_FRAME_HDR];
		struct tlm_frame_hdr fh;

		if (l->eof)
			return 0;
		r = wait_bytes(l, TLM_FRAME_HDR, end);
		if (r)
			return r;
		ring_peek(l, h, sizeof(h));
		r = tlm__frame_hdr_decode(h, l->base.page_size, &fh);
		if (r)
			return bad_frame(l, r, "malformed frame header");
		if (fh.type == TLM_FT_FIN && fh.len == 0) {
			ring_consume(l, TLM_FRAME_HDR);
			l->eof = true;
			return 0;
		}
		if (fh.type != TLM_FT_DATA)
			return bad_frame(l, -TLM_EFRAME, "unexpected frame type in byte mode");
		ring_consume(l, TLM_FRAME_HDR);
		l->data_left = fh.len;
	}
	r = wait_bytes(l, 1, end);
	return r ? r : 1;
}

ssize_t tlm__dpdk_read(struct tlm_lane *tl, void *buf, size_t n, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms);
	ssize_t r;

	if (!n)
		return 0;
	tlm__dpdk_lcore_join();
	pthread_mutex_lock(&l->rmu);
	pthread_mutex_lock(&l->mu);
	r = next_data(l, end);
	if (r <= 0)
		goto out;
	size_t avail = (size_t)(l->rcv_nxt - l->rcv_rd);
	size_t k = n < avail ? n : avail;
	if (k > l->data_left)
		k = l->data_left;
	ring_peek(l, buf, k);
	ring_consume(l, k);
	l->data_left -= (uint32_t)k;
	tl->rx_bytes += k;
	r = (ssize_t)k;
out:;
	bool upd = r > 0 && window_due(l);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&l->rmu);
	if (upd)
		window_update(l);
	return r;
}

/* The next record's frame, l->mu held: 1 with *fh and *f, in place or
 * gathered into scratch (then its data's crc, unless it has none, summed
 * on the way: *summed, *sum), its bytes [rcv_rd, rcv_rd + *used) the
 * caller's until it consumes them (the poll side only writes past
 * rcv_nxt); 0 at the end of the stream (FIN); or a negative error. */
static int next_record(struct dlane *l, uint64_t end, struct tlm_frame_hdr *fh,
		       const uint8_t **f, size_t *used, uint32_t *sum, bool *summed)
{
	uint8_t h[TLM_FRAME_HDR];
	int r;

	if (l->eof)
		return 0;
	r = wait_bytes(l, TLM_FRAME_HDR, end);
	if (r)
		return r;
	ring_peek(l, h, TLM_FRAME_HDR);
	r = tlm__frame_hdr_decode(h, l->base.page_size, fh);
	if (r)
		return bad_frame(l, r, "malformed frame header");
	if (fh->type == TLM_FT_FIN && fh->len == 0) {
		ring_consume(l, TLM_FRAME_HDR);
		l->eof = true;
		return 0;
	}
	if (fh->type != TLM_FT_PAGE || fh->len < TLM_PAGE_HDR)
		return bad_frame(l, -TLM_EFRAME, "unexpected frame in page mode");
	r = wait_bytes(l, TLM_FRAME_HDR + fh->len, end);
	if (r)
		return r;
	*used = TLM_FRAME_HDR + fh->len;
	*f = ring_ptr(l, *used);
	if (!*f) {
		uint8_t ph[TLM_FRAME_HDR + TLM_PAGE_HDR];
		ring_peek(l, ph, sizeof(ph));
		bool nosum = tlm__get16(ph + TLM_FRAME_HDR + 12) & TLM__PF_NOSUM;
		ring_peek_sum(l, l->scratch, *used, nosum ? *used : TLM_FRAME_HDR + TLM_PAGE_HDR,
			      sum);
		*f = l->scratch;
		*summed = true;
	}
	return 1;
}

/* Decode and verify the record in frame f: 0, or the error and *why. A
 * record without a crc (sent zero-copy) passes only over a link that
 * guards its bytes (zc_rx). */
static int check_record(const struct dlane *l, const struct tlm_frame_hdr *fh, const uint8_t *f,
			uint32_t sum, bool summed, struct tlm_page_rec *rec, const char **why)
{
	int r = tlm__page_hdr_decode(f + TLM_FRAME_HDR, fh->len, l->base.page_size, rec);

	*why = "malformed page record";
	if (r)
		return r;
	rec->data = f + TLM_FRAME_HDR + TLM_PAGE_HDR;
	if (!(rec->flags & TLM__PF_NOSUM)) {
		*why = "page record failed its crc";
		return summed ? tlm__page_verify_sum(rec, sum) : tlm__page_verify(rec);
	}
	if (!l->zc_rx) {
		*why = "page record without a crc on a link that does not guard its bytes (the "
		       "sender has zc=on: give it zc=off, or this side zc=on)";
		return -TLM_ECRC;
	}
	rec->flags &= (uint16_t)~TLM__PF_NOSUM;
	return 0;
}

int tlm__dpdk_recv_pages(struct tlm_lane *tl, const struct tlm_page_sink *sink, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	uint64_t end = deadline_ns(timeout_ms);
	size_t used = 0;        /* the record just applied, still in the ring */
	uint64_t backlog = 0;
	int delivered = 0, r = 0;

	tlm__dpdk_lcore_join();

	if (tl->mode != TLM_MODE_PAGES)
		return -EINVAL;
	pthread_mutex_lock(&l->rmu);
	if (!l->scratch) {
		l->scratch = malloc(TLM_FRAME_HDR + TLM_PAGE_HDR + TLM_MAX_PAGE_SIZE);
		if (!l->scratch) {
			r = -ENOMEM;
			goto unlock_r;
		}
	}
	for (int i = 0; i < 256; i++) {
		struct tlm_frame_hdr fh;
		struct tlm_page_rec rec;
		const uint8_t *f = NULL;
		const char *why;
		uint32_t sum = 0;
		bool summed = false;

		/* run to completion: keep our queue moving (acks, window), but
		 * take more packets in only while what we hold is little, so
		 * what the PMD just copied in is still in cache when we read
		 * it */
		if (i && !(i & 15) && backlog < RX_BACKLOG)
			tlm__dpdk_drive(l, false);
		pthread_mutex_lock(&l->mu);
		ring_consume(l, used);
		backlog = l->rcv_nxt - l->rcv_rd;
		used = 0;
		r = next_record(l, delivered ? 0 : end, &fh, &f, &used, &sum, &summed);
		pthread_mutex_unlock(&l->mu);
		if (r <= 0) {
			if (delivered)
				r = 0;   /* the error (sticky) comes with the next call */
			break;
		}
		/* decode, verify and apply unlocked: the lane keeps receiving
		 * while the sink copies */
		r = check_record(l, &fh, f, sum, summed, &rec, &why);
		if (r) {
			pthread_mutex_lock(&l->mu);
			bad_frame(l, r, why);
			pthread_mutex_unlock(&l->mu);
			used = 0;
			if (delivered)
				r = 0;
			break;
		}
		tl->rx_bytes += rec.len;
		r = sink->apply(sink->arg, &rec);
		if (r < 0)
			break;
		r = 0;
		delivered++;
	}
	pthread_mutex_lock(&l->mu);
	ring_consume(l, used);
	bool upd = window_due(l);
	pthread_mutex_unlock(&l->mu);
	if (upd)
		window_update(l);
unlock_r:
	pthread_mutex_unlock(&l->rmu);
	if (delivered && (r == -ETIMEDOUT || r == 0))
		return delivered;
	if (r == -ETIMEDOUT)
		return 0;
	return r ? r : delivered;
}

/*
 * Bytes read in place (seal.c opens its frames straight out of our
 * packets): rspan goes past the frame headers as read does and points at
 * the next payload bytes where they lie, in a kept packet or the ring, up
 * to the end of that piece or of the DATA frame; rtake consumes them (and
 * sends the window update that read would). Between the two the bytes are
 * the reader's: the poll side only writes past rcv_nxt.
 */
ssize_t tlm__dpdk_rspan(struct tlm_lane *tl, const uint8_t **p, int timeout_ms)
{
	struct dlane *l = (struct dlane *)tl;
	ssize_t r;

	tlm__dpdk_lcore_join();
	pthread_mutex_lock(&l->rmu);
	pthread_mutex_lock(&l->mu);
	r = next_data(l, deadline_ns(timeout_ms));
	if (r > 0) {
		size_t k = (size_t)(l->rcv_nxt - l->rcv_rd), piece;

		if (k > l->data_left)
			k = l->data_left;
		if (l->rcv_held > l->rcv_rd) {
			const struct rxp *e = &l->hq[l->hhead];
			*p = e->p + l->hoff;
			piece = e->len - l->hoff;
		} else {
			size_t off = (size_t)(l->rcv_rd % RING_BYTES);
			*p = l->rbuf + off;
			piece = RING_BYTES - off;
		}
		r = (ssize_t)(k < piece ? k : piece);
	}
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&l->rmu);
	return r;
}

void tlm__dpdk_rtake(struct tlm_lane *tl, size_t k)
{
	struct dlane *l = (struct dlane *)tl;

	pthread_mutex_lock(&l->rmu);
	pthread_mutex_lock(&l->mu);
	if (k > l->data_left)
		k = l->data_left;
	ring_consume(l, k);
	l->data_left -= (uint32_t)k;
	bool upd = k && window_due(l);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&l->rmu);
	if (upd)
		window_update(l);
}
