/* SPDX-License-Identifier: MIT */
/* The benchmark library's small helpers (tlm-bench.h): errors, clocks,
 * peak RSS, lanes threads, a forked listener. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-internal.h"

static void (*err_fn)(const char *msg);

void tlm_bench_set_err_fn(void (*fn)(const char *msg))
{
	err_fn = fn;
}

void tlm_bench_err(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (err_fn)
		err_fn(buf);
	else
		fprintf(stderr, "tlm: %s\n", buf);
}

uint64_t tlm_bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Unlike seconds, CPU time barely moves when other work shares the
 * machine. */
uint64_t tlm_bench_cpu_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

uint64_t tlm_bench_peak_rss(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	uint64_t kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

int tlm__bench_run_lanes(struct lane_job *jobs, unsigned n, void *(*fn)(void *))
{
	pthread_t th[TLM_MAX_LANES];
	unsigned started = 0;
	int err = 0;

	for (; started < n; started++) {
		int rc = pthread_create(&th[started], NULL, fn, &jobs[started]);

		if (rc) {
			err = -rc;
			break;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	return err;
}

pid_t tlm_bench_fork_listener(const struct tlm_session_cfg *cfg, const char *addr,
			      char *port, size_t plen,
			      int (*fn)(struct tlm_listener *l, void *arg), void *arg)
{
	int pfd[2];
	pid_t child;
	ssize_t n;

	if (pipe(pfd)) {
		tlm_bench_err("pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	child = fork();
	if (child < 0) {
		tlm_bench_err("fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (child == 0) {
		struct tlm_listener *li;
		int err, rc;

		close(pfd[0]);
		signal(SIGINT, SIG_IGN); /* the parent decides what Ctrl-C means */
		err = tlm_listen(cfg, addr, "0", &li);
		if (err) {
			tlm_bench_err("cannot listen on %s: %s", addr, tlm_strerror(err));
			_exit(1);
		}
		dprintf(pfd[1], "%d", tlm_listener_port(li));
		close(pfd[1]);
		rc = fn(li, arg);
		tlm_listener_close(li);
		/* exit, not _exit: a transport's own cleanup runs (dpdk removes
		 * the EAL runtime directory it made); stdio was flushed before
		 * the fork, so nothing of the parent's is written twice */
		exit(rc == 0 ? 0 : 1);
	}
	close(pfd[1]);
	n = read(pfd[0], port, plen - 1);
	close(pfd[0]);
	if (n <= 0) {
		waitpid(child, NULL, 0);
		tlm_bench_err("the receiving process did not start");
		return -1;
	}
	port[n] = 0;
	return child;
}
