/* SPDX-License-Identifier: MIT */
/*
 * keepalive.c APIs: a control lane's keepalive and the silent-peer timer
 * (the list of timers is at the top of keepalive.c). Used by the engine
 * (core/engine-src.c, core/apply.c: framed KEEPALIVE control messages)
 * and by the relay for stock QEMU (qemu-glue/relay-ctrl.c: a text line of
 * its own protocol, set as the keepalive's ping).
 */
#ifndef TLM_CORE_KEEPALIVE_H
#define TLM_CORE_KEEPALIVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tlm_lane;

#define TLM_KA_MAX_MS 1000       /* longest idle control lane, either end */
struct tlm__ka {
	struct tlm_lane *lane;        /* the control lane */
	pthread_mutex_t tx;           /* held across each send and its flush */
	uint64_t tx_ns;               /* last message sent (atomic) */
	uint64_t rx_ns;               /* last message heard (atomic) */
	int timeout_ms;               /* this end's silent-peer timeout */
	int idle_ms;                  /* keepalive after this long idle */
	/* What the keepalive writes: NULL, the engine's KEEPALIVE control
	 * message (core/wire.c); else these bytes as they are (set before
	 * tlm__ka_start; the relay's own line). */
	const void *ping;
	size_t ping_len;
	void (*check)(void *arg);     /* every idle_ms/2, on a thread of its own */
	void (*fail)(void *arg, int err); /* a keepalive could not be sent */
	void *arg;
	pthread_t t, tc;              /* keepalives; check's (if check) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, running;
};
/* The keepalive interval for a timeout: T/4, 20 ms .. TLM_KA_MAX_MS. */
int tlm__ka_idle_ms(int timeout_ms);
/* Before any send; heard and sent count from now. */
void tlm__ka_init(struct tlm__ka *k, struct tlm_lane *lane, int timeout_ms);
/* The keepalive thread, and check's (check may be NULL). -EAGAIN if
 * either cannot start. */
int tlm__ka_start(struct tlm__ka *k, void (*check)(void *), void (*fail)(void *, int),
		  void *arg);
/* Waits for the threads to leave; nothing is sent after it returns. */
void tlm__ka_stop(struct tlm__ka *k);
void tlm__ka_destroy(struct tlm__ka *k);
/* One CTRL message and a flush, under tx; any thread. 0 or -errno. */
int tlm__ka_send(struct tlm__ka *k, const uint8_t *msg, uint32_t len);
/* len bytes as they are (a byte-stream protocol of the caller's own) and a
 * flush, under tx; any thread. 0 or -errno. */
int tlm__ka_write(struct tlm__ka *k, const void *buf, size_t len);
/* Should be called whenever something arrives from the peer. */
void tlm__ka_heard(struct tlm__ka *k);
/* Milliseconds since the peer was last heard. */
uint64_t tlm__ka_silent_ms(struct tlm__ka *k);

#endif /* TLM_CORE_KEEPALIVE_H */
