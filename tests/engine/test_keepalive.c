/* SPDX-License-Identifier: MIT */
/*
 * The control lane's keepalives and silent-peer timers (core/keepalive.c),
 * between two processes over tcp lanes. A peer is made silent the way a
 * frozen host is: SIGSTOP, no FIN, no RST, its kernel still acknowledging.
 * Stage 3's device state is where the tests wait (the memory source's
 * device_state callback), since nothing else is sent then.
 *
 *   silent-destination   the destination stops as the source asks for
 *                        COMMIT: the source gives up once it has heard
 *                        nothing for its timeout (2 s), not before, with a
 *                        reason naming the timeout
 *   silent-destination-idle   the destination stops while the source is
 *                        busy with the device state (4 s, no exchange under
 *                        way): the source's keepalive thread notices, at the
 *                        timeout, and the migration fails
 *   silent-source        the source stops in stage 3: the destination gives
 *                        up after its timeout (2 s)
 *   idle                 both ends' timeouts 2 s, the device state takes
 *                        6 s: keepalives both ways keep the healthy
 *                        migration alive, and it completes; then the
 *                        control lane holds nothing stray (no keepalive
 *                        after STAGE3 or COMMIT) for what the caller
 *                        exchanges on it next
 *
 *   test_keepalive CASE
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "memsrc-wrap.h"

#define MEM     (8ull << 20)
#define T_MS    2000          /* the silent-peer timeout of the end that judges */
#define IDLE_MS 4000          /* the device state's time, silent-destination-idle */
#define QUIET_MS 6000         /* the device state's time, idle: 3 timeouts */
#define KA_MAX_MS 1000        /* the longest keepalive interval (core/keepalive.h) */
#define SLACK_MS 5000         /* a loaded machine: how late a detection may come */

enum kase { SILENT_DST, SILENT_DST_IDLE, SILENT_SRC, IDLE, N_CASES };
static const char *const names[] = {
	[SILENT_DST] = "silent-destination", [SILENT_DST_IDLE] = "silent-destination-idle",
	[SILENT_SRC] = "silent-source", [IDLE] = "idle",
};

static enum kase kase;
static struct tlm_memsrc *inner;   /* the wrapper's ctx points here */
static pid_t peer;                 /* the other process (source: the destination) */
static int ready_fd = -1;          /* silent-source: the child says "stop me now" */
static uint64_t t_stop;            /* when the peer was stopped */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Stage 3, every page and LAST sent: the moment each case acts. */
static int w_devstate(void *x, const void **buf, size_t *len)
{
	static const char state[] = "device state";

	(void)x;
	switch (kase) {
	case SILENT_DST:
		kill(peer, SIGSTOP);
		t_stop = now_ms();
		break;
	case SILENT_DST_IDLE:
		kill(peer, SIGSTOP);
		t_stop = now_ms();
		usleep(IDLE_MS * 1000);
		break;
	case SILENT_SRC:
		/* The parent stops us; should it not, we go on after a while
		 * and the parent's checks fail. */
		if (write(ready_fd, "s", 1) != 1)
			return -EIO;
		usleep(3 * T_MS * 1000);
		break;
	case IDLE:
		usleep(QUIET_MS * 1000);
		break;
	default:
		break;
	}
	*buf = state;
	*len = sizeof(state);
	return 0;
}

static const struct tlm_memsrc_ops wrap_ops = WRAP_OPS(wrap_pause, wrap_resume, w_devstate);

static const struct tlm_psk *the_psk;

static struct tlm_session_cfg cfg_of(int timeout_ms)
{
	struct tlm_session_cfg cfg = { .transport = "tcp", .n_lanes = 2, .page_size = 4096,
				       .n_regions = 1, .region_len = { MEM },
				       .timeout_ms = timeout_ms, .psk = the_psk };

	cfg.lane_modes[1] = cfg.lane_modes[2] = TLM_MODE_PAGES;
	return cfg;
}

/* After the migration the control lane is the caller's again, with
 * nothing stray in it (no keepalive after STAGE3 or after COMMIT): the
 * source writes "bye!", the destination reads exactly that and answers
 * "ack!", which the source reads. */
static int expect4(struct tlm_lane *c, const char *want, char *why, size_t whylen)
{
	uint8_t got[4];
	size_t n = 0;

	while (n < 4) {
		ssize_t r = tlm_lane_read(c, got + n, 4 - n, 5000);

		if (r <= 0) {
			snprintf(why, whylen, "after the migration: %s",
				 r ? tlm_strerror((int)r) : "closed");
			return r < 0 ? (int)r : -EIO;
		}
		n += (size_t)r;
	}
	if (memcmp(got, want, 4)) {
		snprintf(why, whylen, "after the migration the control lane held "
			 "%02x%02x%02x%02x, not '%s'", got[0], got[1], got[2], got[3], want);
		return -EPROTO;
	}
	return 0;
}

static int say4(struct tlm_lane *c, const char *what)
{
	return tlm_lane_write(c, what, 4) == 4 && !tlm_lane_flush(c) ? 0 : -EIO;
}

static int after(struct tlm_session *s, bool source, char *why, size_t whylen)
{
	struct tlm_lane *c = tlm_session_lane(s, 0);
	int err;

	if (source)
		return (err = say4(c, "bye!")) ? err : expect4(c, "ack!", why, whylen);
	return (err = expect4(c, "bye!", why, whylen)) ? err : say4(c, "ack!");
}

/* The destination: listens (port written to wfd), migrates in. Returns
 * its error; how long tlm_migrate_dest took after t_stop in *ms. */
static int destination(int wfd, int timeout_ms, char *why, size_t whylen)
{
	struct tlm_session_cfg cfg = cfg_of(timeout_ms);
	struct tlm_region reg = { .len = MEM, .name = "ram" };
	struct tlm_dest_stats ds;
	struct tlm_listener *li;
	struct tlm_session *s;
	int err;

	if (tlm_listen(&cfg, "127.0.0.1", "0", &li))
		return -EIO;
	dprintf(wfd, "%d", tlm_listener_port(li));
	close(wfd);
	if ((err = tlm_accept(li, 30000, &s)))
		return err;
	reg.base = mmap(NULL, reg.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	err = tlm_migrate_dest(s, &reg, 1, NULL, NULL, &ds);
	snprintf(why, whylen, "%s", err ? ds.why : "completed");
	if (!err && kase == IDLE)
		err = after(s, false, why, whylen);
	tlm_session_close(s);
	tlm_listener_close(li);
	return err;
}

static int source(const char *port, int timeout_ms, struct tlm_migrate_stats *st)
{
	struct tlm_session_cfg cfg = cfg_of(timeout_ms);
	struct tlm_migrate_opts o = { .policy = TLM_POLICY_TLM, .chk_lanes = 1, .ps_lanes = 1,
				      .epoch_ms = 10, .zero_pages = true,
				      .timeout_ms = timeout_ms };
	struct tlm_memsrc wrapped = { &wrap_ops, &inner, 4096 };
	struct tlm_session *s;
	struct tlm_local *m;
	size_t size = MEM;
	int err;

	if ((err = tlm_local_create(&size, 1, TLM_TRACK_AUTO, &m)))
		return err;
	inner = tlm_local_memsrc(m);
	{
		const struct tlm_region *r;
		unsigned n;

		if (!inner->ops->regions(inner->ctx, &r, &n))
			memset(r[0].base, 0x5a, 1 << 20);   /* some pages not zero */
	}
	if ((err = tlm_connect(&cfg, "127.0.0.1", port, &s)))
		return err;
	err = tlm_migrate_source(s, &wrapped, &o, st);
	if (!err && kase == IDLE)
		err = after(s, true, st->why, sizeof(st->why));
	tlm_session_close(s);
	tlm_local_destroy(m);
	return err;
}

/* The "N ms" of "sent nothing for N ms" in a reason, or 0. */
static unsigned long long silent_for(const char *why)
{
	const char *p = strstr(why, "sent nothing for ");

	return p ? strtoull(p + strlen("sent nothing for "), NULL, 10) : 0;
}

static int fails;
#define EXPECT(c, ...) do { if (!(c)) { fprintf(stderr, "FAIL: " __VA_ARGS__); \
	fprintf(stderr, "\n"); fails++; } } while (0)

/* A detection: failed, as -ETIMEDOUT, naming the timeout, no earlier than
 * it and no later than it plus the slack. `ms` counts from the stop; the
 * peer was last heard up to one keepalive interval before it. */
static void judge(const char *who, int err, const char *why, uint64_t ms)
{
	char t[32];
	unsigned long long n = silent_for(why);

	snprintf(t, sizeof(t), "timeout %d ms", T_MS);
	EXPECT(err == -ETIMEDOUT, "%s: %s, not a timeout (%s)", who, tlm_strerror(err), why);
	EXPECT(strstr(why, t), "%s: the reason does not name the timeout: %s", who, why);
	EXPECT(n >= T_MS && n <= T_MS + SLACK_MS, "%s: silent for %llu ms, timeout %d: %s",
	       who, n, T_MS, why);
	EXPECT(ms + KA_MAX_MS + 100 >= T_MS && ms <= T_MS + SLACK_MS,
	       "%s: gave up %llu ms after the peer stopped (timeout %d)", who,
	       (unsigned long long)ms, T_MS);
	printf("%s: %s gave up %llu ms after the peer stopped: %s\n", names[kase], who,
	       (unsigned long long)ms, why);
}

static int run_source_side(void)
{
	struct tlm_migrate_stats st;
	char port[16], why[200];
	int pfd[2], status, err;
	uint64_t t_ret;
	ssize_t r;

	if (pipe(pfd))
		return 2;
	peer = fork();
	if (peer == 0) {
		close(pfd[0]);
		/* idle: the destination's timeout is short too */
		err = destination(pfd[1], kase == IDLE ? T_MS : 0, why, sizeof(why));
		fprintf(stderr, "  destination: %s\n", why);
		_exit(err ? 3 : 0);
	}
	close(pfd[1]);
	r = read(pfd[0], port, sizeof(port) - 1);
	close(pfd[0]);
	if (r <= 0)
		return 2;
	port[r] = 0;
	err = source(port, T_MS, &st);
	t_ret = now_ms();
	fprintf(stderr, "  source: %s (%s)\n", tlm_strerror(err), st.why);
	if (kase == IDLE) {
		waitpid(peer, &status, 0);
		EXPECT(err == 0 && st.completed, "idle: the source failed: %s", st.why);
		EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		       "idle: the destination failed (status 0x%x)", status);
		if (!fails)
			printf("idle: a %d ms stage with %d ms timeouts at both ends completed "
			       "(elapsed %llu ms, downtime %llu ms)\n", QUIET_MS, T_MS,
			       (unsigned long long)st.elapsed_ms,
			       (unsigned long long)st.downtime_ms);
	} else {
		EXPECT(!st.completed, "the source completed with a stopped destination");
		if (kase == SILENT_DST) {
			judge("the source", err, st.why, t_ret - t_stop);
			EXPECT(strstr(st.why, "no confirmation"), "not while waiting for COMMIT: %s",
			       st.why);
		} else {
			/* Found by the keepalive thread during the device state,
			 * not at the wait for COMMIT afterwards. */
			uint64_t ms = silent_for(st.why);

			judge("the source", err, st.why, ms);
			EXPECT(!strstr(st.why, "no confirmation"),
			       "noticed only at the wait for COMMIT: %s", st.why);
		}
		kill(peer, SIGKILL);
		waitpid(peer, &status, 0);
	}
	tlm_migrate_stats_free(&st);
	return fails ? 1 : 0;
}

static int run_dest_side(void)
{
	int pfd[2], rfd[2], status, err;
	char why[200], c;

	if (pipe(pfd) || pipe(rfd))
		return 2;
	peer = fork();
	if (peer == 0) {
		struct tlm_migrate_stats st;
		char port[16];
		ssize_t r;

		close(pfd[1]);
		close(rfd[0]);
		ready_fd = rfd[1];
		r = read(pfd[0], port, sizeof(port) - 1);
		if (r <= 0)
			_exit(2);
		port[r] = 0;
		err = source(port, 0, &st);
		_exit(err ? 3 : 0);
	}
	close(pfd[0]);
	close(rfd[1]);
	/* The stop comes from a thread of our own: the destination's call
	 * blocks, so the child's "now" is read by a helper process. */
	if (fork() == 0) {
		if (read(rfd[0], &c, 1) == 1)
			kill(peer, SIGSTOP);
		_exit(0);
	}
	close(rfd[0]);
	err = destination(pfd[1], T_MS, why, sizeof(why));
	judge("the destination", err, why, silent_for(why));
	EXPECT(strstr(why, "source has sent nothing"), "not the silent source: %s", why);
	kill(peer, SIGKILL);
	waitpid(peer, &status, 0);
	while (wait(NULL) > 0)
		;
	return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
	static struct tlm_psk psk;

	kase = N_CASES;
	for (unsigned i = 0; argc == 2 && i < N_CASES; i++)
		if (!strcmp(argv[1], names[i]))
			kase = (enum kase)i;
	if (kase == N_CASES) {
		fprintf(stderr, "usage: %s silent-destination|silent-destination-idle|"
			"silent-source|idle\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	tlm_set_log_fn(wrap_log_cb, NULL);
	if (tlm_psk_random(&psk))
		return 2;
	the_psk = &psk;
	return kase == SILENT_SRC ? run_dest_side() : run_source_side();
}
