/* SPDX-License-Identifier: MIT */
/*
 * `tlm demo`: two QEMUs on this machine (TCG), the test guest dirtying its
 * RAM on the source, a relay migration over tcp lanes with the tlm policy,
 * then a few more guest sweeps on the destination, whose own page
 * verification says whether anything was lost.
 *
 * Threads: the main thread starts and stops both VMs (vmproc ties
 * PDEATHSIG to the forking thread) and runs the source side; a second
 * thread runs the receiver with the destination's QMP handle, which the
 * main thread does not touch until that thread is joined.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "relay.h"
#include "vmproc.h"

static volatile sig_atomic_t stop;

/* What the guest said on its serial port so far. */
struct guest_log {
	char part[512];
	size_t plen;
	bool started, filled, fault;
	int statuses;
	long long sweep, errors, vpasses, writes, first_sweep;
	int error_lines;
};

static void log_line(struct guest_log *g, const char *l)
{
	const char *p;

	if (!strncmp(l, "TLMG start", 10))
		g->started = true;
	else if (!strncmp(l, "TLMG filled", 11))
		g->filled = true;
	else if (!strncmp(l, "TLMG error", 10))
		g->error_lines++;
	else if (!strncmp(l, "TLMG fault", 10))
		g->fault = true;
	else if (!strncmp(l, "TLMG status", 11)) {
		if ((p = strstr(l, " sweep=")))
			g->sweep = atoll(p + 7);
		if ((p = strstr(l, " errors=")))
			g->errors = atoll(p + 8);
		if ((p = strstr(l, " vpasses=")))
			g->vpasses = atoll(p + 9);
		if ((p = strstr(l, " writes=")))
			g->writes = atoll(p + 8);
		if (!g->statuses++)
			g->first_sweep = g->sweep;
	}
}

static void log_poll(struct tlm_vmproc *vp, struct guest_log *g)
{
	char buf[4096];
	ssize_t n;

	while ((n = tlm_vmproc_serial_tail(vp, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' || g->plen == sizeof(g->part) - 1) {
				g->part[g->plen] = '\0';
				log_line(g, g->part);
				g->plen = 0;
			} else if (buf[i] != '\r') {
				g->part[g->plen++] = buf[i];
			}
		}
	}
}

/* Polls the serial log until pred holds; 0, -ETIMEDOUT, -ECHILD if the VM
 * died, -TLM_EABORTED on Ctrl-C. */
static int wait_guest(struct tlm_vmproc *vp, struct guest_log *g,
		      bool (*pred)(const struct guest_log *, long long), long long arg,
		      int timeout_ms)
{
	uint64_t end = tlm_cli_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		log_poll(vp, g);
		if (pred(g, arg))
			return 0;
		if (g->fault)
			return -EFAULT;
		if (!tlm_vmproc_alive(vp))
			return -ECHILD;
		if (stop)
			return -TLM_EABORTED;
		if (tlm_cli_now_ms() >= end)
			return -ETIMEDOUT;
		usleep(50000);
	}
}

static bool running_pred(const struct guest_log *g, long long arg)
{
	(void)arg;
	return g->filled && g->statuses > 0;
}

static bool sweeps_pred(const struct guest_log *g, long long arg)
{
	return g->statuses > 0 && g->sweep - g->first_sweep >= arg;
}

static int find_kernel(const char *given, char *out, size_t len)
{
	char exe[PATH_MAX], *slash;
	const char *env = getenv("TLM_GUEST_ELF");
	const char *fixed[] = { "/usr/local/share/tlm/guest.elf", "/usr/share/tlm/guest.elf" };
	ssize_t n;

	if (given) {
		if (access(given, R_OK))
			return -errno;
		snprintf(out, len, "%s", given);
		return 0;
	}
	if (env && !access(env, R_OK)) {
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			/* build tree: <build>/cli/tlm -> <build>/tests/guest/guest.elf;
			 * installed: <prefix>/bin/tlm -> <prefix>/share/tlm/guest.elf */
			const char *rel[] = { "/../tests/guest/guest.elf",
					      "/../share/tlm/guest.elf" };

			for (size_t i = 0; i < 2; i++) {
				if (strlen(exe) + strlen(rel[i]) >= len)
					continue;
				strcpy(out, exe);
				strcat(out, rel[i]);
				if (!access(out, R_OK))
					return 0;
			}
		}
	}
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (!access(fixed[i], R_OK)) {
			snprintf(out, len, "%s", fixed[i]);
			return 0;
		}
	}
	return -ENOENT;
}

struct recv_job {
	struct tlm_relay_dst_opts o;
	struct tlm_relay_result r;
	int rc;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int port;                    /* 0 until listening, -1 if it never will */
};

static void job_port(int port, void *arg)
{
	struct recv_job *j = arg;

	pthread_mutex_lock(&j->mu);
	j->port = port;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

static void *recv_thread(void *arg)
{
	struct recv_job *j = arg;

	j->rc = tlm_relay_receive(&j->o, &j->r);
	job_port(j->port ? j->port : -1, j);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm demo [--kernel GUEST.ELF] [--mem MIB] [--pattern mg|sp|random|idle]\n"
"                [--rate PAGES/S] [--lanes N] [--policy tlm|qemu|auto-converge]\n"
"                [--sweeps N] [--qemu BINARY] [--json] [--keep]\n"
"\n"
"Starts two QEMUs on this machine (TCG) with the tlm test guest, which keeps\n"
"rewriting and verifying its memory; migrates it live from one to the other\n"
"through the relay over tcp lanes; lets the guest run a few more sweeps on\n"
"the destination and reports, with the guest's own count of bad pages.\n"
"\n"
"  --kernel FILE   the test guest (default: tests/guest/guest.elf in the build\n"
"                  tree of this tlm, or <prefix>/share/tlm/guest.elf)\n"
"  --mem MIB       guest RAM (default 512)\n"
"  --pattern P     guest write pattern (default mg)\n"
"  --rate N        guest page writes per second, 0 = unlimited (default 0)\n"
"  --lanes N       multifd channels / data lanes (default 4)\n"
"  --policy P      switchover policy (default tlm)\n"
"  --sweeps N      guest sweeps to wait for on the destination (default 2)\n"
"  --qemu BINARY   QEMU to use (default qemu-system-x86_64 in PATH)\n"
"  --json          print the report as one JSON object\n"
"  --keep          keep the VMs' directories (logs) for inspection\n");
}

int tlm_cli_demo(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "mem", required_argument, NULL, 'm' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "rate", required_argument, NULL, 'r' },
		{ "lanes", required_argument, NULL, 'n' },
		{ "policy", required_argument, NULL, 'P' },
		{ "sweeps", required_argument, NULL, 's' },
		{ "qemu", required_argument, NULL, 'Q' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kernel_arg = NULL, *pattern = "mg", *qemu = NULL;
	long mem = 512, rate = 0, lanes = 4, sweeps = 2;
	int policy = TLM_RELAY_POLICY_TLM, c, rc, status = 1;
	bool json = false, keep = false, recv_on = false;
	char kernel[PATH_MAX], qemu_path[PATH_MAX], mem_s[24], append[128], port_s[16];
	struct tlm_vmproc *src = NULL, *dst = NULL;
	struct guest_log gs = { 0 }, gd = { 0 };
	struct recv_job job = { .port = 0 };
	struct tlm_relay_src_opts so = { 0 };
	struct tlm_relay_result res;
	struct tlm_psk psk;
	pthread_t rt;
	uint64_t t_start = tlm_cli_now_ms();
	char dst_status[32] = "", src_status[32] = "";
	int guest_rc = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;

		if (c == 'm' || c == 'r' || c == 'n' || c == 's') {
			v = strtol(optarg, &end, 10);
			if (*end || v < 0 || (c == 'm' && (v < 16 || v > 16384)) ||
			    (c == 'n' && (v < 1 || v > TLM_RELAY_MAX_MULTIFD)) ||
			    (c == 's' && v > 1000)) {
				tlm_cli_err("bad value '%s' for --%s", optarg,
					    c == 'm' ? "mem" : c == 'r' ? "rate" :
					    c == 'n' ? "lanes" : "sweeps");
				return 2;
			}
		}
		switch (c) {
		case 'k': kernel_arg = optarg; break;
		case 'm': mem = v; break;
		case 'r': rate = v; break;
		case 'n': lanes = v; break;
		case 's': sweeps = v; break;
		case 'Q': qemu = optarg; break;
		case 'j': json = true; break;
		case 'K': keep = true; break;
		case 'p':
			if (strcmp(optarg, "mg") && strcmp(optarg, "sp") &&
			    strcmp(optarg, "random") && strcmp(optarg, "idle")) {
				tlm_cli_err("--pattern: mg, sp, random or idle");
				return 2;
			}
			pattern = optarg;
			break;
		case 'P':
			policy = tlm_relay_policy_parse(optarg);
			if (policy < 0) {
				tlm_cli_err("--policy: qemu, tlm or auto-converge, not '%s'", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	rc = find_kernel(kernel_arg, kernel, sizeof(kernel));
	if (rc) {
		if (kernel_arg)
			tlm_cli_err("--kernel %s: %s", kernel_arg, strerror(-rc));
		else
			tlm_cli_err("test guest not found: build it (ninja -C build builds "
				    "tests/guest/guest.elf) or pass --kernel FILE");
		return 1;
	}
	rc = tlm_vmproc_find_qemu(qemu ? qemu : "qemu-system-x86_64", qemu_path,
				  sizeof(qemu_path));
	if (rc) {
		tlm_cli_err("%s not found: install it (Debian: apt-get install "
			    "qemu-system-x86) or pass --qemu", qemu ? qemu : "qemu-system-x86_64");
		return 1;
	}
	if (tlm_cli_get_psk(NULL, true, &psk))
		return 1;
	tlm_cli_relay_signals(&stop);

	/* QEMU < 9.0 (Debian 12 ships 7.2) drops TCG guest writes during live
	 * migration when the RAM block is a multiple of 256 KiB (its fast
	 * dirty-bitmap sync never resets the TCG TLB's dirty state; fixed
	 * upstream in 03bfc2188f). 8 KiB less forces the page-by-page sync. */
	snprintf(mem_s, sizeof(mem_s), "%ldK", mem * 1024 - 8);
	snprintf(append, sizeof(append), "pattern=%s rate=%ld", pattern, rate);
	{
		const char *src_args[] = { "-accel", "tcg", "-m", mem_s, "-kernel", kernel,
					   "-append", append, NULL };
		const char *dst_args[] = { "-accel", "tcg", "-m", mem_s, "-kernel", kernel,
					   "-append", append, "-incoming", "defer", NULL };
		struct tlm_vmproc_opts vo = { .qemu = qemu_path, .args = src_args,
					      .keep_dir = keep };

		if (!json)
			printf("tlm demo: %s, guest %ld MiB, pattern %s, rate %s, %ld tcp lanes, "
			       "policy %s\n", qemu_path, mem, pattern,
			       rate ? strchr(append, ' ') + 6 : "unlimited", lanes,
			       tlm_relay_policy_name(policy));
		rc = tlm_vmproc_start(&vo, &src);
		if (rc) {
			tlm_cli_err("cannot start the source QEMU: %s", tlm_strerror(rc));
			goto out;
		}
		vo.args = dst_args;
		rc = tlm_vmproc_start(&vo, &dst);
		if (rc) {
			tlm_cli_err("cannot start the destination QEMU: %s", tlm_strerror(rc));
			goto out;
		}
	}
	if (!json)
		printf("source VM %d and destination VM %d started; waiting for the guest "
		       "to fill its memory...\n", (int)tlm_vmproc_pid(src), (int)tlm_vmproc_pid(dst));
	fflush(stdout);
	rc = wait_guest(src, &gs, running_pred, 0, 90000);
	if (rc) {
		tlm_cli_err("the guest did not start running on the source: %s",
			    rc == -ECHILD ? "QEMU exited" : rc == -EFAULT ? "guest fault" :
			    tlm_strerror(rc));
		goto out;
	}
	if (!json)
		printf("guest running: sweep %lld, %lld page writes so far, errors %lld\n",
		       gs.sweep, gs.writes, gs.errors);

	job.o.qmp = tlm_vmproc_qmp(dst);
	job.o.addr = "127.0.0.1";
	job.o.port = "0";
	job.o.psk = &psk;
	job.o.multifd = (unsigned)lanes;
	job.o.accept_timeout_ms = 30000;
	job.o.timeout_ms = 300000;
	job.o.listening = job_port;
	job.o.listening_arg = &job;
	job.o.cancel = &stop;
	pthread_mutex_init(&job.mu, NULL);
	pthread_cond_init(&job.cv, NULL);
	if (pthread_create(&rt, NULL, recv_thread, &job)) {
		tlm_cli_err("cannot start the receiver thread");
		goto out;
	}
	recv_on = true;
	pthread_mutex_lock(&job.mu);
	while (!job.port)
		pthread_cond_wait(&job.cv, &job.mu);
	pthread_mutex_unlock(&job.mu);
	if (job.port < 0) {
		pthread_join(rt, NULL);
		recv_on = false;
		tlm_cli_err("receiver: %s", job.r.error);
		goto out;
	}
	snprintf(port_s, sizeof(port_s), "%d", job.port);

	so.qmp = tlm_vmproc_qmp(src);
	so.host = "127.0.0.1";
	so.port = port_s;
	so.psk = &psk;
	so.multifd = (unsigned)lanes;
	so.policy = policy;
	so.timeout_ms = 300000;
	so.progress = json ? NULL : tlm_cli_relay_progress;
	so.cancel = &stop;
	rc = tlm_relay_migrate(&so, &res);
	tlm_cli_relay_progress_end();
	pthread_join(rt, NULL);
	recv_on = false;
	if (!rc && job.rc)
		rc = job.rc;
	tlm_qmp_query_status(tlm_vmproc_qmp(src), src_status, sizeof(src_status), NULL);

	if (!rc) {
		tlm_qmp_query_status(tlm_vmproc_qmp(dst), dst_status, sizeof(dst_status), NULL);
		if (!json)
			printf("migrated; letting the guest run %ld more sweep%s on the "
			       "destination...\n", sweeps, sweeps == 1 ? "" : "s");
		fflush(stdout);
		guest_rc = wait_guest(dst, &gd, sweeps_pred, sweeps, 90000);
		if (guest_rc)
			tlm_cli_err("destination guest: %s",
				    guest_rc == -ECHILD ? "QEMU exited" :
				    guest_rc == -EFAULT ? "guest fault" :
				    guest_rc == -ETIMEDOUT ? "no progress in 90 s" :
				    tlm_strerror(guest_rc));
	}
	{
		long long errors = rc ? gs.errors : gd.errors;
		bool ok = !rc && !guest_rc && errors == 0 && !gd.error_lines;

		if (json) {
			struct tlm_json j;

			tlm_json_begin(&j, stdout);
			tlm_cli_relay_report(stdout, &res, "tcp", policy, true, &j);
			tlm_json_i64(&j, "guest_errors", errors);
			tlm_json_i64(&j, "guest_sweeps_after", gd.statuses ? gd.sweep - gd.first_sweep : 0);
			tlm_json_i64(&j, "guest_vpasses", gd.vpasses);
			tlm_json_i64(&j, "guest_mem_mib", mem);
			tlm_json_str(&j, "guest_pattern", pattern);
			tlm_json_str(&j, "source_status", src_status);
			tlm_json_u64(&j, "demo_ms", tlm_cli_now_ms() - t_start);
			tlm_json_bool(&j, "ok", ok);
			tlm_json_finish(&j);
		} else {
			tlm_cli_relay_report(stdout, &res, "tcp", policy, false, NULL);
			printf("  source VM       %s\n", src_status[0] ? src_status : "?");
			if (!rc)
				printf("  guest           %lld sweeps on the destination, "
				       "verification errors: %lld%s\n",
				       gd.statuses ? gd.sweep - gd.first_sweep : 0, errors,
				       errors ? "  <-- pages lost or stale!" : " (every page intact)");
			printf("demo %s in %.1f s\n", ok ? "OK" : "FAILED",
			       (double)(tlm_cli_now_ms() - t_start) / 1000.0);
		}
		status = ok ? 0 : 1;
	}
out:
	if (recv_on) {
		stop = 1;
		pthread_join(rt, NULL);
	}
	tlm_vmproc_stop(dst, 3000, NULL);
	tlm_vmproc_stop(src, 3000, NULL);
	memset(&psk, 0, sizeof(psk));
	return status;
}
