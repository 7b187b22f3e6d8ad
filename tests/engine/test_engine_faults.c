/* SPDX-License-Identifier: MIT */
/*
 * Faults in the middle of a migration: the destination killed, one data
 * lane cut, the source told to abort; and in stage 3: the destination
 * killed the moment the source pauses, or frozen once the source has sent
 * everything and waits for COMMIT. In every case the source's engine
 * must return an error, report the migration as not completed, and leave
 * the workload running (never paused); the destination must report
 * failure, never success. A destination that stops reading while alive
 * (SIGSTOP) must not block the source forever: the lane's send timeout
 * fails it.
 *
 * The memory source is wrapped to count pause and resume: after a failure
 * every pause has its resume, and the workload writes again (sampled
 * before and after a wait, once the engine returned).
 *
 *   test_engine_faults kill-destination|cut-lane|abort|stall-destination|
 *                      stage3-kill-destination|commit-stall-destination
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "tlm-bench.h"
#include "memsrc-wrap.h"

#define MEM (512ull << 20)

enum fault { KILL_DST, CUT_LANE, ABORT, STALL_DST, STAGE3_KILL, COMMIT_STALL };

static const char *const fault_names[] = {
	[KILL_DST] = "kill-destination", [CUT_LANE] = "cut-lane", [ABORT] = "abort",
	[STALL_DST] = "stall-destination", [STAGE3_KILL] = "stage3-kill-destination",
	[COMMIT_STALL] = "commit-stall-destination",
};

struct ctx {
	struct tlm_memsrc *inner;  /* the local memory source we wrap (first) */
	enum fault f;
	pid_t child;
	struct tlm_session *s;
	volatile int abort_flag;
	int injected;
	int pauses, resumes;
};

/* The wrapper (memsrc-wrap.h): stage-3 faults are injected from inside
 * pause() and device_state(), which the engine calls in stage 3 only. */
static int w_pause(void *x)
{
	struct ctx *c = x;
	int err = c->inner->ops->pause(c->inner->ctx);

	if (!err)
		c->pauses++;
	if (c->f == STAGE3_KILL && !c->injected) {
		c->injected = 1;
		fprintf(stderr, "  injecting the fault at the pause (stage 3)\n");
		kill(c->child, SIGKILL);
		waitpid(c->child, NULL, 0);
		c->child = 0;
	}
	return err;
}

static int w_resume(void *x)
{
	struct ctx *c = x;
	int err = c->inner->ops->resume(c->inner->ctx);

	if (!err)
		c->resumes++;
	return err;
}

static int w_devstate(void *x, const void **buf, size_t *len)
{
	struct ctx *c = x;
	static const char state[] = "device state";

	if (c->f == COMMIT_STALL && !c->injected) {
		/* Every page and LAST are sent: the destination stops before
		 * it can confirm. */
		c->injected = 1;
		fprintf(stderr, "  injecting the fault before COMMIT\n");
		kill(c->child, SIGSTOP);
	}
	*buf = state;
	*len = sizeof(state);
	return 0;
}

static const struct tlm_memsrc_ops wrap_ops = WRAP_OPS(w_pause, w_resume, w_devstate);

/* The tcp lane's pollfd is an epoll instance; the socket is among the fds
 * it watches, which /proc/self/fdinfo lists as "tfd:" lines. A sealed
 * lane's pollfd is an epoll instance watching the tcp lane's. */
static int cut_socket_behind(int fd)
{
	char path[64], line[256];
	FILE *f;
	int cut = 0;

	if (fd < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		struct stat sb;
		int tfd;
		if (sscanf(line, "tfd: %d", &tfd) != 1 || tfd == fd || fstat(tfd, &sb) != 0)
			continue;
		if (S_ISSOCK(sb.st_mode) ? shutdown(tfd, SHUT_RDWR) == 0 : cut_socket_behind(tfd) > 0)
			cut++;
	}
	fclose(f);
	if (!cut) {
		struct stat sb;
		if (fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode) && shutdown(fd, SHUT_RDWR) == 0)
			cut++;
	}
	return cut;
}

static void progress(const struct tlm_migrate_stats *st, uint64_t sent, uint64_t total, void *arg)
{
	struct ctx *c = arg;

	(void)st;
	if (c->injected || sent == 0 || sent >= total || c->f >= STAGE3_KILL)
		return;
	c->injected = 1;
	fprintf(stderr, "  injecting the fault at %llu of %llu pages\n",
		(unsigned long long)sent, (unsigned long long)total);
	switch (c->f) {
	case KILL_DST:
		kill(c->child, SIGKILL);
		break;
	case CUT_LANE:
		/* The checkpoint lane's connection dies under the engine. */
		if (!cut_socket_behind(tlm_lane_pollfd(tlm_session_lane(c->s, 1))))
			fprintf(stderr, "  could not find the lane's socket\n");
		break;
	case ABORT:
		c->abort_flag = 1;
		break;
	case STALL_DST:
		kill(c->child, SIGSTOP);
		break;
	case STAGE3_KILL:
	case COMMIT_STALL:
		break; /* from the memory source's pause and device_state */
	}
}

static int destination(int wfd, const struct tlm_psk *psk)
{
	struct tlm_session_cfg cfg = { .transport = "tcp", .psk = psk };
	struct tlm_region reg;
	struct tlm_dest_stats ds;
	struct tlm_listener *li;
	struct tlm_session *s;
	int err;

	if (tlm_listen(&cfg, "127.0.0.1", "0", &li))
		return 2;
	dprintf(wfd, "%d", tlm_listener_port(li));
	close(wfd);
	if (tlm_accept(li, 30000, &s))
		return 2;
	reg.len = tlm_session_cfg_get(s)->region_len[0];
	reg.base = mmap(NULL, reg.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reg.name = "ram";
	err = tlm_migrate_dest(s, &reg, 1, NULL, NULL, &ds);
	fprintf(stderr, "  destination: %s (%s)\n", err ? "failed" : "completed",
		err ? ds.why : "");
	tlm_session_close(s);
	tlm_listener_close(li);
	return err ? 3 : 0;
}

int main(int argc, char **argv)
{
	struct ctx c = { 0 };
	struct tlm_psk psk;
	struct tlm_local *m;
	struct tlm_workload *w;
	struct tlm_migrate_stats st;
	struct tlm_session_cfg cfg = { .transport = "tcp", .n_lanes = 2, .page_size = 4096,
				       .n_regions = 1, .region_len = { MEM }, .timeout_ms = 20000 };
	struct tlm_migrate_opts o = { .policy = TLM_POLICY_TLM, .chk_lanes = 1, .ps_lanes = 1,
				      .epoch_ms = 10, .zero_pages = true, .timeout_ms = 20000,
				      .progress = progress, .progress_arg = &c };
	size_t size = MEM;
	uint64_t w0, w1;
	char port[16];
	int pfd[2], status, err, fails = 0;
	ssize_t r;

	if (argc != 2) {
		fprintf(stderr, "usage: %s kill-destination|cut-lane|abort|stall-destination|"
			"stage3-kill-destination|commit-stall-destination\n", argv[0]);
		return 2;
	}
	c.f = (enum fault)(sizeof(fault_names) / sizeof(fault_names[0]));
	for (unsigned i = 0; i < sizeof(fault_names) / sizeof(fault_names[0]); i++)
		if (!strcmp(argv[1], fault_names[i]))
			c.f = (enum fault)i;
	if (c.f == sizeof(fault_names) / sizeof(fault_names[0])) {
		fprintf(stderr, "unknown fault case %s\n", argv[1]);
		return 2;
	}
	if (c.f == COMMIT_STALL)
		o.timeout_ms = 3000; /* the wait for COMMIT ends in seconds */
	/* A short stall timeout, so the stalled case ends in seconds. */
	cfg.transport_args = "send_timeout=2000";
	signal(SIGPIPE, SIG_IGN);
	tlm_set_log_fn(wrap_log_cb, NULL);
	tlm_psk_random(&psk);
	cfg.psk = &psk;
	cfg.lane_modes[1] = cfg.lane_modes[2] = TLM_MODE_PAGES;
	o.abort_flag = &c.abort_flag;

	if (pipe(pfd))
		return 2;
	c.child = fork();
	if (c.child == 0) {
		close(pfd[0]);
		_exit(destination(pfd[1], &psk));
	}
	close(pfd[1]);
	r = read(pfd[0], port, sizeof(port) - 1);
	close(pfd[0]);
	if (r <= 0)
		return 2;
	port[r] = 0;

	if ((err = tlm_local_create(&size, 1, TLM_TRACK_AUTO, &m)) ||
	    (err = tlm_workload_start(m, "mg", 1, 50000, 7, &w))) {
		fprintf(stderr, "setup: %s\n", tlm_strerror(err));
		return 2;
	}
	usleep(100000);
	err = tlm_connect(&cfg, "127.0.0.1", port, &c.s);
	if (err) {
		fprintf(stderr, "connect: %s\n", tlm_strerror(err));
		return 2;
	}
	c.inner = tlm_local_memsrc(m);
	{
		struct tlm_memsrc wrapped = { &wrap_ops, &c, c.inner->page_size };

		err = tlm_migrate_source(c.s, &wrapped, &o, &st);
	}
	fprintf(stderr, "  source: %s (%s)\n", tlm_strerror(err), st.why);
	if (!c.injected) {
		fprintf(stderr, "FAIL: the migration ended before the fault could be injected\n");
		fails++;
	}
	if (err == 0 || st.completed) {
		fprintf(stderr, "FAIL: the source reported success despite the fault\n");
		fails++;
	}
	if (!st.why[0]) {
		fprintf(stderr, "FAIL: no reason given\n");
		fails++;
	}
	/* Never left paused: every pause resumed, the workload goes on writing. */
	if (c.pauses != c.resumes || (c.f >= STAGE3_KILL && c.pauses != 1)) {
		fprintf(stderr, "FAIL: %d pauses, %d resumes\n", c.pauses, c.resumes);
		fails++;
	}
	w0 = tlm_workload_writes(w);
	usleep(300000);
	w1 = tlm_workload_writes(w);
	if (w1 <= w0) {
		fprintf(stderr, "FAIL: the workload is not running after the failed migration\n");
		fails++;
	}
	tlm_session_close(c.s);
	if (c.child && (c.f == STALL_DST || c.f == COMMIT_STALL))
		kill(c.child, SIGKILL);
	status = 3 << 8;
	if (c.child)
		waitpid(c.child, &status, 0);
	if ((c.f == CUT_LANE || c.f == ABORT) && !(WIFEXITED(status) && WEXITSTATUS(status) == 3)) {
		fprintf(stderr, "FAIL: the destination did not report failure (status 0x%x)\n", status);
		fails++;
	}
	tlm_migrate_stats_free(&st);
	tlm_workload_stop(w);
	tlm_local_destroy(m);
	if (!fails)
		printf("%s: source kept running (%llu more writes), %s\n",
		       argv[1], (unsigned long long)(w1 - w0),
		       c.f != CUT_LANE && c.f != ABORT ? "destination process gone"
						      : "destination reported failure");
	return fails ? 1 : 0;
}
