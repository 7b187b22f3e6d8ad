/* SPDX-License-Identifier: MIT */
/*
 * Sessions: one control lane plus n data lanes, each authenticated and
 * then sealed.
 *
 * Connection setup, per lane (C = connecting side, S = accepting side):
 *
 *   C -> S  HELLO      magic, version, lane, session id, nonce_c,
 *                      protection and cipher
 *   S -> C  CHALLENGE  magic, version, nonce_s (or ERROR naming S's version
 *                      or protection if they differ)
 *   C -> S  AUTH       HMAC(psk, "tlm-client P.C", sid, lane, nonce_s, nonce_c)
 *   S -> C  WELCOME    HMAC(psk, "tlm-server P.C", sid, lane, nonce_c, nonce_s)
 *                      (or ERROR: authentication, unknown session, bad lane)
 *
 * C proves the key first: S answers a HELLO with nothing but a nonce, so a
 * peer without the key gets nothing to test guesses against. C checks S's
 * proof in WELCOME before it sends anything of value. From then on every
 * frame on the lane is sealed (seal.c) under keys derived from the key and
 * both nonces, one per direction. On the control lane only, sealed:
 *
 *   C -> S  PARAMS     page size, lane count, page-mode lanes, regions, caps
 *   S -> C  PARAMS_ACK caps both sides have (or ERROR saying what it refused)
 *
 * then C connects data lanes 1..n.
 *
 * S runs the handshakes of up to PENDING_MAX connections side by side, in
 * one loop that never blocks on any of them: each must prove the key within
 * HANDSHAKE_MS of being accepted or is dropped, and when PENDING_MAX are
 * waiting the oldest makes room for a new one. Connections that send
 * nothing, or send slowly, cost a slot each and nobody any time.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlm-internal.h"

#define HANDSHAKE_MS 5000  /* from accept to a proven key, whole */
#define PENDING_MAX  128   /* connections in their handshake at once */
#define TICK_MS      5     /* poll period where a transport has no fd */

/* A connection in its handshake, on the accepting side. */
struct pending {
	struct tlm_lane *l;
	uint64_t deadline;       /* ms: proven by then, or dropped */
	bool challenged;         /* HELLO taken, CHALLENGE sent: AUTH next */
	struct tlm_hello h;
	uint8_t nonce_s[TLM_NONCE_LEN];
	uint32_t got;            /* bytes of the message being read */
	uint8_t msg[TLM_FRAME_HDR + TLM_MAX_MSG];
};

struct tlm_listener {
	const struct tlm_lane_ops *ops;
	struct tlm_xlistener *xl;
	struct tlm_session_cfg cfg;
	struct tlm_psk psk;
	uint8_t cipher;
	unsigned n_pending;
	struct pending *pending[PENDING_MAX]; /* oldest first */
};

struct tlm_session {
	struct tlm_session_cfg cfg;
	struct tlm_psk psk;
	uint8_t sid[TLM_SID_LEN];
	unsigned n;
	struct tlm_lane *lanes[TLM_MAX_LANES];
	char names[TLM_MAX_REGIONS][TLM_REGION_NAME_MAX + 1]; /* cfg.region_name */
};

static int step_ms(const struct tlm_session_cfg *cfg)
{
	return cfg->timeout_ms > 0 ? cfg->timeout_ms : TLM_DEFAULT_TIMEOUT_MS;
}

static int check_cfg(const struct tlm_session_cfg *cfg, bool connecting)
{
	if (!cfg || !cfg->psk || cfg->psk->len < TLM_PSK_MIN || cfg->psk->len > TLM_PSK_MAX) {
		tlm__err("a session needs a pre-shared key of at least %d bytes", TLM_PSK_MIN);
		return -TLM_EPSK;
	}
	if (!tlm_protect_name(cfg->protect)) {
		tlm__err("protection %d: must be encrypt, integrity or none", cfg->protect);
		return -EINVAL;
	}
	if (connecting && (cfg->n_lanes < 1 || cfg->n_lanes >= TLM_MAX_LANES)) {
		tlm__err("data lanes: %u, must be 1..%d", cfg->n_lanes, TLM_MAX_LANES - 1);
		return -EINVAL;
	}
	if (cfg->n_lanes >= TLM_MAX_LANES || cfg->n_regions > TLM_MAX_REGIONS)
		return -EINVAL;
	for (unsigned i = 0; i < cfg->n_regions; i++)
		if (cfg->region_name[i] &&
		    strnlen(cfg->region_name[i], TLM_REGION_NAME_MAX + 1) > TLM_REGION_NAME_MAX) {
			tlm__err("region %u: name longer than %d bytes", i, TLM_REGION_NAME_MAX);
			return -ENAMETOOLONG;
		}
	return 0;
}

static void send_error(struct tlm_lane *l, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void send_error(struct tlm_lane *l, int code, const char *fmt, ...)
{
	struct tlm_errmsg e = { .code = code, .version = TLM_WIRE_VERSION };
	uint8_t buf[TLM_MAX_MSG];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(e.text, sizeof(e.text), fmt, ap);
	va_end(ap);
	n = tlm__errmsg_encode(buf, sizeof(buf), &e);
	if (n > 0 && tlm__msg_send(l, TLM_FT_ERROR, buf, (uint32_t)n) == 0)
		tlm_lane_flush(l);
}

/* An ERROR frame from the peer: log its text, return its code. */
static int peer_error(struct tlm_lane *l, const uint8_t *buf, uint32_t len)
{
	struct tlm_errmsg e;

	if (tlm__errmsg_decode(buf, len, &e))
		return -TLM_EFRAME;
	if (e.code == -TLM_EVERSION)
		tlm__err("%s: peer speaks wire version %u, this side speaks version %u",
			 l->peer, e.version, TLM_WIRE_VERSION);
	else
		tlm__err("%s: peer refused: %s", l->peer, e.text);
	return e.code;
}

/* The MAC labels name the direction and the protection both sides use,
 * so a proof made for one can never pass for another. */
static void label(char *buf, size_t cap, const char *who, uint8_t protect, uint8_t cipher)
{
	snprintf(buf, cap, "tlm-%s %u.%u", who, protect, cipher);
}

/* Seal lane l from now on, if the session is protected. client: this side
 * connected (sends with the 'C' key). */
static int start_seal(struct tlm_lane *l, const struct tlm_psk *psk, const uint8_t *sid,
		      uint16_t lane, const uint8_t *nonce_c, const uint8_t *nonce_s,
		      uint8_t protect, uint8_t cipher, bool client)
{
	struct tlm__seal_params sp = { .protect = protect, .cipher = cipher };
	int err;

	if (protect == TLM_PROTECT_NONE)
		return 0;
	err = tlm__seal_key(psk, sid, lane, nonce_c, nonce_s, protect, cipher,
			    client ? 'C' : 'S', sp.tx_key);
	if (!err)
		err = tlm__seal_key(psk, sid, lane, nonce_c, nonce_s, protect, cipher,
				    client ? 'S' : 'C', sp.rx_key);
	if (!err)
		err = tlm__seal_start(l, &sp);
	memset(&sp, 0, sizeof(sp));
	return err;
}

/* Connecting side of one lane's handshake, through WELCOME; the lane is
 * sealed when it returns 0. */
static int client_auth(struct tlm_lane *l, const struct tlm_session_cfg *cfg,
		       const uint8_t *sid, uint16_t lane, int ms)
{
	struct tlm_hello h = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION, .lane = lane };
	uint8_t buf[TLM_MAX_MSG], mac[TLM_MAC_LEN];
	const struct tlm_psk *psk = cfg->psk;
	struct tlm_challenge c;
	char lbl[32];
	uint32_t len;
	uint8_t type;
	int err, n;

	h.protect = (uint8_t)cfg->protect;
	h.cipher = h.protect == TLM_PROTECT_NONE ? TLM_CIPHER_NONE
						  : tlm__seal_cipher(h.protect);
	memcpy(h.sid, sid, TLM_SID_LEN);
	err = tlm__random(h.nonce, sizeof(h.nonce));
	if (err)
		return err;
	n = tlm__hello_encode(buf, sizeof(buf), &h);
	err = tlm__msg_send(l, TLM_FT_HELLO, buf, (uint32_t)n);
	if (!err)
		err = tlm_lane_flush(l);
	if (err)
		return err;
	err = tlm__msg_recv(l, &type, buf, sizeof(buf), &len, ms);
	if (err) {
		tlm__err("%s: no answer to our hello (%s)", l->peer, tlm_strerror(err));
		return err;
	}
	if (type == TLM_FT_ERROR)
		return peer_error(l, buf, len);
	if (type != TLM_FT_CHALLENGE)
		return -TLM_EFRAME;
	err = tlm__challenge_decode(buf, len, &c);
	if (err == -TLM_EVERSION) {
		tlm__err("%s: peer speaks wire version %u, this side speaks version %u",
			 l->peer, c.version, TLM_WIRE_VERSION);
		return err;
	}
	if (err)
		return err;
	label(lbl, sizeof(lbl), "client", h.protect, h.cipher);
	err = tlm__hmac(psk, lbl, sid, lane, c.nonce, h.nonce, mac);
	if (!err)
		err = tlm__msg_send(l, TLM_FT_AUTH, mac, TLM_MAC_LEN);
	if (!err)
		err = tlm_lane_flush(l);
	if (err)
		return err;
	err = tlm__msg_recv(l, &type, buf, sizeof(buf), &len, ms);
	if (err)
		return err;
	if (type == TLM_FT_ERROR)
		return peer_error(l, buf, len);
	if (type != TLM_FT_WELCOME || len != TLM_MAC_LEN)
		return -TLM_EFRAME;
	label(lbl, sizeof(lbl), "server", h.protect, h.cipher);
	err = tlm__hmac(psk, lbl, sid, lane, h.nonce, c.nonce, mac);
	if (err)
		return err;
	if (!tlm__ct_equal(mac, buf, TLM_MAC_LEN)) {
		tlm__err("%s: peer could not prove the pre-shared key; refused", l->peer);
		return -TLM_EAUTH;
	}
	return start_seal(l, psk, sid, lane, h.nonce, c.nonce, h.protect, h.cipher, true);
}

static bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

static const char *name_or(const char *name)
{
	return name && *name ? name : "(unnamed)";
}

/* Accepting side that described its memory: the peer's regions must be the
 * same ones, in the same order, each of the same size (or, where this side
 * can resize, no larger than it can grow). */
static int check_regions(struct tlm_lane *l, const struct tlm_session_cfg *mine,
			 const struct tlm_params *p)
{
	if (mine->n_regions != p->n_regions) {
		tlm__err("%s: peer migrates %u memory regions, this side has %u", l->peer,
			 p->n_regions, mine->n_regions);
		send_error(l, -TLM_EPARAM, "memory regions differ: %u here, %u sent",
			   mine->n_regions, p->n_regions);
		return -TLM_EPARAM;
	}
	for (unsigned i = 0; i < p->n_regions; i++) {
		const char *want = mine->region_name[i];
		uint64_t max = mine->region_max[i];

		if (want && *want && strcmp(want, p->region_name[i])) {
			tlm__err("%s: peer's region %u is '%s', this side's is '%s'", l->peer, i,
				 name_or(p->region_name[i]), want);
			send_error(l, -TLM_EPARAM, "memory region %u: '%s' here, '%s' sent", i,
				   want, name_or(p->region_name[i]));
			return -TLM_EPARAM;
		}
		if (max ? p->region_len[i] > max : p->region_len[i] != mine->region_len[i]) {
			tlm__err("%s: peer's region %u ('%s') has %llu bytes, this side %s %llu",
				 l->peer, i, name_or(p->region_name[i]),
				 (unsigned long long)p->region_len[i], max ? "at most" : "",
				 (unsigned long long)(max ? max : mine->region_len[i]));
			send_error(l, -TLM_EPARAM,
				   "memory region %u ('%s'): %llu bytes sent, %s%llu here", i,
				   name_or(p->region_name[i]), (unsigned long long)p->region_len[i],
				   max ? "at most " : "",
				   (unsigned long long)(max ? max : mine->region_len[i]));
			return -TLM_EPARAM;
		}
	}
	return 0;
}

/* Accepting side: decide on the connecting side's parameters. */
static int check_params(struct tlm_lane *l, const struct tlm_session_cfg *mine,
			const struct tlm_params *p)
{
	if (!pow2(p->page_size) || p->page_size < TLM_MIN_PAGE_SIZE ||
	    p->page_size > TLM_MAX_PAGE_SIZE) {
		send_error(l, -TLM_EPARAM, "page size %u not supported", p->page_size);
		return -TLM_EPARAM;
	}
	if (mine->page_size && mine->page_size != p->page_size) {
		tlm__err("%s: peer uses %u-byte pages, this side %u", l->peer,
			 p->page_size, mine->page_size);
		send_error(l, -TLM_EPARAM, "this side uses %u-byte pages, not %u",
			   mine->page_size, p->page_size);
		return -TLM_EPARAM;
	}
	if (p->n_lanes < 1 || p->n_lanes >= TLM_MAX_LANES) {
		tlm__err("%s: peer offers %u data lanes, this side takes 1..%d; refused", l->peer,
			 p->n_lanes, TLM_MAX_LANES - 1);
		send_error(l, -TLM_EPARAM, "this side takes 1..%d data lanes, not %u",
			   TLM_MAX_LANES - 1, p->n_lanes);
		return -TLM_EPARAM;
	}
	if (mine->n_lanes && mine->n_lanes != p->n_lanes) {
		tlm__err("%s: peer offers %u data lanes, this side expects %u; refused", l->peer,
			 p->n_lanes, mine->n_lanes);
		send_error(l, -TLM_EPARAM, "this side expects %u data lanes, not %u",
			   mine->n_lanes, p->n_lanes);
		return -TLM_EPARAM;
	}
	if (mine->n_regions)
		return check_regions(l, mine, p);
	return 0;
}

static const struct tlm_lane_ops *find_transport(const struct tlm_session_cfg *cfg)
{
	const char *name = cfg->transport ? cfg->transport : "tcp";
	const struct tlm_lane_ops *ops = tlm__transport_find(name);

	if (!ops)
		tlm__err("transport %s is not built into this libtlm", name);
	return ops;
}

static void session_free(struct tlm_session *s)
{
	for (unsigned i = 0; i < TLM_MAX_LANES; i++)
		if (s->lanes[i])
			tlm__lane_close(s->lanes[i]);
	memset(&s->psk, 0, sizeof(s->psk));
	free(s);
}

/* Data lanes switch to page mode once every lane has joined. */
static int apply_modes(struct tlm_session *s)
{
	uint32_t ps = s->cfg.page_size;

	for (unsigned i = 0; i <= s->n; i++) {
		struct tlm_lane *l = s->lanes[i];
		int err;

		l->page_size = ps;
		if (i == 0 || s->cfg.lane_modes[i] != TLM_MODE_PAGES)
			continue;
		err = tlm_lane_set_mode(l, TLM_MODE_PAGES);
		if (err)
			return err;
	}
	return 0;
}

static void pending_drop(struct tlm_listener *li, unsigned i, bool close)
{
	struct pending *p = li->pending[i];

	if (close)
		tlm__lane_close(p->l);
	memset(p, 0, sizeof(*p));
	free(p);
	memmove(&li->pending[i], &li->pending[i + 1],
		(li->n_pending - i - 1) * sizeof(li->pending[0]));
	li->n_pending--;
}

int tlm_listen(const struct tlm_session_cfg *cfg, const char *addr,
	       const char *port, struct tlm_listener **out)
{
	const struct tlm_lane_ops *ops;
	struct tlm_listener *l;
	int err;

	err = check_cfg(cfg, false);
	if (err)
		return err;
	ops = find_transport(cfg);
	if (!ops)
		return -TLM_ENOTRANSPORT;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ops = ops;
	l->cfg = *cfg;
	l->psk = *cfg->psk;
	l->cfg.psk = &l->psk;
	err = ops->listen(addr, port, cfg->transport_args, &l->xl);
	if (err) {
		free(l);
		return err;
	}
	*out = l;
	return 0;
}

int tlm_listener_port(const struct tlm_listener *l)
{
	return l->ops->listener_port(l->xl);
}

void tlm_listener_close(struct tlm_listener *l)
{
	if (!l)
		return;
	while (l->n_pending)
		pending_drop(l, 0, true);
	l->ops->listener_close(l->xl);
	memset(&l->psk, 0, sizeof(l->psk));
	free(l);
}

/* What has arrived of p's next message, without waiting: 1 when it is
 * whole in p->msg, 0 not yet, or a negative error. */
static int pending_read(struct pending *p)
{
	for (;;) {
		uint32_t need = TLM_FRAME_HDR;
		struct tlm_frame_hdr fh;
		ssize_t r;

		if (p->got >= TLM_FRAME_HDR) {
			if (tlm__frame_hdr_decode(p->msg, 0, &fh) < 0 || fh.len > TLM_MAX_MSG)
				return -TLM_EFRAME;
			need += fh.len;
			if (p->got == need)
				return 1;
		}
		r = tlm_lane_read(p->l, p->msg + p->got, need - p->got, 0);
		if (r == -ETIMEDOUT || r == -EAGAIN)
			return 0;
		if (r == 0)
			return -TLM_EPEERCLOSED;
		if (r < 0)
			return (int)r;
		p->got += (uint32_t)r;
	}
}

/* May the lane whose key was just proven join? s NULL: a session is to
 * start (its control lane); else a data lane of s. */
static int admit(struct pending *p, const struct tlm_session *s)
{
	const struct tlm_hello *h = &p->h;

	if (!s && h->lane != 0) {
		tlm__warn("%s: data lane %u of an unknown session; refused", p->l->peer, h->lane);
		send_error(p->l, -TLM_ESESSION, "no such session");
		return -TLM_ESESSION;
	}
	if (s && (memcmp(h->sid, s->sid, TLM_SID_LEN) != 0 || h->lane == 0 ||
		  h->lane > s->n || s->lanes[h->lane])) {
		tlm__warn("%s: lane %u does not belong to this session; refused", p->l->peer,
			  h->lane);
		send_error(p->l, -TLM_ESESSION, "lane %u is not expected", h->lane);
		return -TLM_ESESSION;
	}
	return 0;
}

/* One step of p's handshake with what has arrived: 0 to wait for more, 1
 * when the lane proved the key, was welcomed and is sealed, or a negative
 * error (logged) to drop it. */
static int pending_step(struct tlm_listener *li, struct pending *p, const struct tlm_session *s)
{
	struct tlm_challenge c = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION };
	struct tlm_lane *l = p->l;
	const uint8_t *msg = p->msg + TLM_FRAME_HDR;
	uint8_t buf[TLM_MAX_MSG], mac[TLM_MAC_LEN];
	struct tlm_hello *h = &p->h;
	uint32_t len;
	uint8_t type;
	char lbl[32];
	int err = pending_read(p), n;

	if (err <= 0) {
		if (err)
			tlm__warn("%s: dropped a connection in its handshake (%s)", l->peer,
				  tlm_strerror(err));
		return err;
	}
	type = p->msg[4];
	len = tlm__get32(p->msg);
	p->got = 0;
	if (!p->challenged) {
		if (type != TLM_FT_HELLO) {
			tlm__warn("%s: refused a connection that did not start with a hello",
				  l->peer);
			return -TLM_EFRAME;
		}
		err = tlm__hello_decode(msg, len, h);
		if (err == -TLM_EVERSION) {
			tlm__err("%s: peer speaks wire version %u, this side speaks version %u",
				 l->peer, h->version, TLM_WIRE_VERSION);
			send_error(l, -TLM_EVERSION, "this side speaks wire version %u, not %u",
				   TLM_WIRE_VERSION, h->version);
			return err;
		}
		if (err) {
			tlm__warn("%s: refused a malformed hello", l->peer);
			return err;
		}
		if (h->protect != li->cfg.protect) {
			tlm__err("%s: peer protects its lanes with --protect %s, this side with "
				 "--protect %s; refused", l->peer, tlm_protect_name(h->protect),
				 tlm_protect_name(li->cfg.protect));
			send_error(l, -TLM_EPARAM, "this side protects lanes with --protect %s, "
				   "not %s", tlm_protect_name(li->cfg.protect),
				   tlm_protect_name(h->protect));
			return -TLM_EPARAM;
		}
		err = tlm__random(c.nonce, sizeof(c.nonce));
		if (err)
			return err;
		memcpy(p->nonce_s, c.nonce, TLM_NONCE_LEN);
		n = tlm__challenge_encode(buf, sizeof(buf), &c);
		err = tlm__msg_send(l, TLM_FT_CHALLENGE, buf, (uint32_t)n);
		if (!err)
			err = tlm_lane_flush(l);
		p->challenged = true;
		return err;
	}
	if (type == TLM_FT_ERROR)
		return peer_error(l, msg, len);
	if (type != TLM_FT_AUTH || len != TLM_MAC_LEN) {
		tlm__warn("%s: refused a connection that sent no proof of the key", l->peer);
		return -TLM_EFRAME;
	}
	label(lbl, sizeof(lbl), "client", h->protect, h->cipher);
	err = tlm__hmac(&li->psk, lbl, h->sid, h->lane, p->nonce_s, h->nonce, mac);
	if (err)
		return err;
	if (!tlm__ct_equal(mac, msg, TLM_MAC_LEN)) {
		tlm__err("%s: lane %u failed authentication (wrong pre-shared key); refused",
			 l->peer, h->lane);
		send_error(l, -TLM_EAUTH, "authentication failed");
		return -TLM_EAUTH;
	}
	err = admit(p, s);
	if (err)
		return err;
	label(lbl, sizeof(lbl), "server", h->protect, h->cipher);
	err = tlm__hmac(&li->psk, lbl, h->sid, h->lane, h->nonce, p->nonce_s, mac);
	if (!err)
		err = tlm__msg_send(l, TLM_FT_WELCOME, mac, TLM_MAC_LEN);
	if (!err)
		err = tlm_lane_flush(l);
	if (!err)
		err = start_seal(l, &li->psk, h->sid, h->lane, h->nonce, p->nonce_s, h->protect,
				 h->cipher, false);
	return err ? err : 1;
}

/* Take every connection waiting at the listener into the handshake. */
static void pending_accept(struct tlm_listener *li, uint64_t now)
{
	for (unsigned k = 0; k < PENDING_MAX; k++) {
		struct tlm_lane *l;
		struct pending *p;

		if (li->ops->accept(li->xl, 0, &l))
			return;
		p = calloc(1, sizeof(*p));
		if (!p) {
			tlm__lane_close(l);
			return;
		}
		if (li->n_pending == PENDING_MAX) {
			tlm__warn("%s: %d connections in their handshake; dropped the oldest",
				  li->pending[0]->l->peer, PENDING_MAX);
			pending_drop(li, 0, true);
		}
		p->l = l;
		p->deadline = now + HANDSHAKE_MS;
		li->pending[li->n_pending++] = p;
	}
}

/* Sleep until something may have arrived, deadline (ms) at the latest. */
static void pending_wait(struct tlm_listener *li, uint64_t deadline)
{
	struct pollfd fds[PENDING_MAX + 1];
	int left = tlm__left_ms(deadline);
	nfds_t n = 0;
	bool tick = false;
	int fd;

	fd = li->ops->listener_pollfd ? li->ops->listener_pollfd(li->xl) : -1;
	if (fd >= 0)
		fds[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
	else
		tick = true;
	for (unsigned i = 0; i < li->n_pending; i++) {
		int t = tlm__left_ms(li->pending[i]->deadline);

		fd = tlm_lane_pollfd(li->pending[i]->l);
		if (fd >= 0)
			fds[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
		else
			tick = true;
		if (t < left)
			left = t;
	}
	if (tick && left > TICK_MS)
		left = TICK_MS;
	if (poll(fds, n, left) < 0 && errno != EINTR)
		usleep(1000);
}

/*
 * The next lane that proves the key and may join (admit), by deadline:
 * 0 with *lane (sealed, welcomed) and its hello, or -ETIMEDOUT. Every
 * connection accepted meanwhile goes on with its handshake; the ones that
 * fail are dropped and logged.
 */
static int next_lane(struct tlm_listener *li, const struct tlm_session *s, uint64_t deadline,
		     struct tlm_lane **lane, struct tlm_hello *h)
{
	for (;;) {
		uint64_t now = tlm__now_ms();

		for (unsigned i = 0; i < li->n_pending;) {
			if (li->pending[i]->deadline > now) {
				i++;
				continue;
			}
			tlm__warn("%s: dropped a connection that proved no key within %d ms",
				  li->pending[i]->l->peer, HANDSHAKE_MS);
			pending_drop(li, i, true);
		}
		pending_accept(li, now);
		for (unsigned i = 0; i < li->n_pending;) {
			struct pending *p = li->pending[i];
			int rc = pending_step(li, p, s);

			if (rc == 0) {
				i++;
				continue;
			}
			if (rc < 0) {
				pending_drop(li, i, true);
				continue;
			}
			*lane = p->l;
			*h = p->h;
			pending_drop(li, i, false);
			return 0;
		}
		if (tlm__left_ms(deadline) == 0)
			return -ETIMEDOUT;
		pending_wait(li, deadline);
	}
}

int tlm_accept(struct tlm_listener *li, int timeout_ms, struct tlm_session **out)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : step_ms(&li->cfg));
	uint8_t buf[TLM_MAX_MSG];
	struct tlm_session *s;
	struct tlm_params p;
	struct tlm_hello h;
	struct tlm_lane *l;
	unsigned joined = 0;
	uint32_t len;
	uint8_t type;
	int err;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->psk = li->psk;

	/* The control lane: a new session id, lane 0, then its parameters. */
	for (;;) {
		err = next_lane(li, NULL, deadline, &l, &h);
		if (err)
			goto fail;
		err = tlm__msg_recv(l, &type, buf, sizeof(buf), &len, HANDSHAKE_MS);
		if (!err && type != TLM_FT_PARAMS)
			err = -TLM_EFRAME;
		if (!err)
			err = tlm__params_decode(buf, len, &p);
		if (!err)
			err = check_params(l, &li->cfg, &p);
		if (err) {
			tlm__lane_close(l);
			if (err == -TLM_EPARAM)
				goto fail;
			continue;
		}
		break;
	}
	s->lanes[0] = l;
	/* The session has started: timeout_ms bounded the wait for it; the rest
	 * (data lanes joining) gets the configured step time, so a caller that
	 * polls with short timeouts never cuts a session in half. */
	deadline = tlm__now_ms() + (uint64_t)step_ms(&li->cfg);
	memcpy(s->sid, h.sid, TLM_SID_LEN);
	s->cfg = li->cfg;
	s->cfg.psk = &s->psk;
	s->cfg.page_size = p.page_size;
	s->cfg.n_lanes = p.n_lanes;
	s->cfg.n_regions = p.n_regions;
	memcpy(s->cfg.region_len, p.region_len, sizeof(p.region_len));
	memset(s->cfg.region_max, 0, sizeof(s->cfg.region_max));
	memcpy(s->names, p.region_name, sizeof(s->names));
	for (unsigned i = 0; i < TLM_MAX_REGIONS; i++)
		s->cfg.region_name[i] = i < p.n_regions ? s->names[i] : NULL;
	s->cfg.caps = p.caps & (li->cfg.caps ? li->cfg.caps : TLM_CAP_ALL);
	for (unsigned i = 1; i <= p.n_lanes; i++)
		s->cfg.lane_modes[i] = (p.page_lanes >> (i - 1)) & 1 ? TLM_MODE_PAGES : TLM_MODE_BYTES;
	s->n = p.n_lanes;
	tlm__put32(buf, s->cfg.caps);
	err = tlm__msg_send(l, TLM_FT_PARAMS_ACK, buf, 4);
	if (!err)
		err = tlm_lane_flush(l);
	if (err)
		goto fail;

	/* Data lanes: only this session's, each index once. */
	while (joined < s->n) {
		err = next_lane(li, s, deadline, &l, &h);
		if (err)
			goto fail;
		l->index = h.lane;
		s->lanes[h.lane] = l;
		joined++;
	}
	err = apply_modes(s);
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	/* No session having started is the caller's business (it may poll);
	 * one that started and did not finish is worth a line. */
	if (err == -ETIMEDOUT && s->lanes[0])
		tlm__err("no complete session within the timeout (%u of %u data lanes joined)",
			 joined, s->n);
	session_free(s);
	return err;
}

int tlm_connect(const struct tlm_session_cfg *cfg, const char *addr,
		const char *port, struct tlm_session **out)
{
	const struct tlm_lane_ops *ops;
	uint8_t buf[TLM_MAX_MSG];
	struct tlm_params p = { 0 };
	struct tlm_session *s;
	uint32_t len;
	uint8_t type;
	int err, n, ms;

	err = check_cfg(cfg, true);
	if (err)
		return err;
	ops = find_transport(cfg);
	if (!ops)
		return -TLM_ENOTRANSPORT;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	for (unsigned i = 0; i < TLM_MAX_REGIONS; i++) {
		snprintf(s->names[i], sizeof(s->names[i]), "%s",
			 i < cfg->n_regions && cfg->region_name[i] ? cfg->region_name[i] : "");
		s->cfg.region_name[i] = i < cfg->n_regions ? s->names[i] : NULL;
	}
	s->psk = *cfg->psk;
	s->cfg.psk = &s->psk;
	if (!s->cfg.page_size)
		s->cfg.page_size = TLM_DEFAULT_PAGE_SIZE;
	s->n = cfg->n_lanes;
	ms = step_ms(cfg);
	err = tlm__random(s->sid, sizeof(s->sid));
	if (err)
		goto fail;

	err = ops->connect(addr, port, cfg->transport_args, 0, ms, &s->lanes[0]);
	if (err) {
		tlm__err("cannot reach %s port %s: %s", addr, port, tlm_strerror(err));
		goto fail;
	}
	err = client_auth(s->lanes[0], &s->cfg, s->sid, 0, ms);
	if (err)
		goto fail;
	p.page_size = s->cfg.page_size;
	p.n_lanes = (uint16_t)s->n;
	p.n_regions = (uint16_t)cfg->n_regions;
	p.caps = cfg->caps ? cfg->caps : TLM_CAP_ALL;
	for (unsigned i = 1; i <= s->n; i++)
		if (cfg->lane_modes[i] == TLM_MODE_PAGES)
			p.page_lanes |= 1ull << (i - 1);
	memcpy(p.region_len, cfg->region_len, sizeof(p.region_len));
	for (unsigned i = 0; i < cfg->n_regions; i++)
		if (cfg->region_name[i])
			snprintf(p.region_name[i], sizeof(p.region_name[i]), "%s",
				 cfg->region_name[i]);
	n = tlm__params_encode(buf, sizeof(buf), &p);
	if (n < 0) {
		err = n;
		goto fail;
	}
	err = tlm__msg_send(s->lanes[0], TLM_FT_PARAMS, buf, (uint32_t)n);
	if (!err)
		err = tlm_lane_flush(s->lanes[0]);
	if (!err)
		err = tlm__msg_recv(s->lanes[0], &type, buf, sizeof(buf), &len, ms);
	if (err)
		goto fail;
	if (type == TLM_FT_ERROR) {
		err = peer_error(s->lanes[0], buf, len);
		goto fail;
	}
	if (type != TLM_FT_PARAMS_ACK || len != 4) {
		err = -TLM_EFRAME;
		goto fail;
	}
	s->cfg.caps = tlm__get32(buf) & p.caps;

	for (unsigned i = 1; i <= s->n; i++) {
		err = ops->connect(addr, port, cfg->transport_args, i, ms, &s->lanes[i]);
		if (err) {
			tlm__err("data lane %u: cannot reach %s port %s: %s", i, addr, port,
				 tlm_strerror(err));
			goto fail;
		}
		s->lanes[i]->index = i;
		err = client_auth(s->lanes[i], &s->cfg, s->sid, (uint16_t)i, ms);
		if (err)
			goto fail;
	}
	err = apply_modes(s);
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	session_free(s);
	return err;
}

const struct tlm_session_cfg *tlm_session_cfg_get(const struct tlm_session *s)
{
	return &s->cfg;
}

unsigned tlm_session_lanes(const struct tlm_session *s)
{
	return s->n;
}

struct tlm_lane *tlm_session_lane(struct tlm_session *s, unsigned i)
{
	return i <= s->n ? s->lanes[i] : NULL;
}

const uint8_t *tlm_session_id(const struct tlm_session *s)
{
	return s->sid;
}

void tlm_session_close(struct tlm_session *s)
{
	if (s)
		session_free(s);
}
