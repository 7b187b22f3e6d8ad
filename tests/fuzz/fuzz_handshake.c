/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the handshake state machines of both ends
 * (core/session.c) over real tcp lanes on 127.0.0.1: the library's
 * listener (tlm_accept, its pending handshakes, PARAMS) and its connecting
 * side (tlm_connect: CHALLENGE, WELCOME, PARAMS_ACK, the data lanes). The
 * target plays the peer and knows the key, so it answers the library's
 * random nonces with proofs that check and reaches, stage by stage, every
 * message up to the session's parameters; at the chosen stage the
 * fuzzer's bytes go in instead of the peer's message, sealed with the
 * lane's key once the lane is sealed (docs/wire.md), so they reach the
 * parser behind the AEAD. Anything may be refused; nothing may crash,
 * hang, or leave a session half made.
 *
 * Input: byte 0 picks
 *   bit 0     the side fuzzed: 0 the listener (we connect), 1 the
 *             connecting side (we listen)
 *   bits 1-2  the stage (mod 3): 0 instead of our first message (HELLO or
 *             CHALLENGE), 1 instead of the second (AUTH or WELCOME), 2
 *             after WELCOME, on the sealed lane (PARAMS or PARAMS_ACK)
 *   bits 3-4  the protection (mod 3: encrypt, integrity, none)
 *   bit 5     ChaCha20-Poly1305 instead of AES-256-GCM
 *   bit 6     our HELLO names data lane 1 (a session nobody started)
 *   bit 7     our HELLO names another protection than the listener's
 * and the rest is the fuzzer's bytes: messages (frames, header included)
 * in the lane's byte stream, or, on a sealed lane, the inner frames of one
 * sealed frame (DATA frames carrying the messages).
 *
 * Built with -fsanitize=fuzzer when -Dfuzz=true (clang); otherwise with a
 * main() that replays the corpus files given on the command line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlm-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken expectation: say which, then crash for the fuzzer. */
#define FAIL(why) do { fprintf(stderr, "fuzz_handshake: %s (line %d)\n", why, __LINE__); \
		       abort(); } while (0)

#define IO_MS 10000            /* how long we wait on the library, at most */

static struct tlm_psk psk;
static const uint8_t protects[3] = { TLM_PROTECT_ENCRYPT, TLM_PROTECT_INTEGRITY,
				     TLM_PROTECT_NONE };
static unsigned long sessions, refused;

/* ---- raw socket helpers (the peer's side) ---- */

/* libFuzzer's SIGALRM (its -timeout) interrupts poll: wait on. */
static int wait_fd(int fd, short ev, int ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int left, r;

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left < 0)
			return -1;
		r = poll(&p, 1, left);
		if (r == 1)
			return 0;
		if (r == 0 || errno != EINTR)
			return -1;
	}
}

static int raw_put(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t w;

		if (wait_fd(fd, POLLOUT, IO_MS))
			return -1;
		w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int raw_get(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r;

		if (wait_fd(fd, POLLIN, IO_MS))
			return -1;
		r = recv(fd, p, n, MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* A tcp lane carries a byte stream in DATA frames (core/wire.h); the
 * handshake's messages, and sealed frames, travel in that stream. */
static int put(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n) {
		size_t k = n > TLM_MAX_DATA_FRAME ? TLM_MAX_DATA_FRAME : n;
		uint8_t hdr[TLM_FRAME_HDR];

		tlm__frame_hdr_encode(hdr, (uint32_t)k, TLM_FT_DATA);
		if (raw_put(fd, hdr, sizeof(hdr)) || raw_put(fd, p, k))
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

static uint32_t rx_left;        /* bytes left in the DATA frame being read */

static int get(int fd, uint8_t *p, size_t n)
{
	while (n) {
		size_t k;

		if (!rx_left) {
			uint8_t hdr[TLM_FRAME_HDR];
			struct tlm_frame_hdr fh;

			if (raw_get(fd, hdr, sizeof(hdr)) ||
			    tlm__frame_hdr_decode(hdr, 0, &fh) || fh.type != TLM_FT_DATA)
				return -1;
			rx_left = fh.len;
			continue;
		}
		k = n < rx_left ? n : rx_left;
		if (raw_get(fd, p, k))
			return -1;
		rx_left -= (uint32_t)k;
		p += k;
		n -= k;
	}
	return 0;
}

static int put_msg(int fd, uint8_t type, const void *payload, uint32_t len)
{
	uint8_t m[TLM_FRAME_HDR + TLM_MAX_MSG];

	tlm__frame_hdr_encode(m, len, type);
	memcpy(m + TLM_FRAME_HDR, payload, len);
	return put(fd, m, TLM_FRAME_HDR + len);
}

/* One clear message: its type, payload in buf (TLM_MAX_MSG), length. */
static int get_msg(int fd, uint8_t *type, uint8_t *buf, uint32_t *len)
{
	uint8_t hdr[TLM_FRAME_HDR];
	struct tlm_frame_hdr fh;

	if (get(fd, hdr, sizeof(hdr)) || tlm__frame_hdr_decode(hdr, 0, &fh) ||
	    fh.len > TLM_MAX_MSG || get(fd, buf, fh.len))
		return -1;
	*type = fh.type;
	*len = fh.len;
	return 0;
}

/* Read until the library closes (or IO_MS passes): it has judged. */
static void drain(int fd)
{
	uint8_t buf[4096];

	shutdown(fd, SHUT_WR);
	while (!wait_fd(fd, POLLIN, IO_MS) && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	close(fd);
}

/* The fuzzer's bytes as the inner frames of sealed frame 0 of the
 * direction keyed by key (docs/wire.md: the sequence number is the
 * nonce, the outer header the associated data), or clear. */
static int put_sealed(int fd, const uint8_t *p, size_t n, uint8_t protect, uint8_t cipher,
		      const uint8_t key[32])
{
	static uint8_t out[TLM_FRAME_HDR + TLM_SEAL_MAX];
	EVP_CIPHER_CTX *c;
	uint8_t iv[12] = { 0 };
	int l = 0, ok;

	if (protect == TLM_PROTECT_NONE)
		return put(fd, p, n);
	if (n > TLM_SEAL_PLAIN)
		n = TLM_SEAL_PLAIN;
	c = EVP_CIPHER_CTX_new();
	tlm__frame_hdr_encode(out, (uint32_t)(n + TLM_SEAL_TAG), TLM_FT_SEALED);
	ok = c && EVP_EncryptInit_ex(c, cipher == TLM_CIPHER_CHACHA20POLY1305 ?
				     EVP_chacha20_poly1305() : EVP_aes_256_gcm(),
				     NULL, key, iv) == 1 &&
	     EVP_EncryptUpdate(c, NULL, &l, out, TLM_FRAME_HDR) == 1;
	if (ok && protect == TLM_PROTECT_INTEGRITY) {
		memcpy(out + TLM_FRAME_HDR, p, n);
		ok = n == 0 || EVP_EncryptUpdate(c, NULL, &l, p, (int)n) == 1;
	} else if (ok && n) {
		ok = EVP_EncryptUpdate(c, out + TLM_FRAME_HDR, &l, p, (int)n) == 1;
	}
	ok = ok && EVP_EncryptFinal_ex(c, out + TLM_FRAME_HDR + n, &l) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLM_SEAL_TAG,
				 out + TLM_FRAME_HDR + n) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? put(fd, out, TLM_FRAME_HDR + n + TLM_SEAL_TAG) : -1;
}

static void label(char *buf, size_t cap, const char *who, uint8_t protect, uint8_t cipher)
{
	snprintf(buf, cap, "tlm-%s %u.%u", who, protect, cipher);
}

/* ---- the listener's side: three listeners (one per protection), each
 * accepting sessions on a thread of its own for as long as we run ---- */

static struct tlm_listener *lis[3];
static char lis_port[3][16];

static void *accept_loop(void *arg)
{
	struct tlm_listener *li = arg;

	for (;;) {
		struct tlm_session *s;

		if (tlm_accept(li, 1000, &s) == 0) {
			__atomic_fetch_add(&sessions, 1, __ATOMIC_RELAXED);
			tlm_session_close(s);
		}
	}
	return NULL;
}

static int connect_to(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	return fd;
}

static void fuzz_listener(uint8_t sel, const uint8_t *p, size_t n)
{
	unsigned stage = ((sel >> 1) & 3) % 3, pi = ((sel >> 3) & 3) % 3;
	struct tlm_hello h = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION };
	uint8_t buf[TLM_MAX_MSG], mac[TLM_MAC_LEN], key[32];
	struct tlm_challenge c;
	uint32_t len;
	uint8_t type;
	char lbl[32];
	int fd = connect_to(lis_port[pi]), m;

	rx_left = 0;
	if (fd < 0)
		FAIL("setup");
	if (stage == 0) {
		put(fd, p, n);
		drain(fd);
		return;
	}
	h.lane = sel & 0x40 ? 1 : 0;
	h.protect = protects[sel & 0x80 ? (pi + 1) % 3 : pi];
	h.cipher = h.protect == TLM_PROTECT_NONE ? TLM_CIPHER_NONE :
		   sel & 0x20 ? TLM_CIPHER_CHACHA20POLY1305 : TLM_CIPHER_AES256GCM;
	memset(h.sid, 0x11, sizeof(h.sid));
	memset(h.nonce, 0x22, sizeof(h.nonce));
	m = tlm__hello_encode(buf, sizeof(buf), &h);
	if (m < 0 || put_msg(fd, TLM_FT_HELLO, buf, (uint32_t)m) ||
	    get_msg(fd, &type, buf, &len) || type != TLM_FT_CHALLENGE ||
	    tlm__challenge_decode(buf, len, &c)) {
		refused++;              /* a refusal we asked for (bit 7) */
		drain(fd);
		return;
	}
	if (stage == 1) {
		put(fd, p, n);
		drain(fd);
		return;
	}
	label(lbl, sizeof(lbl), "client", h.protect, h.cipher);
	if (tlm__hmac(&psk, lbl, h.sid, h.lane, c.nonce, h.nonce, mac) ||
	    put_msg(fd, TLM_FT_AUTH, mac, TLM_MAC_LEN) || get_msg(fd, &type, buf, &len) ||
	    type != TLM_FT_WELCOME) {
		refused++;              /* data lane 1 of no session (bit 6) */
		drain(fd);
		return;
	}
	if (h.protect != TLM_PROTECT_NONE &&
	    tlm__seal_key(&psk, h.sid, h.lane, h.nonce, c.nonce, h.protect, h.cipher, 'C', key))
		FAIL("setup");
	put_sealed(fd, p, n, h.protect, h.cipher, key);
	drain(fd);
}

/* ---- the connecting side: tlm_connect on a thread, we listen ---- */

static int raw_lfd = -1;
static char raw_port[16];

struct conn { struct tlm_session_cfg cfg; pthread_t t; int rc; bool done; };

static void *connect_thread(void *arg)
{
	struct conn *c = arg;
	struct tlm_session *s;

	c->rc = tlm_connect(&c->cfg, "127.0.0.1", raw_port, &s);
	if (!c->rc) {
		__atomic_fetch_add(&sessions, 1, __ATOMIC_RELAXED);
		tlm_session_close(s);
	}
	__atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void fuzz_connector(uint8_t sel, const uint8_t *p, size_t n)
{
	unsigned stage = ((sel >> 1) & 3) % 3;
	struct conn c = { .cfg = { .transport = "tcp", .psk = &psk, .n_lanes = 1,
				   .page_size = 4096, .n_regions = 1, .region_len = { 1 << 20 },
				   .region_name = { "ram" }, .timeout_ms = 300,
				   .protect = (int)protects[((sel >> 3) & 3) % 3] } };
	struct tlm_challenge ch = { .magic = TLM_WIRE_MAGIC, .version = TLM_WIRE_VERSION };
	uint8_t buf[TLM_MAX_MSG], mac[TLM_MAC_LEN], key[32];
	struct tlm_hello h;
	uint32_t len;
	uint8_t type;
	char lbl[32];
	int fd, m;

	c.cfg.lane_modes[1] = TLM_MODE_PAGES;
	rx_left = 0;
	if (pthread_create(&c.t, NULL, connect_thread, &c))
		FAIL("setup");
	do
		fd = wait_fd(raw_lfd, POLLIN, IO_MS) ? -2 : accept(raw_lfd, NULL, NULL);
	while (fd == -1 && errno == EINTR);
	if (fd < 0)
		FAIL("tlm_connect never came");
	if (get_msg(fd, &type, buf, &len) || type != TLM_FT_HELLO || tlm__hello_decode(buf, len, &h))
		FAIL("the library's HELLO does not decode");
	if (stage == 0) {
		put(fd, p, n);
		goto out;
	}
	memset(ch.nonce, 0x33, sizeof(ch.nonce));
	m = tlm__challenge_encode(buf, sizeof(buf), &ch);
	if (m < 0 || put_msg(fd, TLM_FT_CHALLENGE, buf, (uint32_t)m) ||
	    get_msg(fd, &type, buf, &len) || type != TLM_FT_AUTH || len != TLM_MAC_LEN)
		FAIL("a good CHALLENGE got no AUTH");
	label(lbl, sizeof(lbl), "client", h.protect, h.cipher);
	if (tlm__hmac(&psk, lbl, h.sid, h.lane, ch.nonce, h.nonce, mac) ||
	    memcmp(mac, buf, TLM_MAC_LEN))
		FAIL("the library's AUTH does not prove the key");
	if (stage == 1) {
		put(fd, p, n);
		goto out;
	}
	label(lbl, sizeof(lbl), "server", h.protect, h.cipher);
	if (tlm__hmac(&psk, lbl, h.sid, h.lane, h.nonce, ch.nonce, mac) ||
	    put_msg(fd, TLM_FT_WELCOME, mac, TLM_MAC_LEN))
		goto out;
	if (h.protect != TLM_PROTECT_NONE &&
	    tlm__seal_key(&psk, h.sid, h.lane, h.nonce, ch.nonce, h.protect, h.cipher, 'S', key))
		FAIL("setup");
	put_sealed(fd, p, n, h.protect, h.cipher, key);
out:
	shutdown(fd, SHUT_WR);
	/* Data lanes, if the fuzzer's PARAMS_ACK got that far: turned away. */
	while (!__atomic_load_n(&c.done, __ATOMIC_ACQUIRE)) {
		if (!wait_fd(raw_lfd, POLLIN, 10)) {
			int dfd = accept(raw_lfd, NULL, NULL);

			if (dfd >= 0)
				close(dfd);
		}
	}
	pthread_join(c.t, NULL);
	close(fd);
}

static void quiet(int level, const char *msg, void *arg) { (void)level; (void)msg; (void)arg; }

static void setup(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);

	signal(SIGPIPE, SIG_IGN);
	tlm_set_log_fn(quiet, NULL);
	psk.len = 32;
	memset(psk.key, 0x5a, psk.len);    /* known to the fuzzer: it gets past auth */
	for (unsigned i = 0; i < 3; i++) {
		struct tlm_session_cfg cfg = { .transport = "tcp", .psk = &psk, .timeout_ms = 200,
					       .protect = (int)protects[i] };
		pthread_t t;

		if (tlm_listen(&cfg, "127.0.0.1", "0", &lis[i]))
			FAIL("setup");
		snprintf(lis_port[i], sizeof(lis_port[i]), "%d", tlm_listener_port(lis[i]));
		if (pthread_create(&t, NULL, accept_loop, lis[i]))
			FAIL("setup");
		pthread_detach(t);
	}
	raw_lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (raw_lfd < 0 || bind(raw_lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(raw_lfd, 64) || getsockname(raw_lfd, (struct sockaddr *)&a, &al))
		FAIL("setup");
	snprintf(raw_port, sizeof(raw_port), "%d", ntohs(a.sin_port));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;

	if (!init) {
		setup();
		init = true;
	}
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_connector(data[0], data + 1, size - 1);
	else
		fuzz_listener(data[0], data + 1, size - 1);
	return 0;
}

#ifndef TLM_LIBFUZZER
#include "replay.h"

int main(int argc, char **argv)
{
	int n = tlm_fuzz_replay(argc, argv);

	if (n < 0)
		return 1;
	printf("fuzz_handshake: %d inputs replayed, %lu sessions made, %lu refused early\n",
	       n, sessions, refused);
	return 0;
}
#endif
