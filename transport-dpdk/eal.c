/* SPDX-License-Identifier: MIT */
/*
 * The EAL: started once per process, on the first listen or connect, from
 * transport_args "dpdk-args=..." (default: --no-huge --no-pci -m 512
 * --file-prefix tlm-<pid>, and always one lcore: our threads are plain
 * pthreads that take an lcore id when they first move data). A failed
 * start is remembered: every later lane gets the same error.
 *
 * The library never prints, and the EAL does: while rte_eal_init runs, the
 * process's stdout and stderr go to a memfd whose lines come back to our
 * log (complaints at error level, the rest at debug); the EAL's and PMDs'
 * log stream goes to our log at debug level, and a thread's first error
 * line is kept as the reason a probe failed (tlm__dpdk_first_error).
 *
 * A child forked after the EAL started can use none of it (the poll
 * threads and the memif sockets stayed with the parent): every op there
 * fails with -EOPNOTSUPP (tlm__dpdk_fork_check).
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>

#include "dpdk-internal.h"

static bool g_eal_up;
static int g_eal_err;
volatile sig_atomic_t tlm__dpdk_forked;

/* A thread that moves data gets an lcore id on first use, so the mempools
 * give it a per-thread cache (hot LIFO buffers instead of the shared ring
 * per mbuf); it gives the id back when it exits. Past RTE_MAX_LCORE
 * threads the rest go without. */
static pthread_key_t g_lcore_key;
static bool g_lcore_key_ok;
static pthread_once_t g_lcore_once = PTHREAD_ONCE_INIT;
static __thread bool t_lcore_tried;

static void lcore_exit(void *arg)
{
	(void)arg;
	rte_thread_unregister();
}

static void lcore_key_init(void)
{
	g_lcore_key_ok = !pthread_key_create(&g_lcore_key, lcore_exit);
}

void tlm__dpdk_lcore_join(void)
{
	if (t_lcore_tried)
		return;
	t_lcore_tried = true;
	if (rte_lcore_id() != LCORE_ID_ANY)
		return;
	pthread_once(&g_lcore_once, lcore_key_init);
	if (g_lcore_key_ok && rte_thread_register() == 0) {
		if (rte_lcore_id() == LCORE_ID_ANY || pthread_setspecific(g_lcore_key, (void *)1))
			rte_thread_unregister();
	}
}

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
	(void)cookie;
	/* EAL and PMD chatter goes to our log at debug level, never stderr */
	tlm__dpdk_log_line("dpdk", buf, n);
	return (ssize_t)n;
}

static void after_fork_child(void)
{
	tlm__dpdk_forked = 1;
}

int tlm__dpdk_fork_check(void)
{
	if (!tlm__dpdk_forked)
		return 0;
	tlm__err("dpdk: this process was forked after the EAL started; DPDK lanes "
		 "do not survive fork(): start them in the process that uses them");
	return -EOPNOTSUPP;
}

/* The EAL leaves its runtime directory (/var/run/dpdk/<prefix>: config,
 * memseg arrays, IPC socket) behind at exit; with a prefix per process that
 * piles up. Remove ours at exit when we chose the prefix. Not earlier:
 * hotplug (our vdevs) looks for peers in that directory. */
static char g_rundir[256];
static pid_t g_rundir_pid;

static void remove_rundir(void)
{
	DIR *d;
	struct dirent *e;

	/* a child forked after we started exits too: not its directory */
	if (getpid() != g_rundir_pid || !(d = opendir(g_rundir)))
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	rmdir(g_rundir);
}

int tlm__dpdk_eal_start(const struct cfg *c)
{
	char buf[640], *argv[64];
	int argc = 0, r;
	cpu_set_t cpus;

	if (g_eal_up)
		return 0;
	if (g_eal_err)
		return g_eal_err;
	if (c->eal[0] && (strstr(c->eal, "--file-prefix") || strstr(c->eal, "--in-memory")))
		snprintf(buf, sizeof(buf), "tlm %s", c->eal);
	else if (c->eal[0])   /* two processes here must not share a prefix */
		snprintf(buf, sizeof(buf), "tlm %s --file-prefix tlm-%d", c->eal, (int)getpid());
	else
		snprintf(buf, sizeof(buf), "tlm --no-huge --no-pci -m 512 --file-prefix tlm-%d",
			 (int)getpid());
	for (char *s = strtok(buf, " "); s && argc < 60; s = strtok(NULL, " "))
		argv[argc++] = s;
	/* one lcore: our poll threads are plain pthreads registered later */
	argv[argc++] = "-l";
	argv[argc++] = "0";
	argv[argc++] = "--no-telemetry";
	argv[argc] = NULL;

	FILE *lf = fopencookie(NULL, "w", (cookie_io_functions_t){ .write = log_write });
	if (lf) {
		setvbuf(lf, NULL, _IOLBF, 0);
		rte_openlog_stream(lf);
	}
	/* rte_eal_init pins the calling thread to lcore 0; give it back its
	 * cores, it is the application's thread, not ours */
	r = pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	int n = tlm__dpdk_eal_init(argc, argv);
	if (!r)
		pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	if (n < 0) {
		g_eal_err = rte_errno ? -rte_errno : -EINVAL;
		tlm__err("dpdk: EAL init failed: %s (EAL arguments: %s)", rte_strerror(rte_errno),
			 c->eal[0] ? c->eal : "the default, --no-huge --no-pci -m 512");
		return g_eal_err;
	}
	g_eal_up = true;
	pthread_atfork(NULL, NULL, after_fork_child);
	if (!strstr(c->eal, "--file-prefix") && !strstr(c->eal, "--in-memory")) {
		/* the prefix is ours (tlm-<pid>): so is the directory */
		snprintf(g_rundir, sizeof(g_rundir), "%s", rte_eal_get_runtime_dir());
		g_rundir_pid = getpid();
		if (g_rundir[0])
			atexit(remove_rundir);
	}
	return 0;
}

/* ---- log capture ---- */

/* One line of what the EAL printed: the complaints (getopt's, which start
 * with argv[0], and the EAL's own errors) at error level, its usage text
 * at debug. */
static void eal_line(const char *argv0, const char *l, size_t n, const char **prev,
		     size_t *pn)
{
	size_t a = strlen(argv0);
	bool complaint = (n > a + 2 && !strncmp(l, argv0, a) && l[a] == ':') ||
			 (n > 5 && !strncmp(l, "EAL: ", 5) &&
			  (memmem(l, n, "rror", 4) || memmem(l, n, "FATAL", 5)));

	if (!n)
		return;
	if (complaint && *prev && *pn == n && !memcmp(*prev, l, n))
		return;   /* the EAL reads its arguments twice */
	if (complaint) {
		tlm__err("dpdk: %.*s", (int)n, l);
		*prev = l;
		*pn = n;
	} else {
		tlm__dbg("dpdk: %.*s", (int)n, l);
	}
}

/* Log lines held back while the EAL starts (tlm__dpdk_eal_init). */
static pthread_mutex_t g_held_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_holding;
static char g_held[8192];
static size_t g_nheld;

/* The first error line since the last clear: the cause, not the EAL's
 * "failed to attach" that follows it. */
static __thread char t_first_err[200];

const char *tlm__dpdk_first_error(void)
{
	return t_first_err;
}

void tlm__dpdk_clear_error(void)
{
	t_first_err[0] = 0;
}

void tlm__dpdk_log_line(const char *who, const char *buf, size_t n)
{
	int level = rte_log_cur_msg_loglevel();

	if (n && buf[n - 1] == '\n')
		n--;
	if (level > 0 && level <= (int)RTE_LOG_ERR && !t_first_err[0])
		snprintf(t_first_err, sizeof(t_first_err), "%.*s", (int)n, buf);
	pthread_mutex_lock(&g_held_mu);
	if (g_holding) {
		int k = snprintf(g_held + g_nheld, sizeof(g_held) - g_nheld, "%s: %.*s\n", who,
				 (int)n, buf);
		if (k > 0)
			g_nheld += RTE_MIN((size_t)k, sizeof(g_held) - 1 - g_nheld);
		pthread_mutex_unlock(&g_held_mu);
		return;
	}
	pthread_mutex_unlock(&g_held_mu);
	tlm__dbg("%s: %.*s", who, (int)n, buf);
}

static void hold_log(bool on)
{
	char out[sizeof(g_held)];
	size_t n;

	pthread_mutex_lock(&g_held_mu);
	g_holding = on;
	n = g_nheld;
	memcpy(out, g_held, n);
	g_nheld = 0;
	pthread_mutex_unlock(&g_held_mu);
	for (size_t at = 0, i = 0; i < n; i++)
		if (out[i] == '\n') {
			tlm__dbg("%.*s", (int)(i - at), out + at);
			at = i + 1;
		}
}

int tlm__dpdk_eal_init(int argc, char **argv)
{
	int mf = memfd_create("tlm-eal-output", MFD_CLOEXEC), o1 = -1, o2 = -1, r;

	fflush(stdout);
	fflush(stderr);
	if (mf >= 0) {
		o1 = dup(1);
		o2 = dup(2);
	}
	hold_log(true);
	bool caught = mf >= 0 && o1 >= 0 && o2 >= 0 && dup2(mf, 1) == 1 && dup2(mf, 2) == 2;
	r = rte_eal_init(argc, argv);
	fflush(stdout);
	fflush(stderr);
	if (o1 >= 0)
		dup2(o1, 1);
	if (o2 >= 0)
		dup2(o2, 2);
	hold_log(false);
	if (caught) {
		char buf[8192];
		ssize_t n = pread(mf, buf, sizeof(buf) - 1, 0);
		size_t at = 0, pn = 0;
		const char *prev = NULL;

		buf[n > 0 ? n : 0] = 0;
		for (size_t i = 0; n > 0 && i <= (size_t)n; i++)
			if (i == (size_t)n || buf[i] == '\n') {
				eal_line(argv[0], buf + at, i - at, &prev, &pn);
				at = i + 1;
			}
	}
	if (o1 >= 0)
		close(o1);
	if (o2 >= 0)
		close(o2);
	if (mf >= 0)
		close(mf);
	return r;
}
