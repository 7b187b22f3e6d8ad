/* SPDX-License-Identifier: MIT */
/*
 * Liveness of a migration's control lane, both ends (core/engine-src.c and
 * core/apply.c each run one struct tlm__ka on lane 0; so do both ends of
 * the relay for stock QEMU, qemu-glue/relay-ctrl.c, with T their
 * --peer-timeout and a text line of their protocol as the keepalive).
 *
 * Timers, with T this end's timeout (the source: tlm_migrate_opts.timeout_ms,
 * else TLM_ENGINE_TIMEOUT_MS; the destination: the session's timeout_ms,
 * else TLM_DEFAULT_TIMEOUT_MS):
 *
 *   keepalive      T/4, at most TLM_KA_MAX_MS (1 s), at least 20 ms: a
 *                  control lane this end has sent nothing on for that long
 *                  gets a KEEPALIVE (core/wire.c, TLM_CM_KEEPALIVE). Every
 *                  control message counts as one, so a busy lane carries
 *                  no extra ones.
 *   check          every keepalive/2, on a thread of its own (a keepalive
 *                  send may wait for the peer): the owner's check (the
 *                  source reads what the destination sent while no
 *                  request of its own waits for an answer, and judges the
 *                  silence below).
 *   silent peer    T since anything was heard from the peer on the control
 *                  lane (the destination also counts records on any data
 *                  lane): the engine fails with -ETIMEDOUT and a reason
 *                  naming the time and the timeout. The source judges it in
 *                  the check and in every wait for an answer (SYNCED,
 *                  COMMIT); the destination in its control loop, and,
 *                  counting records only, while it waits for the records a
 *                  SYNC names and for stage 3's last records.
 *
 * The last word: the source sends nothing after STAGE3 and the device
 * state (but ABORT), the destination nothing after COMMIT or FAIL, so the
 * lane carries no stray keepalive into what the caller exchanges on it
 * after the migration; each stops its keepalive thread first.
 *
 * Since the keepalive is at most 1 s, a peer whose timeout is 2 s or more
 * never takes a healthy end for a silent one, whatever this end's timeout.
 * The timeouts of tlm_lane_write (the transport's send_timeout) still bound
 * a send that the peer does not read.
 *
 * Sends: every message either end sends on the control lane goes through
 * tlm__ka_send, which holds tx across the frame and its flush (the keepalive
 * thread, the engine's threads and the stage machine all send there) and
 * notes the time for the keepalive above.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keepalive.h"
#include "tlm-internal.h"
#include "wire.h"

int tlm__ka_idle_ms(int timeout_ms)
{
	int ms = timeout_ms / 4;

	return ms > TLM_KA_MAX_MS ? TLM_KA_MAX_MS : ms < 20 ? 20 : ms;
}

/* A framed CTRL message (framed) or raw bytes, and a flush, under tx. */
static int ka_tx(struct tlm__ka *k, bool framed, const void *buf, size_t len)
{
	int err;

	pthread_mutex_lock(&k->tx);
	if (framed) {
		err = tlm__msg_send(k->lane, TLM_FT_CTRL, buf, (uint32_t)len);
	} else {
		ssize_t w = tlm_lane_write(k->lane, buf, len);

		err = w < 0 ? (int)w : 0;
	}
	if (!err)
		err = tlm_lane_flush(k->lane);
	if (!err)
		__atomic_store_n(&k->tx_ns, tlm__now_ns(), __ATOMIC_RELEASE);
	pthread_mutex_unlock(&k->tx);
	return err < 0 ? err : 0;
}

int tlm__ka_send(struct tlm__ka *k, const uint8_t *msg, uint32_t len)
{
	return ka_tx(k, true, msg, len);
}

int tlm__ka_write(struct tlm__ka *k, const void *buf, size_t len)
{
	return ka_tx(k, false, buf, len);
}

void tlm__ka_heard(struct tlm__ka *k)
{
	__atomic_store_n(&k->rx_ns, tlm__now_ns(), __ATOMIC_RELEASE);
}

uint64_t tlm__ka_silent_ms(struct tlm__ka *k)
{
	uint64_t now = tlm__now_ns(), rx = __atomic_load_n(&k->rx_ns, __ATOMIC_ACQUIRE);

	return now > rx ? (now - rx) / 1000000 : 0;
}

/* Sleep idle_ms/2 (lock held on entry and exit); false once stopped. */
static bool ka_sleep(struct tlm__ka *k)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)k->idle_ms * 500000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	if (!k->stop)
		pthread_cond_timedwait(&k->cond, &k->lock, &ts);
	return !k->stop;
}

/* The keepalives. A send may wait for the peer (an RDMA lane whose peer
 * reads nothing has no message credits left), so the owner's check runs
 * on a thread of its own (ka_check) and judges the silence meanwhile. */
static void *ka_thread(void *arg)
{
	struct tlm__ka *k = arg;
	uint64_t idle_ns = (uint64_t)k->idle_ms * 1000000;
	uint8_t m[1];

	pthread_mutex_lock(&k->lock);
	while (ka_sleep(k)) {
		uint64_t tx;

		pthread_mutex_unlock(&k->lock);
		tx = __atomic_load_n(&k->tx_ns, __ATOMIC_ACQUIRE);
		if (tlm__now_ns() - tx >= idle_ns) {
			int err;

			if (k->ping) {
				err = tlm__ka_write(k, k->ping, k->ping_len);
			} else {
				err = tlm__cm_keepalive_encode(m, sizeof(m));
				if (err > 0)
					err = tlm__ka_send(k, m, sizeof(m));
			}
			if (err < 0) {
				k->fail(k->arg, err);
				pthread_mutex_lock(&k->lock);
				break;
			}
		}
		pthread_mutex_lock(&k->lock);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static void *ka_check(void *arg)
{
	struct tlm__ka *k = arg;

	pthread_mutex_lock(&k->lock);
	while (ka_sleep(k)) {
		pthread_mutex_unlock(&k->lock);
		k->check(k->arg);
		pthread_mutex_lock(&k->lock);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

void tlm__ka_init(struct tlm__ka *k, struct tlm_lane *lane, int timeout_ms)
{
	pthread_condattr_t ca;

	memset(k, 0, sizeof(*k));
	k->lane = lane;
	k->timeout_ms = timeout_ms;
	k->idle_ms = tlm__ka_idle_ms(timeout_ms);
	k->tx_ns = k->rx_ns = tlm__now_ns();
	pthread_mutex_init(&k->tx, NULL);
	pthread_mutex_init(&k->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cond, &ca);
	pthread_condattr_destroy(&ca);
}

int tlm__ka_start(struct tlm__ka *k, void (*check)(void *), void (*fail)(void *, int), void *arg)
{
	k->check = check;
	k->fail = fail;
	k->arg = arg;
	k->stop = false;
	if (pthread_create(&k->t, NULL, ka_thread, k))
		return -EAGAIN;
	k->running = true;
	if (check && pthread_create(&k->tc, NULL, ka_check, k)) {
		k->check = NULL;   /* no check thread to join */
		tlm__ka_stop(k);
		return -EAGAIN;
	}
	return 0;
}

void tlm__ka_stop(struct tlm__ka *k)
{
	if (!k->running)
		return;
	pthread_mutex_lock(&k->lock);
	k->stop = true;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	pthread_join(k->t, NULL);
	if (k->check)
		pthread_join(k->tc, NULL);
	k->running = false;
}

void tlm__ka_destroy(struct tlm__ka *k)
{
	tlm__ka_stop(k);
	pthread_mutex_destroy(&k->tx);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->cond);
}
