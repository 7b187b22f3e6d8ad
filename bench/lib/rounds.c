/* SPDX-License-Identifier: MIT */
/*
 * Both ends of a transport run on this machine, the raw PMD blasts a dpdk
 * run is held against, and --rounds (tlm-bench.h).
 *
 * dpdk on loopback, in this order: the raw blasts, in two fresh processes
 * forked while this one has no EAL yet; then the lanes. --rounds N repeats
 * both N times (each round's lanes in a child, so this process never
 * starts an EAL) and gives the median round by the headline ratio (lanes /
 * raw_place on memif, lanes / raw elsewhere): on a host
 * whose speed changes from run to run (a VM whose vCPUs the host moves), a
 * ratio is only meaningful within one round; "best" takes the fastest of
 * the rounds for each path, which a slow period that caught only one of
 * them in a round does not skew.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-internal.h"

static int receiver_child(struct tlm_listener *li, void *arg)
{
	return tlm_bench_receive(li, arg, NULL);
}

int tlm_bench_loopback(const struct tlm_bench_xfer *x, struct tlm_session_cfg *cfg,
		       const char *rx_targs, const char *host, struct tlm_bench_outcome *r)
{
	struct tlm_session_cfg rcfg = *cfg;
	char port[32];
	pid_t child;
	int rc, st;

	rcfg.transport_args = rx_targs;
	child = tlm_bench_fork_listener(&rcfg, host, port, sizeof(port), receiver_child,
					(void *)x);
	if (child < 0)
		return -1;
	rc = tlm_bench_send(x, cfg, host, port, r);
	if (rc != 0)
		kill(child, SIGTERM);
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	if (rc == 0 && r->verified && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		tlm_bench_err("the receiver failed");
		r->verified = false;
	}
	return rc;
}

int tlm_bench_raw_phase(const struct tlm_bench_xfer *x, struct tlm_bench_raws *raw,
			const char **skipped)
{
	int rc;

	memset(raw, 0, sizeof(*raw));
	if (x->no_raw) {
		*skipped = "--no-raw";
		return 0;
	}
	rc = tlm_bench_raw_blasts(x->transport_args, x->rx_targs, x->raw_seconds, raw);
	if (rc == -ENODEV) {
		*skipped = "the transport args name a device both ends share (or a "
			   "port=); the blast runs on the embedded memif, or from one vdev "
			   "to another (--rx-transport-args)";
		return 0;
	}
	if (rc) {
		tlm_bench_err("the raw PMD blast failed: %s (--no-raw skips it)", tlm_strerror(rc));
		return -1;
	}
	return 0;
}

double tlm_bench_round_key(const struct tlm_bench_round *d)
{
	double g = tlm_bench_goodput(&d->out);

	if (d->raw.ran && d->raw.place.Bps > 0)
		return g / d->raw.place.Bps;
	return d->raw.ran && d->raw.frames.Bps > 0 ? g / d->raw.frames.Bps : g;
}

struct tlm_bench_best tlm_bench_best_of(const struct tlm_bench_round *rd, unsigned n)
{
	struct tlm_bench_best b = { 0, 0, 0 };

	for (unsigned i = 0; i < n; i++) {
		double g = tlm_bench_goodput(&rd[i].out);

		b.goodput = g > b.goodput ? g : b.goodput;
		b.raw = rd[i].raw.frames.Bps > b.raw ? rd[i].raw.frames.Bps : b.raw;
		b.place = rd[i].raw.place.Bps > b.place ? rd[i].raw.place.Bps : b.place;
	}
	return b;
}

void tlm_bench_rounds_free(struct tlm_bench_round *rounds, unsigned n)
{
	if (rounds)
		munmap(rounds, n * sizeof(*rounds));
}

/* The rounds live in shared memory: each round's lanes run in a child,
 * which writes its outcome there. */
int tlm_bench_rounds(const struct tlm_bench_xfer *x, struct tlm_session_cfg *cfg,
		     const char *host, struct tlm_bench_round **rounds, unsigned *median,
		     const char **raw_skipped)
{
	size_t sz = x->rounds * sizeof(struct tlm_bench_round);
	struct tlm_bench_round *rd = mmap(NULL, sz, PROT_READ | PROT_WRITE,
					  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned order[50];

	*rounds = NULL;
	if (rd == MAP_FAILED || x->rounds > 50 || !x->rounds) {
		tlm_bench_err("--rounds: %s", rd == MAP_FAILED ? strerror(errno) : "want 1..50");
		if (rd != MAP_FAILED)
			munmap(rd, sz);
		return -1;
	}
	memset(rd, 0, sz);
	*rounds = rd;
	for (unsigned i = 0; i < x->rounds; i++) {
		pid_t pid;
		int st;

		if (!strcmp(x->transport, "dpdk") && tlm_bench_raw_phase(x, &rd[i].raw, raw_skipped))
			return -1;
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		if (pid < 0) {
			tlm_bench_err("--rounds: fork: %s", strerror(errno));
			return -1;
		}
		if (pid == 0) {
			int rc = tlm_bench_loopback(x, cfg, x->rx_targs, host, &rd[i].out);

			rd[i].sender_rss = tlm_bench_peak_rss();
			exit(rc || !rd[i].out.verified ? 1 : 0);
		}
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			tlm_bench_err("round %u of %u failed", i + 1, x->rounds);
			return -1;
		}
		if (x->on_round)
			x->on_round(x->on_round_arg, i, x->rounds, &rd[i]);
	}
	/* the median round, by insertion sort of at most 50 */
	for (unsigned i = 0; i < x->rounds; i++) {
		unsigned k = i;

		while (k && tlm_bench_round_key(&rd[order[k - 1]]) > tlm_bench_round_key(&rd[i])) {
			order[k] = order[k - 1];
			k--;
		}
		order[k] = i;
	}
	*median = order[x->rounds / 2];
	return 0;
}
