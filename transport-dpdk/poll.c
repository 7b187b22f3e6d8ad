/* SPDX-License-Identifier: MIT */
/*
 * Who polls which queue, and how callers wait.
 *
 * The poll thread (one per port, tlm__dpdk_poll_main) serves queue 0 and
 * its lanes' transmit steps when their callers leave it alone, and covers
 * the queues of lanes whose callers left them alone for STALE_NS (timers,
 * keepalive, ACKs while nobody calls). Idle, it spins briefly, then sleeps
 * in growing steps up to 1 ms; a kick wakes it.
 *
 * Callers of established lanes on queue 0 drive it themselves
 * (tlm__dpdk_q0_pump: a round of it, for every lane on it, when port->lock
 * is free; a round that finds it taken leaves q0_more for the holder). One
 * waiting caller per port spins on it (q0_wait), the others sleep until a
 * round signals them; the poll thread, while callers pumped within
 * STALE_NS, only trylocks and naps long. Their rounds hold a short data
 * burst back up to TX_HOLD_NS, so a port whose every tx_burst is a
 * syscall (af_packet: a sendto each) sends full ones.
 *
 * A lane with a queue of its own runs to completion: its callers pump it
 * themselves (tlm__dpdk_own_pump), and one that waits keeps polling for
 * SPIN_NS after the last packet moved before it sleeps (tlm__dpdk_lane_wait).
 * Spinning is budgeted per port (spinners=, default one per core, half on
 * memif whose peer shares the cores): a caller that finds every slot
 * taken sleeps at most SLOTLESS_NS, and the spinners poll its queue for it
 * and wake it as its packets come (spin_sweep). More spinners than cores
 * only take turns at the CPU while the one with packets waits.
 *
 * Bursts on memif run guarded against its unmap race (below).
 */
#include <setjmp.h>

#include "dpdk-internal.h"

void tlm__dpdk_lock_port(struct dport *p)
{
	atomic_fetch_add(&p->want_lock, 1);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_sub(&p->want_lock, 1);
}

void tlm__dpdk_kick(struct dport *p)
{
	/* Dekker pair with tlm__dpdk_poll_main: either it sees kicked before it
	 * sleeps, or we see it sleeping and signal under kmu, which it holds
	 * until it waits. No syscall while it is busy. */
	atomic_store(&p->kicked, true);
	if (!atomic_load(&p->sleeping))
		return;
	pthread_mutex_lock(&p->kmu);
	pthread_cond_signal(&p->kcv);
	pthread_mutex_unlock(&p->kmu);
}

/* ---- memif's unmap race ----
 * When the peer process goes, memif's interrupt thread unmaps the shared
 * rings (memif_disconnect) with no lock against a burst that runs on
 * another thread: a burst that passed its "connected" check can then
 * touch a ring that is gone. On memif ports the bursts run guarded: such a
 * fault (SIGSEGV or SIGBUS inside a burst, on the thread that runs it)
 * ends the burst, the port counts it (torn), and the lanes fail as for
 * any peer that vanished (the link is down). An rx burst that faulted
 * moved nothing; a tx burst's packets count as sent and are not freed,
 * since the PMD may have freed some (a leak, never a double free). A
 * fault anywhere else goes to the handler installed before ours, or ends
 * the process as it would have. */
static __thread sigjmp_buf *t_guard;
static struct sigaction g_old_segv, g_old_bus;
static pthread_once_t g_guard_once = PTHREAD_ONCE_INIT;

static void guard_sig(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *jb = t_guard;
	const struct sigaction *old = sig == SIGBUS ? &g_old_bus : &g_old_segv;

	if (jb) {
		t_guard = NULL;
		siglongjmp(*jb, 1);
	}
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
	} else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
	} else {
		/* returning runs the access again, which now kills */
		signal(sig, SIG_DFL);
	}
}

static void guard_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_sig;
	/* not blocked in the handler: siglongjmp leaves the mask alone */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &g_old_segv);
	sigaction(SIGBUS, &sa, &g_old_bus);
}

void tlm__dpdk_guard_bursts(void)
{
	pthread_once(&g_guard_once, guard_install);
}

static uint16_t burst(struct dport *p, bool tx, uint16_t q, struct rte_mbuf **v, uint16_t n)
{
	sigjmp_buf jb;
	uint16_t r;

	if (p->memif) {
		if (sigsetjmp(jb, 0)) {
			atomic_fetch_add(&p->torn, 1);
			return tx ? n : 0;
		}
		t_guard = &jb;
	}
	r = tx ? rte_eth_tx_burst(p->port_id, q, v, n) : rte_eth_rx_burst(p->port_id, q, v, n);
	t_guard = NULL;
	return r;
}

/* Hand queued packets to the PMD. What its ring cannot take now stays
 * queued for the next round (lanes stop making data packets meanwhile):
 * dropping it would cost a retransmission timeout each time the peer's
 * poll thread naps and the ring fills. */
static unsigned flush_q(struct dport *p, uint16_t q, struct rte_mbuf **v, unsigned *n)
{
	unsigned done = 0;

	for (int tries = 0; done < *n && tries < 4; tries++) {
		done += burst(p, true, q, v + done, (uint16_t)(*n - done));
		if (done < *n)
			rte_pause();
	}
	if (done && done < *n)
		memmove(v, v + done, (*n - done) * sizeof(v[0]));
	*n -= done;
	return done;
}

unsigned tlm__dpdk_flush_tx(struct dport *p)
{
	unsigned n = p->ntx, done = flush_q(p, 0, p->txq, &p->ntx);

	if (n) {
		p->tx_bursts++;
		p->tx_burst_pkts += done;
	}
	if (!p->ntx) {
		p->tx_urgent = false;
		p->tx_since = 0;
	}
	return done;
}

/* Queue 0's packets to the PMD, or (hold) not yet: a burst not full and
 * only data in it waits up to TX_HOLD_NS for more, so a port whose every
 * tx_burst is a syscall (af_packet) sends full bursts. */
static unsigned flush_q0(struct dport *p, bool hold, uint64_t now)
{
	if (hold && p->ntx && p->ntx < BURST && !p->tx_urgent) {
		if (!p->tx_since)
			p->tx_since = now;
		if (now - p->tx_since < TX_HOLD_NS)
			return 0;
	}
	return tlm__dpdk_flush_tx(p);
}

/* A caller's round of queue 0 (port->lock held): what the poll thread's
 * round does for it, without the lanes' teardown (closing lanes are the
 * poll thread's, kicked by close) or the other queues. */
static unsigned q0_round(struct dport *p, bool hold)
{
	struct rte_mbuf *rx[BURST];
	unsigned work = 0;

	for (int i = 0; i < 4; i++) {
		uint16_t n = burst(p, false, 0, rx, BURST);
		for (uint16_t j = 0; j < n; j++)
			tlm__dpdk_rx_pkt(p, rx[j], false, 0);
		work += n;
		if (n < BURST)
			break;
	}
	uint64_t now = tlm__now_ns();
	for (struct dlane *l = p->lanes; l; l = l->next) {
		if (l->q || l->gone || l->closing)
			continue;
		uint64_t before = l->tx_pkts;
		tlm__dpdk_lane_tx(p, l, now);
		work += l->tx_pkts != before;
		if (p->ntx >= BURST)
			tlm__dpdk_flush_tx(p);
	}
	work += p->nloop;
	for (unsigned i = 0; i < p->nloop; i++)
		tlm__dpdk_rx_pkt(p, p->loopq[i], true, 0);
	p->nloop = 0;
	flush_q0(p, hold, now);
	atomic_store(&p->last_q0_pump, now);
	return work;
}

unsigned tlm__dpdk_q0_pump(struct dport *p, bool hold)
{
	unsigned work = 0;

	/* lock or hand over: a round that finds the lock taken leaves
	 * q0_more, and the holder (a caller here, or the poll thread, kicked
	 * when no caller holds it) runs one more round */
	atomic_store(&p->q0_more, true);
	while (atomic_load(&p->q0_more)) {
		if (atomic_load(&p->want_lock) > 0 || pthread_mutex_trylock(&p->lock)) {
			if (!atomic_load(&p->q0_pumping))
				tlm__dpdk_kick(p);
			break;
		}
		atomic_store(&p->q0_pumping, true);
		atomic_store(&p->q0_more, false);
		work += q0_round(p, hold);
		atomic_store(&p->q0_pumping, false);
		pthread_mutex_unlock(&p->lock);
	}
	return work;
}

unsigned tlm__dpdk_drive(struct dlane *l, bool hold)
{
	if (l->q)
		return tlm__dpdk_own_pump(l);
	return tlm__dpdk_q0_pump(l->port, hold);
}

/* Poll a lane's own queue: receive, then send what is due. qmu held;
 * port_locked: the caller (the poll thread) holds port->lock. Packets on
 * the queue that are not the lane's (its SYN, strays from an older lane)
 * take the shared path. Returns the packets moved. */
static unsigned pump(struct dport *p, struct dlane *l, bool port_locked)
{
	struct rte_mbuf *rx[BURST], *slow[BURST];
	unsigned ns = 0;
	uint64_t now = tlm__now_ns(), before = l->tx_pkts;
	uint16_t n = burst(p, false, l->q, rx, BURST);

	if (n)
		pthread_mutex_lock(&l->mu);
	unsigned nd = 0;
	for (uint16_t j = 0; j < n; j++) {
		struct pkt k;
		if (tlm__dpdk_parse_pkt(p, rx[j], false, &k) > 0 && k.type != PT_SYN && k.dst == l->lid &&
		    l->state != LS_SYN_SENT) {
			k.qid = l->q;
			if (!tlm__dpdk_rx_lane(l, &k, now))
				rx[nd++] = rx[j];
		} else {
			slow[ns++] = rx[j];
		}
	}
	if (n) {
		pthread_mutex_unlock(&l->mu);
		if (nd)
			rte_pktmbuf_free_bulk(rx, nd);
	}
	tlm__dpdk_lane_tx(p, l, now);
	unsigned sent = flush_q(p, l->q, l->qtx, &l->nqtx);
	atomic_store(&l->last_pump, now);
	if (ns) {
		if (!port_locked)
			tlm__dpdk_lock_port(p);
		for (unsigned i = 0; i < ns; i++)
			tlm__dpdk_rx_pkt(p, slow[i], false, l->q);
		if (!port_locked) {
			pthread_mutex_unlock(&p->lock);
			tlm__dpdk_kick(p);   /* replies wait in the shared queue */
		}
	}
	return n + sent + (unsigned)(l->tx_pkts != before);
}

/* The lane's own thread polls its queue (run to completion). */
unsigned tlm__dpdk_own_pump(struct dlane *l)
{
	pthread_mutex_lock(&l->qmu);
	unsigned n = pump(l->port, l, false);
	pthread_mutex_unlock(&l->qmu);
	return n;
}

static bool slot_take(struct dport *p, struct waiter *w)
{
	unsigned n = atomic_load(&p->spinners);

	while (!w->slot && n < p->spin_max)
		if (atomic_compare_exchange_weak(&p->spinners, &n, n + 1))
			w->slot = true;
	return w->slot;
}

/* Poll the queues of lanes whose callers sleep for want of a slot; their
 * condition variables are signalled as their packets come (tlm__dpdk_rx_lane). */
static void spin_sweep(struct dport *p, const struct dlane *self)
{
	if (pthread_mutex_trylock(&p->swmu))
		return;   /* another spinner is at it */
	for (uint16_t q = 1; q < p->nq; q++) {
		struct dlane *s = atomic_load(&p->qlane[q]);
		if (!s || s == self || s->q != q || !atomic_load(&s->asleep) ||
		    pthread_mutex_trylock(&s->qmu))
			continue;
		pump(p, s, false);
		pthread_mutex_unlock(&s->qmu);
	}
	pthread_mutex_unlock(&p->swmu);
}

/* Give the slot back; a sleeper takes it over (or its timeout does). */
static void slot_put(struct dport *p, struct waiter *w)
{
	if (!w->slot)
		return;
	w->slot = false;
	atomic_fetch_sub(&p->spinners, 1);
	if (!atomic_load(&p->nasleep) || pthread_mutex_trylock(&p->swmu))
		return;
	for (uint16_t q = 1; q < p->nq; q++) {
		struct dlane *s = atomic_load(&p->qlane[q]);
		if (s && atomic_load(&s->asleep)) {
			pthread_cond_broadcast(&s->cv);
			break;
		}
	}
	pthread_mutex_unlock(&p->swmu);
}

static void q0_slot_put(struct dport *p, struct waiter *w)
{
	if (w->q0slot) {
		w->q0slot = false;
		atomic_store(&p->q0_spin, false);
	}
}

void tlm__dpdk_wait_done(struct dlane *l, struct waiter *w)
{
	slot_put(l->port, w);
	q0_slot_put(l->port, w);
}

/* A lane on queue 0 waits (l->mu held): one caller per port spins on the
 * queue (rounds of it, as the poll thread would run them, for every lane
 * on it), the others sleep until that round signals them or SLOTLESS_NS.
 * Past spin_end the spinner lets its held packets go, hands the queue
 * back to the poll thread and sleeps like the rest. */
static int q0_wait(struct dlane *l, struct waiter *w, uint64_t now, uint64_t end)
{
	struct dport *p = l->port;

	if (now < w->spin_end && !w->q0slot) {
		bool f = false;
		w->q0slot = atomic_compare_exchange_strong(&p->q0_spin, &f, true);
	}
	if (!w->q0slot) {
		uint64_t until = now + SLOTLESS_NS < end ? now + SLOTLESS_NS : end;
		if (now >= w->spin_end) {
			/* nobody may be spinning: the poll thread covers */
			tlm__dpdk_kick(p);
			until = end;
		}
		int r = cv_wait_until(&l->cv, &l->mu, until);
		if (r != ETIMEDOUT)
			w->spin_end = tlm__now_ns() + SPIN_NS;
		return tlm__now_ns() >= end ? ETIMEDOUT : 0;
	}
	pthread_mutex_unlock(&l->mu);
	unsigned work = tlm__dpdk_q0_pump(p, now < w->spin_end);
	if (!work)
		rte_pause();
	pthread_mutex_lock(&l->mu);
	if (work)
		w->spin_end = now + SPIN_NS;
	else if (now >= w->spin_end) {
		q0_slot_put(p, w);
		atomic_store(&p->last_q0_pump, 0);
	}
	return 0;
}

/* Wait for the lane to change; l->mu held (released meanwhile), the
 * caller re-checks, and calls tlm__dpdk_wait_done when it stops waiting. A lane on
 * its own queue polls it itself while it holds a spin slot, spinning
 * while that moves packets or until spin_end, and polls the queues of
 * lanes whose callers found no slot; those sleep SLOTLESS_NS at most, so
 * they get a slot soon after one is free. Past spin_end, like a lane on
 * the shared queue, it sleeps until the poll thread signals (it polls a
 * queue left alone for STALE_NS) or end. ETIMEDOUT once past end. */
int tlm__dpdk_lane_wait(struct dlane *l, struct waiter *w, uint64_t end)
{
	struct dport *p = l->port;
	uint64_t now = tlm__now_ns();

	if (now >= end)
		return ETIMEDOUT;
	if (!w->spin_end)
		w->spin_end = now + SPIN_NS;
	if (!l->q && l->state == LS_EST)
		return q0_wait(l, w, now, end);
	if (!l->q || now >= w->spin_end) {
		/* asleep from the caller's check on (no lost wakeup) */
		slot_put(p, w);
		if (!l->q)
			tlm__dpdk_kick(p);
		return cv_wait_until(&l->cv, &l->mu, end);
	}
	if (!slot_take(p, w)) {
		atomic_store(&p->qlane[l->q], l);
		atomic_fetch_add(&l->asleep, 1);
		atomic_fetch_add(&p->nasleep, 1);
		int r = cv_wait_until(&l->cv, &l->mu, now + SLOTLESS_NS < end ? now + SLOTLESS_NS : end);
		atomic_fetch_sub(&p->nasleep, 1);
		atomic_fetch_sub(&l->asleep, 1);
		if (r != ETIMEDOUT) {
			w->spin_end = tlm__now_ns() + SPIN_NS;   /* woken: things move */
			return 0;
		}
		if (tlm__now_ns() >= end)
			return ETIMEDOUT;
		/* nobody woke us: look at our queue once. Busy, we stay in
		 * the spin window: otherwise a lane short of a slot for
		 * SPIN_NS falls into the long sleep, which only the poll
		 * thread ends, at a millisecond a step */
		pthread_mutex_unlock(&l->mu);
		unsigned work = tlm__dpdk_own_pump(l);
		pthread_mutex_lock(&l->mu);
		if (work)
			w->spin_end = tlm__now_ns() + SPIN_NS;
		return 0;
	}
	pthread_mutex_unlock(&l->mu);
	unsigned work = tlm__dpdk_own_pump(l);
	if (atomic_load(&p->nasleep))
		spin_sweep(p, l);
	if (!work)
		rte_pause();
	pthread_mutex_lock(&l->mu);
	if (work)
		w->spin_end = now + SPIN_NS;
	return 0;
}

void *tlm__dpdk_poll_main(void *arg)
{
	struct dport *p = arg;
	struct rte_mbuf *rx[BURST];
	unsigned idle = 0;

	rte_thread_register();   /* an lcore id gives the mempool a cache */
	while (!atomic_load(&p->stop)) {
		unsigned work = 0;
		uint64_t now;

		/* callers drive queue 0 (q0_pump): what we find there then is
		 * not ours to spin for, we nap long between rounds, and we do
		 * not queue for the lock behind them (a futex wake each) */
		bool covered = since(tlm__now_ns(), atomic_load(&p->last_q0_pump)) < STALE_NS;
		if (!covered)
			pthread_mutex_lock(&p->lock);
		else if (pthread_mutex_trylock(&p->lock))
			goto nap;
		atomic_store(&p->q0_more, false);
		for (int i = 0; i < 4; i++) {
			uint16_t n = burst(p, false, 0, rx, BURST);
			for (uint16_t j = 0; j < n; j++)
				tlm__dpdk_rx_pkt(p, rx[j], false, 0);
			work += covered ? 0 : n;
			if (n < BURST)
				break;
		}
		/* queues reserved by a lane still waiting for its SYNACK: the
		 * grant may come on them (memif) */
		for (uint16_t q = 1; q < p->nq; q++) {
			if (!p->qowner[q] || p->qowner[q]->q)
				continue;
			uint16_t n = burst(p, false, q, rx, BURST);
			for (uint16_t j = 0; j < n; j++)
				tlm__dpdk_rx_pkt(p, rx[j], false, q);
			work += n;
		}
		now = tlm__now_ns();
		for (struct dlane *l = p->lanes, *nx; l; l = nx) {
			nx = l->next;
			if (l->q) {
				/* its callers poll it; we keep its timers going
				 * while they are away, and close it */
				if ((l->closing || since(now, atomic_load(&l->last_pump)) > STALE_NS) &&
				    !pthread_mutex_trylock(&l->qmu)) {
					work += pump(p, l, true);
					pthread_mutex_unlock(&l->qmu);
				}
			} else {
				uint64_t before = l->tx_pkts;
				tlm__dpdk_lane_tx(p, l, now);
				work += !covered && l->tx_pkts != before;
			}
			if (l->gone)
				tlm__dpdk_lane_unlink(p, l);   /* close() frees it */
			if (p->ntx >= BURST)
				work += tlm__dpdk_flush_tx(p);
		}
		/* only what left counts as work: a full ring to a stalled
		 * peer must not keep us spinning */
		unsigned flushed = tlm__dpdk_flush_tx(p);
		work += p->nloop + (covered ? 0 : flushed);
		for (unsigned i = 0; i < p->nloop; i++)
			tlm__dpdk_rx_pkt(p, p->loopq[i], true, 0);
		p->nloop = 0;
		pthread_mutex_unlock(&p->lock);
		while (atomic_load(&p->want_lock) > 0)
			sched_yield();

		if (atomic_load(&p->q0_more))
			work++;   /* a caller's round found the lock taken */
		if (work) {
			idle = 0;
			continue;
		}
nap:
		if (covered && idle < 400)
			idle = 400;
		/* idle: spin briefly, then sleep in growing steps up to 1 ms;
		 * writers kick us awake, timers are coarser than that */
		if (++idle < 64) {
			rte_pause();
			continue;
		}
		uint64_t nap = idle < 200 ? 20000 : idle < 400 ? 200000 : 1000000;
		pthread_mutex_lock(&p->kmu);
		atomic_store(&p->sleeping, true);
		if (!atomic_load(&p->kicked))
			cv_wait_until(&p->kcv, &p->kmu, tlm__now_ns() + nap);
		atomic_store(&p->sleeping, false);
		pthread_mutex_unlock(&p->kmu);
		atomic_store(&p->kicked, false);
	}
	rte_thread_unregister();
	return NULL;
}
